//! The local etcd member: start it (in a given mode), stop it, and know its data
//! dir. Two implementations: a child process the agent supervises (the demo and
//! the tests), and a systemd unit (production), whose launch settings go to an
//! environment file the unit reads (`EnvironmentFile=`), as etcd reads `ETCD_*`.

mod child;
pub mod data_dir;
mod systemd;

pub use child::ChildMember;
pub use systemd::{environment, EnvironmentFileMember, SystemdMember};

use crate::exit::{Classify, Exit};
use crate::ports::LocalMember;
use std::path::{Path, PathBuf};

/// This member's identity and addresses, fixed for its lifetime.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberSpec {
    pub name: String,
    pub data_dir: PathBuf,
    pub client_url: String,
    pub peer_url: String,
    /// Extra etcd flags (child mode only), e.g. tuned heartbeats.
    pub extra_args: Vec<String>,
}

/// How to start etcd this time: the flags that differ between a fresh cluster,
/// a join, and a restored cluster.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Launch {
    pub initial_cluster: String,
    /// `new` or `existing`.
    pub initial_cluster_state: String,
    pub initial_cluster_token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("cannot start etcd ({program}): {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("`systemctl {verb} {unit}` failed: {detail}")]
    Systemd { verb: &'static str, unit: String, detail: String },
    #[error("{operation} {path} failed: {source}")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error("refusing to move {path} aside: it is not the configured data dir {configured}")]
    NotTheDataDir { path: PathBuf, configured: PathBuf },
    #[error("refusing to move {path} aside: it is not empty and holds no etcd member/ directory; check --data-dir, or move its contents away yourself")]
    NotAnEtcdDataDir { path: PathBuf },
}

impl Classify for MemberError {
    fn exit(&self) -> Exit {
        match self {
            MemberError::NotTheDataDir { .. } | MemberError::NotAnEtcdDataDir { .. } => Exit::Refused,
            _ => Exit::Failure,
        }
    }
}

pub(crate) fn io_error<'a>(operation: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> MemberError + 'a {
    move |source| MemberError::Io { operation, path: path.to_owned(), source }
}

/// Whether the data dir holds a member (etcd creates `member/` in it).
pub fn has_data(spec: &MemberSpec) -> bool {
    spec.data_dir.join("member").is_dir()
}

/// Moves the data dir aside (`<data-dir>.removed-<ms>`) instead of deleting it:
/// the caller has proven the member removed from the cluster (or its cluster
/// replaced by a committed recovery epoch), and the old bytes stay on disk for
/// forensics until an operator deletes them. Only the configured data dir is
/// moved, and only when it looks like etcd's (`member/` inside): a `--data-dir`
/// pointing at the wrong directory is refused, never moved. Absent or empty:
/// nothing to move.
pub fn move_data_dir_aside(spec: &MemberSpec, path: &Path, now_ms: u64) -> Result<Option<PathBuf>, MemberError> {
    if path != spec.data_dir {
        return Err(MemberError::NotTheDataDir { path: path.to_owned(), configured: spec.data_dir.clone() });
    }
    match std::fs::symlink_metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("stat", path)(error)),
        Ok(_) => {}
    }
    if !path.join("member").is_dir() {
        let mut entries = std::fs::read_dir(path).map_err(io_error("read", path))?;
        if entries.next().is_none() {
            return Ok(None);
        }
        return Err(MemberError::NotAnEtcdDataDir { path: path.to_owned() });
    }
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".removed-{now_ms}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside).map_err(io_error("move aside", path))?;
    Ok(Some(aside))
}

/// Writes `path` whole or not at all (temp name, fsync, rename).
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), MemberError> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let mut file = std::fs::File::create(&temp).map_err(io_error("create", &temp))?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(io_error("write", &temp))?;
    std::fs::rename(&temp, path).map_err(io_error("rename", path))
}

/// Nothing to start or stop: the operator does it (`replace --member-control none`).
pub struct UnmanagedMember {
    spec: MemberSpec,
}

impl UnmanagedMember {
    pub fn new(spec: MemberSpec) -> UnmanagedMember {
        UnmanagedMember { spec }
    }
}

impl LocalMember for UnmanagedMember {
    fn spec(&self) -> &MemberSpec {
        &self.spec
    }
    async fn is_running(&self) -> bool {
        true
    }
    async fn start(&self, _launch: &Launch) -> Result<(), MemberError> {
        Ok(())
    }
    async fn stop(&self) -> Result<(), MemberError> {
        Ok(())
    }
}

/// One of the above, chosen by `--member-control`.
pub enum AnyMember {
    Child(Box<ChildMember>),
    Systemd(SystemdMember),
    EnvironmentFile(EnvironmentFileMember),
    Unmanaged(UnmanagedMember),
}

impl LocalMember for AnyMember {
    fn spec(&self) -> &MemberSpec {
        match self {
            AnyMember::Child(member) => member.spec(),
            AnyMember::Systemd(member) => member.spec(),
            AnyMember::EnvironmentFile(member) => member.spec(),
            AnyMember::Unmanaged(member) => member.spec(),
        }
    }
    async fn is_running(&self) -> bool {
        match self {
            AnyMember::Child(member) => member.is_running().await,
            AnyMember::Systemd(member) => member.is_running().await,
            AnyMember::EnvironmentFile(member) => member.is_running().await,
            AnyMember::Unmanaged(member) => member.is_running().await,
        }
    }
    async fn start(&self, launch: &Launch) -> Result<(), MemberError> {
        match self {
            AnyMember::Child(member) => member.start(launch).await,
            AnyMember::Systemd(member) => member.start(launch).await,
            AnyMember::EnvironmentFile(member) => member.start(launch).await,
            AnyMember::Unmanaged(member) => member.start(launch).await,
        }
    }
    async fn stop(&self) -> Result<(), MemberError> {
        match self {
            AnyMember::Child(member) => member.stop().await,
            AnyMember::Systemd(member) => member.stop().await,
            AnyMember::EnvironmentFile(member) => member.stop().await,
            AnyMember::Unmanaged(member) => member.stop().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_etcd_data_dir_is_moved_aside() {
        let directory = tempfile::tempdir().unwrap();
        let data_dir = directory.path().join("etcd.data");
        std::fs::create_dir_all(data_dir.join("member")).unwrap();
        let spec = MemberSpec {
            name: "m".into(),
            data_dir: data_dir.clone(),
            client_url: "http://127.0.0.1:1".into(),
            peer_url: "http://127.0.0.1:2".into(),
            extra_args: vec![],
        };
        let other = directory.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        assert!(matches!(move_data_dir_aside(&spec, &other, 1), Err(MemberError::NotTheDataDir { .. })));
        assert!(other.is_dir());
        let aside = move_data_dir_aside(&spec, &data_dir, 42).unwrap().unwrap();
        assert!(!data_dir.exists());
        assert!(aside.join("member").is_dir());
        assert_eq!(move_data_dir_aside(&spec, &data_dir, 43).unwrap(), None, "wiping twice is a no-op");
        // Not etcd's: refused and left alone; empty: nothing to move.
        std::fs::create_dir_all(&data_dir).unwrap();
        assert_eq!(move_data_dir_aside(&spec, &data_dir, 44).unwrap(), None);
        std::fs::write(data_dir.join("precious.txt"), "keep").unwrap();
        assert!(matches!(move_data_dir_aside(&spec, &data_dir, 45), Err(MemberError::NotAnEtcdDataDir { .. })));
        assert!(data_dir.join("precious.txt").is_file());
    }
}
