//! Knobs of the recovery logic, with the defaults DESIGN.md names.

use serde::{Deserialize, Serialize};

/// How often to look, how long to wait before acting, how much to keep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Policy {
    /// A health check of every member this often.
    pub check_interval_ms: u64,
    /// A member is failed after this many successive failed checks (K); quorum is
    /// lost for good after this many successive checks without it.
    pub failures_max: u32,
    /// ... and only once those checks span at least this long. etcd heals itself
    /// within seconds after a partition or a restart: a leader notices a dead peer
    /// connection after its 5 s write timeout, then redials, then the member catches
    /// up. On real containers a member back from a one-minute partition answered no
    /// read for 3 to 6 s with its raft index frozen; with checks every 0.5 s and
    /// K = 3 it was replaced. With the default interval K checks span 20 s anyway.
    pub failure_grace_ms: u64,
    /// A save this often while the cluster has quorum (kube-aws: every minute).
    pub snapshot_interval_ms: u64,
    /// Whether this agent may replace failed members on its own.
    pub automatic_replace: bool,
    /// Whether this agent may start a disaster recovery on its own.
    pub automatic_disaster_recovery: bool,
    /// After a recovery, no other starts until its cluster has shown quorum, or
    /// until this long has passed: a restored cluster that never formed (its
    /// members lost their disks again before it did, or cannot reach each other)
    /// is recovered anew rather than waited for forever (found by the nemesis,
    /// seed 31016435).
    pub recovery_settle_ms: u64,
    pub retention: Retention,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            check_interval_ms: 10_000,
            failures_max: 3,
            failure_grace_ms: 15_000,
            snapshot_interval_ms: 60_000,
            automatic_replace: true,
            automatic_disaster_recovery: true,
            recovery_settle_ms: 180_000,
            retention: Retention::default(),
        }
    }
}

/// Which versioned snapshots survive a prune. The newest verified snapshot is
/// always kept, whatever these say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retention {
    /// The newest this many snapshots.
    pub keep_last: u32,
    /// The newest snapshot of each of the newest this many hours that have one.
    pub keep_hourly: u32,
    /// The newest snapshot of each of the newest this many days that have one.
    pub keep_daily: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { keep_last: 10, keep_hourly: 24, keep_daily: 7 }
    }
}
