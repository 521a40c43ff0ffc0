//! Which versioned snapshots a prune deletes. Pure: the store adapter lists, this
//! decides, the runtime deletes.

use crate::policy::Retention;
use crate::snapshot::{newest_verified, SnapshotMeta, SnapshotName};
use std::collections::BTreeSet;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// The snapshots to keep and to delete; together they are exactly the input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    pub keep: Vec<SnapshotName>,
    pub delete: Vec<SnapshotName>,
}

/// Keeps the newest `keep_last`, the newest of each of the newest `keep_hourly`
/// hours and `keep_daily` days, and always the newest verified snapshot (the one
/// a disaster recovery would restore), whatever the counts say.
pub fn plan(snapshots: &[SnapshotMeta], retention: &Retention) -> RetentionPlan {
    let mut newest_first: Vec<&SnapshotMeta> = snapshots.iter().collect();
    newest_first.sort_by(|left, right| right.name.cmp(&left.name));
    newest_first.dedup_by(|left, right| left.name == right.name);

    let mut keep: BTreeSet<&SnapshotName> = BTreeSet::new();
    keep.extend(newest_first.iter().take(retention.keep_last as usize).map(|snapshot| &snapshot.name));
    // Hours and days are the saving agents' clocks: walk them in time order.
    let mut latest_first = newest_first.clone();
    latest_first.sort_by(|left, right| (right.name.created(), &right.name).cmp(&(left.name.created(), &left.name)));
    for (bucket_ms, buckets_max) in [(HOUR_MS, retention.keep_hourly), (DAY_MS, retention.keep_daily)] {
        let mut buckets_seen: Vec<u64> = Vec::new();
        for snapshot in &latest_first {
            let bucket = snapshot.name.created().0 / bucket_ms;
            if buckets_seen.last() == Some(&bucket) {
                continue;
            }
            if buckets_seen.len() >= buckets_max as usize {
                break;
            }
            buckets_seen.push(bucket);
            keep.insert(&snapshot.name);
        }
    }
    if let Some(newest) = newest_verified(snapshots) {
        keep.insert(&newest.name);
    }

    let mut result = RetentionPlan::default();
    for snapshot in newest_first {
        if keep.contains(&snapshot.name) {
            result.keep.push(snapshot.name.clone());
        } else {
            result.delete.push(snapshot.name.clone());
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Compression;
    use crate::time::Millis;
    use crate::types::Revision;
    use proptest::prelude::*;

    fn snapshots() -> impl Strategy<Value = Vec<SnapshotMeta>> {
        proptest::collection::vec((0u64..40 * DAY_MS, any::<bool>()), 0..60).prop_map(|entries| {
            entries
                .into_iter()
                .enumerate()
                .map(|(index, (created, verified))| SnapshotMeta {
                    name: SnapshotName::new(Millis(created), Revision(index as i64), Compression::None),
                    verified,
                })
                .collect()
        })
    }

    fn retention() -> impl Strategy<Value = Retention> {
        (0u32..12, 0u32..30, 0u32..10).prop_map(|(keep_last, keep_hourly, keep_daily)| Retention {
            keep_last,
            keep_hourly,
            keep_daily,
        })
    }

    proptest! {
        #[test]
        fn never_deletes_the_newest_verified(snapshots in snapshots(), retention in retention()) {
            let plan = plan(&snapshots, &retention);
            if let Some(newest) = newest_verified(&snapshots) {
                prop_assert!(!plan.delete.contains(&newest.name));
            }
        }

        #[test]
        fn keeps_the_newest_n_and_partitions_the_input(snapshots in snapshots(), retention in retention()) {
            let plan = plan(&snapshots, &retention);
            let mut names: Vec<SnapshotName> = snapshots.iter().map(|snapshot| snapshot.name.clone()).collect();
            names.sort();
            names.dedup();
            names.reverse();
            for name in names.iter().take(retention.keep_last as usize) {
                prop_assert!(plan.keep.contains(name));
            }
            let mut all: Vec<SnapshotName> = plan.keep.iter().chain(plan.delete.iter()).cloned().collect();
            all.sort();
            all.reverse();
            prop_assert_eq!(all, names);
        }

        /// Pruning twice deletes nothing the second time, so an interrupted prune
        /// that is run again converges.
        #[test]
        fn is_idempotent(snapshots in snapshots(), retention in retention()) {
            let first = plan(&snapshots, &retention);
            let survivors: Vec<SnapshotMeta> = snapshots
                .into_iter()
                .filter(|snapshot| first.keep.contains(&snapshot.name))
                .collect();
            prop_assert!(plan(&survivors, &retention).delete.is_empty());
        }
    }

    /// One a day for the newest days that have one, nothing else.
    #[test]
    fn daily_keeps_one_per_day() {
        let snapshots: Vec<SnapshotMeta> = (0..6u64)
            .map(|index| SnapshotMeta {
                // Two a day, twelve hours apart.
                name: SnapshotName::new(Millis(index * 12 * HOUR_MS), Revision(index as i64), Compression::None),
                verified: false,
            })
            .collect();
        let retention = Retention { keep_last: 0, keep_hourly: 0, keep_daily: 2 };
        let kept: Vec<i64> = plan(&snapshots, &retention).keep.iter().map(|name| name.revision().0).collect();
        assert_eq!(kept, vec![5, 3], "the newest of each of the two newest days");
    }

    #[test]
    fn hourly_keeps_one_per_hour() {
        let make = |created: u64| SnapshotMeta {
            name: SnapshotName::new(Millis(created), Revision(created as i64), Compression::None),
            verified: true,
        };
        let snapshots: Vec<SnapshotMeta> = (0..6).map(|minute| make(minute * 20 * 60_000)).collect();
        let retention = Retention { keep_last: 1, keep_hourly: 24, keep_daily: 0 };
        let plan = plan(&snapshots, &retention);
        // Minutes 0, 20, 40 fall in hour 0 and 60, 80, 100 in hour 1: keep 100 and 40.
        let kept: Vec<u64> = plan.keep.iter().map(|name| name.created().0 / 60_000).collect();
        assert_eq!(kept, vec![100, 40]);
    }
}
