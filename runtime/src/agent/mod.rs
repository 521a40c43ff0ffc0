//! The agent driver: a thin pump around the core's [`lifeboat::Agent`].
//!
//! It observes (member list, per-member health, the store, peer heartbeats,
//! recovery epochs), hands the observation to the core, and carries out what the
//! core decides (save, prune, replace itself, disaster recovery), reporting each
//! outcome back. It is generic over its ports (etcd, store, local member, clock)
//! so the simulator can run the same driver.

pub mod coordination;
mod driver;
mod epochs;
#[cfg(feature = "real")]
pub mod http;
pub mod journal;
pub mod metrics;
pub mod replace;

pub use driver::quick_metas;

use crate::agent::journal::Journal;
use crate::backup::catalog;
use crate::backup::restore::{self, RestoreSettings, SnapshotChoice};
use crate::backup::save::{self, SaveSettings};
use crate::member::{self, Launch};
use crate::pipeline::PipelineSettings;
use crate::ports::{Clock, DataDirBuilder, EtcdCluster, LocalMember, SnapshotStore, StateDir};
use coordination::{EpochListing, EpochRecord, Heartbeat, JoinRecord};
use lifeboat::reconfigure::{self, Facts, StartPlan};
use lifeboat::recovery::{self, EpochOutcome, EpochStep, LocalFacts};
use lifeboat::{
    Action, Agent, Compression, Member, MemberHealth, MemberId, Observation, Outcome, Policy, Revision, SnapshotMeta,
    SnapshotName, StoreLayout, StoreObservation,
};
use replace::ReplaceSettings;
use serde_json::json;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

impl crate::exit::Classify for AgentError {
    fn exit(&self) -> crate::exit::Exit {
        use crate::exit::Exit;
        match self {
            AgentError::Store(error) => error.exit(),
            AgentError::Etcd(error) => error.exit(),
            AgentError::Member(error) | AgentError::CannotHold { source: error, .. } => error.exit(),
            AgentError::Restore(error) => error.exit(),
            AgentError::Replace(error) => error.exit(),
            AgentError::SurvivorNotSaved(error) => error.exit(),
            AgentError::HoldingForEpoch { .. }
            | AgentError::EpochNotFollowed { .. }
            | AgentError::ConditionalPutsIgnored
            | AgentError::KeyMismatch { .. }
            | AgentError::PeerHoldsNewerData { .. }
            | AgentError::MemberBusy { .. } => Exit::Refused,
            AgentError::CannotBumpRevisions { .. } => Exit::Usage,
            AgentError::StoreNotProbed | AgentError::EpochVanished | AgentError::NoVerifiedSnapshot { .. } => {
                Exit::Failure
            }
        }
    }
}

/// Why a step of the agent did not happen: typed all the way to the journal,
/// where it is written with its message.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
    #[error(transparent)]
    Etcd(#[from] crate::ports::EtcdError),
    #[error(transparent)]
    Member(#[from] member::MemberError),
    #[error(transparent)]
    Restore(#[from] restore::RestoreError),
    #[error(transparent)]
    Replace(#[from] replace::ReplaceError),
    #[error("deferred: this member holds for recovery epoch {epoch}; it is decided first")]
    HoldingForEpoch { epoch: u64 },
    #[error("deferred: recovery epoch {committed} is committed and this member's data is of epoch {local}; it restores first")]
    EpochNotFollowed { committed: u64, local: u64 },
    #[error("refused: the store ignores create-if-absent writes (If-None-Match), so two agents could both claim a recovery; use a store that honours them (AWS S3, MinIO, SeaweedFS), or recover by hand with lifeboat restore")]
    ConditionalPutsIgnored,
    #[error("refused: {detail}")]
    KeyMismatch { detail: String },
    #[error("the store has not been probed for create-if-absent writes yet")]
    StoreNotProbed,
    #[error("the recovery epoch to restore is no longer in the store")]
    EpochVanished,
    #[error("{peer} holds newer data (revision {revision}); it claims the recovery")]
    PeerHoldsNewerData { peer: String, revision: i64 },
    #[error("could not save this survivor's newer data first: {0}")]
    SurvivorNotSaved(save::SaveError),
    #[error("no snapshot up to {newest} verifies")]
    NoVerifiedSnapshot { newest: SnapshotName },
    #[error("deferred: another lifeboat process on this host is changing {name} (it holds {path}); this step runs again once it is done")]
    MemberBusy { name: String, path: std::path::PathBuf },
    #[error("recovery epoch {epoch} restores with --bump-revision {bump}, which this member's etcdutl lacks (etcd 3.5.10 or later has it): install a current etcdutl and pass it with --etcdutl")]
    CannotBumpRevisions { epoch: u64, bump: u64 },
    #[error("cannot stop etcd to join epoch {epoch}: {source}")]
    CannotHold { epoch: u64, source: member::MemberError },
}

pub use crate::host::clock::SystemClock;
pub use crate::host::files::{read_epoch, read_holding};

/// One configured member of the cluster: stable across incarnations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfiguredMember {
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
}

#[derive(Clone, Debug)]
pub struct AgentSettings {
    pub cluster: String,
    pub policy: Policy,
    pub compression: Compression,
    pub pipeline: PipelineSettings,
    /// Every member, in `--initial-cluster` order; the bootstrap cluster and the
    /// cluster a disaster recovery restores.
    pub members: Vec<ConfiguredMember>,
    pub initial_cluster_token: String,
    pub state_dir: PathBuf,
    /// Start and restart the local etcd (child mode); off when systemd does it.
    pub supervise: bool,
    /// `reconfigure` in a unit's ExecStartPre: etcd starts after us, so a replaced
    /// member joins as a voter (a learner would need a promotion nobody waits for).
    pub prepare_only: bool,
    pub dry_run: bool,
}

impl AgentSettings {
    /// How this agent's saves (periodic, a survivor's, a log replay's) are written.
    pub fn save_settings(&self) -> SaveSettings {
        SaveSettings { cluster: self.cluster.clone(), compression: self.compression, pipeline: self.pipeline.clone() }
    }
    pub fn initial_cluster(&self) -> String {
        self.members.iter().map(|member| format!("{}={}", member.name, member.peer_url)).collect::<Vec<_>>().join(",")
    }
    /// Three missed checks, plus the store's timestamp resolution: S3 reports
    /// `LastModified` in whole seconds, so two heartbeats written 100 ms apart can
    /// look a second apart. Too short a window makes fresh peers look dead, and an
    /// isolated agent would then recover a healthy cluster (split brain).
    fn heartbeat_freshness_ms(&self) -> u64 {
        3 * self.policy.check_interval_ms + 2_000
    }
}

pub struct Driver<E, S, L, C, B> {
    settings: AgentSettings,
    builder: B,
    etcd: E,
    store: S,
    layout: StoreLayout,
    local: L,
    clock: C,
    agent: Agent,
    journal: Journal,
    /// The recovery epoch of the local data (persisted in the state dir).
    epoch: u64,
    local_id: Option<MemberId>,
    /// The last epoch-protocol step journaled, so a wait is journaled once.
    last_step: EpochStep,
    /// Malformed coordination records already journaled.
    malformed_seen: Vec<String>,
    /// The cluster's alarms at the last observation, journaled when they change.
    alarms: Vec<String>,
    /// The newest committed recovery epoch any listing showed (0: none).
    newest_committed_seen: u64,
    /// Whether the store honours create-if-absent; `None` until probed (the first
    /// round the store answers). Disaster recovery runs only on `Some(true)`.
    conditional_puts: Option<bool>,
    /// Set at the probe when the store holds backups this agent's client-side key
    /// cannot open (another key, or a key while none is configured): then it claims
    /// no recovery, which it could neither verify nor make the others read.
    key_mismatch: Option<String>,
    /// What `/metrics`, `/healthz` and `/readyz` answer with.
    metrics: std::sync::Arc<metrics::AgentMetrics>,
    /// The epoch files in `--state-dir`.
    state: crate::host::files::FsStateDir,
}

/// Where a recovery stands after this agent's part in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// This member was restored into the epoch.
    Applied,
    /// The claim waits for votes (this member joined it, or is about to).
    Pending,
}

/// Synthetic IDs for configured members until the cluster tells the real ones.
fn configured_members(settings: &AgentSettings) -> Vec<Member> {
    settings
        .members
        .iter()
        .enumerate()
        .map(|(index, member)| Member {
            id: MemberId(index as u64 + 1),
            name: member.name.clone(),
            peer_urls: vec![member.peer_url.clone()],
            client_urls: vec![member.client_url.clone()],
            is_learner: false,
        })
        .collect()
}
