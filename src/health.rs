//! Successive-failure counting: a member is failed only after K checks in a row
//! fail, so a transient blip (a restart, a slow disk) never triggers recovery.
//!
//! A check that shows progress resets the count as a passed check does: a member
//! whose status names a leader with a raft index above every one it answered before
//! (or its first since this tracker started) is catching up (back from a partition,
//! or from a restart with a stale disk), and that takes as long as the entries it
//! missed. Replacing it would throw away a member that is
//! converging and make a learner start the same catch-up from nothing (found on
//! real containers: a member cut off for a minute failed more than K one-second
//! checks after it rejoined, and was replaced).

use crate::time::Millis;
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
    /// The highest raft index each member's status reported.
    progress: BTreeMap<MemberId, u64>,
    /// Members whose latest check showed their raft index rising.
    advancing: BTreeMap<MemberId, bool>,
    /// When each member's current run of counted failures began.
    failing_since: BTreeMap<MemberId, Millis>,
}

impl FailureTracker {
    /// Records one round of checks. Members absent from `checks` keep their count:
    /// a missing probe is not evidence either way. With `count_failures` false (the
    /// observer saw no quorum: it may be the one cut off), a failure says nothing
    /// about the member and is not counted, so an isolated agent's own member is
    /// not closer to a replacement the moment its network comes back. A failure
    /// whose status shows a raft index above the highest seen before resets the count
    /// like a passed check: the member works and is catching up. (It must reset: a
    /// member that flaps, each outage shorter than K checks, spends its time between
    /// outages catching up; counts carried across those would add up to a
    /// replacement, which the catalogue's `flapping-member` caught in systemd mode.)
    pub fn record(&mut self, now: Millis, checks: &[MemberHealth], count_failures: bool) {
        for check in checks {
            self.last_healthy.insert(check.id, check.healthy);
            let before = self.progress.get(&check.id).copied();
            let advancing = self.would_advance(check);
            if let Some(now) = check.progress {
                self.progress.insert(check.id, before.map_or(now, |before| before.max(now)));
            }
            self.advancing.insert(check.id, advancing);
            let count = self.successive_failures.entry(check.id).or_insert(0);
            if check.healthy || advancing {
                *count = 0;
                self.failing_since.remove(&check.id);
            } else if count_failures {
                *count = count.saturating_add(1);
                self.failing_since.entry(check.id).or_insert(now);
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

    /// Whether `check` shows its member's raft index above every one recorded so far
    /// (asked before recording it): the member is catching up, and its cluster commits.
    /// The first index a member shows counts too: its status answered naming a leader
    /// (the driver reports an index only then), and a member just back from an outage
    /// spends its first checks catching up. Without this, an agent that restarted while
    /// its member flapped counted a member in the middle of a catch-up as failed (the
    /// catalogue's `flapping-member`, systemd mode, 12 of 200 seeds).
    pub fn would_advance(&self, check: &MemberHealth) -> bool {
        match (self.progress.get(&check.id), check.progress) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(before), Some(now)) => now > *before,
        }
    }

    /// Whether the last check of `id` showed its raft index above every one it showed
    /// before. A follower's committed index moves only when a leader commits entries,
    /// which needs a quorum: so this also proves that the member's cluster is alive.
    pub fn is_advancing(&self, id: MemberId) -> bool {
        self.advancing.get(&id) == Some(&true)
    }

    /// Members that failed at least `failures_max` checks in a row, the first of
    /// them at least `grace_ms` before `now`, in ID order.
    pub fn failed(&self, failures_max: u32, grace_ms: u64, now: Millis) -> Vec<MemberId> {
        self.successive_failures
            .iter()
            .filter(|(_, count)| **count >= failures_max.max(1))
            .filter(|(id, _)| self.failing_since.get(id).is_some_and(|since| now >= since.saturating_add(grace_ms)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Forgets members that left the cluster, so a re-added member starts clean.
    pub fn retain(&mut self, keep: impl Fn(MemberId) -> bool) {
        self.successive_failures.retain(|id, _| keep(*id));
        self.last_healthy.retain(|id, _| keep(*id));
        self.progress.retain(|id, _| keep(*id));
        self.advancing.retain(|id, _| keep(*id));
        self.failing_since.retain(|id, _| keep(*id));
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
                tracker.record(Millis(0), &[MemberHealth::new(MemberId(1), *healthy)], true);
            }
            let trailing = history.iter().rev().take_while(|healthy| !**healthy).count() as u32;
            prop_assert_eq!(tracker.successive_failures(MemberId(1)), trailing);
            prop_assert_eq!(tracker.failed(3, 0, Millis(0)).contains(&MemberId(1)), trailing >= 3);
        }

        /// Uncounted rounds add no failure but still reset, and health is always the latest check.
        #[test]
        fn uncounted_rounds_add_no_failure(history in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..40)) {
            let mut tracker = FailureTracker::default();
            let mut expected = 0u32;
            for (healthy, counted) in &history {
                tracker.record(Millis(0), &[MemberHealth::new(MemberId(1), *healthy)], *counted);
                expected = match (healthy, counted) {
                    (true, _) => 0,
                    (false, true) => expected + 1,
                    (false, false) => expected,
                };
                prop_assert_eq!(tracker.is_healthy(MemberId(1)), *healthy);
            }
            prop_assert_eq!(tracker.successive_failures(MemberId(1)), expected);
        }

        /// With status answers: a failure counts only when the raft index did not rise
        /// above every index seen before, and a rise resets like a healthy check. So a member that
        /// keeps catching up is never failed, and one that stalls (down, cut off, or
        /// answering with an index it already showed) is, after K such checks.
        #[test]
        fn a_member_catching_up_is_not_failed(
            history in proptest::collection::vec((any::<bool>(), proptest::option::of(0u64..20)), 1..60),
        ) {
            let mut tracker = FailureTracker::default();
            let mut expected = 0u32;
            let mut highest: Option<u64> = None;
            for (healthy, progress) in &history {
                tracker.record(Millis(0), &[MemberHealth { id: MemberId(1), healthy: *healthy, progress: *progress }], true);
                let advancing = match (highest, progress) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(before), Some(now)) => *now > before,
                };
                expected = match (healthy, advancing) {
                    (true, _) | (false, true) => 0,
                    (false, false) => expected + 1,
                };
                highest = match (highest, progress) {
                    (Some(before), Some(now)) => Some(before.max(*now)),
                    (before, now) => before.or(*now),
                };
            }
            prop_assert_eq!(tracker.successive_failures(MemberId(1)), expected);
            // Stalled from here on: K more failed checks at the same index fail it.
            for _ in 0..3 {
                tracker.record(Millis(0), &[MemberHealth { id: MemberId(1), healthy: false, progress: highest }], true);
            }
            prop_assert!(tracker.failed(3, 0, Millis(0)).contains(&MemberId(1)));
        }
    }

    proptest! {
        /// A member is failed once its trailing run of failures is K long and began at
        /// least the grace before now; never earlier, however many checks.
        #[test]
        fn failures_must_span_the_grace(
            history in proptest::collection::vec((any::<bool>(), 0u64..4_000), 1..40),
            grace_ms in 0u64..20_000,
        ) {
            let mut tracker = FailureTracker::default();
            let mut now = 0u64;
            let mut run: Option<(u32, u64)> = None;
            for (healthy, step_ms) in &history {
                now += step_ms;
                tracker.record(Millis(now), &[MemberHealth::new(MemberId(1), *healthy)], true);
                run = if *healthy { None } else { Some(run.map_or((1, now), |(count, since)| (count + 1, since))) };
                let expected = run.is_some_and(|(count, since)| count >= 3 && now >= since + grace_ms);
                prop_assert_eq!(tracker.failed(3, grace_ms, Millis(now)).contains(&MemberId(1)), expected);
            }
        }
    }

    #[test]
    fn a_rejoined_member_catching_up_for_longer_than_k_checks_is_not_failed() {
        let mut tracker = FailureTracker::default();
        let check = |healthy, progress| [MemberHealth { id: MemberId(1), healthy, progress }];
        tracker.record(Millis(0), &check(true, Some(100)), true);
        // Cut off: its status answers with a frozen index, or not at all.
        for _ in 0..10 {
            tracker.record(Millis(0), &check(false, Some(100)), false);
            tracker.record(Millis(0), &check(false, None), false);
        }
        // Back, and behind by far more than K checks' worth of entries.
        for index in 101..130 {
            tracker.record(Millis(0), &check(false, Some(index)), true);
        }
        assert!(tracker.failed(3, 0, Millis(0)).is_empty(), "a member that is catching up was counted failed");
        tracker.record(Millis(0), &check(true, Some(131)), true);
        assert_eq!(tracker.successive_failures(MemberId(1)), 0);
        // Down for real: no status answer, K checks.
        for _ in 0..3 {
            tracker.record(Millis(0), &check(false, None), true);
        }
        assert_eq!(tracker.failed(3, 0, Millis(0)), vec![MemberId(1)]);
    }
}
