//! A trial restore proves a backup restores: the snapshot is downloaded and
//! checked as for any restore, built into a scratch data dir with etcdutl, started
//! as a one-member etcd on loopback, and its `HashKV` at the snapshot's revision
//! is compared with the source member's, taken at save time (the manifest's
//! `kv_hash`). Equal hashes mean the restored member holds exactly the history
//! the source held up to that revision. The scratch dir goes away afterwards,
//! whatever happened; free space is checked first.

use crate::backup::restore::{self, Etcdutl, RestoreError, SnapshotChoice};
use crate::backup::scratch::{free_bytes, ScratchMember};
use crate::etcd::EtcdClient;
use crate::exit::{Classify, Exit};
use crate::member::MemberError;
use crate::ports::{EtcdCluster, LocalMember, SnapshotStore};
use lifeboat::{KvHash, Manifest, StoreLayout};
use std::path::PathBuf;
use std::time::Duration;

/// Where and with what a trial runs.
#[derive(Clone, Debug)]
pub struct TrialSettings {
    /// The etcd binary to start the restored member with.
    pub etcd: PathBuf,
    pub etcdutl: PathBuf,
    /// The scratch dir is created under this one (default: the system's temp dir).
    pub scratch_parent: PathBuf,
    /// How long the restored member may take to answer.
    pub start_timeout: Duration,
    /// The logical cluster name (for the restore's foreign-cluster check).
    pub cluster: String,
}

pub use crate::backup::proof::TrialOutcome;

#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error("not enough space for a trial restore in {path}: {needed} bytes needed, {available} free; pass --scratch-dir on a larger filesystem")]
    NoSpace { path: PathBuf, needed: u64, available: u64 },
    #[error("cannot create a scratch dir in {path}: {source}; pass --scratch-dir with a writable directory")]
    Scratch { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("cannot start the restored member: {0}; pass --etcd with the path of the etcd binary")]
    Start(#[from] MemberError),
    #[error("the restored member did not answer within {seconds} s ({detail}); its log: {log}")]
    NoAnswer { seconds: u64, detail: String, log: String },
}

impl Classify for TrialError {
    fn exit(&self) -> Exit {
        match self {
            TrialError::Restore(error) => error.exit(),
            TrialError::Start(_) | TrialError::Scratch { .. } => Exit::Usage,
            TrialError::NoSpace { .. } | TrialError::NoAnswer { .. } => Exit::Failure,
        }
    }
}

/// Restores `manifest`'s snapshot into scratch space, starts it, and compares.
pub async fn trial_restore<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    manifest: &Manifest,
    settings: &TrialSettings,
) -> Result<TrialOutcome, TrialError> {
    crate::progress::phase("trial restore into a scratch member");
    // The download and the restored db, each up to the snapshot's size, plus slack.
    let needed = manifest.size_bytes.saturating_mul(2).saturating_add(64 << 20);
    let available = free_bytes(&settings.scratch_parent).unwrap_or(u64::MAX);
    if available < needed {
        return Err(TrialError::NoSpace { path: settings.scratch_parent.clone(), needed, available });
    }
    let scratch = tempfile::Builder::new()
        .prefix("lifeboat-trial-")
        .tempdir_in(&settings.scratch_parent)
        .map_err(|source| TrialError::Scratch { path: settings.scratch_parent.clone(), source })?;
    let scratch_error = |source: std::io::Error| TrialError::Scratch { path: scratch.path().to_owned(), source };
    let member = ScratchMember::new(scratch.path(), "lifeboat-trial", &format!("lifeboat-trial-{}", manifest.name))
        .map_err(scratch_error)?;
    let restore_settings = member.restore_settings(SnapshotChoice::Named(manifest.name.clone()), &settings.cluster);
    restore::restore(store, layout, &restore_settings, &Etcdutl(settings.etcdutl.clone())).await?;
    let client_url = member.client_url.clone();
    let running = member.start(&settings.etcd, Vec::new()).await?;
    let outcome = measure(&client_url, manifest, settings.start_timeout).await;
    if let Err(error) = running.stop().await {
        tracing::warn!(error = %error, "could not stop the trial member; it is killed with its scratch dir");
    }
    outcome.map_err(|detail| TrialError::NoAnswer {
        seconds: settings.start_timeout.as_secs(),
        detail,
        log: member.log_tail(),
    })
}

/// Waits for the restored member, then compares its HashKV with the manifest's.
async fn measure(client_url: &str, manifest: &Manifest, timeout: Duration) -> Result<TrialOutcome, String> {
    let client = EtcdClient::new(vec![client_url.to_owned()], Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + timeout;
    let actual: KvHash = loop {
        match client.hash_kv(client_url, manifest.revision).await {
            Ok(hash) => break hash,
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let revision = manifest.revision.0;
    Ok(match manifest.kv_hash {
        None => TrialOutcome::StartedWithoutReference { actual: actual.hash, revision },
        Some(expected) if expected.compact_revision != actual.compact_revision => TrialOutcome::Inconclusive {
            source_compaction: expected.compact_revision,
            restored_compaction: actual.compact_revision,
        },
        Some(expected) if expected.hash == actual.hash => TrialOutcome::Proven { hash: actual.hash, revision },
        Some(expected) => TrialOutcome::Mismatch { expected: expected.hash, actual: actual.hash, revision },
    })
}
