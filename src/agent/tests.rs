//! Properties of the decision step, checked against a model that recomputes each
//! rule from the raw history of observations.

use super::*;
use crate::membership::quorum;
use crate::snapshot::Compression;
use crate::types::Revision;
use proptest::prelude::*;

const K: u32 = 3;

fn member(id: u64) -> Member {
    Member {
        id: MemberId(id),
        name: format!("etcd{id}"),
        peer_urls: vec![format!("http://127.0.0.1:{}", 2380 + id)],
        client_urls: vec![format!("http://127.0.0.1:{}", 2379 + id)],
        is_learner: false,
    }
}

fn policy() -> Policy {
    Policy {
        check_interval_ms: 1_000,
        failures_max: K,
        failure_grace_ms: 0,
        snapshot_interval_ms: 5_000,
        ..Policy::default()
    }
}

#[derive(Clone, Debug)]
enum Step {
    Observe {
        healthy: Vec<bool>,
        /// Each member's raft index as its status answered, if it did.
        progress: Vec<Option<u64>>,
        leader: Option<usize>,
        store_reachable: bool,
        snapshots: Vec<(u64, bool)>,
        peers_healthy: bool,
    },
    /// Completes the oldest outstanding action; `success` picks the outcome.
    Complete {
        success: bool,
    },
    Tick {
        elapsed_ms: u64,
    },
}

fn step(members: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (
            proptest::collection::vec(prop::bool::weighted(0.6), members),
            // Small indexes, so a member's index often rises, stalls or goes back.
            proptest::collection::vec(proptest::option::weighted(0.7, 0u64..6), members),
            proptest::option::of(0..members),
            prop::bool::weighted(0.8),
            proptest::collection::vec((0u64..1_000_000, any::<bool>()), 0..4),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(healthy, progress, leader, store_reachable, snapshots, peers_healthy)| Step::Observe {
                healthy,
                progress,
                leader,
                store_reachable,
                snapshots,
                peers_healthy,
            }),
        2 => any::<bool>().prop_map(|success| Step::Complete { success }),
        2 => (0u64..6_000).prop_map(|elapsed_ms| Step::Tick { elapsed_ms }),
    ]
}

/// Cluster size, steps, and the member the agent sits beside (`None`: cluster-wide mode).
fn scenario() -> impl Strategy<Value = (usize, Vec<Step>, Option<usize>)> {
    prop_oneof![Just(1usize), Just(3), Just(5), Just(7)].prop_flat_map(|members| {
        (Just(members), proptest::collection::vec(step(members), 0..120), proptest::option::of(0..members))
    })
}

fn snapshot_metas(snapshots: &[(u64, bool)]) -> Vec<SnapshotMeta> {
    snapshots
        .iter()
        .map(|(created, verified)| SnapshotMeta {
            name: SnapshotName::new(Millis(*created), Revision(*created as i64), Compression::None),
            verified: *verified,
        })
        .collect()
}

/// What the test remembers, independently of the agent.
struct Model {
    members: Vec<Member>,
    /// Per observation: which members were healthy.
    history: Vec<Vec<bool>>,
    /// Per observation: which members' raft index rose above every one they showed
    /// before (since the agent last forgot them: a replacement, a recovery).
    advanced: Vec<Vec<bool>>,
    /// Each member's highest raft index so far, in the same sense.
    highest: Vec<Option<u64>>,
    /// Observations since each member's failure count was last reset by a replacement.
    counted_from: Vec<usize>,
    last: Option<Step>,
    last_observation: Option<Step>,
    outstanding: VecDeque<Action>,
    local: Option<MemberId>,
    /// Mirrors the rule: after a successful recovery, quorum must be seen again
    /// first, or the settle time pass.
    recovered_at: Option<Millis>,
    now: Millis,
}

impl Model {
    fn healthy_in_last(&self) -> usize {
        self.history.last().map_or(0, |healthy| healthy.iter().filter(|ok| **ok).count())
    }

    fn check(&mut self, action: &Action) -> Result<(), TestCaseError> {
        let voters = self.members.len();
        match action {
            Action::Replace { member } => {
                if let Some(local) = self.local {
                    prop_assert_eq!(member.id, local, "a local agent replaced another member");
                }
                let index = self.members.iter().position(|known| known.id == member.id).expect("known member");
                let counted = &self.history[self.counted_from[index]..];
                prop_assert!(counted.len() >= K as usize, "replaced before K checks");
                prop_assert!(
                    counted.iter().rev().take(K as usize).all(|healthy| !healthy[index]),
                    "replaced {} without K successive failures",
                    member.id
                );
                // At least K trailing failures with no rise of the raft index: a rise,
                // like a passed check, resets the count.
                let stalled = counted
                    .iter()
                    .zip(&self.advanced[self.counted_from[index]..])
                    .rev()
                    .take_while(|(healthy, advanced)| !healthy[index] && !advanced[index])
                    .count();
                prop_assert!(stalled >= K as usize, "replaced {} while it was catching up", member.id);
                let healthy_left = self.healthy_in_last();
                prop_assert!(
                    healthy_left >= quorum(voters),
                    "replacement with {healthy_left} healthy of {voters} would lose quorum"
                );
                prop_assert!(
                    !self
                        .outstanding
                        .iter()
                        .any(|pending| matches!(pending, Action::Replace { .. } | Action::DisasterRecovery { .. })),
                    "two membership changes in flight"
                );
            }
            Action::DisasterRecovery { snapshot, .. } => {
                prop_assert!(self.history.len() >= K as usize);
                prop_assert!(
                    self.history
                        .iter()
                        .rev()
                        .take(K as usize)
                        .all(|healthy| healthy.iter().filter(|ok| **ok).count() < quorum(voters)),
                    "disaster recovery without K checks of lost quorum"
                );
                prop_assert!(
                    self.advanced.iter().rev().take(K as usize).all(|advanced| !advanced.iter().any(|up| *up)),
                    "disaster recovery although a member's raft index rose (its cluster commits)"
                );
                let Some(Step::Observe { store_reachable, snapshots, peers_healthy, .. }) = &self.last else {
                    return Err(TestCaseError::fail("disaster recovery outside an observation"));
                };
                prop_assert!(*store_reachable, "disaster recovery with the store unreachable");
                prop_assert!(!*peers_healthy, "disaster recovery while peers report a healthy cluster");
                let settled =
                    self.recovered_at.is_none_or(|at| self.now >= at.saturating_add(policy().recovery_settle_ms));
                prop_assert!(settled, "a second recovery before the first one's cluster formed or settled");
                let metas = snapshot_metas(snapshots);
                prop_assert_eq!(Some(snapshot), newest_verified(&metas).map(|meta| &meta.name));
                prop_assert!(
                    !self
                        .outstanding
                        .iter()
                        .any(|pending| matches!(pending, Action::Replace { .. } | Action::DisasterRecovery { .. })),
                    "recovery while another change is in flight"
                );
            }
            Action::Save { source } => {
                prop_assert!(self.healthy_in_last() >= quorum(voters), "save without quorum");
                let Some(Step::Observe { leader, healthy, .. }) = self.history_observation() else {
                    return Err(TestCaseError::fail("save before any observation"));
                };
                let leader = leader.expect("save names the leader");
                prop_assert_eq!(self.members[leader].id, *source);
                if let Some(local) = self.local {
                    prop_assert_eq!(*source, local, "a local agent saved while another member led");
                }
                prop_assert!(healthy[leader], "save from an unhealthy leader");
                prop_assert!(
                    !self.outstanding.iter().any(|pending| matches!(pending, Action::Save { .. })),
                    "two saves in flight"
                );
            }
            Action::CheckHealth | Action::Prune | Action::Warn(_) => {}
        }
        Ok(())
    }

    fn history_observation(&self) -> Option<Step> {
        self.last_observation.clone()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every action the agent emits is allowed by the rules, recomputed from history:
    /// replacement only after K failures and never losing quorum, one change at a
    /// time, disaster recovery only after K checks without quorum with the store
    /// reachable and no healthy peer, naming the newest verified snapshot, and
    /// saves only from a healthy leader of a cluster with quorum.
    #[test]
    fn every_action_is_allowed((members, steps, local) in scenario()) {
        check_steps(members, steps, local)?;
    }

    /// Failure runs shorter than K (blips) never cause a replacement or a recovery.
    #[test]
    fn blips_do_nothing(
        runs in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 3), 0..80),
    ) {
        let members: Vec<Member> = (1..=3).map(member).collect();
        let mut agent = Agent::new(policy(), members.clone(), Millis(0));
        let mut run_lengths = [0u32; 3];
        for (round, healthy) in runs.into_iter().enumerate() {
            let mut checks = Vec::new();
            for (index, ok) in healthy.into_iter().enumerate() {
                let ok = ok || run_lengths[index] + 1 >= K;
                run_lengths[index] = if ok { 0 } else { run_lengths[index] + 1 };
                checks.push(MemberHealth::new(members[index].id, ok));
            }
            agent.handle_observation(Millis(round as u64 * 1_000), Observation {
                members: Some(members.clone()),
                health: checks,
                leader: Some(members[0].id),
                store: StoreObservation { reachable: true, ..StoreObservation::default() },
            });
            while let Some(action) = agent.poll_action() {
                prop_assert!(
                    !matches!(action, Action::Replace { .. } | Action::DisasterRecovery { .. }),
                    "blip caused {action:?}"
                );
            }
        }
    }
}

/// Runs the steps, checking every action; returns the kinds of action seen.
fn check_steps(
    members_count: usize,
    steps: Vec<Step>,
    local: Option<usize>,
) -> Result<Vec<&'static str>, TestCaseError> {
    let members: Vec<Member> = (1..=members_count as u64).map(member).collect();
    let local = local.map(|index| members[index].id);
    let mut agent = Agent::new(policy(), members.clone(), Millis(0));
    if let Some(local) = local {
        agent = agent.with_local_member(local);
    }
    let mut model = Model {
        members: members.clone(),
        history: Vec::new(),
        advanced: Vec::new(),
        highest: vec![None; members_count],
        counted_from: vec![0; members_count],
        last: None,
        last_observation: None,
        outstanding: VecDeque::new(),
        local,
        recovered_at: None,
        now: Millis(0),
    };
    let mut now = Millis(0);
    let mut seen = Vec::new();
    for step in steps {
        match &step {
            Step::Observe { healthy, progress, leader, store_reachable, snapshots, peers_healthy } => {
                model.history.push(healthy.clone());
                let mut advanced = Vec::new();
                for (highest, now) in model.highest.iter_mut().zip(progress) {
                    advanced.push(match (*highest, now) {
                        (_, None) => false,
                        (None, Some(_)) => true,
                        (Some(before), Some(now)) => *now > before,
                    });
                    *highest = match (*highest, now) {
                        (Some(before), Some(now)) => Some(before.max(*now)),
                        (before, now) => before.or(*now),
                    };
                }
                model.advanced.push(advanced);
                if healthy.iter().filter(|ok| **ok).count() >= quorum(members_count) {
                    model.recovered_at = None;
                }
                model.last_observation = Some(step.clone());
                agent.handle_observation(
                    now,
                    Observation {
                        members: Some(members.clone()),
                        health: members
                            .iter()
                            .zip(healthy.iter().zip(progress))
                            .map(|(member, (ok, progress))| MemberHealth {
                                id: member.id,
                                healthy: *ok,
                                progress: *progress,
                            })
                            .collect(),
                        leader: leader.map(|index| members[index].id),
                        store: StoreObservation {
                            reachable: *store_reachable,
                            snapshots: snapshot_metas(snapshots),
                            healthy_peer_heartbeats: if *peers_healthy { vec![MemberId(99)] } else { Vec::new() },
                        },
                    },
                );
            }
            Step::Complete { success } => {
                if let Some(action) = model.outstanding.pop_front() {
                    let outcome = match (&action, success) {
                        (Action::Save { source }, true) => Outcome::Saved {
                            snapshot: SnapshotMeta {
                                name: SnapshotName::new(now, Revision(source.0 as i64), Compression::None),
                                verified: true,
                            },
                        },
                        (Action::Save { .. }, false) => Outcome::SaveFailed,
                        (Action::Replace { member }, true) => Outcome::Replaced { member: member.id },
                        (Action::Replace { member }, false) => Outcome::ReplaceFailed { member: member.id },
                        (Action::DisasterRecovery { .. }, true) => Outcome::Recovered,
                        (Action::DisasterRecovery { .. }, false) => Outcome::RecoveryFailed,
                        _ => unreachable!("only actions with outcomes are outstanding"),
                    };
                    if let Action::Replace { member } = &action {
                        let index = members.iter().position(|known| known.id == member.id).expect("known");
                        model.counted_from[index] = model.history.len();
                        model.highest[index] = None;
                    }
                    if matches!(action, Action::DisasterRecovery { .. }) {
                        model.counted_from = vec![model.history.len(); members_count];
                        model.highest = vec![None; members_count];
                        model.recovered_at = success.then_some(now);
                    }
                    agent.handle_outcome(now, outcome);
                }
            }
            Step::Tick { elapsed_ms } => {
                now = now.saturating_add(*elapsed_ms);
                model.now = now;
                agent.handle_timeout(now);
            }
        }
        model.last = Some(step.clone());
        while let Some(action) = agent.poll_action() {
            model.check(&action)?;
            seen.push(match &action {
                Action::CheckHealth => "check",
                Action::Save { .. } => "save",
                Action::Prune => "prune",
                Action::Replace { .. } => "replace",
                Action::DisasterRecovery { .. } => "disaster-recovery",
                Action::Warn(_) => "warn",
            });
            if matches!(action, Action::Save { .. } | Action::Replace { .. } | Action::DisasterRecovery { .. }) {
                model.outstanding.push_back(action);
            }
        }
        if let Some(deadline) = agent.poll_timeout() {
            prop_assert!(deadline >= Millis(0));
        }
    }
    Ok(seen)
}

/// The generator reaches every decision, so the properties above are not vacuous.
#[test]
fn the_properties_reach_every_decision() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let (members, steps, local) = scenario().new_tree(&mut runner).expect("a scenario").current();
        seen.extend(check_steps(members, steps, local).expect("the properties hold"));
    }
    for kind in ["check", "save", "prune", "replace", "disaster-recovery", "warn"] {
        assert!(seen.contains(kind), "no scenario produced {kind}: {seen:?}");
    }
}

/// One round of checks with the store reachable: `healthy` says which members answered.
fn observation(members: &[Member], healthy: impl Fn(MemberId) -> bool, leader: Option<MemberId>) -> Observation {
    Observation {
        members: Some(members.to_vec()),
        health: members.iter().map(|member| MemberHealth::new(member.id, healthy(member.id))).collect(),
        leader,
        store: StoreObservation { reachable: true, ..StoreObservation::default() },
    }
}

#[test]
fn a_dead_member_of_three_is_replaced_after_k_checks() {
    let members: Vec<Member> = (1..=3).map(member).collect();
    let mut agent = Agent::new(policy(), members.clone(), Millis(0));
    let mut replaced_at = None;
    for round in 0..10u64 {
        agent.handle_observation(
            Millis(round * 1_000),
            observation(&members, |id| id != MemberId(3), Some(MemberId(1))),
        );
        while let Some(action) = agent.poll_action() {
            if let Action::Replace { member } = action {
                assert_eq!(member.id, MemberId(3));
                assert!(replaced_at.is_none(), "replaced twice without an outcome");
                replaced_at = Some(round);
            }
        }
    }
    assert_eq!(replaced_at, Some(u64::from(K) - 1), "replaced on the K-th failed check");
    assert_eq!(agent.change_in_flight(), Some(MemberId(3)));
}

/// K failed checks are not enough while they span less than the grace: etcd
/// reconnects a peer within seconds after a partition heals, and a member that is
/// only reconnecting must not be replaced, nor a cluster that is only re-forming be
/// recovered. Checks every second, K = 3, grace 5 s: both wait for t = 5 s.
#[test]
fn failed_checks_must_span_the_grace() {
    let members: Vec<Member> = (1..=3).map(member).collect();
    let policy = Policy { failure_grace_ms: 5_000, ..policy() };
    let mut replacing = Agent::new(policy.clone(), members.clone(), Millis(0));
    let mut recovering = Agent::new(policy, members.clone(), Millis(0));
    let snapshots = snapshot_metas(&[(10, true)]);
    let (mut replaced_at, mut recovered_at) = (None, None);
    for round in 0..10u64 {
        let now = Millis(round * 1_000);
        replacing.handle_observation(now, observation(&members, |id| id != MemberId(3), Some(MemberId(1))));
        let mut lost = observation(&members, |id| id == MemberId(1), None);
        lost.store.snapshots = snapshots.clone();
        recovering.handle_observation(now, lost);
        if std::iter::from_fn(|| replacing.poll_action()).any(|action| matches!(action, Action::Replace { .. })) {
            replaced_at.get_or_insert(round);
        }
        if std::iter::from_fn(|| recovering.poll_action())
            .any(|action| matches!(action, Action::DisasterRecovery { .. }))
        {
            recovered_at.get_or_insert(round);
        }
    }
    assert_eq!(replaced_at, Some(5), "K failed checks, the first 5 s before");
    assert_eq!(recovered_at, Some(5), "K checks without quorum, the first 5 s before");
}

/// An agent cut off with its member sees every check fail. Those rounds are not
/// evidence: back on the network, its member (catching up) gets K fresh checks
/// before a replacement, however long the isolation lasted.
#[test]
fn an_isolated_agent_counts_no_failures_until_it_sees_quorum() {
    let members: Vec<Member> = (1..=3).map(member).collect();
    let mut agent = Agent::new(policy(), members.clone(), Millis(0)).with_local_member(MemberId(1));
    let mut replaced_at = None;
    for round in 0..20u64 {
        // Rounds 0-9: isolated (nothing answers). Then the others answer, the local member does not.
        let isolated = round < 10;
        agent.handle_observation(
            Millis(round * 1_000),
            observation(&members, |id| !isolated && id != MemberId(1), (!isolated).then_some(MemberId(2))),
        );
        if isolated {
            assert_eq!(agent.tracker().successive_failures(MemberId(1)), 0, "round {round}");
        }
        while let Some(action) = agent.poll_action() {
            if let Action::Replace { member } = action {
                assert_eq!(member.id, MemberId(1));
                replaced_at.get_or_insert(round);
            }
        }
    }
    assert_eq!(replaced_at, Some(10 + u64::from(K) - 1), "K checks after the network came back");
}

/// Back from a long partition, the local member fails its reads for many more than
/// K checks while its raft index climbs: it is catching up and is not replaced. Once
/// its index stops moving (it crashed, or is stuck), K failed checks replace it.
#[test]
fn a_rejoined_member_that_is_catching_up_is_not_replaced() {
    let members: Vec<Member> = (1..=3).map(member).collect();
    let mut agent = Agent::new(policy(), members.clone(), Millis(0)).with_local_member(MemberId(1));
    let mut replaced_at = None;
    for round in 0..40u64 {
        // Rounds 0-9: cut off; 10-29: back and behind, its index rising; 30-: stalled.
        let isolated = round < 10;
        let index = if isolated { 105 } else { 100 + round.min(29) };
        let mut seen = observation(&members, |id| !isolated && id != MemberId(1), (!isolated).then_some(MemberId(2)));
        for check in &mut seen.health {
            check.progress = Some(if check.id == MemberId(1) { index } else { 1_000 + round });
        }
        agent.handle_observation(Millis(round * 1_000), seen);
        while let Some(action) = agent.poll_action() {
            if let Action::Replace { member } = action {
                assert_eq!(member.id, MemberId(1));
                replaced_at.get_or_insert(round);
            }
        }
    }
    assert_eq!(replaced_at, Some(29 + u64::from(K)), "K checks after its index stopped moving");
}

/// A round without quorum: only member 1 answers, no leader, the store reachable
/// and holding `snapshots`.
fn only_the_first_answers(members: &[Member], snapshots: Vec<SnapshotMeta>) -> Observation {
    Observation {
        members: None,
        health: members.iter().map(|member| MemberHealth::new(member.id, member.id == MemberId(1))).collect(),
        leader: None,
        store: StoreObservation { reachable: true, snapshots, ..StoreObservation::default() },
    }
}

#[test]
fn lost_quorum_restores_the_newest_verified_snapshot() {
    let members: Vec<Member> = (1..=3).map(member).collect();
    let mut agent = Agent::new(policy(), members.clone(), Millis(0));
    let snapshots = snapshot_metas(&[(10, true), (30, false), (20, true)]);
    let mut recoveries = Vec::new();
    for round in 0..5u64 {
        agent.handle_observation(Millis(round * 1_000), only_the_first_answers(&members, snapshots.clone()));
        while let Some(action) = agent.poll_action() {
            if let Action::DisasterRecovery { snapshot, members } = action {
                recoveries.push((round, snapshot, members.len()));
            }
        }
    }
    assert_eq!(recoveries, vec![(2, snapshots[2].name.clone(), 3)]);
}

/// After its own recovery an agent gives the recovered cluster `recovery_settle_ms`
/// to form: its members restore and start one by one, and until then it shows no
/// quorum. Another recovery in that window would claim a second epoch over the
/// first (SAFETY.md, finding 12); once it has passed, a cluster that never formed is
/// recovered anew (nemesis seed 31016435). Checks every second, K = 3: the first
/// recovery at t = 2 s, none before t = 2 s + settle, one exactly then.
#[test]
fn a_recovered_cluster_is_waited_for_before_another_recovery() {
    let members: Vec<Member> = (1..=3).map(member).collect();
    let mut agent = Agent::new(policy(), members.clone(), Millis(0));
    let settle = policy().recovery_settle_ms;
    let lost = |agent: &mut Agent, at: u64| {
        agent.handle_observation(Millis(at), only_the_first_answers(&members, snapshot_metas(&[(10, true)])));
        std::iter::from_fn(|| agent.poll_action()).collect::<Vec<_>>()
    };
    let recovery = |actions: &[Action]| actions.iter().any(|action| matches!(action, Action::DisasterRecovery { .. }));
    let mut first = None;
    for at in (0..5).map(|round| round * 1_000) {
        if recovery(&lost(&mut agent, at)) {
            first = Some(at);
            break;
        }
    }
    let recovered_at = first.expect("quorum lost for K checks: a recovery");
    agent.handle_outcome(Millis(recovered_at), Outcome::Recovered);
    let mut awaited = false;
    let mut at = recovered_at + 1_000;
    while at < recovered_at + settle {
        let actions = lost(&mut agent, at);
        assert!(!recovery(&actions), "a second recovery {} ms after the first", at - recovered_at);
        awaited |= actions.contains(&Action::Warn(Warning::AwaitingRecoveredMembers));
        at += 1_000;
    }
    assert!(awaited, "the wait is reported");
    assert!(recovery(&lost(&mut agent, recovered_at + settle)), "recovered anew once the settle time has passed");
}

/// Saves come once per snapshot interval from the agent beside a healthy leader,
/// never while one is in flight, and the agent wakes exactly when the next check or
/// save is due.
#[test]
fn saves_keep_their_interval_and_the_agent_wakes_when_work_is_due() {
    let members: Vec<Member> = (1..=3).map(member).collect();
    let mut agent = Agent::new(policy(), members.clone(), Millis(0)).with_local_member(MemberId(1));
    assert_eq!(agent.poll_timeout(), Some(Millis(0)), "the first check is due at once");
    agent.handle_timeout(Millis(0));
    assert_eq!(agent.poll_action(), Some(Action::CheckHealth));
    agent.handle_timeout(Millis(10));
    assert_eq!(agent.poll_action(), None, "no second check while one is in flight");
    agent.handle_observation(Millis(20), observation(&members, |_| true, Some(MemberId(1))));
    assert_eq!(agent.poll_action(), Some(Action::Save { source: MemberId(1) }));
    assert_eq!(agent.poll_action(), None);
    // The save is in flight: only the next check is a deadline.
    assert_eq!(agent.poll_timeout(), Some(Millis(1_000)));
    let saved = SnapshotMeta { name: SnapshotName::new(Millis(20), Revision(7), Compression::None), verified: true };
    agent.handle_outcome(Millis(30), Outcome::Saved { snapshot: saved });
    assert_eq!(agent.poll_action(), Some(Action::Prune));
    // Next save at 20 + 5000; the check at 1000 comes first.
    assert_eq!(agent.poll_timeout(), Some(Millis(1_000)));
    for now in [1_000u64, 2_000, 3_000, 4_000, 5_000] {
        agent.handle_timeout(Millis(now));
        assert_eq!(agent.poll_action(), Some(Action::CheckHealth), "at {now}");
        agent.handle_observation(Millis(now), observation(&members, |_| true, Some(MemberId(1))));
        assert_eq!(agent.poll_action(), None, "no save before the interval, at {now}");
    }
    agent.handle_timeout(Millis(5_020));
    assert_eq!(agent.poll_action(), Some(Action::Save { source: MemberId(1) }), "due at 5020");
    // An agent beside a follower never saves, and a failed save is retried at the next check.
    let mut follower = Agent::new(policy(), members.clone(), Millis(0)).with_local_member(MemberId(2));
    follower.handle_timeout(Millis(0));
    follower.poll_action();
    follower.handle_observation(Millis(0), observation(&members, |_| true, Some(MemberId(1))));
    assert_eq!(follower.poll_action(), None);
    agent.handle_outcome(Millis(5_030), Outcome::SaveFailed);
    agent.handle_timeout(Millis(6_030));
    assert!(std::iter::from_fn(|| agent.poll_action()).any(|action| action == Action::Save { source: MemberId(1) }));
}

/// The accessors the driver reads report the agent's own state.
#[test]
fn accessors_report_state() {
    let members: Vec<Member> = (1..=3).map(member).collect();
    let agent = Agent::new(policy(), members.clone(), Millis(0)).with_local_member(MemberId(2));
    assert_eq!(agent.local_member(), Some(MemberId(2)));
    assert_eq!(agent.policy(), &policy());
    assert_eq!(agent.members(), members.as_slice());
    let mut tracked = agent.clone();
    tracked.handle_timeout(Millis(0));
    tracked.handle_observation(Millis(0), observation(&members, |id| id != MemberId(3), Some(MemberId(1))));
    assert_eq!(tracked.tracker().successive_failures(MemberId(3)), 1);
}

/// A finished replacement (or a failed one) frees the one change slot, so the next
/// failed member can be replaced; a report about another member frees nothing.
#[test]
fn an_outcome_frees_the_change_slot_of_its_member_only() {
    let members: Vec<Member> = (1..=3).map(member).collect();
    let mut agent = Agent::new(policy(), members.clone(), Millis(0));
    for round in 0..=u64::from(K) {
        agent.handle_observation(
            Millis(round * 1_000),
            observation(&members, |id| id != MemberId(3), Some(MemberId(1))),
        );
    }
    assert!(std::iter::from_fn(|| agent.poll_action()).any(|action| matches!(action, Action::Replace { .. })));
    assert_eq!(agent.change_in_flight(), Some(MemberId(3)));
    agent.handle_outcome(Millis(5_000), Outcome::ReplaceFailed { member: MemberId(2) });
    assert_eq!(agent.change_in_flight(), Some(MemberId(3)), "another member's outcome");
    agent.handle_outcome(Millis(5_000), Outcome::Replaced { member: MemberId(3) });
    assert_eq!(agent.change_in_flight(), None);
}
