//! Replacing the local member, as a plan: which step comes next, re-derived from
//! what the cluster shows and what the replacement's state file records.
//!
//! The runtime holds the membership lock, gathers the [`Facts`], carries out the
//! [`Step`] [`next`] returns and asks again, until [`Step::Done`] (or a step that
//! ends the run). Every step changes a fact the next decision reads, and the
//! state file survives the process, so an agent killed between any two steps
//! resumes where it was: nothing here depends on which run took the earlier steps.
//!
//! The order is the safety argument: the old incarnation leaves the cluster
//! before its data dir is moved aside (never deleted), and a new incarnation is
//! added only when no other change is half done (no other member's learner) and
//! no earlier incarnation of this member is left in the cluster.

use crate::{Member, MemberId};
use serde::{Deserialize, Serialize};

/// How far a replacement got; persisted beside the data dir so a restarted agent resumes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceState {
    /// The incarnation being replaced (absent when the member was already gone).
    pub old_id: Option<MemberId>,
    /// The new incarnation, once added.
    pub new_id: Option<MemberId>,
    /// Whether the old data dir has been moved aside.
    pub wiped: bool,
}

impl ReplaceState {
    /// A replacement about to begin: the incarnation the cluster lists for this
    /// member now, if any, is the one to replace.
    pub fn begin(members: &[Member], peer_url: &str) -> ReplaceState {
        let old_id = members.iter().find(|member| is_ours(member, peer_url)).map(|member| member.id);
        ReplaceState { old_id, ..ReplaceState::default() }
    }
}

/// What this run (one process) has done so far; a new run starts from nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProgress {
    pub stopped: bool,
    pub started: bool,
    pub promoted: bool,
}

/// What the next step is decided on.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub state: &'a ReplaceState,
    /// `member list`, read just now.
    pub members: &'a [Member],
    /// This member's peer URL: the entries that carry it are this member's incarnations.
    pub peer_url: &'a str,
    /// Whether the data dir holds etcd's `member/`.
    pub has_data: bool,
    pub run: RunProgress,
    /// Add as a learner and promote it once caught up (etcd ≥ 3.4); off: add a voter.
    pub learner: bool,
    /// Stop and start the member here; off: leave it stopped for the operator.
    pub start: bool,
}

/// One step of a replacement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Stop the local member: nothing below may race a running etcd.
    StopLocal,
    /// Another member's learner. Under the lock no other change is live (a live
    /// replacer keeps its lease), so it belongs to a change whose replacer died and
    /// lost the lock: roll it back (a learner holds no vote), so at most one change
    /// is ever in flight. Its own agent adds a fresh one when it resumes.
    RemoveStalledLearner(MemberId),
    /// This member's incarnation from an earlier run is no longer in the cluster
    /// (rolled back as above): its data belongs to nobody; set it aside and forget it.
    SetAsideRolledBack(MemberId),
    /// Remove the incarnation being replaced.
    RemoveOld(MemberId),
    /// Move the data dir aside: the old incarnation is proven gone from the cluster.
    SetAsideData,
    /// An earlier run's incarnation started and has lost its data since: raft
    /// refuses an empty log for a member that had one, so it is removed and a
    /// fresh one added.
    RemoveLostIncarnation(MemberId),
    /// Add a new incarnation.
    Add { learner: bool },
    /// Write the new incarnation's ID to the state file.
    Record(MemberId),
    /// Starting is off: leave the member stopped, with its launch settings shown.
    LeaveStopped,
    /// Start the local member with `initial-cluster-state=existing`.
    StartLocal,
    /// Promote the learner once it has caught up.
    Promote(MemberId),
    /// A learner this process cannot promote (it was told to add voters: it runs
    /// before etcd starts); the agent promotes it once etcd runs.
    LeaveLearner(MemberId),
    /// The member is a voter again.
    Done,
}

impl Step {
    /// Whether the run ends with this step.
    pub fn ends_run(&self) -> bool {
        matches!(self, Step::LeaveStopped | Step::LeaveLearner(_) | Step::Done)
    }
}

/// Whether `member` is an incarnation of the member at `peer_url` (a trailing
/// slash is not a difference).
pub fn is_ours(member: &Member, peer_url: &str) -> bool {
    let ours = peer_url.trim_end_matches('/');
    member.peer_urls.iter().any(|url| url.trim_end_matches('/') == ours)
}

/// The next step of the replacement, from the facts as they are now.
pub fn next(facts: &Facts<'_>) -> Step {
    let Facts { state, members, peer_url, has_data, run, learner, start } = *facts;
    if start && !run.stopped {
        return Step::StopLocal;
    }
    if let Some(stalled) = members.iter().find(|member| member.is_learner && !is_ours(member, peer_url)) {
        return Step::RemoveStalledLearner(stalled.id);
    }
    let listed = |id: MemberId| members.iter().any(|member| member.id == id);
    if let Some(new_id) = state.new_id.filter(|id| !listed(*id)) {
        return Step::SetAsideRolledBack(new_id);
    }
    if let Some(old) = state.old_id.filter(|old| listed(*old) && state.new_id != Some(*old)) {
        return Step::RemoveOld(old);
    }
    if !state.wiped {
        return Step::SetAsideData;
    }
    let incarnation = members.iter().find(|member| is_ours(member, peer_url) && Some(member.id) != state.old_id);
    // Only an incarnation an earlier run started: this run's own start comes later,
    // and its data dir may not show `member/` yet.
    if let Some(lost) = incarnation.filter(|member| !run.started && !member.client_urls.is_empty() && !has_data) {
        return Step::RemoveLostIncarnation(lost.id);
    }
    let Some(incarnation) = incarnation else {
        return Step::Add { learner };
    };
    if state.new_id != Some(incarnation.id) {
        return Step::Record(incarnation.id);
    }
    if !start {
        return Step::LeaveStopped;
    }
    if !run.started {
        return Step::StartLocal;
    }
    match (incarnation.is_learner && !run.promoted, learner) {
        (true, true) => Step::Promote(incarnation.id),
        (true, false) => Step::LeaveLearner(incarnation.id),
        (false, _) => Step::Done,
    }
}

/// More steps than any replacement takes (each step settles one fact, and no fact
/// comes back unless the world changes under the run): a driver that reaches it
/// stops with an error instead of looping.
pub const MAX_STEPS: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OURS: &str = "http://10.0.0.9:2380";

    fn member(id: u64, peer: &str, learner: bool, started: bool) -> Member {
        Member {
            id: MemberId(id),
            name: if started { format!("m{id}") } else { String::new() },
            peer_urls: vec![peer.to_owned()],
            client_urls: if started { vec![format!("http://10.0.0.{id}:2379")] } else { Vec::new() },
            is_learner: learner,
        }
    }

    /// A world the plan runs in: the cluster's member list, the data dir, the state
    /// file, and what has happened that must never happen.
    #[derive(Clone, Debug)]
    struct World {
        members: Vec<Member>,
        has_data: bool,
        state: Option<ReplaceState>,
        next_id: u64,
        set_aside: usize,
    }

    /// Something that happens to the world between two runs of the replacement.
    #[derive(Clone, Debug)]
    enum Event {
        /// Another member's replacer added a learner and died (its lock expired).
        StalledLearner,
        /// Another member's replacement rolled our learner back.
        OurLearnerRolledBack,
        /// Our disk was wiped.
        DiskLost,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![Just(Event::StalledLearner), Just(Event::OurLearnerRolledBack), Just(Event::DiskLost)]
    }

    impl World {
        fn new(others: usize, ours_listed: bool, has_data: bool) -> World {
            let mut members: Vec<Member> =
                (1..=others as u64).map(|id| member(id, &format!("http://10.0.0.{id}:2380"), false, true)).collect();
            if ours_listed {
                members.push(member(9, OURS, false, true));
            }
            World { members, has_data, state: None, next_id: 100, set_aside: 0 }
        }

        fn happen(&mut self, event: &Event) {
            match event {
                Event::StalledLearner => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.members.push(member(id, &format!("http://10.0.1.{id}:2380"), true, false));
                }
                Event::OurLearnerRolledBack => {
                    self.members.retain(|member| !(member.is_learner && is_ours(member, OURS)));
                }
                Event::DiskLost => self.has_data = false,
            }
        }

        /// One run: at most `budget` steps (then the process dies), each checked
        /// against the rules; true when the run ended on its own.
        fn run(&mut self, budget: usize, learner: bool) -> Result<bool, TestCaseError> {
            self.run_with(budget, learner, true)
        }

        fn run_with(&mut self, budget: usize, learner: bool, start: bool) -> Result<bool, TestCaseError> {
            let mut state = self.state.clone().unwrap_or_else(|| ReplaceState::begin(&self.members, OURS));
            self.state = Some(state.clone());
            let mut run = RunProgress::default();
            for _ in 0..budget.min(MAX_STEPS) {
                let facts = Facts {
                    state: &state,
                    members: &self.members,
                    peer_url: OURS,
                    has_data: self.has_data,
                    run,
                    learner,
                    start,
                };
                let step = next(&facts);
                let ours_listed = self.members.iter().filter(|member| is_ours(member, OURS)).count();
                prop_assert!(ours_listed <= 1, "two incarnations of this member at once: {:?}", self.members);
                match &step {
                    Step::StopLocal => run.stopped = true,
                    Step::RemoveStalledLearner(id) => {
                        let removed = self.members.iter().find(|member| member.id == *id);
                        prop_assert!(removed.is_some_and(|member| member.is_learner), "only learners: {step:?}");
                        self.members.retain(|member| member.id != *id);
                    }
                    Step::SetAsideRolledBack(_) | Step::SetAsideData => {
                        prop_assert!(
                            !state.old_id.is_some_and(|old| self.members.iter().any(|member| member.id == old)),
                            "data set aside while the old incarnation is still a member: {:?}",
                            self.members
                        );
                        if self.has_data {
                            self.set_aside += 1;
                        }
                        self.has_data = false;
                        if matches!(step, Step::SetAsideData) {
                            state.wiped = true;
                        } else {
                            state.new_id = None;
                        }
                    }
                    Step::RemoveOld(id) | Step::RemoveLostIncarnation(id) => {
                        prop_assert!(
                            self.members.iter().any(|member| member.id == *id && is_ours(member, OURS)),
                            "removes only this member's incarnations: {step:?}"
                        );
                        self.members.retain(|member| member.id != *id);
                        if matches!(step, Step::RemoveLostIncarnation(_)) {
                            state.new_id = None;
                        }
                    }
                    Step::Add { learner } => {
                        prop_assert!(
                            !self.members.iter().any(|member| member.is_learner),
                            "added while another change is half done: {:?}",
                            self.members
                        );
                        prop_assert!(state.wiped, "added before the old data went aside");
                        let id = self.next_id;
                        self.next_id += 1;
                        self.members.push(member(id, OURS, *learner, false));
                    }
                    Step::Record(id) => state.new_id = Some(*id),
                    Step::StartLocal => {
                        run.started = true;
                        self.has_data = true;
                        let new_id = state.new_id;
                        for member in self.members.iter_mut().filter(|member| Some(member.id) == new_id) {
                            member.client_urls = vec!["http://10.0.0.9:2379".into()];
                            member.name = "ours".into();
                        }
                    }
                    Step::Promote(id) => {
                        run.promoted = true;
                        for member in self.members.iter_mut().filter(|member| member.id == *id) {
                            member.is_learner = false;
                        }
                    }
                    Step::LeaveStopped | Step::LeaveLearner(_) | Step::Done => {}
                }
                self.state = Some(state.clone());
                if step.ends_run() {
                    if matches!(step, Step::Done | Step::LeaveStopped) {
                        self.state = None;
                    }
                    return Ok(true);
                }
            }
            Ok(false)
        }
    }

    proptest! {
        /// Killed after any step, with other changes' leftovers, rollbacks and a lost
        /// disk in between, a replacement resumes and ends with this member a voter
        /// once, its old incarnation gone, no learner left, and its data set aside at
        /// most once per incarnation that had any, never before the old one left.
        #[test]
        fn a_replacement_resumes_after_any_interruption(
            others in 2usize..5,
            ours_listed in any::<bool>(),
            has_data in any::<bool>(),
            interruptions in proptest::collection::vec((1usize..12, proptest::option::of(event())), 0..6),
        ) {
            let mut world = World::new(others, ours_listed, has_data);
            let old = world.members.iter().find(|member| is_ours(member, OURS)).map(|member| member.id);
            for (budget, event) in &interruptions {
                let ended = world.run(*budget, true)?;
                if ended {
                    break;
                }
                if let Some(event) = event {
                    world.happen(event);
                }
            }
            // Finally left alone, it finishes.
            prop_assert!(world.run(MAX_STEPS, true)?, "no end within {MAX_STEPS} steps: {world:?}");
            prop_assert!(world.state.is_none(), "a finished replacement leaves no state");
            let ours: Vec<&Member> = world.members.iter().filter(|member| is_ours(member, OURS)).collect();
            prop_assert_eq!(ours.len(), 1, "one incarnation: {:?}", world.members);
            prop_assert!(!ours[0].is_learner && Some(ours[0].id) != old, "a new voter: {:?}", ours);
            prop_assert!(!world.members.iter().any(|member| member.is_learner), "no learner left");
            prop_assert_eq!(world.members.len(), others + 1);
            prop_assert!(world.has_data, "the new incarnation runs on a data dir of its own");
        }

        /// Unmanaged (`--member-control none`): the old incarnation leaves, the data goes
        /// aside, a voter is added, and the member is left stopped for the operator.
        #[test]
        fn unmanaged_the_member_is_added_and_left_stopped(others in 2usize..5, ours_listed in any::<bool>()) {
            let mut world = World::new(others, ours_listed, true);
            let old = world.members.iter().find(|member| is_ours(member, OURS)).map(|member| member.id);
            prop_assert!(world.run_with(MAX_STEPS, false, false)?);
            let ours: Vec<&Member> = world.members.iter().filter(|member| is_ours(member, OURS)).collect();
            prop_assert_eq!(ours.len(), 1);
            prop_assert!(Some(ours[0].id) != old && !ours[0].is_learner && ours[0].client_urls.is_empty());
            prop_assert!(!world.has_data, "the old data is aside and nothing started");
            prop_assert!(world.state.is_none());
        }

        /// Told to add voters (the one-shot `reconfigure` before etcd starts), the plan
        /// never promotes: it starts the member and leaves any learner to the agent.
        #[test]
        fn without_learners_nothing_is_promoted(others in 2usize..5, ours_listed in any::<bool>()) {
            let mut world = World::new(others, ours_listed, true);
            prop_assert!(world.run(MAX_STEPS, false)?);
            let ours: Vec<&Member> = world.members.iter().filter(|member| is_ours(member, OURS)).collect();
            prop_assert_eq!(ours.len(), 1);
            prop_assert!(!ours[0].is_learner, "added as a voter");
        }
    }

    #[test]
    fn the_first_steps_of_a_fresh_replacement() {
        let members = vec![member(1, "http://a:2380", false, true), member(9, &format!("{OURS}/"), false, true)];
        let state = ReplaceState::begin(&members, OURS);
        assert_eq!(state.old_id, Some(MemberId(9)), "a trailing slash is the same URL");
        let facts = |run| Facts {
            state: &state,
            members: &members,
            peer_url: OURS,
            has_data: true,
            run,
            learner: true,
            start: true,
        };
        assert_eq!(next(&facts(RunProgress::default())), Step::StopLocal);
        let stopped = RunProgress { stopped: true, ..RunProgress::default() };
        assert_eq!(next(&facts(stopped)), Step::RemoveOld(MemberId(9)));
        let start_off = Facts { start: false, ..facts(RunProgress::default()) };
        assert_eq!(next(&start_off), Step::RemoveOld(MemberId(9)), "nothing to stop when not starting");
    }

    /// A learner this run started may not show `member/` yet: it is not "lost".
    #[test]
    fn a_just_started_incarnation_is_not_lost() {
        let members = vec![member(1, "http://a:2380", false, true), member(10, OURS, true, true)];
        let state = ReplaceState { old_id: Some(MemberId(9)), new_id: Some(MemberId(10)), wiped: true };
        let facts = |run| Facts {
            state: &state,
            members: &members,
            peer_url: OURS,
            has_data: false,
            run,
            learner: true,
            start: true,
        };
        let earlier_run = RunProgress { stopped: true, ..RunProgress::default() };
        assert_eq!(next(&facts(earlier_run)), Step::RemoveLostIncarnation(MemberId(10)));
        let this_run = RunProgress { stopped: true, started: true, promoted: false };
        assert_eq!(next(&facts(this_run)), Step::Promote(MemberId(10)));
    }
}
