//! The chaos catalogue as data: cluster size, workload, fault schedule and the
//! recovery each scenario expects.
//!
//! The simulator, the real-process chaos tests and the testcontainers suite all
//! run this one list, so a scenario means the same thing everywhere. Times are
//! offsets from the start of the scenario, in milliseconds; members are indexes
//! into the cluster (0-based), not etcd member IDs, which differ per run.

use serde::Serialize;

/// One entry of the catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Scenario {
    /// Stable, kebab-case: what `--scenario NAME` takes.
    pub name: &'static str,
    /// Readable: "cluster: what happens (N=…)".
    pub title: &'static str,
    pub members: usize,
    pub workload: Workload,
    pub faults: Vec<ScheduledFault>,
    pub expected: Expected,
    /// The harnesses that can express this scenario's faults.
    pub harnesses: &'static [Harness],
    /// How long the run lasts, faults included, before the liveness phase ends.
    pub duration_ms: u64,
}

/// Client traffic during the run; every acknowledged write is logged and checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub writes_per_second: u32,
    pub value_bytes: u32,
    /// Data written before the run starts, to make the database this large.
    pub preload_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScheduledFault {
    pub at_ms: u64,
    pub fault: Fault,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// kill -9 the member's etcd; it comes back after `down_ms` with its data.
    CrashRestart { member: usize, down_ms: u64 },
    /// The member's etcd stops and its data dir is wiped; its agent stays up.
    WipeMember { member: usize },
    /// The member's data dir is damaged (a corrupt database or WAL): its etcd stops
    /// and exits at every start after; its agent stays up.
    DamageData { member: usize },
    /// The member's machine is gone for good: etcd and agent stop, disk wiped,
    /// then a fresh machine with an empty disk comes up in its place.
    LoseMember { member: usize },
    /// Every member stops; all start again with empty disks (the seed's manual restore).
    RestartAllEmpty,
    /// Members cut off from the others (and from clients), store still reachable.
    Partition { isolated: Vec<usize>, heal_after_ms: u64 },
    /// One agent (and its member) cut off from peers but not from the store.
    IsolateAgent { member: usize, heal_after_ms: u64 },
    /// The store refuses every request for a while.
    StoreOutage { duration_ms: u64 },
    /// The newest versioned snapshot's bytes are damaged in the store.
    CorruptLatestSnapshot,
    /// The agent replacing `member` is killed after the step named, then restarted.
    AgentCrashMidReplace { member: usize, after_step: ReplaceStep },
    /// An agent taking part in a disaster recovery is killed mid-restore, then restarted.
    AgentCrashMidRecovery { member: usize },
    /// The member goes down and up `times` times, each down shorter than detection.
    Flap { member: usize, down_ms: u64, up_ms: u64, times: u32 },
    /// The agent's wall clock is off by `skew_ms` (positive: ahead).
    ClockSkew { member: usize, skew_ms: i64 },
    /// The agent process alone is down for `down_ms` (as under systemd): its etcd
    /// keeps serving, but no heartbeat of it reaches the store.
    KillAgent { member: usize, down_ms: u64 },
    /// These members' agents cannot reach the store; their members still see each other.
    CutStore { members: Vec<usize>, heal_after_ms: u64 },
    /// Store calls are slow and a share of them fail (5xx, throttling, a timeout mid-upload).
    FlakyStore { duration_ms: u64, fail_percent: u32, extra_latency_ms: u64 },
    /// Whichever member leads at that moment crashes and restarts: leadership moves.
    CrashLeader { down_ms: u64 },
    /// The wall clock of whichever member's agent leads at that moment steps by `skew_ms`.
    SkewLeader { skew_ms: i64 },
    /// From now on the store ignores create-if-absent (`If-None-Match: *`): every
    /// conditional put overwrites, as some older S3-compatible servers do.
    UnconditionalStore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplaceStep {
    Removed,
    Wiped,
    Added,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Expected {
    pub recovery: Recovery,
    /// Whether acknowledged writes may be lost (only to a disaster recovery, bounded by the RPO).
    pub loss: Loss,
    /// Extra checks beyond the invariants every run gets.
    pub checks: &'static [Check],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Recovery {
    /// No membership change and no restore.
    None,
    /// Exactly this many replacements, one at a time.
    Replace { count: usize },
    /// One disaster recovery, from the newest verified snapshot.
    DisasterRecovery,
    /// Whatever the faults call for (randomly drawn schedules): only the invariants judge.
    Any,
    /// None, although quorum is lost: the agents refuse automatic recovery (the store
    /// cannot arbitrate claims), so the cluster is not expected back by itself.
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    None,
    /// Up to the snapshot interval plus the save time.
    BoundedBySnapshotInterval,
    /// None unless a member lost its disk during the run; then bounded like
    /// `BoundedBySnapshotInterval`, widened by the time store and agent faults kept
    /// saves from happening (randomly drawn schedules).
    NoneUnlessDiskLost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Versioned snapshots keep being written and pruned as retention says.
    SnapshotsKeepComing,
    /// After the outage a save succeeds and nothing partial stays under a final name.
    SaveRecoversAfterOutage,
    /// The corrupt snapshot is refused; the previous good one is restored.
    CorruptSnapshotRefused,
    /// The member is replaced at most once despite flapping.
    NoThrash,
    /// Snapshot names and retention stay ordered under skew.
    SkewTolerated,
    /// Save memory stays flat as the database grows.
    ConstantMemory,
    /// The first recovery restores at least what the most up-to-date surviving member held.
    NewestSurvivorRestored,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Harness {
    /// The deterministic madsim simulator (`lifeboat-sim`).
    Simulator,
    /// Real etcd and S3 processes on loopback, one agent process per member.
    Processes,
    /// Real etcd, S3 and agents in locally built Docker containers.
    Containers,
}

const ALL: &[Harness] = &[Harness::Simulator, Harness::Processes, Harness::Containers];
const NOT_CONTAINERS: &[Harness] = &[Harness::Simulator, Harness::Processes];
const SIMULATOR_ONLY: &[Harness] = &[Harness::Simulator];

fn workload() -> Workload {
    Workload { writes_per_second: 50, value_bytes: 256, preload_bytes: 0 }
}

fn expect(recovery: Recovery, loss: Loss, checks: &'static [Check]) -> Expected {
    Expected { recovery, loss, checks }
}

fn at(at_ms: u64, fault: Fault) -> ScheduledFault {
    ScheduledFault { at_ms, fault }
}

/// The whole catalogue, in a stable order.
pub fn catalogue() -> Vec<Scenario> {
    use Fault::*;
    let none = || expect(Recovery::None, Loss::None, &[]);
    vec![
        Scenario {
            name: "steady-snapshots",
            title: "cluster: steady snapshots and retention, no faults (N=3)",
            members: 3,
            workload: workload(),
            faults: vec![],
            expected: expect(Recovery::None, Loss::None, &[Check::SnapshotsKeepComing]),
            harnesses: ALL,
            // Long enough for more saves than retention keeps (keep-last 10 at one a minute).
            duration_ms: 900_000,
        },
        Scenario {
            name: "member-crash-restart",
            title: "member: crash and restart within detection, transient, no action (N=3)",
            members: 3,
            workload: workload(),
            faults: vec![at(60_000, CrashRestart { member: 1, down_ms: 5_000 })],
            expected: none(),
            harnesses: ALL,
            duration_ms: 300_000,
        },
        Scenario {
            name: "member-disk-wiped",
            title: "member: disk wiped, replaced, no acknowledged write lost (N=3)",
            members: 3,
            workload: workload(),
            faults: vec![at(60_000, WipeMember { member: 2 })],
            expected: expect(Recovery::Replace { count: 1 }, Loss::None, &[]),
            harnesses: ALL,
            duration_ms: 300_000,
        },
        Scenario {
            name: "member-data-damaged",
            title: "member: data dir damaged, etcd exits at every start while its agent runs; replaced (N=3)",
            members: 3,
            workload: workload(),
            // The one catalogue case where a member's etcd keeps failing beside a
            // running agent with its disk in place: only the failure count (K checks
            // spanning the grace) leads to the replacement (mutation testing found no
            // scenario that needed it).
            faults: vec![at(60_000, DamageData { member: 1 })],
            expected: expect(Recovery::Replace { count: 1 }, Loss::None, &[]),
            harnesses: SIMULATOR_ONLY,
            duration_ms: 600_000,
        },
        Scenario {
            name: "two-of-five-lost",
            title: "cluster: 2 of 5 members permanently lost, two replacements one at a time (N=5)",
            members: 5,
            workload: workload(),
            faults: vec![at(60_000, LoseMember { member: 3 }), at(60_000, LoseMember { member: 4 })],
            expected: expect(Recovery::Replace { count: 2 }, Loss::None, &[]),
            harnesses: ALL,
            duration_ms: 600_000,
        },
        Scenario {
            name: "two-of-three-lost",
            title: "cluster: 2 of 3 members lost, quorum gone, disaster recovery (N=3)",
            members: 3,
            workload: workload(),
            faults: vec![at(90_000, LoseMember { member: 1 }), at(90_000, LoseMember { member: 2 })],
            expected: expect(Recovery::DisasterRecovery, Loss::BoundedBySnapshotInterval, &[]),
            harnesses: ALL,
            duration_ms: 600_000,
        },
        Scenario {
            name: "all-restarted-empty",
            title: "cluster: all members restarted with empty disks, the seed's manual restore (N=3)",
            members: 3,
            workload: workload(),
            faults: vec![at(90_000, RestartAllEmpty)],
            expected: expect(Recovery::DisasterRecovery, Loss::BoundedBySnapshotInterval, &[]),
            harnesses: ALL,
            duration_ms: 600_000,
        },
        Scenario {
            name: "minority-partition",
            title: "network: minority partitioned then healed, no disaster recovery (N=5)",
            members: 5,
            workload: workload(),
            faults: vec![at(60_000, Partition { isolated: vec![3, 4], heal_after_ms: 20_000 })],
            expected: none(),
            harnesses: ALL,
            duration_ms: 300_000,
        },
        Scenario {
            name: "member-rejoins-behind",
            title: "network: one member cut off for 90 s rejoins thousands of entries behind and catches up for longer than K checks; it is not replaced (N=3)",
            members: 3,
            workload: workload(),
            faults: vec![at(60_000, Partition { isolated: vec![0], heal_after_ms: 90_000 })],
            expected: none(),
            harnesses: &[Harness::Simulator, Harness::Containers],
            duration_ms: 300_000,
        },
        Scenario {
            name: "isolated-agent-sees-store",
            title: "network: one agent isolated from peers but not from S3, no recovery (N=3)",
            members: 3,
            workload: workload(),
            faults: vec![at(60_000, IsolateAgent { member: 0, heal_after_ms: 120_000 })],
            expected: none(),
            harnesses: ALL,
            duration_ms: 300_000,
        },
        Scenario {
            name: "spurious-epoch-claim",
            title: "coordination: an isolated agent claims a recovery while its peers' agents are down; the healthy majority keeps its data (N=3)",
            members: 3,
            workload: workload(),
            faults: vec![
                at(55_000, KillAgent { member: 1, down_ms: 150_000 }),
                at(55_000, KillAgent { member: 2, down_ms: 150_000 }),
                at(60_000, IsolateAgent { member: 0, heal_after_ms: 120_000 }),
            ],
            expected: none(),
            harnesses: SIMULATOR_ONLY,
            duration_ms: 400_000,
        },
        Scenario {
            name: "survivors-at-different-revisions",
            title: "cluster: 3 of 5 lost while one survivor was partitioned and behind; the most up-to-date survivor's data is restored (N=5)",
            members: 5,
            workload: workload(),
            // m3 is cut off (and falls behind) before m0-m2 are lost; m4 holds the newest data.
            // Both survivors see no quorum and may claim; the claim must not name m3's older data.
            faults: vec![
                at(70_000, Partition { isolated: vec![3], heal_after_ms: 130_000 }),
                at(90_000, LoseMember { member: 0 }),
                at(90_000, LoseMember { member: 1 }),
                at(90_000, LoseMember { member: 2 }),
            ],
            expected: expect(
                Recovery::DisasterRecovery,
                Loss::BoundedBySnapshotInterval,
                &[Check::NewestSurvivorRestored],
            ),
            harnesses: SIMULATOR_ONLY,
            duration_ms: 600_000,
        },
        Scenario {
            name: "survivors-at-the-same-revision",
            title: "cluster: 3 of 5 lost at once, the two survivors hold the same revision; one of them claims (N=5)",
            members: 5,
            workload: workload(),
            // m3 and m4 hold every acknowledged write: a tie, which defers to no one (were
            // a tie a reason to defer, each would wait for the other's claim for good).
            faults: vec![
                at(90_000, LoseMember { member: 0 }),
                at(90_000, LoseMember { member: 1 }),
                at(90_000, LoseMember { member: 2 }),
            ],
            expected: expect(
                Recovery::DisasterRecovery,
                Loss::BoundedBySnapshotInterval,
                &[Check::NewestSurvivorRestored],
            ),
            harnesses: SIMULATOR_ONLY,
            duration_ms: 600_000,
        },
        Scenario {
            name: "store-outage-during-save",
            title: "store: S3 outage during a save, clean failure, next save succeeds (N=3)",
            members: 3,
            workload: workload(),
            faults: vec![at(55_000, StoreOutage { duration_ms: 30_000 })],
            expected: expect(Recovery::None, Loss::None, &[Check::SaveRecoversAfterOutage]),
            harnesses: ALL,
            duration_ms: 300_000,
        },
        Scenario {
            name: "corrupt-latest-snapshot",
            title: "store: newest snapshot corrupt, then every disk lost, previous good one restored (N=3)",
            members: 3,
            workload: workload(),
            // Every disk, not two of three: a survivor would save its own newer data
            // first, and the corrupt snapshot would never be a candidate.
            faults: vec![at(150_000, CorruptLatestSnapshot), at(155_000, RestartAllEmpty)],
            expected: expect(
                Recovery::DisasterRecovery,
                Loss::BoundedBySnapshotInterval,
                &[Check::CorruptSnapshotRefused],
            ),
            harnesses: NOT_CONTAINERS,
            duration_ms: 600_000,
        },
        Scenario {
            name: "agent-crash-mid-replace",
            title: "agent: killed after removing the member, resumes the replacement (N=3)",
            members: 3,
            workload: workload(),
            faults: vec![
                at(60_000, WipeMember { member: 2 }),
                at(60_000, AgentCrashMidReplace { member: 2, after_step: ReplaceStep::Removed }),
            ],
            expected: expect(Recovery::Replace { count: 1 }, Loss::None, &[]),
            harnesses: NOT_CONTAINERS,
            duration_ms: 300_000,
        },
        Scenario {
            name: "agent-crash-mid-recovery",
            title: "agent: killed mid disaster recovery, restarts, one epoch only (N=3)",
            members: 3,
            workload: workload(),
            faults: vec![
                at(90_000, LoseMember { member: 1 }),
                at(90_000, LoseMember { member: 2 }),
                at(90_000, AgentCrashMidRecovery { member: 0 }),
            ],
            expected: expect(Recovery::DisasterRecovery, Loss::BoundedBySnapshotInterval, &[]),
            harnesses: NOT_CONTAINERS,
            duration_ms: 600_000,
        },
        Scenario {
            name: "flapping-member",
            title: "member: flapping faster than detection, no thrash (N=3)",
            members: 3,
            workload: workload(),
            faults: vec![at(30_000, Flap { member: 1, down_ms: 15_000, up_ms: 12_000, times: 6 })],
            expected: expect(Recovery::None, Loss::None, &[Check::NoThrash]),
            harnesses: NOT_CONTAINERS,
            duration_ms: 400_000,
        },
        Scenario {
            name: "clock-skew",
            title: "agent: the leader's clock steps 150 s ahead, leadership moves, then every disk is lost: the highest revision is restored (N=3)",
            members: 3,
            workload: workload(),
            // The leader saves with names 150 s ahead; its crash moves leadership to a
            // member whose later saves get earlier names. A recovery must restore by
            // revision, not by name.
            faults: vec![
                at(30_000, SkewLeader { skew_ms: 150_000 }),
                at(125_000, CrashLeader { down_ms: 20_000 }),
                at(215_000, RestartAllEmpty),
            ],
            expected: expect(Recovery::DisasterRecovery, Loss::BoundedBySnapshotInterval, &[Check::SkewTolerated]),
            harnesses: SIMULATOR_ONLY,
            duration_ms: 600_000,
        },
        Scenario {
            name: "unconditional-store",
            title: "store: ignores create-if-absent, then 2 of 3 members lost: no automatic recovery (N=3)",
            members: 3,
            workload: workload(),
            // Two claimers could each "win" the same epoch on such a store: the agents'
            // probe sees it, and they refuse to recover rather than risk two clusters.
            faults: vec![
                at(0, UnconditionalStore),
                at(90_000, LoseMember { member: 1 }),
                at(90_000, LoseMember { member: 2 }),
            ],
            expected: expect(Recovery::Refused, Loss::None, &[]),
            harnesses: SIMULATOR_ONLY,
            duration_ms: 600_000,
        },
        Scenario {
            name: "large-database",
            title: "cluster: 1 GiB database, save memory stays flat (N=3)",
            members: 3,
            workload: Workload { writes_per_second: 10, value_bytes: 10_240, preload_bytes: 1 << 30 },
            faults: vec![],
            expected: expect(Recovery::None, Loss::None, &[Check::ConstantMemory]),
            // The model carries no byte streams: memory is judged on real processes.
            harnesses: &[Harness::Processes],
            duration_ms: 300_000,
        },
    ]
}

/// Looks a scenario up by its `name`.
pub fn find(name: &str) -> Option<Scenario> {
    catalogue().into_iter().find(|scenario| scenario.name == name)
}

impl Fault {
    /// The members this fault touches.
    pub fn members(&self) -> Vec<usize> {
        match self {
            Fault::CrashRestart { member, .. }
            | Fault::WipeMember { member }
            | Fault::DamageData { member }
            | Fault::LoseMember { member }
            | Fault::IsolateAgent { member, .. }
            | Fault::AgentCrashMidReplace { member, .. }
            | Fault::AgentCrashMidRecovery { member }
            | Fault::Flap { member, .. }
            | Fault::ClockSkew { member, .. }
            | Fault::KillAgent { member, .. } => vec![*member],
            Fault::Partition { isolated, .. } => isolated.clone(),
            Fault::CutStore { members, .. } => members.clone(),
            Fault::RestartAllEmpty
            | Fault::StoreOutage { .. }
            | Fault::CorruptLatestSnapshot
            | Fault::FlakyStore { .. }
            | Fault::CrashLeader { .. }
            | Fault::SkewLeader { .. }
            | Fault::UnconditionalStore => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_and_findable() {
        let scenarios = catalogue();
        let names: BTreeSet<&str> = scenarios.iter().map(|scenario| scenario.name).collect();
        assert_eq!(names.len(), scenarios.len());
        for scenario in &scenarios {
            assert_eq!(find(scenario.name).as_ref(), Some(scenario));
            assert!(scenario.title.contains(&format!("(N={})", scenario.members)), "{}", scenario.name);
        }
    }

    /// Each entry agrees with the recovery rules: replacements only for a
    /// minority, disaster recovery only when quorum is gone.
    #[test]
    fn expectations_follow_the_recovery_rules() {
        for scenario in catalogue() {
            let tolerance = (scenario.members - 1) / 2;
            let lost: BTreeSet<usize> = scenario
                .faults
                .iter()
                .filter(|scheduled| {
                    matches!(
                        scheduled.fault,
                        Fault::LoseMember { .. } | Fault::WipeMember { .. } | Fault::DamageData { .. }
                    )
                })
                .flat_map(|scheduled| scheduled.fault.members())
                .collect();
            let everyone_lost = scenario.faults.iter().any(|scheduled| scheduled.fault == Fault::RestartAllEmpty);
            for scheduled in &scenario.faults {
                for member in scheduled.fault.members() {
                    assert!(member < scenario.members, "{}: member {member} out of range", scenario.name);
                }
                assert!(scheduled.at_ms < scenario.duration_ms, "{}: fault after the end", scenario.name);
            }
            match scenario.expected.recovery {
                Recovery::Replace { count } => {
                    assert_eq!(count, lost.len(), "{}", scenario.name);
                    assert!(count <= tolerance, "{}: replacing a majority", scenario.name);
                    assert_eq!(scenario.expected.loss, Loss::None, "{}", scenario.name);
                }
                Recovery::DisasterRecovery => {
                    assert!(everyone_lost || lost.len() > tolerance, "{}: quorum still there", scenario.name)
                }
                Recovery::None => assert!(lost.is_empty() && !everyone_lost, "{}", scenario.name),
                Recovery::Refused => assert!(
                    scenario.faults.iter().any(|scheduled| scheduled.fault == Fault::UnconditionalStore)
                        && (everyone_lost || lost.len() > tolerance),
                    "{}: refused only where a recovery is called for and the store cannot arbitrate it",
                    scenario.name
                ),
                Recovery::Any => panic!("{}: a catalogue entry states the recovery it expects", scenario.name),
            }
        }
    }

    /// Every scenario DESIGN.md lists is in the catalogue.
    #[test]
    fn covers_the_design_catalogue() {
        let names: BTreeSet<&str> = catalogue().iter().map(|scenario| scenario.name).collect();
        for required in [
            "steady-snapshots",
            "member-crash-restart",
            "member-disk-wiped",
            "two-of-five-lost",
            "two-of-three-lost",
            "all-restarted-empty",
            "minority-partition",
            "member-rejoins-behind",
            "isolated-agent-sees-store",
            "spurious-epoch-claim",
            "survivors-at-different-revisions",
            "store-outage-during-save",
            "corrupt-latest-snapshot",
            "agent-crash-mid-replace",
            "agent-crash-mid-recovery",
            "flapping-member",
            "clock-skew",
            "unconditional-store",
            "large-database",
        ] {
            assert!(names.contains(required), "missing {required}");
        }
    }
}
