//! Quorum arithmetic. Every membership change the core plans goes through these
//! functions, so "never lose quorum" is decided in one place.

/// Votes needed for a cluster of `voters` voting members to commit anything.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Whether removing one unhealthy voter, then adding its replacement back, keeps
/// quorum at every step. `healthy_voters` must not count the member being replaced.
///
/// Removing shrinks the cluster to `voters - 1`, which needs `quorum(voters - 1)`;
/// re-adding a member that has not started yet (etcd's strict reconfig check) needs
/// `quorum(voters)` healthy voters. The second bound is the larger one, so it is
/// the one that decides.
pub fn replacement_keeps_quorum(voters: usize, healthy_voters: usize) -> bool {
    voters >= 1 && healthy_voters < voters && healthy_voters >= quorum(voters) && healthy_voters >= quorum(voters - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_clusters() {
        assert_eq!((quorum(1), quorum(3), quorum(4), quorum(5)), (1, 2, 3, 3));
        assert!(replacement_keeps_quorum(3, 2));
        assert!(!replacement_keeps_quorum(3, 1));
        assert!(replacement_keeps_quorum(5, 3));
        assert!(!replacement_keeps_quorum(1, 0));
        assert!(!replacement_keeps_quorum(3, 3), "nothing to replace when all are healthy");
    }
}
