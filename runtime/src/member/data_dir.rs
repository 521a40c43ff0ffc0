//! A member's data dir as a restore builds it: refused unless empty, built in a
//! staging dir beside it (one filesystem, so the final rename is atomic), then
//! renamed into place and the parent directory synced.

use std::path::{Path, PathBuf};

/// Why a data dir cannot be restored into.
#[derive(Debug)]
pub enum DataDirProblem {
    /// It holds something: lifeboat never overwrites a data dir.
    NotEmpty {
        path: PathBuf,
    },
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirProblem + '_ {
    move |source| DataDirProblem::Io { path: path.to_owned(), source }
}

/// Ok when `data_dir` is absent or an empty directory.
pub fn check_empty(data_dir: &Path) -> Result<(), DataDirProblem> {
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => match entries.next() {
            Some(_) => Err(DataDirProblem::NotEmpty { path: data_dir.to_owned() }),
            None => Ok(()),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotADirectory => {
            Err(DataDirProblem::NotEmpty { path: data_dir.to_owned() })
        }
        Err(error) => Err(io(data_dir)(error)),
    }
}

/// A scratch directory beside the data dir, removed on drop unless installed.
#[derive(Debug)]
pub struct Staging {
    parent: PathBuf,
    dir: tempfile::TempDir,
}

impl Staging {
    /// Creates the data dir's parent if need be, and the staging dir in it.
    pub fn beside(data_dir: &Path) -> Result<Staging, DataDirProblem> {
        let parent = match data_dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        let dir = tempfile::Builder::new().prefix(".lifeboat-restore-").tempdir_in(&parent).map_err(io(&parent))?;
        Ok(Staging { parent, dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A new file in the staging dir, for the downloaded snapshot.
    pub fn create_file(&self, name: &str) -> Result<(PathBuf, std::fs::File), DataDirProblem> {
        let path = self.dir.path().join(name);
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        Ok((path, file))
    }

    /// Renames `built` (inside the staging dir) to `data_dir`, which must still be
    /// empty or absent, and syncs the parent so the rename survives a crash.
    pub fn install(&self, built: &Path, data_dir: &Path) -> Result<(), DataDirProblem> {
        check_empty(data_dir)?;
        if data_dir.is_dir() {
            std::fs::remove_dir(data_dir).map_err(io(data_dir))?;
        }
        std::fs::rename(built, data_dir).map_err(io(data_dir))?;
        std::fs::File::open(&self.parent).and_then(|directory| directory.sync_all()).map_err(io(&self.parent))
    }
}
