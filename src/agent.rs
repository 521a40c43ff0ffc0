//! The decision step: observations and time in, actions out.
//!
//! Poll order for a driver, after every input (`handle_*`):
//! 1. drain [`Agent::poll_action`] until it returns `None`, executing each action
//!    and reporting its result with [`Agent::handle_outcome`] (or
//!    [`Agent::handle_observation`] for [`Action::CheckHealth`]);
//! 2. sleep until [`Agent::poll_timeout`], then call [`Agent::handle_timeout`].
//!
//! `now` must never go backwards between calls. A spurious `handle_timeout` is a
//! no-op, so drivers may wake early.

use crate::health::FailureTracker;
use crate::membership::{quorum, replacement_keeps_quorum};
use crate::policy::Policy;
use crate::snapshot::{newest_verified, SnapshotMeta, SnapshotName};
use crate::time::Millis;
use crate::types::{Member, MemberHealth, MemberId};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// One round of looking at the world, gathered by the driver after [`Action::CheckHealth`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The member list; `None` when no member answered.
    pub members: Option<Vec<Member>>,
    /// One probe per member that was checked (`etcdctl endpoint health`).
    pub health: Vec<MemberHealth>,
    pub leader: Option<MemberId>,
    pub store: StoreObservation,
}

/// What the store showed in the same round.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreObservation {
    /// Whether the store answered at all. An agent that cannot see the store never
    /// starts a disaster recovery: it cannot claim an epoch or read a snapshot.
    pub reachable: bool,
    pub snapshots: Vec<SnapshotMeta>,
    /// Peers whose recent heartbeat in the store says their member is healthy and
    /// in quorum. Any of them means this agent is the isolated one, not the cluster.
    pub healthy_peer_heartbeats: Vec<MemberId>,
}

/// What the driver should do next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Probe every member and the store, then call `handle_observation`.
    CheckHealth,
    /// Stream a snapshot from `source` into the store.
    Save { source: MemberId },
    /// List the store and delete what `retention::plan` says.
    Prune,
    /// Remove `member`, wipe its data dir, add it back, start it.
    Replace { member: Member },
    /// Restore every member from `snapshot` under a new cluster token.
    DisasterRecovery { snapshot: SnapshotName, members: Vec<Member> },
    /// Something needs a human; the agent does nothing about it on its own.
    Warn(Warning),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Warning {
    /// Failed members wait: replacing one now would lose quorum.
    ReplacementWouldLoseQuorum { member: MemberId },
    /// Quorum is lost but the store cannot be reached, so no recovery starts.
    QuorumLostStoreUnreachable,
    /// Quorum is lost from here, but peers report a healthy cluster: this agent is isolated.
    QuorumLostPeersHealthy { peers: Vec<MemberId> },
    /// Quorum is lost and the store holds no verified snapshot to restore.
    QuorumLostNoVerifiedSnapshot,
    /// Failed members or lost quorum, but automatic recovery is off.
    RecoveryDisabled,
    /// A recovery ran and its cluster has not reached quorum yet: the other members
    /// are still restoring; a new recovery now would only churn epochs.
    AwaitingRecoveredMembers,
}

/// The result of an action, reported back by the driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Saved {
        snapshot: SnapshotMeta,
    },
    SaveFailed,
    Pruned,
    Replaced {
        member: MemberId,
    },
    ReplaceFailed {
        member: MemberId,
    },
    Recovered,
    RecoveryFailed,
    /// A claim waits for a quorum of members to join it: nothing restored yet, and
    /// no new claim while it stands (the driver follows it every round).
    RecoveryPending,
}

/// The recovery state machine of one agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Agent {
    policy: Policy,
    members: Vec<Member>,
    tracker: FailureTracker,
    leader: Option<MemberId>,
    quorum_holds: bool,
    quorum_lost_checks: u32,
    /// When the current run of checks without quorum began.
    quorum_lost_since: Option<Millis>,
    check_next: Millis,
    check_in_flight: bool,
    save_next: Millis,
    save_in_flight: bool,
    change_in_flight: Option<MemberId>,
    recovery_in_flight: bool,
    last_warning: Option<Warning>,
    actions: VecDeque<Action>,
    /// Set when this agent runs beside one member (production): it then replaces
    /// only that member (only it can wipe that disk) and saves only while that
    /// member leads, so one agent of the cluster saves per interval.
    local_member: Option<MemberId>,
    /// When this agent's last recovery completed, until its cluster first shows
    /// quorum; no other recovery starts for `recovery_settle_ms` from then.
    recovered_at: Option<Millis>,
}

impl Agent {
    /// `now` is the start time: the first check is due at once, the first save
    /// once an observation shows a healthy cluster.
    pub fn new(policy: Policy, members: Vec<Member>, now: Millis) -> Agent {
        let mut agent = Agent {
            policy,
            members: Vec::new(),
            tracker: FailureTracker::default(),
            leader: None,
            quorum_holds: false,
            quorum_lost_checks: 0,
            quorum_lost_since: None,
            check_next: now,
            check_in_flight: false,
            save_next: now,
            save_in_flight: false,
            change_in_flight: None,
            recovery_in_flight: false,
            last_warning: None,
            actions: VecDeque::new(),
            local_member: None,
            recovered_at: None,
        };
        agent.set_members(members);
        agent
    }

    /// Runs this agent beside `member`: see the field's comment.
    pub fn with_local_member(mut self, member: MemberId) -> Agent {
        self.local_member = Some(member);
        self
    }

    pub fn local_member(&self) -> Option<MemberId> {
        self.local_member
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    pub fn members(&self) -> &[Member] {
        &self.members
    }
    pub fn tracker(&self) -> &FailureTracker {
        &self.tracker
    }
    /// The member being replaced, if any: at most one at a time.
    pub fn change_in_flight(&self) -> Option<MemberId> {
        self.change_in_flight
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        if now >= self.check_next && !self.check_in_flight {
            self.check_in_flight = true;
            self.check_next = now.saturating_add(self.policy.check_interval_ms);
            self.actions.push_back(Action::CheckHealth);
        }
        self.plan_save(now);
    }

    pub fn handle_observation(&mut self, now: Millis, observation: Observation) {
        self.check_in_flight = false;
        if let Some(members) = observation.members {
            self.set_members(members);
        }
        let voters: Vec<MemberId> = self.voters().collect();
        let checks: Vec<MemberHealth> =
            observation.health.iter().filter(|check| voters.contains(&check.id)).copied().collect();
        // Failures count only in rounds where this agent sees a quorum answer.
        let sees_quorum = checks.iter().filter(|check| check.healthy).count() >= quorum(voters.len().max(1));
        self.tracker.record(now, &checks, sees_quorum);
        self.leader = observation.leader;

        let healthy_voters = voters.iter().filter(|id| self.tracker.is_healthy(**id)).count();
        self.quorum_holds = !voters.is_empty() && healthy_voters >= quorum(voters.len());
        if self.quorum_holds {
            self.recovered_at = None;
        }
        // A voter whose raft index rose since the last round proves a leader commits:
        // the cluster lives (its members are catching up), so this round is not one
        // more without quorum, even though too few answered their reads.
        let committing = voters.iter().any(|id| self.tracker.is_advancing(*id));
        if self.quorum_holds || committing {
            self.quorum_lost_checks = 0;
            self.quorum_lost_since = None;
        } else {
            self.quorum_lost_checks = self.quorum_lost_checks.saturating_add(1);
            self.quorum_lost_since.get_or_insert(now);
        }
        let quorum_lost_for_good = self.quorum_lost_checks >= self.policy.failures_max.max(1)
            && self.quorum_lost_since.is_some_and(|since| now >= since.saturating_add(self.policy.failure_grace_ms));

        if self.change_in_flight.is_none() && !self.recovery_in_flight {
            if self.quorum_holds {
                self.plan_replacement(now, voters.len(), healthy_voters);
            } else if quorum_lost_for_good {
                self.plan_disaster_recovery(now, &observation.store);
            }
        }
        self.plan_save(now);
    }

    pub fn handle_outcome(&mut self, now: Millis, outcome: Outcome) {
        match outcome {
            Outcome::Saved { .. } => {
                // What the store holds is read afresh in every observation; nothing here
                // keeps a copy that could go stale.
                self.save_in_flight = false;
                self.actions.push_back(Action::Prune);
            }
            Outcome::SaveFailed => {
                // Retry at the next check rather than a whole snapshot interval later.
                self.save_in_flight = false;
                self.save_next =
                    now.saturating_add(self.policy.check_interval_ms.min(self.policy.snapshot_interval_ms));
            }
            Outcome::Pruned => {}
            Outcome::Replaced { member } | Outcome::ReplaceFailed { member } => {
                if self.change_in_flight == Some(member) {
                    self.change_in_flight = None;
                }
                // The replacement has a new member ID; a failed attempt is counted again from scratch
                // so the next try waits K more checks instead of looping.
                self.tracker.retain(|id| id != member);
            }
            Outcome::RecoveryPending => {
                self.recovery_in_flight = false;
                self.quorum_lost_checks = 0;
                self.quorum_lost_since = None;
            }
            Outcome::Recovered | Outcome::RecoveryFailed => {
                self.recovery_in_flight = false;
                self.recovered_at = matches!(outcome, Outcome::Recovered).then_some(now);
                self.quorum_lost_checks = 0;
                self.quorum_lost_since = None;
                self.tracker = FailureTracker::default();
            }
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let check = (!self.check_in_flight).then_some(self.check_next);
        let save = (!self.save_in_flight && self.quorum_holds).then_some(self.save_next);
        match (check, save) {
            (Some(check), Some(save)) => Some(check.min(save)),
            (check, save) => check.or(save),
        }
    }

    fn set_members(&mut self, mut members: Vec<Member>) {
        members.sort_by_key(|member| member.id);
        self.tracker.retain(|id| members.iter().any(|member| member.id == id));
        self.members = members;
    }

    fn voters(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.members.iter().filter(|member| member.is_voter()).map(|member| member.id)
    }

    /// Saves only while the cluster has quorum and a leader, like etcdadm: a
    /// snapshot of a cluster that cannot commit would be stale on arrival.
    fn plan_save(&mut self, now: Millis) {
        if self.save_in_flight || !self.quorum_holds || now < self.save_next {
            return;
        }
        let Some(source) = self.leader.filter(|leader| self.tracker.is_healthy(*leader)) else {
            return;
        };
        if self.local_member.is_some_and(|local| local != source) {
            // Another agent sits beside the leader and saves; look again next interval.
            self.save_next = now.saturating_add(self.policy.snapshot_interval_ms);
            return;
        }
        self.save_in_flight = true;
        self.save_next = now.saturating_add(self.policy.snapshot_interval_ms);
        self.actions.push_back(Action::Save { source });
    }

    fn plan_replacement(&mut self, now: Millis, voters: usize, healthy_voters: usize) {
        let failed: Vec<MemberId> = self
            .tracker
            .failed(self.policy.failures_max, self.policy.failure_grace_ms, now)
            .into_iter()
            .filter(|id| self.voters().any(|voter| voter == *id))
            .filter(|id| self.local_member.is_none_or(|local| local == *id))
            .collect();
        let Some(target) = failed.first().copied() else {
            self.last_warning = None;
            return;
        };
        if !self.policy.automatic_replace {
            self.warn(Warning::RecoveryDisabled);
            return;
        }
        if !replacement_keeps_quorum(voters, healthy_voters) {
            self.warn(Warning::ReplacementWouldLoseQuorum { member: target });
            return;
        }
        let Some(member) = self.members.iter().find(|member| member.id == target).cloned() else {
            return;
        };
        self.change_in_flight = Some(target);
        self.last_warning = None;
        self.actions.push_back(Action::Replace { member });
    }

    fn plan_disaster_recovery(&mut self, now: Millis, store: &StoreObservation) {
        if !self.policy.automatic_disaster_recovery {
            self.warn(Warning::RecoveryDisabled);
            return;
        }
        if self.recovered_at.is_some_and(|at| now < at.saturating_add(self.policy.recovery_settle_ms)) {
            self.warn(Warning::AwaitingRecoveredMembers);
            return;
        }
        if !store.reachable {
            self.warn(Warning::QuorumLostStoreUnreachable);
            return;
        }
        if !store.healthy_peer_heartbeats.is_empty() {
            let mut peers = store.healthy_peer_heartbeats.clone();
            peers.sort();
            self.warn(Warning::QuorumLostPeersHealthy { peers });
            return;
        }
        let Some(snapshot) = newest_verified(&store.snapshots) else {
            self.warn(Warning::QuorumLostNoVerifiedSnapshot);
            return;
        };
        self.recovery_in_flight = true;
        self.last_warning = None;
        self.actions
            .push_back(Action::DisasterRecovery { snapshot: snapshot.name.clone(), members: self.members.clone() });
    }

    /// Emits a warning once per change of situation, not on every check.
    fn warn(&mut self, warning: Warning) {
        if self.last_warning.as_ref() != Some(&warning) {
            self.last_warning = Some(warning.clone());
            self.actions.push_back(Action::Warn(warning));
        }
    }
}

#[cfg(test)]
mod tests;
