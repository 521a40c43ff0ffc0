//! The recovery-epoch protocol: a claim is only an intent; it takes effect once a
//! quorum of members has joined it, and any member that still sees the old cluster
//! with quorum abandons it.
//!
//! Why: a claimer can be wrong. An agent cut off from its peers, whose peers'
//! agents could not write heartbeats for a while (restarting, their path to the
//! store down, their VMs frozen), sees "no quorum, no healthy peer" and claims a
//! recovery while the majority is healthy and taking writes. Under the first
//! protocol every member obeyed any newer epoch at once and rolled that majority
//! back to an older snapshot. Now:
//!
//! 1. **Intent.** The claimer writes `epochs/<N>.json` (create-if-absent: one
//!    claimer per number) naming the snapshot. Nothing is destroyed.
//! 2. **Join.** A member that sees no quorum in the old cluster, and holds no data
//!    newer than the snapshot, records locally that it holds for epoch N and stops its
//!    etcd (data left in place); then it reads the revision its stopped data dir holds
//!    and writes `epochs/<N>.joined/<member>.json` with it (a revision read before the
//!    stop could miss writes acknowledged in between).
//! 3. **Decide.** The outcome `epochs/<N>.outcome.json` is written once
//!    (create-if-absent), so commit and abandon race for one key and one wins:
//!    *committed* once a quorum of the configured members joined and no joiner held
//!    data newer than the snapshot; *abandoned* by any member that sees the old
//!    cluster with quorum, or that holds newer data (it then claims the next epoch
//!    itself, saving its data first).
//! 4. **Apply.** Only a committed epoch is restored into. After an abandoned one,
//!    members that held for it start their etcd again as it was.
//!
//! Why a quorum of joins costs no liveness: the restored cluster needs a majority of
//! members to start anyway. Why it is safe: joiners stop their etcd before they are
//! counted, so once a quorum joined, the old cluster cannot commit another write;
//! every write it acknowledged is on a majority, which shares a member with the
//! joiners, whose revisions are checked against the snapshot.

use crate::membership::quorum;
use crate::snapshot::SnapshotName;
use crate::types::Revision;
use serde::{Deserialize, Serialize};

/// The newest claimed epoch, as the store shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochView {
    pub epoch: u64,
    /// The revision of the snapshot the claim names.
    pub snapshot_revision: Revision,
    /// Members that joined (configured names only), with their data's revision.
    pub joined: Vec<Joined>,
    pub outcome: Option<EpochOutcome>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    pub member: String,
    /// What the member's data held when it stopped; `None` for an empty disk.
    pub revision: Option<Revision>,
}

/// Written once per epoch; the first writer decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum EpochOutcome {
    Committed { joined: Vec<String> },
    Abandoned { by: String, reason: AbandonReason },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AbandonReason {
    /// The deciding member saw the old cluster with quorum: the claim was spurious.
    ClusterAlive,
    /// A member holds data newer than the claimed snapshot; it claims next.
    NewerData { member: String, revision: Revision },
    /// The outcome record could not be read: taken as abandoned, so nothing is
    /// destroyed on the word of a record nobody can parse.
    Unreadable,
}

/// What this agent knows of itself in the same round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalFacts {
    /// The configured name of this agent's member.
    pub member: String,
    /// The epoch the local data belongs to.
    pub epoch: u64,
    /// This round's checks show a quorum of the old cluster's voters healthy.
    pub old_cluster_has_quorum: bool,
    /// The local data's revision: what its etcd answers (even without quorum), or,
    /// while it holds for a claim with etcd stopped, what its data dir holds.
    pub revision: Option<Revision>,
    /// The local data dir holds a member. With data but no revision (etcd down or
    /// starting) this member cannot vote yet: its data may hold writes nobody else has.
    pub has_data: bool,
    /// The epoch this member stopped its etcd for, if any (persisted locally).
    pub holding_for: Option<u64>,
    /// How many members the restored cluster has (the configured cluster).
    pub members: usize,
}

/// The one next step for this agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EpochStep {
    /// No newer epoch, or nothing to do about it.
    Nothing,
    /// The epoch was abandoned and this member stopped for it: start etcd as it was.
    Resume { epoch: u64 },
    /// Write the outcome "abandoned" (it may lose to a commit; then follow that).
    Abandon { epoch: u64, reason: AbandonReason },
    /// Hold for the epoch: remember it, then stop etcd (data left in place).
    Hold { epoch: u64 },
    /// Stopped for the epoch: write the join with the revision the stopped data holds.
    Join { epoch: u64, revision: Option<Revision> },
    /// A quorum joined: write the outcome "committed", then apply.
    Commit { epoch: u64, joined: Vec<String> },
    /// Joined; waiting for a quorum of members (or for the claim to be abandoned).
    Wait { epoch: u64, joined: usize, needed: usize },
    /// Committed: restore into it.
    Apply { epoch: u64 },
}

/// Decides the next step of the epoch protocol for one agent. `view` is the newest
/// claim; `newest_committed` the newest committed epoch, when that is another one.
pub fn step(view: Option<&EpochView>, newest_committed: Option<u64>, local: &LocalFacts) -> EpochStep {
    // A member of an older incarnation first follows the newest committed epoch: its
    // data is no evidence about a later claim (its revisions are of another history).
    if let Some(committed) = newest_committed.filter(|committed| *committed > local.epoch) {
        if view.is_none_or(|view| view.outcome.is_none() || view.epoch != committed) {
            return EpochStep::Apply { epoch: committed };
        }
    }
    let Some(view) = view else {
        return EpochStep::Nothing;
    };
    let epoch = view.epoch;
    if epoch <= local.epoch {
        return EpochStep::Nothing;
    }
    match &view.outcome {
        Some(EpochOutcome::Committed { .. }) => return EpochStep::Apply { epoch },
        Some(EpochOutcome::Abandoned { .. }) => {
            // Held for this claim, or for an older one this claim superseded (found by
            // the nemesis: two abandoned claims in a row left a member stopped for good).
            return match local.holding_for {
                Some(held) if held <= epoch => EpochStep::Resume { epoch: held },
                _ => EpochStep::Nothing,
            };
        }
        None => {}
    }
    if local.old_cluster_has_quorum {
        return EpochStep::Abandon { epoch, reason: AbandonReason::ClusterAlive };
    }
    // A joiner's revision is what its data held when it stopped; ours, when it is
    // still running, is what it holds now.
    let own = local.revision;
    let newest = view
        .joined
        .iter()
        .filter_map(|joined| joined.revision.map(|revision| (revision, joined.member.clone())))
        .chain(own.map(|revision| (revision, local.member.clone())))
        .max();
    if let Some((revision, member)) = newest.filter(|(revision, _)| *revision > view.snapshot_revision) {
        return EpochStep::Abandon { epoch, reason: AbandonReason::NewerData { member, revision } };
    }
    if !view.joined.iter().any(|joined| joined.member == local.member) {
        // Data whose revision nobody can read yet may hold writes no one else has.
        if local.has_data && local.revision.is_none() {
            let joined = view.joined.len();
            return EpochStep::Wait { epoch, joined, needed: quorum(local.members.max(1)) };
        }
        // First stop, then vote with what the stopped data dir holds: writes may land
        // between this round's look and the stop (found by the nemesis).
        if local.holding_for != Some(epoch) {
            return EpochStep::Hold { epoch };
        }
        return EpochStep::Join { epoch, revision: local.revision };
    }
    let mut joined: Vec<String> = view.joined.iter().map(|joined| joined.member.clone()).collect();
    joined.sort();
    joined.dedup();
    let needed = quorum(local.members.max(1));
    if joined.len() >= needed {
        EpochStep::Commit { epoch, joined }
    } else {
        EpochStep::Wait { epoch, joined: joined.len(), needed }
    }
}

/// How a member enters a committed epoch it has not applied yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// Restore the epoch's snapshot as the member the epoch's cluster lists, then start.
    Restore,
    /// Enter with an empty data dir, then rejoin as a new member (a replacement)
    /// once the epoch's cluster has quorum, or wait for the next epoch.
    Rejoin,
}

/// `may_have_run`: the store marks this member name as started in the epoch (the
/// marker is written before a restored member first starts). Such a member lost
/// the data it ran with; restoring the epoch's snapshot under the same member ID
/// would bring it back with a rewound raft log, and with another member that
/// missed recent writes it could elect a leader without them (found by the
/// simulator's systemd mode: a machine lost after its epoch had run, nemesis seed
/// 102836). Only a member that never ran in the epoch restores into it.
pub fn entry(may_have_run: bool) -> Entry {
    if may_have_run {
        Entry::Rejoin
    } else {
        Entry::Restore
    }
}

/// A live peer's latest heartbeat, as a member about to claim sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    pub member: String,
    /// The recovery epoch the peer's data belongs to.
    pub epoch: u64,
    /// What its etcd answered, when it answered.
    pub revision: Option<Revision>,
}

/// What a member that is about to claim a disaster recovery does first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum BeforeClaim {
    /// A live peer of this epoch holds data newer than this member's and than the
    /// snapshot: it is the most up-to-date survivor, and claims; this one waits.
    DeferTo { peer: String, revision: Revision },
    /// This member's own data is newer than every stored snapshot: save it first
    /// and claim that (a failed save is no reason to claim something older: retry).
    SaveOwnData { revision: Revision },
    /// Claim from the newest verified snapshot as it is.
    Claim,
}

/// The claimer's rule: never restore something older than what a surviving
/// member holds. Among the survivors of this epoch, the one with the newest data
/// claims (the others defer while its heartbeat is fresh); it saves its own data
/// first when that is newer than the snapshot. Peers of other epochs hold data of
/// another history and do not count. `local`: this member's revision, when its
/// etcd answers; `snapshot`: the newest verified snapshot's revision.
pub fn before_claim(epoch: u64, local: Option<Revision>, snapshot: Revision, peers: &[PeerReport]) -> BeforeClaim {
    let best_peer = peers
        .iter()
        .filter(|peer| peer.epoch == epoch)
        .filter_map(|peer| peer.revision.map(|revision| (revision, &peer.member)))
        .max();
    if let Some((revision, peer)) = best_peer {
        if revision > local.unwrap_or(Revision(0)) && revision > snapshot {
            return BeforeClaim::DeferTo { peer: peer.clone(), revision };
        }
    }
    match local {
        Some(revision) if revision > snapshot => BeforeClaim::SaveOwnData { revision },
        _ => BeforeClaim::Claim,
    }
}

/// The snapshots a claim may name, in the order to try them: those at or below
/// `chosen` (what the claimer arrived at: the newest verified snapshot, its own
/// save, or the revision log's extension of either), newest by revision first.
/// The claimer names the first whose bytes hash to its manifest, so a damaged
/// newest snapshot cannot block a recovery; nothing above `chosen` is named, since
/// the claimer's checks (its own data, its peers', the log) were made against it.
pub fn claim_candidates(listed: &[SnapshotName], chosen: &SnapshotName) -> Vec<SnapshotName> {
    let mut candidates: Vec<SnapshotName> = listed.iter().filter(|name| *name <= chosen).cloned().collect();
    candidates.sort_by(|newer, older| older.cmp(newer));
    candidates.dedup();
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snapshot_name() -> impl Strategy<Value = SnapshotName> {
        (0u64..4_000_000_000_000, 0i64..60, any::<bool>()).prop_map(|(created, revision, zstd)| {
            let compression = if zstd { crate::Compression::Zstd } else { crate::Compression::None };
            SnapshotName::new(crate::Millis(created), Revision(revision), compression)
        })
    }

    proptest! {
        /// Fallback past damaged snapshots: every listed snapshot at or below the
        /// chosen one is tried, once, newest revision first (whatever the names'
        /// clocks say), and nothing above it ever is.
        #[test]
        fn claims_fall_back_newest_first_and_never_above_the_choice(
            listed in proptest::collection::vec(snapshot_name(), 0..12),
            chosen in snapshot_name(),
        ) {
            let order = claim_candidates(&listed, &chosen);
            prop_assert!(order.iter().all(|name| *name <= chosen && listed.contains(name)));
            prop_assert!(order.windows(2).all(|pair| pair[0] > pair[1]), "strictly newest first: {order:?}");
            prop_assert!(order.windows(2).all(|pair| pair[0].revision() >= pair[1].revision()));
            for name in listed.iter().filter(|name| **name <= chosen) {
                prop_assert!(order.contains(name), "{name} is never tried");
            }
        }
    }

    proptest! {
        /// Whatever the survivors report: a claim never starts from data older than
        /// this member's or a same-epoch peer's, a member defers only to a peer with
        /// strictly newer data than its own and the snapshot, and two members of one
        /// epoch that see each other's reports never both go ahead unless they hold
        /// the same revision (the claim's create-if-absent decides between them).
        // Revisions from a narrow range, so ties (with this member, between peers, with
        // the snapshot) come up in most runs: each boundary is a rule of its own.
        #[test]
        fn the_most_up_to_date_survivor_claims(
            epoch in 0u64..3,
            local in proptest::option::of(0i64..6),
            snapshot in 0i64..6,
            peers in proptest::collection::vec((0usize..4, 0u64..3, proptest::option::of(0i64..6)), 0..5),
        ) {
            let peers: Vec<PeerReport> = peers
                .into_iter()
                .map(|(index, epoch, revision)| PeerReport { member: format!("m{index}"), epoch, revision: revision.map(Revision) })
                .collect();
            let decided = before_claim(epoch, local.map(Revision), Revision(snapshot), &peers);
            let newest_peer = peers.iter().filter(|peer| peer.epoch == epoch).filter_map(|peer| peer.revision).max();
            match &decided {
                BeforeClaim::DeferTo { peer, revision } => {
                    prop_assert!(*revision > Revision(snapshot) && Some(*revision) > local.map(Revision));
                    prop_assert_eq!(Some(*revision), newest_peer);
                    prop_assert!(peers.iter().any(|report| &report.member == peer && report.epoch == epoch));
                }
                BeforeClaim::SaveOwnData { revision } => {
                    prop_assert_eq!(Some(*revision), local.map(Revision));
                    prop_assert!(*revision > Revision(snapshot));
                    prop_assert!(newest_peer.is_none_or(|newest| newest <= *revision));
                }
                BeforeClaim::Claim => {
                    prop_assert!(local.is_none_or(|local| local <= snapshot));
                    prop_assert!(newest_peer.is_none_or(|newest| newest <= Revision(snapshot)));
                }
            }
            // The peer it deferred to, seeing this member's report, goes ahead.
            if let BeforeClaim::DeferTo { peer, revision } = &decided {
                let mine = PeerReport { member: "me".into(), epoch, revision: local.map(Revision) };
                let theirs = before_claim(epoch, Some(*revision), Revision(snapshot), &[mine]);
                prop_assert_eq!(theirs, BeforeClaim::SaveOwnData { revision: *revision }, "{} goes ahead", peer);
            }
        }
    }

    #[test]
    fn peers_of_another_epoch_do_not_count() {
        let other = PeerReport { member: "m1".into(), epoch: 1, revision: Some(Revision(90)) };
        assert_eq!(
            before_claim(2, Some(Revision(10)), Revision(5), std::slice::from_ref(&other)),
            BeforeClaim::SaveOwnData { revision: Revision(10) }
        );
        assert_eq!(
            before_claim(1, Some(Revision(10)), Revision(5), &[other]),
            BeforeClaim::DeferTo { peer: "m1".into(), revision: Revision(90) }
        );
        assert_eq!(before_claim(1, None, Revision(5), &[]), BeforeClaim::Claim);
    }

    /// Ties defer to no one: two survivors at one revision would otherwise each wait
    /// for the other's claim for as long as both heartbeats stay fresh.
    #[test]
    fn equal_data_defers_to_no_one() {
        let twin = PeerReport { member: "m1".into(), epoch: 1, revision: Some(Revision(90)) };
        assert_eq!(
            before_claim(1, Some(Revision(90)), Revision(50), std::slice::from_ref(&twin)),
            BeforeClaim::SaveOwnData { revision: Revision(90) }
        );
        // A peer only as new as the snapshot is no reason to wait either.
        let at_snapshot = PeerReport { revision: Some(Revision(50)), ..twin };
        assert_eq!(before_claim(1, None, Revision(50), &[at_snapshot]), BeforeClaim::Claim);
    }

    #[test]
    fn only_a_member_that_never_ran_in_an_epoch_restores_into_it() {
        assert_eq!(entry(false), Entry::Restore);
        assert_eq!(entry(true), Entry::Rejoin);
    }

    fn step_one(view: Option<&EpochView>, local: &LocalFacts) -> EpochStep {
        step(view, None, local)
    }

    fn local(member: &str) -> LocalFacts {
        LocalFacts {
            member: member.into(),
            epoch: 0,
            old_cluster_has_quorum: false,
            revision: Some(Revision(50)),
            has_data: true,
            holding_for: None,
            members: 3,
        }
    }

    fn view(joined: &[(&str, Option<i64>)], outcome: Option<EpochOutcome>) -> EpochView {
        EpochView {
            epoch: 1,
            snapshot_revision: Revision(100),
            joined: joined
                .iter()
                .map(|(member, revision)| Joined { member: (*member).into(), revision: revision.map(Revision) })
                .collect(),
            outcome,
        }
    }

    /// Data exactly as new as the snapshot is no reason to abandon: the member joins.
    #[test]
    fn data_at_the_snapshot_revision_joins() {
        let at_snapshot = LocalFacts { revision: Some(Revision(100)), ..local("m1") };
        assert_eq!(step_one(Some(&view(&[("m0", Some(100))], None)), &at_snapshot), EpochStep::Hold { epoch: 1 });
    }

    #[test]
    fn a_healthy_majority_abandons_a_spurious_claim() {
        let facts = LocalFacts { old_cluster_has_quorum: true, ..local("m1") };
        assert_eq!(
            step_one(Some(&view(&[("m0", Some(90))], None)), &facts),
            EpochStep::Abandon { epoch: 1, reason: AbandonReason::ClusterAlive }
        );
    }

    #[test]
    fn join_then_commit_at_quorum_then_apply() {
        let pending = view(&[("m0", Some(90))], None);
        assert_eq!(step_one(Some(&pending), &local("m1")), EpochStep::Hold { epoch: 1 });
        let stopped = LocalFacts { holding_for: Some(1), revision: Some(Revision(60)), ..local("m1") };
        assert_eq!(step_one(Some(&pending), &stopped), EpochStep::Join { epoch: 1, revision: Some(Revision(60)) });
        // Data on disk but etcd not answering: no vote until its revision is known.
        let unknown = LocalFacts { revision: None, ..local("m1") };
        assert_eq!(step_one(Some(&pending), &unknown), EpochStep::Wait { epoch: 1, joined: 1, needed: 2 });
        let empty = LocalFacts { revision: None, has_data: false, holding_for: Some(1), ..local("m1") };
        assert_eq!(step_one(Some(&pending), &empty), EpochStep::Join { epoch: 1, revision: None });
        let held = LocalFacts { holding_for: Some(1), revision: Some(Revision(90)), ..local("m0") };
        assert_eq!(step_one(Some(&pending), &held), EpochStep::Wait { epoch: 1, joined: 1, needed: 2 });
        let two = view(&[("m0", Some(90)), ("m1", None)], None);
        assert_eq!(step_one(Some(&two), &held), EpochStep::Commit { epoch: 1, joined: vec!["m0".into(), "m1".into()] });
        let committed = view(&[], Some(EpochOutcome::Committed { joined: vec![] }));
        assert_eq!(step_one(Some(&committed), &local("m2")), EpochStep::Apply { epoch: 1 });
    }

    #[test]
    fn newer_data_abandons_and_abandoned_resumes_holders_only() {
        let facts = LocalFacts { revision: Some(Revision(120)), ..local("m2") };
        assert_eq!(
            step_one(Some(&view(&[("m0", Some(90))], None)), &facts),
            EpochStep::Abandon {
                epoch: 1,
                reason: AbandonReason::NewerData { member: "m2".into(), revision: Revision(120) }
            }
        );
        let abandoned =
            view(&[], Some(EpochOutcome::Abandoned { by: "m1".into(), reason: AbandonReason::ClusterAlive }));
        assert_eq!(
            step_one(Some(&abandoned), &LocalFacts { holding_for: Some(1), ..local("m0") }),
            EpochStep::Resume { epoch: 1 }
        );
        assert_eq!(step_one(Some(&abandoned), &local("m1")), EpochStep::Nothing);
        // Held for claim 1, which claim 2 superseded; claim 2 was abandoned too.
        let superseded = EpochView { epoch: 2, ..abandoned.clone() };
        assert_eq!(
            step_one(Some(&superseded), &LocalFacts { holding_for: Some(1), ..local("m1") }),
            EpochStep::Resume { epoch: 1 }
        );
        assert_eq!(step_one(Some(&view(&[], None)), &LocalFacts { epoch: 1, ..local("m1") }), EpochStep::Nothing);
        // Held for claim 2 while the newest claim in sight is an older abandoned one
        // (claim 2's record not listed yet, or unreadable and skipped): resuming would
        // run the old cluster beside a claim that may still commit with this member.
        assert_eq!(step_one(Some(&abandoned), &LocalFacts { holding_for: Some(2), ..local("m1") }), EpochStep::Nothing);
    }

    #[test]
    fn an_older_incarnation_applies_the_newest_commit_before_voting() {
        let pending = EpochView { epoch: 3, ..view(&[("m0", None)], None) };
        let stale = LocalFacts { revision: Some(Revision(500)), ..local("m2") };
        assert_eq!(step(Some(&pending), Some(2), &stale), EpochStep::Apply { epoch: 2 });
        assert_eq!(
            step(Some(&pending), Some(2), &LocalFacts { epoch: 2, revision: None, has_data: false, ..local("m2") }),
            EpochStep::Hold { epoch: 3 }
        );
    }

    fn any_view() -> impl Strategy<Value = EpochView> {
        let joined = proptest::collection::vec(
            (0usize..5, proptest::option::of(0i64..200))
                .prop_map(|(index, revision)| Joined { member: format!("m{index}"), revision: revision.map(Revision) }),
            0..6,
        );
        let outcome = prop_oneof![
            Just(None),
            Just(Some(EpochOutcome::Committed { joined: vec![] })),
            Just(Some(EpochOutcome::Abandoned { by: "m9".into(), reason: AbandonReason::ClusterAlive })),
        ];
        (1u64..4, 0i64..200, joined, outcome).prop_map(|(epoch, revision, joined, outcome)| EpochView {
            epoch,
            snapshot_revision: Revision(revision),
            joined,
            outcome,
        })
    }

    fn any_local() -> impl Strategy<Value = LocalFacts> {
        (
            (0usize..5, 0u64..3, any::<bool>()),
            (proptest::option::of(0i64..200), any::<bool>(), proptest::option::of(0u64..4), 1usize..6),
        )
            .prop_map(|((index, epoch, quorum), (revision, has_data, holding_for, members))| LocalFacts {
                member: format!("m{index}"),
                epoch,
                old_cluster_has_quorum: quorum,
                revision: revision.map(Revision),
                has_data,
                holding_for,
                members,
            })
    }

    proptest! {
        /// The safety rules, over any view and any local facts.
        #[test]
        fn never_destroys_data_without_a_commit_or_with_a_live_cluster(
            view in any_view(), local in any_local(), committed in proptest::option::of(0u64..4),
        ) {
            // What the store shows: the newest committed epoch is at most the newest claim.
            let committed = committed.filter(|committed| *committed <= view.epoch);
            let view_committed = matches!(view.outcome, Some(EpochOutcome::Committed { .. }));
            let committed = if view_committed { Some(view.epoch) } else { committed.filter(|committed| *committed < view.epoch) };
            let decided = step(Some(&view), committed, &local);
            match &decided {
                // Only a committed epoch is ever restored into, and only a newer one.
                EpochStep::Apply { epoch } => {
                    prop_assert_eq!(Some(*epoch), committed);
                    prop_assert!(*epoch > local.epoch);
                }
                // A member that sees the old cluster with quorum never stops for, nor commits, a claim.
                EpochStep::Hold { .. } | EpochStep::Join { .. } | EpochStep::Commit { .. } => {
                    prop_assert!(!local.old_cluster_has_quorum);
                    prop_assert!(view.outcome.is_none());
                }
                _ => {}
            }
            if let EpochStep::Commit { joined, .. } = &decided {
                // A quorum of distinct members joined, and none held data newer than the snapshot.
                prop_assert!(joined.len() >= quorum(local.members.max(1)));
                prop_assert!(joined.contains(&local.member));
                prop_assert!(view.joined.iter().all(|joined| joined.revision.is_none_or(|revision| revision <= view.snapshot_revision)));
            }
            if let EpochStep::Join { revision, epoch } = &decided {
                prop_assert!(revision.is_none_or(|revision| revision <= view.snapshot_revision));
                // A member votes only once stopped, and with data only with its revision known.
                prop_assert_eq!(local.holding_for, Some(*epoch));
                prop_assert!(revision.is_some() || !local.has_data);
            }
            // Resume only after an abandon, and only for the epoch this member stopped for.
            if let EpochStep::Resume { epoch } = &decided {
                prop_assert!(matches!(view.outcome, Some(EpochOutcome::Abandoned { .. })), "resume without an abandon");
                prop_assert_eq!(local.holding_for, Some(*epoch));
            }
            if view.epoch <= local.epoch {
                prop_assert_eq!(&decided, &EpochStep::Nothing);
            }
            // A newer committed epoch comes first, before any vote on a later claim.
            if committed.is_some_and(|committed| committed > local.epoch) {
                prop_assert!(matches!(decided, EpochStep::Apply { .. }), "a newer commit was not applied first");
            }
        }
    }
}
