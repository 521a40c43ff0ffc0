//! What a member does before its etcd starts (kube-aws' etcdadm-reconfigure),
//! decided from plain facts so the simulator and the runtime agree.

use crate::replacement::is_ours;
use crate::types::{Member, MemberId};
use serde::{Deserialize, Serialize};

/// The facts `reconfigure` gathers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The local data dir holds a member.
    pub has_data: bool,
    /// The recovery epoch the local data belongs to (0 before any recovery).
    pub local_epoch: u64,
    /// The newest committed recovery epoch in the store, if the store answered
    /// (a claim only counts once committed: see [`crate::recovery`]).
    pub latest_epoch: Option<u64>,
    /// This member stopped its etcd for a claim that is not decided yet: it must
    /// not start as is until the claim is committed or abandoned.
    #[serde(default)]
    pub holding: bool,
    /// The member list as healthy peers report it; `None` when no peer with
    /// quorum answered.
    pub peers: Option<Vec<Member>>,
    /// The local member's peer URL.
    pub peer_url: String,
    /// The store holds at least one snapshot of this cluster (it existed before).
    pub snapshots_exist: bool,
    /// Another process on this host holds the member's lock: it is replacing the
    /// member or restoring it into a recovery epoch, and starts etcd itself with the
    /// launch it wrote. Under systemd that process is the agent, and its `systemctl
    /// start` is what runs this very `ExecStartPre`.
    #[serde(default)]
    pub locked_elsewhere: bool,
    /// That process has written etcd's launch settings and is starting etcd now
    /// (its own `systemctl start` runs this `ExecStartPre`). Without it, a start
    /// while the lock is held is someone else's: `Restart=` after a crash, or an
    /// operator.
    #[serde(default)]
    pub start_prepared: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartPlan {
    /// Another process is replacing or restoring this member and starting etcd
    /// with the launch it prepared: decide nothing, write nothing, let it start.
    /// (Deciding again here would resume that same replacement from a second
    /// process, which its
    /// lock refuses, so the agent could never start the member it replaces: found
    /// by the simulator's systemd mode.)
    StartAsPrepared,
    /// Another process holds the member's lock and is in the middle of changing
    /// its data dir (it has not prepared a launch yet): etcd must not start now,
    /// or it would run on a data dir moved aside or half restored, with launch
    /// settings written for the cluster before. The holder starts etcd itself when
    /// it is done. (Found by the nemesis, seed 100000141928: `Restart=` after a
    /// disk wipe bootstrapped etcd `new` while its agent restored the member.)
    AwaitLockHolder,
    /// Data present and current: start as is.
    StartAsIs,
    /// A recovery epoch newer than the local data was claimed: restore that
    /// epoch's snapshot (members of an older epoch never start as is).
    RestoreEpoch { epoch: u64 },
    /// Listed but never started (a bootstrap member that was late, or one someone
    /// added): start with `existing`, no membership change.
    Join,
    /// Empty disk but the cluster knows an older incarnation (or none): replace
    /// ourselves: remove the old ID if any, add, start with `existing`.
    Replace { old: Option<MemberId> },
    /// Nothing anywhere: the first start of a new cluster.
    Bootstrap,
    /// Empty disk, no quorum, and a cluster that existed: wait for a recovery
    /// epoch (the agents decide disaster recovery, not a booting member alone).
    /// Also: this member holds for an undecided claim, data or not.
    AwaitRecovery,
}

pub fn plan(facts: &Facts) -> StartPlan {
    if facts.locked_elsewhere {
        return if facts.start_prepared { StartPlan::StartAsPrepared } else { StartPlan::AwaitLockHolder };
    }
    if let Some(latest) = facts.latest_epoch {
        if latest > facts.local_epoch {
            return StartPlan::RestoreEpoch { epoch: latest };
        }
    }
    if facts.holding {
        return StartPlan::AwaitRecovery;
    }
    if facts.has_data {
        return StartPlan::StartAsIs;
    }
    match &facts.peers {
        Some(members) => match members.iter().find(|member| is_ours(member, &facts.peer_url)) {
            // etcd names bootstrap members from --initial-cluster before they start; only
            // the client URLs, published at first start, tell "never started".
            Some(member) if member.client_urls.is_empty() => StartPlan::Join,
            Some(member) => StartPlan::Replace { old: Some(member.id) },
            None => StartPlan::Replace { old: None },
        },
        None if facts.snapshots_exist => StartPlan::AwaitRecovery,
        None => StartPlan::Bootstrap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, port: u16) -> Member {
        Member {
            id: MemberId(id),
            name: name.into(),
            peer_urls: vec![format!("http://127.0.0.1:{port}")],
            client_urls: vec![format!("http://127.0.0.1:{}", port + 1000)],
            is_learner: false,
        }
    }

    fn facts() -> Facts {
        Facts {
            has_data: false,
            local_epoch: 0,
            latest_epoch: Some(0),
            peers: Some(vec![member(1, "a", 1), member(2, "b", 2)]),
            peer_url: "http://127.0.0.1:2".into(),
            snapshots_exist: true,
            holding: false,
            locked_elsewhere: false,
            start_prepared: false,
        }
    }

    /// While another process replaces or restores the member, its launch stands
    /// when it starts etcd itself, whatever the other facts say (it took its
    /// decision under the cluster's membership lock or a committed epoch); any other
    /// start meanwhile waits for it, whatever the other facts say.
    #[test]
    fn a_change_in_progress_elsewhere_starts_only_as_it_prepared() {
        for has_data in [true, false] {
            for holding in [true, false] {
                for latest_epoch in [None, Some(0), Some(3)] {
                    for peers in [None, facts().peers] {
                        let facts = Facts { has_data, holding, latest_epoch, peers, locked_elsewhere: true, ..facts() };
                        assert_eq!(plan(&facts), StartPlan::AwaitLockHolder);
                        let starting = Facts { start_prepared: true, ..facts.clone() };
                        assert_eq!(plan(&starting), StartPlan::StartAsPrepared);
                        for alone in [false, true] {
                            let alone = Facts { locked_elsewhere: false, start_prepared: alone, ..facts.clone() };
                            assert!(
                                !matches!(plan(&alone), StartPlan::StartAsPrepared | StartPlan::AwaitLockHolder),
                                "a stale marker without a holder means nothing: {alone:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn decides_like_etcdadm_reconfigure_and_more() {
        assert_eq!(plan(&Facts { has_data: true, ..facts() }), StartPlan::StartAsIs);
        assert_eq!(plan(&facts()), StartPlan::Replace { old: Some(MemberId(2)) });
        let added = Member { client_urls: vec![], ..member(3, "", 2) };
        let unstarted = Facts { peers: Some(vec![member(1, "a", 1), added]), ..facts() };
        assert_eq!(plan(&unstarted), StartPlan::Join);
        // A bootstrap member that starts late has its name already, but no client URLs.
        let late = Member { client_urls: vec![], ..member(2, "b", 2) };
        assert_eq!(plan(&Facts { peers: Some(vec![member(1, "a", 1), late]), ..facts() }), StartPlan::Join);
        let gone = Facts { peers: Some(vec![member(1, "a", 1)]), ..facts() };
        assert_eq!(plan(&gone), StartPlan::Replace { old: None });
        assert_eq!(plan(&Facts { peers: None, ..facts() }), StartPlan::AwaitRecovery);
        assert_eq!(plan(&Facts { peers: None, snapshots_exist: false, ..facts() }), StartPlan::Bootstrap);
    }

    /// A member that stopped for an undecided claim stays stopped, data or not.
    #[test]
    fn holding_members_wait() {
        for has_data in [true, false] {
            assert_eq!(plan(&Facts { has_data, holding: true, ..facts() }), StartPlan::AwaitRecovery);
        }
        let committed = Facts { has_data: true, holding: true, latest_epoch: Some(1), ..facts() };
        assert_eq!(plan(&committed), StartPlan::RestoreEpoch { epoch: 1 });
    }

    /// A member of an older epoch never starts as is, data or not.
    #[test]
    fn older_epochs_restore() {
        for has_data in [true, false] {
            let stale = Facts { has_data, local_epoch: 1, latest_epoch: Some(2), ..facts() };
            assert_eq!(plan(&stale), StartPlan::RestoreEpoch { epoch: 2 });
        }
    }
}
