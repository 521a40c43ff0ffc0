//! The ports: every trait the driver and the save / restore / replace machinery
//! talk to the world through, in one file. Each says which adapter implements
//! it in production and which in the simulator (`sim/src/ports.rs`).
//!
//! | port | production | simulator |
//! | --- | --- | --- |
//! | [`EtcdCluster`] | `etcd::EtcdClient` (etcd-client) | `SimEtcd` |
//! | [`SnapshotStore`], [`Upload`], [`ByteSource`] | `store::{S3Store, FileStore, AnyStore}` | `SimStore` |
//! | [`LocalMember`] | `member::{ChildMember, SystemdMember, EnvironmentFileMember, UnmanagedMember}` | `SimMember` |
//! | [`DataDirBuilder`] | `backup::restore::Etcdutl` (etcdutl) | `SimBuilder` |
//! | [`Clock`] | `host::clock::SystemClock` | `SimClock` (virtual time, skewed per agent) |
//! | [`StateDir`] | `host::files::FsStateDir` | the same, on each simulated machine's scratch dir |

use crate::backup::restore::{RestoreError, RestoreSettings};
use crate::exit::{Classify, Exit};
use crate::member::{Launch, MemberError, MemberSpec};
use bytes::Bytes;
use lifeboat::{Member, MemberId, Millis, Revision};
use std::path::Path;

/// A boxed error for byte streams, which may fail in either adapter.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A stream of byte chunks, pulled one at a time so memory stays bounded.
pub trait ByteSource {
    /// The next chunk; `Ok(None)` at the end of the stream.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BoxError>;
}

/// What `endpoint status` says of one member.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub member_id: MemberId,
    pub cluster_id: u64,
    pub leader: MemberId,
    pub revision: Revision,
    pub raft_index: u64,
    pub raft_term: u64,
    pub db_size_bytes: i64,
    pub version: String,
    pub is_learner: bool,
    pub errors: Vec<String>,
}

/// What `endpoint health` says of one member.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EndpointHealth {
    pub endpoint: String,
    pub healthy: bool,
    pub took_ms: u64,
    /// Why it is unhealthy.
    pub error: Option<String>,
    /// The cluster's active alarms as this member lists them ("NOSPACE on member
    /// 8e9e05c52164694d"): they need a human, but do not make the member unhealthy.
    pub alarms: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoint answered ({endpoints}): {detail}; check --endpoints and that etcd is running")]
    Unreachable { endpoints: String, detail: String },
    #[error("etcd {operation} failed on {endpoint}: {detail}")]
    Request { operation: &'static str, endpoint: String, detail: String },
    #[error("etcd {operation} timed out after {timeout_ms} ms on {endpoint}")]
    Timeout { operation: &'static str, endpoint: String, timeout_ms: u64 },
    #[error("the cluster has no leader (no quorum): {detail}")]
    NoQuorum { detail: String },
    #[error("TLS with etcd failed ({endpoints}): {detail}; check --cacert (the CA that signed etcd's server certificates, whose names must include the endpoint's host) and --cert/--key (a client certificate that CA signed, when etcd runs with --client-cert-auth)")]
    Tls { endpoints: String, detail: String },
    #[error("etcd refused the credentials ({endpoints}): {detail}; check --user and the password in LIFEBOAT_PASSWORD or --password-file")]
    Auth { endpoints: String, detail: String },
}

impl Classify for EtcdError {
    fn exit(&self) -> Exit {
        Exit::Etcd
    }
}

/// The etcd cluster, as lifeboat needs it.
pub trait EtcdCluster {
    type Snapshot: ByteSource;
    fn endpoints(&self) -> &[String];
    async fn member_list(&self) -> Result<Vec<Member>, EtcdError>;
    async fn endpoint_status(&self, endpoint: &str) -> Result<EndpointStatus, EtcdError>;
    async fn endpoint_health(&self, endpoint: &str) -> EndpointHealth;
    /// Streams a snapshot from one member, exactly as `etcdctl snapshot save` receives it
    /// (the database followed by its sha256).
    async fn snapshot(&self, endpoint: &str) -> Result<Self::Snapshot, EtcdError>;
    /// Adds a member (as a learner when asked); returns it and the new member list.
    async fn member_add(&self, peer_urls: &[String], learner: bool) -> Result<(Member, Vec<Member>), EtcdError>;
    async fn member_remove(&self, id: MemberId) -> Result<(), EtcdError>;
    async fn member_promote(&self, id: MemberId) -> Result<(), EtcdError>;
    /// Takes a cluster-wide lock held by a lease of `ttl_seconds`: `None` when another
    /// holder has it. The lease expires by itself if the holder dies.
    async fn try_lock(&self, key: &str, holder: &str, ttl_seconds: i64) -> Result<Option<i64>, EtcdError>;
    async fn unlock(&self, lease: i64) -> Result<(), EtcdError>;
    /// Renews a lock's lease once: `false` when the lease no longer exists.
    async fn keep_alive(&self, lease: i64) -> Result<bool, EtcdError>;
    /// etcd's `HashKV` of one member at `revision` (what a trial restore compares).
    async fn hash_kv(&self, endpoint: &str, revision: lifeboat::Revision) -> Result<lifeboat::KvHash, EtcdError>;
}

/// An object as the store lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size_bytes: u64,
    /// Milliseconds since the Unix epoch, when the store reports it.
    pub modified_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{location}: not found")]
    NotFound { location: String },
    #[error("bucket {bucket:?} does not exist at {endpoint}: create it, or fix --store")]
    NoSuchBucket { bucket: String, endpoint: String },
    #[error("{location} already exists (a conditional write lost to another writer)")]
    AlreadyExists { location: String },
    #[error(
        "access to {location} denied ({detail}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy"
    )]
    AccessDenied { location: String, detail: String },
    #[error(
        "store at {endpoint} is unreachable ({detail}): check --s3-endpoint, the network, or that the S3 server is up"
    )]
    Unreachable { endpoint: String, detail: String },
    #[error("TLS with the store at {endpoint} failed ({detail}): if its certificate comes from a private CA, pass that CA's PEM certificate with --s3-ca-file; check that the certificate names the endpoint's host")]
    Tls { endpoint: String, detail: String },
    #[error("{operation} {location} failed: {detail}")]
    Request { operation: &'static str, location: String, detail: String },
    #[error("HTTPS to {endpoint} needs CA certificates and none were found (system store, SSL_CERT_FILE, SSL_CERT_DIR): install the ca-certificates package, or mount a CA bundle and set SSL_CERT_FILE to it")]
    NoCaRoots { endpoint: String },
    #[error("cannot trust the CA in {path} for {endpoint}: {detail}; --s3-ca-file takes the PEM certificate of the CA that signed the S3 endpoint's certificate")]
    CaFile { path: String, endpoint: String, detail: String },
    #[error("cannot use the SSE-C key in {path}: {detail}; --s3-sse-c-key-file takes a file of exactly 32 bytes, raw or base64 (e.g. `head -c 32 /dev/urandom > key`)")]
    SseKeyFile { path: String, detail: String },
    #[error("the store refused {location} ({detail}): it is encrypted with a customer key (SSE-C) that this request did not carry or that does not match; pass --s3-sse-c-key-file with the key the backups were written with (if none was, check the credentials and the bucket policy)")]
    EncryptedWithOtherKey { location: String, detail: String },
    #[error("{operation} {path} failed: {source}")]
    Io { operation: &'static str, path: String, source: std::io::Error },
    #[error("cannot use the client-side encryption key from {what}: {detail}; it takes 32 bytes, raw, hex or base64 (e.g. `head -c 32 /dev/urandom > key`)")]
    KeyFile { what: String, detail: String },
    #[error("{location} is larger than {limit} bytes: not a record lifeboat wrote; remove it or fix the store prefix")]
    TooLarge { location: String, limit: usize },
    /// Client-side encryption refused the object (`store::sealed`): another key, no
    /// key, altered bytes. Its content is not used.
    #[error("{location}: {detail}")]
    Sealed {
        location: String,
        detail: String,
        /// Written with another key, or with one while none is configured: the
        /// configuration is wrong, not the object (prune then deletes nothing).
        other_key: bool,
    },
}

impl StoreError {
    /// The object is there but its content is not lifeboat's to use (too large, or
    /// refused by client-side encryption): a reader treats it as malformed data and
    /// skips it, never as an unreachable store.
    pub fn is_bad_content(&self) -> bool {
        matches!(self, StoreError::TooLarge { .. } | StoreError::Sealed { .. })
    }
}

impl Classify for StoreError {
    fn exit(&self) -> Exit {
        match self {
            StoreError::NotFound { .. } | StoreError::NoSuchBucket { .. } => Exit::NotFound,
            StoreError::CaFile { .. } | StoreError::SseKeyFile { .. } | StoreError::KeyFile { .. } => Exit::Usage,
            StoreError::Sealed { .. } => Exit::Corrupt,
            _ => Exit::Store,
        }
    }
}

/// One part of a multipart upload. Parts have a fixed size except the last, so
/// `offset` is what a local file needs and S3 ignores.
#[derive(Clone, Debug)]
pub struct Part {
    /// 1-based, as S3 numbers them.
    pub number: i32,
    pub offset: u64,
    pub bytes: Bytes,
    /// The object's last part: client-side encryption marks its last chunk final,
    /// so an object cut short at a chunk boundary is refused.
    pub last: bool,
}

/// An object being written. Nothing is visible under its key until `complete`.
pub trait Upload {
    async fn put_part(&self, part: Part) -> Result<(), StoreError>;
    /// Makes the object visible under its key, atomically.
    async fn complete(self) -> Result<ObjectInfo, StoreError>;
    /// Drops every uploaded part; the key is left as it was.
    async fn abort(self);
}

/// The largest small object [`SnapshotStore::get_small`] reads.
pub const SMALL_OBJECT_MAX: usize = 1 << 20;

/// Where snapshots and coordination records live (S3, a directory, or simulated).
pub trait SnapshotStore {
    type Upload: Upload;
    type Reader: ByteSource;
    /// A human-readable location of `key`, e.g. `s3://bucket/key`.
    fn location(&self, key: &str) -> String;
    async fn begin_upload(&self, key: &str) -> Result<Self::Upload, StoreError>;
    /// Writes a small object. With `if_absent`, fails with `AlreadyExists` instead of
    /// overwriting (S3 `If-None-Match: *`), so concurrent writers cannot clobber each other.
    async fn put_small(&self, key: &str, body: Bytes, if_absent: bool) -> Result<(), StoreError>;
    async fn get(&self, key: &str) -> Result<Self::Reader, StoreError>;
    /// Reads a small object (a manifest, a heartbeat, an epoch record) whole. What
    /// the store holds is untrusted: past [`SMALL_OBJECT_MAX`] bytes it is refused,
    /// never buffered.
    async fn get_small(&self, key: &str) -> Result<Bytes, StoreError> {
        self.get_bounded(key, SMALL_OBJECT_MAX).await
    }
    /// Reads an object whole, refusing it past `limit` bytes (a log segment).
    async fn get_bounded(&self, key: &str, limit: usize) -> Result<Bytes, StoreError> {
        let mut reader = self.get(key).await?;
        let mut body = Vec::new();
        loop {
            match reader.next_chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > limit => {
                    return Err(StoreError::TooLarge { location: self.location(key), limit })
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => return Ok(Bytes::from(body)),
                Err(error) => {
                    return Err(StoreError::Request {
                        operation: "read",
                        location: self.location(key),
                        detail: error.to_string(),
                    })
                }
            }
        }
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;
    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;
    /// Copies within the store; the destination appears whole or not at all.
    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError>;
    /// Deleting a missing key is not an error: deletes are idempotent.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// The ID of the client-side encryption key objects are sealed with (recorded
    /// in each manifest); `None` when the store writes plain objects.
    fn key_id(&self) -> Option<String> {
        None
    }
}

/// The local etcd member: start it with given launch settings, stop it, and
/// know its spec. Production: `member::{ChildMember, SystemdMember,
/// EnvironmentFileMember, UnmanagedMember}`; the simulator: `SimMember`.
pub trait LocalMember {
    fn spec(&self) -> &MemberSpec;
    async fn is_running(&self) -> bool;
    async fn start(&self, launch: &Launch) -> Result<(), MemberError>;
    async fn stop(&self) -> Result<(), MemberError>;
}

/// Time as the driver sees it: two clocks, because a wall clock can step (NTP, an
/// operator, a VM resumed) and the core's timers must not. Production: `host::clock::SystemClock`
/// (the system clock and a monotonic one); the simulator: virtual time, skewed and stepped per
/// agent for `now` only.
pub trait Clock {
    /// Wall-clock time: snapshot names, journal timestamps, moved-aside suffixes.
    fn now(&self) -> Millis;
    /// Time that never goes back, for the core's timers (from an arbitrary origin).
    fn monotonic(&self) -> Millis;
    /// Sleeps until `deadline` on the monotonic clock.
    async fn sleep_until(&self, deadline: Millis);
}

/// Builds a member data dir from a snapshot file that has been verified:
/// `etcdutl snapshot restore` in production (`backup::restore::Etcdutl`), the simulated etcd's own builder in
/// the simulator.
pub trait DataDirBuilder {
    /// Fails early, before any download, when the builder cannot run.
    fn ready(&self) -> Result<(), RestoreError>;
    /// Builds a data dir at `into`, which does not exist yet.
    async fn build(&self, snapshot: &Path, into: &Path, settings: &RestoreSettings) -> Result<(), RestoreError>;
    /// Whether `build` can bump revisions (`RestoreSettings::bump_revision`).
    async fn supports_bump(&self) -> bool;
    /// Extends `snapshot` with the revision log after it, when the store holds
    /// one that reaches further, and saves the result as a new versioned
    /// snapshot: what a disaster recovery then restores, so it loses about one
    /// log flush of writes instead of one snapshot interval. `Ok(None)`: nothing
    /// to add, or this builder replays no log (the simulator's, for now).
    async fn extend_with_log<S: SnapshotStore>(
        &self,
        _store: &S,
        _layout: &lifeboat::StoreLayout,
        _snapshot: &lifeboat::SnapshotName,
        _save: &crate::backup::save::SaveSettings,
    ) -> Result<Option<LogExtension>, ExtendError> {
        Ok(None)
    }
    /// The revision the data dir of a *stopped* member holds (`None`: no database in
    /// it). A member that stops for a recovery claim votes with this, not with what
    /// its etcd answered before it stopped: writes may land in between.
    async fn data_revision(&self, data_dir: &Path) -> Result<Option<lifeboat::Revision>, RestoreError>;
}

/// Why a log replay did not extend a snapshot: the store did not answer (the
/// claim waits for the next round: it needs the store anyway), or anything else
/// (no etcd binary, a snapshot etcdutl refuses: the recovery goes on without it).
#[derive(Debug, thiserror::Error)]
pub enum ExtendError {
    #[error(transparent)]
    Store(StoreError),
    #[error("{0}")]
    Replay(BoxError),
}

/// A snapshot that a log replay extended (see [`DataDirBuilder::extend_with_log`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LogExtension {
    pub name: lifeboat::SnapshotName,
    pub revisions_applied: u64,
    pub reached: i64,
    /// Why the replay stopped before the log's end (a damaged segment), if it did.
    pub stopped_early: Option<String>,
}

/// The agent's own state on this host, which a crash must not forget: the
/// recovery epoch its member's data belongs to, and the epoch it holds the member
/// stopped for. Production: `host::files::FsStateDir`; the simulator runs the same
/// adapter on each machine's scratch dir.
pub trait StateDir {
    /// 0 before any recovery.
    fn epoch(&self) -> u64;
    fn set_epoch(&self, epoch: u64) -> Result<(), MemberError>;
    fn holding(&self) -> Option<u64>;
    fn set_holding(&self, epoch: Option<u64>) -> Result<(), MemberError>;
}
