//! The nemesis: a whole fault schedule drawn from one seed, VOPR / Jepsen style.
//!
//! Besides the catalogue's hand-written scenarios, `lifeboat-sim --random` runs
//! schedules nobody wrote: 3- or 5-member clusters, two to seven faults of every
//! kind the simulator can inject, at random times, overlapping. A run has a
//! safety phase (the faults) and a liveness phase (every fault healed, then
//! [`LIVENESS_MS`] for the cluster to come back whole). Only the invariants judge:
//! no expected recovery is stated, and acknowledged writes may be lost only when a
//! member lost its disk.
//!
//! The schedule comes from its own generator seeded by the seed, so it is known
//! before the run, printed with the seed, and can be shrunk: a failing schedule is
//! re-run with faults left out ([`drop_faults`]) until no single fault can go,
//! which prints the smallest schedule that still fails and the command replaying it.

use lifeboat_scenarios::{Expected, Fault, Harness, Loss, Recovery, Scenario, ScheduledFault, Workload};
use madsim::rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::BTreeMap;

/// Faults start no earlier than this (a first snapshot exists) …
const FIRST_FAULT_MS: u64 = 20_000;
/// … and no later than this.
const LAST_FAULT_MS: u64 = 300_000;
/// The liveness phase: from the end of the last fault to the end of the run.
pub const LIVENESS_MS: u64 = 300_000;

/// Every kind of fault the nemesis draws, by the name the summary counts it under.
pub const KINDS: &[&str] = &[
    "etcd-crash",
    "agent-crash",
    "disk-wipe",
    "machine-lost",
    "partition",
    "agent-isolated",
    "store-cut",
    "store-outage",
    "store-flaky",
    "clock-step",
    "leader-crash",
];

/// The summary's name for a fault's kind.
pub fn kind(fault: &Fault) -> &'static str {
    match fault {
        Fault::CrashRestart { .. } | Fault::Flap { .. } => "etcd-crash",
        Fault::KillAgent { .. } | Fault::AgentCrashMidReplace { .. } | Fault::AgentCrashMidRecovery { .. } => {
            "agent-crash"
        }
        Fault::WipeMember { .. } => "disk-wipe",
        Fault::DamageData { .. } => "data-damaged",
        Fault::LoseMember { .. } | Fault::RestartAllEmpty => "machine-lost",
        Fault::Partition { .. } => "partition",
        Fault::IsolateAgent { .. } => "agent-isolated",
        Fault::CutStore { .. } => "store-cut",
        Fault::StoreOutage { .. } | Fault::CorruptLatestSnapshot => "store-outage",
        Fault::FlakyStore { .. } => "store-flaky",
        Fault::ClockSkew { .. } | Fault::SkewLeader { .. } => "clock-step",
        Fault::CrashLeader { .. } => "leader-crash",
        Fault::UnconditionalStore => "store-unconditional",
    }
}

/// A non-empty proper subset of `0..members`, of at most `max` members.
fn subset(rng: &mut Xoshiro256PlusPlus, members: usize, max: usize) -> Vec<usize> {
    let size = rng.gen_range(1..=max.clamp(1, members - 1));
    let mut chosen: Vec<usize> = (0..members).collect();
    for index in 0..size {
        let other = rng.gen_range(index..members);
        chosen.swap(index, other);
    }
    chosen.truncate(size);
    chosen.sort_unstable();
    chosen
}

fn draw_fault(rng: &mut Xoshiro256PlusPlus, members: usize) -> Fault {
    let member = rng.gen_range(0..members);
    let short = |rng: &mut Xoshiro256PlusPlus| rng.gen_range(1_000..60_000);
    let long = |rng: &mut Xoshiro256PlusPlus| rng.gen_range(5_000..150_000);
    match rng.gen_range(0..KINDS.len()) {
        0 => Fault::CrashRestart { member, down_ms: short(rng) },
        1 => Fault::KillAgent { member, down_ms: long(rng) },
        2 => Fault::WipeMember { member },
        3 => Fault::LoseMember { member },
        // Any subset, a majority included: the rest of the cluster may be the minority.
        4 => Fault::Partition { isolated: subset(rng, members, members - 1), heal_after_ms: long(rng) },
        5 => Fault::IsolateAgent { member, heal_after_ms: long(rng) },
        // Asymmetric: a majority may lose the store while a minority keeps it.
        6 => Fault::CutStore { members: subset(rng, members, members - 1), heal_after_ms: long(rng) },
        7 => Fault::StoreOutage { duration_ms: long(rng) },
        8 => Fault::FlakyStore {
            duration_ms: long(rng),
            fail_percent: rng.gen_range(5..60),
            extra_latency_ms: rng.gen_range(0..2_000),
        },
        // Forward or back, by up to five minutes.
        9 => Fault::ClockSkew { member, skew_ms: rng.gen_range(-300_000..300_000) },
        _ => Fault::CrashLeader { down_ms: short(rng) },
    }
}

/// The schedule seed `seed` draws: its cluster size and overlapping faults.
pub fn draw(seed: u64) -> Scenario {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let members = if rng.gen_bool(0.6) { 3 } else { 5 };
    let count = rng.gen_range(2..=7);
    let mut faults: Vec<ScheduledFault> = (0..count)
        .map(|_| ScheduledFault {
            at_ms: rng.gen_range(FIRST_FAULT_MS..LAST_FAULT_MS),
            fault: draw_fault(&mut rng, members),
        })
        .collect();
    faults.sort_by_key(|fault| fault.at_ms);
    let last_end = faults.iter().map(|fault| fault.at_ms + duration_ms(&fault.fault)).max().unwrap_or(0);
    Scenario {
        name: if members == 3 { "random-3" } else { "random-5" },
        title: "nemesis: a randomly drawn, overlapping fault schedule",
        members,
        workload: Workload { writes_per_second: 50, value_bytes: 256, preload_bytes: 0 },
        faults,
        expected: Expected { recovery: Recovery::Any, loss: Loss::NoneUnlessDiskLost, checks: &[] },
        harnesses: &[Harness::Simulator],
        duration_ms: last_end + LIVENESS_MS,
    }
}

/// How the schedule of `seed` runs etcd: as the agent's child or as a systemd
/// unit, half and half. Drawn apart from [`draw`] so every seed keeps its faults.
pub fn member_control(seed: u64) -> crate::systemd::MemberControl {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5157_e3d0);
    if rng.gen_bool(0.5) {
        crate::systemd::MemberControl::Systemd
    } else {
        crate::systemd::MemberControl::Child
    }
}

/// The schedule without the faults at `dropped` (indexes into the drawn schedule).
pub fn drop_faults(mut scenario: Scenario, dropped: &[usize]) -> Scenario {
    let mut index = 0;
    scenario.faults.retain(|_| {
        let keep = !dropped.contains(&index);
        index += 1;
        keep
    });
    scenario
}

/// How long a fault lasts, as far as the schedule knows (a lost machine's
/// replacement boots within seconds; instant faults last 0).
pub fn duration_ms(fault: &Fault) -> u64 {
    match fault {
        Fault::CrashRestart { down_ms, .. } | Fault::KillAgent { down_ms, .. } | Fault::CrashLeader { down_ms } => {
            *down_ms
        }
        Fault::Partition { heal_after_ms, .. }
        | Fault::IsolateAgent { heal_after_ms, .. }
        | Fault::CutStore { heal_after_ms, .. } => *heal_after_ms,
        Fault::StoreOutage { duration_ms } | Fault::FlakyStore { duration_ms, .. } => *duration_ms,
        Fault::Flap { down_ms, up_ms, times, .. } => (*down_ms + *up_ms) * u64::from(*times),
        Fault::LoseMember { .. } | Fault::RestartAllEmpty => 5_000,
        _ => 0,
    }
}

/// How often each kind was drawn over `scenarios`.
pub fn count_kinds<'a>(scenarios: impl Iterator<Item = &'a Scenario>) -> BTreeMap<&'static str, u64> {
    let mut counts: BTreeMap<&'static str, u64> = KINDS.iter().map(|kind| (*kind, 0)).collect();
    for scenario in scenarios {
        for fault in &scenario.faults {
            *counts.entry(kind(&fault.fault)).or_default() += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_a_function_of_the_seed_and_draw_every_kind() {
        assert_eq!(draw(7), draw(7));
        let drawn: Vec<Scenario> = (0..500).map(draw).collect();
        let counts = count_kinds(drawn.iter());
        for (kind, count) in &counts {
            assert!(*count > 0, "{kind} never drawn in 500 schedules");
        }
        assert!(
            drawn.iter().any(|scenario| scenario.members == 5) && drawn.iter().any(|scenario| scenario.members == 3)
        );
        for scenario in &drawn {
            for fault in &scenario.faults {
                assert!(fault.fault.members().iter().all(|member| *member < scenario.members));
            }
        }
    }

    #[test]
    fn dropping_faults_keeps_the_rest_in_order() {
        let scenario = draw(3);
        let kept = drop_faults(scenario.clone(), &[0]);
        assert_eq!(kept.faults.as_slice(), &scenario.faults[1..]);
    }
}
