//! A throwaway one-member etcd on loopback, in a scratch dir that goes away with
//! it: what a trial restore starts to compare hashes, and what a log replay
//! writes the logged revisions into. Never touches a real member's data dir.

use crate::backup::restore::{RestoreSettings, SnapshotChoice};
use crate::member::{ChildMember, Launch, MemberError, MemberSpec};
use crate::ports::LocalMember;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How many times a scratch member moves to fresh ports. Its ports are chosen free, then
/// released for etcd to bind; in between, an outgoing connection or another listener on
/// the host may take one (seen in CI: `bind: address already in use`), and etcd exits.
const PORT_ATTEMPTS: u32 = 5;

/// Why a scratch member did not come up.
#[derive(Debug)]
pub enum NotReady {
    /// etcd could not be started at all (binary missing, log not writable).
    Start(MemberError),
    /// etcd exited before it answered: the tail of its log says why.
    Exited { log: String },
    /// It did not answer within `seconds`: the last error, and the tail of its log.
    NoAnswer { seconds: u64, detail: String, log: String },
}

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

/// A client and a peer URL on loopback ports nobody listens on right now.
fn loopback_urls() -> Result<(String, String), std::io::Error> {
    let free_port = || Ok::<_, std::io::Error>(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    Ok((format!("http://127.0.0.1:{}", free_port()?), format!("http://127.0.0.1:{}", free_port()?)))
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
        let (client_url, peer_url) = loopback_urls()?;
        Ok(ScratchMember { name: name.to_owned(), client_url, peer_url, token: token.to_owned(), dir: dir.to_owned() })
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

    /// Starts etcd on the built data dir and waits, up to `timeout`, until `ready`
    /// succeeds against its client URL; returns the running member (stop it with
    /// `LocalMember::stop`) and what `ready` gave. A port taken between its choice and
    /// etcd's bind moves the member to fresh ports (a one-member cluster restarts on any
    /// ports); any other exit is reported at once with the log, not after the timeout.
    pub async fn start_ready<T, Ready>(
        &mut self,
        etcd: &Path,
        extra_args: Vec<String>,
        timeout: Duration,
        mut ready: impl FnMut(String) -> Ready,
    ) -> Result<(ChildMember, T), NotReady>
    where
        Ready: std::future::Future<Output = Result<T, String>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut attempt = 1;
        loop {
            let logged_before = std::fs::metadata(self.log()).map(|metadata| metadata.len()).unwrap_or(0);
            let running = self.start(etcd, extra_args.clone()).await.map_err(NotReady::Start)?;
            let failure = loop {
                match ready(self.client_url.clone()).await {
                    Ok(value) => return Ok((running, value)),
                    Err(_) if !running.is_running().await => break None,
                    Err(detail) if tokio::time::Instant::now() >= deadline => break Some(detail),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            match failure {
                None if attempt < PORT_ATTEMPTS && self.lost_a_port(logged_before) => {
                    tracing::info!(client = %self.client_url, peer = %self.peer_url, "a port of the scratch member was taken before etcd bound it; moving to fresh ports");
                    (self.client_url, self.peer_url) = loopback_urls().map_err(|source| {
                        NotReady::Start(MemberError::Io {
                            operation: "choose loopback ports for",
                            path: self.dir.clone(),
                            source,
                        })
                    })?;
                    attempt += 1;
                }
                None => return Err(NotReady::Exited { log: self.log_tail() }),
                Some(detail) => {
                    if let Err(error) = running.stop().await {
                        tracing::warn!(error = %error, "could not stop the scratch member; it is killed with its scratch dir");
                    }
                    return Err(NotReady::NoAnswer { seconds: timeout.as_secs(), detail, log: self.log_tail() });
                }
            }
        }
    }

    /// Whether etcd's output since `offset` says a port was taken.
    fn lost_a_port(&self, offset: u64) -> bool {
        std::fs::read(self.log())
            .map(|bytes| {
                let from = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                String::from_utf8_lossy(bytes.get(from..).unwrap_or_default()).contains("address already in use")
            })
            .unwrap_or(false)
    }

    /// Starts etcd on the built data dir.
    async fn start(&self, etcd: &Path, extra_args: Vec<String>) -> Result<ChildMember, MemberError> {
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
