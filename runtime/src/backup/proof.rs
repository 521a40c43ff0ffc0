//! Proof that a backup restores: what a trial restore showed (`trial`, real
//! build only, runs one), and the small record that marks a snapshot proven in
//! the store, `<name>.trial.json` beside its manifest, written create-if-absent
//! once a trial's HashKV matched the source's. A proven snapshot is listed as
//! such, retention always keeps the newest one, and the agent's
//! `lifeboat_last_proven_*` metrics say how old the newest proof is.

use crate::ports::{SnapshotStore, StoreError};
use bytes::Bytes;
use lifeboat::{Millis, SnapshotName, StoreLayout};
use serde::{Deserialize, Serialize};

/// What the trial showed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum TrialOutcome {
    /// The restored member's HashKV equals the source's: the backup restores.
    Proven { hash: u32, revision: i64 },
    /// It restored and started, but holds other data than the source did.
    Mismatch { expected: u32, actual: u32, revision: i64 },
    /// It restored and started; the manifest has no source hash to compare with
    /// (an older lifeboat, or an etcd that refused HashKV at save time).
    StartedWithoutReference { actual: u32, revision: i64 },
    /// The source was compacted between the snapshot and its HashKV, so the two
    /// hashes cover different histories and cannot be compared.
    Inconclusive { source_compaction: i64, restored_compaction: i64 },
}

impl TrialOutcome {
    /// Whether this counts as proof that the backup restores.
    pub fn proven(&self) -> bool {
        matches!(self, TrialOutcome::Proven { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            TrialOutcome::Proven { hash, revision } => {
                format!("trial restore: HashKV {hash:#010x} at revision {revision} matches the source's")
            }
            TrialOutcome::Mismatch { expected, actual, revision } => format!(
                "trial restore: HashKV {actual:#010x} at revision {revision}, the source had {expected:#010x}: the snapshot does not hold what the cluster held"
            ),
            TrialOutcome::StartedWithoutReference { actual, revision } => format!(
                "trial restore: started, HashKV {actual:#010x} at revision {revision}; the manifest has no source hash to compare with"
            ),
            TrialOutcome::Inconclusive { source_compaction, restored_compaction } => format!(
                "trial restore: inconclusive, the source compacted to {source_compaction} and the restore to {restored_compaction}"
            ),
        }
    }
}

/// The record that marks a snapshot proven.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofRecord {
    pub format: u32,
    pub snapshot: String,
    pub revision: i64,
    /// etcd's HashKV of the restored member, equal to the source's at save time.
    pub hash: u32,
    pub proven_at: String,
    pub proven_ms: Millis,
    /// The lifeboat version that ran the trial.
    pub prover: String,
}

impl ProofRecord {
    pub const FORMAT: u32 = 1;
}

/// Writes `name`'s proof when `outcome` proves it: create-if-absent, so a
/// second trial of the same snapshot changes nothing. `Ok(false)`: nothing
/// written (the outcome proves nothing).
pub async fn record<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    name: &SnapshotName,
    outcome: &TrialOutcome,
    now: Millis,
) -> Result<bool, StoreError> {
    let TrialOutcome::Proven { hash, revision } = outcome else { return Ok(false) };
    let proof = ProofRecord {
        format: ProofRecord::FORMAT,
        snapshot: name.to_string(),
        revision: *revision,
        hash: *hash,
        proven_at: now.to_rfc3339(),
        proven_ms: now,
        prover: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
    };
    let body = serde_json::to_vec_pretty(&proof).unwrap_or_default();
    match store.put_small(&layout.proof_key(name), Bytes::from(body), true).await {
        Ok(()) | Err(StoreError::AlreadyExists { .. }) => Ok(true),
        Err(error) => Err(error),
    }
}
