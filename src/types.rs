//! The nouns the core reasons about, converted from wire types at the edge.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An etcd member ID (etcd prints it in hex).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemberId(pub u64);

impl fmt::Display for MemberId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:x}", self.0)
    }
}

/// An etcd revision: the logical clock of the key space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revision(pub i64);

impl fmt::Display for Revision {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// One member as `member list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: MemberId,
    /// Empty while the member was added but has not started yet.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl Member {
    /// A learner does not vote, so it counts for neither quorum nor health of the cluster.
    pub fn is_voter(&self) -> bool {
        !self.is_learner
    }
}

/// One health probe of one member: `etcdctl endpoint health` for that member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHealth {
    pub id: MemberId,
    /// A linearizable read through the member answered: it is in a quorum that commits.
    pub healthy: bool,
    /// The raft index (etcd's committed index) the member's status reported this
    /// round, when it answered naming a leader. A member that fails the read while
    /// this moves is catching up, not failed.
    #[serde(default)]
    pub progress: Option<u64>,
}

impl MemberHealth {
    /// A probe with no status answer (most tests and the fault-free paths).
    pub fn new(id: MemberId, healthy: bool) -> MemberHealth {
        MemberHealth { id, healthy, progress: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_like_etcdctl_and_learners_do_not_vote() {
        assert_eq!(MemberId(0x8e9e05c52164694d).to_string(), "8e9e05c52164694d");
        assert_eq!(Revision(4711).to_string(), "4711");
        let voter =
            Member { id: MemberId(1), name: "a".into(), peer_urls: vec![], client_urls: vec![], is_learner: false };
        assert!(voter.is_voter());
        assert!(!Member { is_learner: true, ..voter }.is_voter());
    }
}
