//! Successive-failure counting: a member is failed only after K checks in a row
//! fail, so a transient blip (a restart, a slow disk) never triggers recovery.

use crate::types::{MemberHealth, MemberId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Per-member count of successive failed checks. A `BTreeMap` keeps iteration
/// order deterministic for the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureTracker {
    successive_failures: BTreeMap<MemberId, u32>,
    /// The latest check of each member, counted or not.
    last_healthy: BTreeMap<MemberId, bool>,
}

impl FailureTracker {
    /// Records one round of checks. Members absent from `checks` keep their count:
    /// a missing probe is not evidence either way. With `count_failures` false (the
    /// observer saw no quorum: it may be the one cut off), a failure says nothing
    /// about the member and is not counted, so an isolated agent's own member is
    /// not closer to a replacement the moment its network comes back.
    pub fn record(&mut self, checks: &[MemberHealth], count_failures: bool) {
        for check in checks {
            self.last_healthy.insert(check.id, check.healthy);
            let count = self.successive_failures.entry(check.id).or_insert(0);
            if check.healthy {
                *count = 0;
            } else if count_failures {
                *count = count.saturating_add(1);
            }
        }
    }

    pub fn successive_failures(&self, id: MemberId) -> u32 {
        self.successive_failures.get(&id).copied().unwrap_or(0)
    }

    /// Whether the last check of `id` passed (unknown members are not healthy).
    pub fn is_healthy(&self, id: MemberId) -> bool {
        self.last_healthy.get(&id) == Some(&true)
    }

    /// Members that failed at least `failures_max` checks in a row, in ID order.
    pub fn failed(&self, failures_max: u32) -> Vec<MemberId> {
        self.successive_failures.iter().filter(|(_, count)| **count >= failures_max.max(1)).map(|(id, _)| *id).collect()
    }

    /// Forgets members that left the cluster, so a re-added member starts clean.
    pub fn retain(&mut self, keep: impl Fn(MemberId) -> bool) {
        self.successive_failures.retain(|id, _| keep(*id));
        self.last_healthy.retain(|id, _| keep(*id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The count equals the length of the trailing run of failures.
        #[test]
        fn counts_the_trailing_run(history in proptest::collection::vec(any::<bool>(), 0..40)) {
            let mut tracker = FailureTracker::default();
            for healthy in &history {
                tracker.record(&[MemberHealth { id: MemberId(1), healthy: *healthy }], true);
            }
            let trailing = history.iter().rev().take_while(|healthy| !**healthy).count() as u32;
            prop_assert_eq!(tracker.successive_failures(MemberId(1)), trailing);
            prop_assert_eq!(tracker.failed(3).contains(&MemberId(1)), trailing >= 3);
        }

        /// Uncounted rounds add no failure but still reset, and health is always the latest check.
        #[test]
        fn uncounted_rounds_add_no_failure(history in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..40)) {
            let mut tracker = FailureTracker::default();
            let mut expected = 0u32;
            for (healthy, counted) in &history {
                tracker.record(&[MemberHealth { id: MemberId(1), healthy: *healthy }], *counted);
                expected = match (healthy, counted) {
                    (true, _) => 0,
                    (false, true) => expected + 1,
                    (false, false) => expected,
                };
                prop_assert_eq!(tracker.is_healthy(MemberId(1)), *healthy);
            }
            prop_assert_eq!(tracker.successive_failures(MemberId(1)), expected);
        }
    }
}
