//! A local directory as the store (`file:///DIR`): the embedded default for a first
//! run and for a single machine. Keys are relative paths under the root.
//!
//! Writes go to a hidden temp file in the destination directory, are synced, then
//! renamed (or hard-linked, for create-if-absent) into place, so a crash never
//! leaves a partial file under a final name.

use crate::ports::{BoxError, ByteSource, ObjectInfo, Part, SnapshotStore, StoreError, Upload};
use bytes::{Bytes, BytesMut};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

const READ_CHUNK_BYTES: usize = 1 << 20;
const TEMP_MARKER: &str = ".partial-";

#[derive(Clone, Debug)]
pub struct FileStore {
    root: PathBuf,
}

fn io_error<'a>(operation: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { operation, path: path.display().to_string(), source }
}

/// Runs blocking file work off the async threads. (The simulator never uses a
/// file store; madsim merely warns that its build has no blocking threads.)
#[cfg_attr(madsim, allow(deprecated))]
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|join_error| {
        Err(StoreError::Request { operation: "file task", location: String::new(), detail: join_error.to_string() })
    })
}

impl FileStore {
    /// Opens (and creates) the root directory.
    pub fn open(root: &Path) -> Result<FileStore, StoreError> {
        std::fs::create_dir_all(root).map_err(io_error("create store directory", root))?;
        Ok(FileStore { root: root.to_owned() })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn temp_path(path: &Path) -> PathBuf {
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let unique = format!(
            ".{name}{TEMP_MARKER}{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(UNIX_EPOCH).map(|duration| duration.as_nanos()).unwrap_or(0)
        );
        path.with_file_name(unique)
    }
}

fn sync_parent(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent() {
        File::open(parent).and_then(|directory| directory.sync_all()).map_err(io_error("sync directory", parent))?;
    }
    Ok(())
}

fn info(key: &str, path: &Path) -> Result<ObjectInfo, StoreError> {
    let metadata = std::fs::metadata(path).map_err(io_error("stat", path))?;
    Ok(ObjectInfo {
        key: key.to_owned(),
        size_bytes: metadata.len(),
        modified_ms: metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map(|duration| duration.as_millis() as u64),
    })
}

/// Writes `body` to a synced temp file beside `path` and returns the temp path.
fn write_temp(path: &Path, body: &[u8]) -> Result<PathBuf, StoreError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error("create directory", parent))?;
    }
    let temp = FileStore::temp_path(path);
    let result = File::create(&temp)
        .and_then(|mut file| {
            file.write_all(body)?;
            file.sync_all()
        })
        .map_err(io_error("write", &temp));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map(|()| temp)
}

/// Moves `temp` to `path`. With `if_absent`, a hard link creates `path` only if it
/// does not exist (atomically), then the temp name is dropped.
fn publish(temp: &Path, path: &Path, key: &str, if_absent: bool) -> Result<(), StoreError> {
    let result = if if_absent {
        match std::fs::hard_link(temp, path) {
            Ok(()) => std::fs::remove_file(temp).map_err(io_error("remove", temp)),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StoreError::AlreadyExists { location: key.to_owned() })
            }
            Err(error) => Err(io_error("link", path)(error)),
        }
    } else {
        std::fs::rename(temp, path).map_err(io_error("rename", path))
    };
    if result.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    result?;
    sync_parent(path)
}

/// Collects regular files under `directory`, skipping our hidden temp files.
fn walk(root: &Path, directory: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error("list", directory)(error)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error("list", directory))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_error("stat", &path))?;
        if file_type.is_dir() {
            walk(root, &path, out)?;
        } else if file_type.is_file() && !entry.file_name().to_string_lossy().contains(TEMP_MARKER) {
            if let Ok(relative) = path.strip_prefix(root) {
                out.push((relative.to_string_lossy().into_owned(), path.clone()));
            }
        }
    }
    Ok(())
}

pub struct FileUpload {
    key: String,
    path: PathBuf,
    temp: PathBuf,
    file: Arc<File>,
    completed: bool,
}

impl Drop for FileUpload {
    fn drop(&mut self) {
        if !self.completed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl Upload for FileUpload {
    async fn put_part(&self, part: Part) -> Result<(), StoreError> {
        let file = Arc::clone(&self.file);
        let temp = self.temp.clone();
        blocking(move || file.write_all_at(&part.bytes, part.offset).map_err(io_error("write", &temp))).await
    }

    async fn complete(mut self) -> Result<ObjectInfo, StoreError> {
        let (file, temp, path, key) = (Arc::clone(&self.file), self.temp.clone(), self.path.clone(), self.key.clone());
        let result = blocking(move || {
            file.sync_all().map_err(io_error("sync", &temp))?;
            publish(&temp, &path, &key, false)?;
            info(&key, &path)
        })
        .await;
        self.completed = result.is_ok();
        result
    }

    async fn abort(self) {
        // Drop removes the temp file.
    }
}

pub struct FileReader {
    file: Option<tokio::fs::File>,
}

impl ByteSource for FileReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BoxError> {
        use tokio::io::AsyncReadExt;
        let Some(file) = self.file.as_mut() else {
            return Ok(None);
        };
        let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
        while buffer.len() < READ_CHUNK_BYTES {
            if file.read_buf(&mut buffer).await? == 0 {
                self.file = None;
                break;
            }
        }
        Ok((!buffer.is_empty()).then(|| buffer.freeze()))
    }
}

impl SnapshotStore for FileStore {
    type Upload = FileUpload;
    type Reader = FileReader;

    fn location(&self, key: &str) -> String {
        format!("file://{}", self.path(key).display())
    }

    async fn begin_upload(&self, key: &str) -> Result<FileUpload, StoreError> {
        let path = self.path(key);
        let temp = FileStore::temp_path(&path);
        let (file, temp) = blocking(move || {
            if let Some(parent) = temp.parent() {
                std::fs::create_dir_all(parent).map_err(io_error("create directory", parent))?;
            }
            let file = File::create(&temp).map_err(io_error("create", &temp))?;
            Ok((file, temp))
        })
        .await?;
        Ok(FileUpload { key: key.to_owned(), path, temp, file: Arc::new(file), completed: false })
    }

    async fn put_small(&self, key: &str, body: Bytes, if_absent: bool) -> Result<(), StoreError> {
        let (path, key) = (self.path(key), key.to_owned());
        blocking(move || {
            let temp = write_temp(&path, &body)?;
            publish(&temp, &path, &key, if_absent)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<FileReader, StoreError> {
        let path = self.path(key);
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(FileReader { file: Some(file) }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound { location: self.location(key) })
            }
            Err(error) => Err(io_error("open", &path)(error)),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.path(key);
        if !path.is_file() {
            return Ok(None);
        }
        info(key, &path).map(Some)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            // Walk only the directory part of the prefix, then filter by the whole prefix.
            let directory = match prefix.rsplit_once('/') {
                Some((parent, _)) => root.join(parent),
                None => root.clone(),
            };
            let mut found = Vec::new();
            walk(&root, &directory, &mut found)?;
            let mut objects = Vec::new();
            for (key, path) in found {
                if key.starts_with(&prefix) {
                    objects.push(info(&key, &path)?);
                }
            }
            objects.sort_by(|left, right| left.key.cmp(&right.key));
            Ok(objects)
        })
        .await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let (source, destination, key) = (self.path(from), self.path(to), to.to_owned());
        let location = self.location(from);
        blocking(move || {
            if !source.is_file() {
                return Err(StoreError::NotFound { location });
            }
            if let Some(parent) = destination.parent() {
                std::fs::create_dir_all(parent).map_err(io_error("create directory", parent))?;
            }
            let temp = FileStore::temp_path(&destination);
            let copied = std::fs::copy(&source, &temp)
                .and_then(|_| File::open(&temp)?.sync_all())
                .map_err(io_error("copy", &temp));
            if let Err(error) = copied {
                let _ = std::fs::remove_file(&temp);
                return Err(error);
            }
            publish(&temp, &destination, &key, false)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error("delete", &path)(error)),
        }
    }
}
