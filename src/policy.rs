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
