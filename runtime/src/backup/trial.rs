//! A trial restore proves a backup restores: the snapshot is downloaded and
//! checked as for any restore, built into a scratch data dir with etcdutl, started
//! as a one-member etcd on loopback, and its `HashKV` at the snapshot's revision
//! is compared with the source member's, taken at save time (the manifest's
//! `kv_hash`). Equal hashes mean the restored member holds exactly the history
//! the source held up to that revision. The scratch dir goes away afterwards,
//! whatever happened; free space is checked first.

use crate::backup::restore::{self, Etcdutl, RestoreError, SnapshotChoice};
use crate::backup::scratch::{free_bytes, NotReady, ScratchMember};
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
    #[error("the restored member's etcd exited before it answered; its log: {log}")]
    Exited { log: String },
}

impl Classify for TrialError {
    fn exit(&self) -> Exit {
        match self {
            TrialError::Restore(error) => error.exit(),
            TrialError::Start(_) | TrialError::Scratch { .. } => Exit::Usage,
            TrialError::NoSpace { .. } | TrialError::NoAnswer { .. } | TrialError::Exited { .. } => Exit::Failure,
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
    let mut member = ScratchMember::new(scratch.path(), "lifeboat-trial", &format!("lifeboat-trial-{}", manifest.name))
        .map_err(scratch_error)?;
    let restore_settings = member.restore_settings(SnapshotChoice::Named(manifest.name.clone()), &settings.cluster);
    restore::restore(store, layout, &restore_settings, &Etcdutl(settings.etcdutl.clone())).await?;
    let (running, actual) = member
        .start_ready(&settings.etcd, Vec::new(), settings.start_timeout, |url| async move {
            let client = EtcdClient::new(vec![url.clone()], Duration::from_secs(5));
            client.hash_kv(&url, manifest.revision).await.map_err(|error| error.to_string())
        })
        .await
        .map_err(|failure| match failure {
            NotReady::Start(error) => TrialError::Start(error),
            NotReady::Exited { log } => TrialError::Exited { log },
            NotReady::NoAnswer { seconds, detail, log } => TrialError::NoAnswer { seconds, detail, log },
        })?;
    if let Err(error) = running.stop().await {
        tracing::warn!(error = %error, "could not stop the trial member; it is killed with its scratch dir");
    }
    Ok(judge(manifest, &actual))
}

/// The restored member's HashKV at the snapshot's revision against the manifest's.
fn judge(manifest: &Manifest, actual: &KvHash) -> TrialOutcome {
    let revision = manifest.revision.0;
    match manifest.kv_hash {
        None => TrialOutcome::StartedWithoutReference { actual: actual.hash, revision },
        Some(expected) if expected.compact_revision != actual.compact_revision => TrialOutcome::Inconclusive {
            source_compaction: expected.compact_revision,
            restored_compaction: actual.compact_revision,
        },
        Some(expected) if expected.hash == actual.hash => TrialOutcome::Proven { hash: actual.hash, revision },
        Some(expected) => TrialOutcome::Mismatch { expected: expected.hash, actual: actual.hash, revision },
    }
}
