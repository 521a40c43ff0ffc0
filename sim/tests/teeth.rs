//! Teeth: each deliberately broken policy must be caught by an invariant within
//! a bounded number of seeds, and the same scenario must pass with the real
//! policy over those seeds. A simulator that cannot catch these proves nothing.
#![cfg(madsim)]

use lifeboat::Sabotage;
use lifeboat_scenarios::{Fault, Scenario, ScheduledFault};
use lifeboat_sim::model::Invariant;
use lifeboat_sim::run::{run, violations_text, RunConfig};
use std::collections::BTreeSet;

const SEEDS: u64 = 20;

fn scenario(name: &str) -> Scenario {
    lifeboat_scenarios::find(name).unwrap_or_else(|| panic!("{name} is in the catalogue"))
}

/// Runs seeds until one is caught by one of the invariants in `by`; returns the
/// seed and every invariant it broke. (A seed may fail on another invariant first:
/// a truncated snapshot stops a restore before a corrupt one would reach it.)
fn first_caught(scenario: &Scenario, sabotage: Sabotage, by: &[Invariant]) -> Option<(u64, BTreeSet<Invariant>)> {
    (0..SEEDS).find_map(|seed| {
        let report = run(&RunConfig {
            scenario: scenario.clone(),
            seed,
            random_faults: true,
            sabotage,
            keep_trace: false,
            etcdadm: false,
        });
        let invariants: BTreeSet<Invariant> = report.violations.iter().map(|violation| violation.invariant).collect();
        invariants.iter().any(|invariant| by.contains(invariant)).then_some((seed, invariants))
    })
}

fn assert_caught(scenario: &Scenario, sabotage: Sabotage, by: &[Invariant]) {
    let Some((seed, invariants)) = first_caught(scenario, sabotage, by) else {
        panic!("{sabotage:?} in {} went unnoticed by {by:?} for {SEEDS} seeds", scenario.name);
    };
    println!("{sabotage:?} in {}: caught at seed {seed} by {invariants:?}", scenario.name);
    // The control: the real policy passes the seeds the broken one was run on.
    for seed in 0..=seed {
        let report = run(&RunConfig {
            scenario: scenario.clone(),
            seed,
            random_faults: true,
            sabotage: Sabotage::None,
            keep_trace: false,
            etcdadm: false,
        });
        assert!(
            report.violations.is_empty(),
            "{} seed {seed} fails without sabotage:\n{}",
            scenario.name,
            violations_text(&report)
        );
    }
}

#[test]
fn replacing_without_the_quorum_check_is_caught() {
    // With quorum gone, a replacement can never complete: the cluster stays down.
    assert_caught(
        &scenario("two-of-three-lost"),
        Sabotage::SkipQuorumCheck,
        &[Invariant::Liveness, Invariant::MembershipChangesSafe],
    );
}

#[test]
fn recovery_without_the_epoch_claim_is_caught() {
    // Without a claim in the store, the isolated agent restores on its own while the
    // majority it cannot see still has a leader.
    assert_caught(&scenario("spurious-epoch-claim"), Sabotage::NoEpochClaim, &[Invariant::NoSplitBrain]);
}

#[test]
fn restoring_without_the_hash_check_is_caught() {
    // No survivor holds data, and the newest snapshot is corrupt: only the hash tells.
    let mut scenario = scenario("all-restarted-empty");
    scenario.name = "all-restarted-empty+corrupt-latest";
    scenario.faults.insert(0, ScheduledFault { at_ms: 85_000, fault: Fault::CorruptLatestSnapshot });
    assert_caught(&scenario, Sabotage::SkipHashCheck, &[Invariant::NoCorruptRestore]);
}

#[test]
fn concurrent_membership_changes_are_caught() {
    assert_caught(&scenario("two-of-five-lost"), Sabotage::ConcurrentChanges, &[Invariant::MembershipChangesSafe]);
}

#[test]
fn a_claim_that_takes_effect_at_once_is_caught() {
    // An isolated agent claims while its peers' agents are down: only the join quorum
    // keeps the healthy majority from restoring an older snapshot.
    assert_caught(
        &scenario("spurious-epoch-claim"),
        Sabotage::ClaimTakesEffectAtOnce,
        &[Invariant::NoSplitBrain, Invariant::NoAcknowledgedWriteLost],
    );
}
