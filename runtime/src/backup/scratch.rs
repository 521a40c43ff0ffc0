//! A throwaway one-member etcd on loopback, in a scratch dir that goes away with
//! it: what a trial restore starts to compare hashes, and what a log replay
//! writes the logged revisions into. Never touches a real member's data dir.

use crate::backup::restore::{RestoreSettings, SnapshotChoice};
use crate::member::{ChildMember, Launch, MemberError, MemberSpec};
use crate::ports::LocalMember;
use std::path::{Path, PathBuf};

/// Bytes free for an unprivileged writer on the filesystem of `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let text = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a valid C string and a buffer of the right type; statvfs fills it or fails.
    let status = unsafe { libc::statvfs(text.as_ptr(), stats.as_mut_ptr()) };
    if status != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let stats = unsafe { stats.assume_init() };
    // u64 on 64-bit Linux; narrower on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    Some(u64::from(stats.f_bavail).saturating_mul(u64::from(stats.f_frsize)))
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, std::io::Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The identity of a scratch member: its name, loopback URLs and token.
#[derive(Clone, Debug)]
pub struct ScratchMember {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub token: String,
    /// Where its data dir and log go.
    pub dir: PathBuf,
}

impl ScratchMember {
    pub fn new(dir: &Path, name: &str, token: &str) -> Result<ScratchMember, std::io::Error> {
        Ok(ScratchMember {
            name: name.to_owned(),
            client_url: format!("http://127.0.0.1:{}", free_port()?),
            peer_url: format!("http://127.0.0.1:{}", free_port()?),
            token: token.to_owned(),
            dir: dir.to_owned(),
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn initial_cluster(&self) -> String {
        format!("{}={}", self.name, self.peer_url)
    }

    /// What `etcdutl snapshot restore` needs to build this member's data dir.
    pub fn restore_settings(&self, snapshot: SnapshotChoice, cluster: &str) -> RestoreSettings {
        RestoreSettings {
            data_dir: self.data_dir(),
            name: self.name.clone(),
            initial_cluster: self.initial_cluster(),
            initial_advertise_peer_urls: self.peer_url.clone(),
            initial_cluster_token: self.token.clone(),
            snapshot,
            cluster: cluster.to_owned(),
            // Compared and replayed at the snapshot's own revisions.
            bump_revision: None,
        }
    }

    /// Starts etcd on the built data dir; stop it with `LocalMember::stop`.
    pub async fn start(&self, etcd: &Path, extra_args: Vec<String>) -> Result<ChildMember, MemberError> {
        let spec = MemberSpec {
            name: self.name.clone(),
            data_dir: self.data_dir(),
            client_url: self.client_url.clone(),
            peer_url: self.peer_url.clone(),
            extra_args,
        };
        let member = ChildMember::new(spec, etcd.to_owned(), Some(self.log()));
        member
            .start(&Launch {
                initial_cluster: self.initial_cluster(),
                initial_cluster_state: "existing".into(),
                initial_cluster_token: self.token.clone(),
            })
            .await?;
        Ok(member)
    }

    /// The last lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        std::fs::read_to_string(self.log())
            .map(|text| text.lines().rev().take(5).collect::<Vec<_>>().join(" | "))
            .unwrap_or_default()
    }
}
