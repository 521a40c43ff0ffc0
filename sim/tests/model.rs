//! The model behaves like etcd where recovery depends on it.
//!
//! Locks behave as etcd's lease-backed locks do: they live in the cluster's data
//! (a snapshot carries them, a restore brings them back), none expires while the
//! cluster has no leader, and a new leader gives each its whole TTL again. A
//! disaster recovery can so restore a lock whose holder is gone.
//!
//! Elections take time: a new leader answers only an election timeout
//! (randomised in [1 s, 2 s)) after the old one is gone, and for a while the
//! members still name the leader they followed in `status`, though it answers no
//! linearizable read (a stale leader).
#![cfg(madsim)]

use lifeboat_sim::model::{Node, SnapshotContent, World, ELECTION_TIMEOUT_MS};
use std::time::Duration;

const INITIAL: &str = "m0=http://m0:2380,m1=http://m1:2380,m2=http://m2:2380";

fn nodes(base: &std::path::Path) -> Vec<Node> {
    (0..3)
        .map(|index| Node {
            name: format!("m{index}"),
            peer_url: format!("http://m{index}:2380"),
            client_url: format!("http://m{index}:2379"),
            data_dir: base.join(format!("m{index}")).join("data"),
            running: false,
            disk: None,
            zone: 0,
            catch_up: None,
        })
        .collect()
}

/// Runs `test` on virtual time, on a world of three members just bootstrapped.
fn with_three_members<F, Fut>(name: &str, test: F)
where
    F: FnOnce(World) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let base = std::env::temp_dir().join(format!("lifeboat-sim-{name}-{}", std::process::id()));
    let runtime = madsim::runtime::Runtime::new();
    let dir = base.clone();
    runtime.block_on(async move {
        let mut world = World::new(nodes(&dir), false);
        for node in 0..3 {
            world.start(node, INITIAL, "new", "t").expect("bootstrap");
        }
        test(world).await;
    });
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn locks_outlive_a_quorum_loss_and_come_back_with_a_restore() {
    with_three_members("locks", |mut world| async move {
        let (cluster, _) = world.serving(0).expect("m0 serves");
        let lease = world.try_lock(cluster, "lock", "m0", 120).expect("a free lock is granted");
        assert_eq!(world.try_lock(cluster, "lock", "m1", 120), None, "a held lock is refused");
        let snapshot = world.snapshot_bytes(0).expect("m0's snapshot");
        let content = SnapshotContent::from_file(&snapshot).expect("a valid snapshot");
        assert_eq!(content.locks.get("lock").map(|lock| lock.holder.as_str()), Some("m0"));

        // Quorum lost for longer than the TTL: nothing expires without a leader,
        // and the new leader renews every lease.
        world.stop(1);
        world.stop(2);
        madsim::time::sleep(Duration::from_secs(300)).await;
        world.start(1, INITIAL, "existing", "t").expect("m1 again");
        world.start(2, INITIAL, "existing", "t").expect("m2 again");
        assert_eq!(world.try_lock(cluster, "lock", "m1", 120), None, "the lock outlived the quorum loss");
        assert!(world.keep_alive(cluster, lease), "its holder's lease is alive");
        madsim::time::sleep(Duration::from_secs(121)).await;
        assert!(world.try_lock(cluster, "lock", "m1", 120).is_some(), "the lock expired a TTL after its last renewal");

        // A restore of the earlier snapshot brings m0's lock back in the new cluster.
        (0..3).for_each(|node| world.stop(node));
        let restored = world.restore(&snapshot, "t2", INITIAL, "http://m0:2380").expect("restore");
        let restored_cluster = world.disks[&restored].cluster;
        assert_ne!(restored_cluster, cluster);
        let lock = world.clusters[&restored_cluster].locks.get("lock").cloned();
        assert_eq!(lock.map(|lock| (lock.holder, lock.lease)), Some(("m0".to_owned(), lease)));
        assert!(world.violations.is_empty(), "{:?}", world.violations);
    });
}

#[test]
fn a_leader_is_elected_after_a_timeout_and_a_deposed_one_is_named_for_a_while() {
    with_three_members("elections", |mut world| async move {
        // The first election is under way: no leader, no write, no healthy member.
        assert!((0..3).all(|node| !world.healthy(node)), "healthy before any election completed");
        assert_eq!(world.leader_reported_by(0).0, None, "a leader named before its election");
        assert_eq!(world.client_write("k0".into()), None, "a write acknowledged without a leader");
        madsim::time::sleep(Duration::from_millis(2 * ELECTION_TIMEOUT_MS)).await;
        assert!((0..3).all(|node| world.healthy(node)), "not healthy after two election timeouts");
        let (named, first_term) = world.leader_reported_by(1);
        let leader = world.leader_seen_by(1).expect("a leader");
        assert_eq!(named, world.serving(leader).map(|(_, member)| member));
        assert!(world.client_write("k1".into()).is_some(), "no write through the elected leader");

        // The leader is cut off: the others elect another, which takes a while.
        world.nodes[leader].zone = 1;
        world.settle();
        let follower = (0..3).find(|node| *node != leader).expect("a follower");
        assert!(!world.healthy(leader) && !world.healthy(follower), "a member answers reads mid-election");
        assert_eq!(world.client_write("k2".into()), None, "a write acknowledged mid-election");
        assert_eq!(world.leader_reported_by(leader).0, named, "the cut-off leader still names itself at first");
        assert_eq!(world.leader_reported_by(follower).0, named, "a follower still names the old leader at first");
        madsim::time::sleep(Duration::from_millis(2 * ELECTION_TIMEOUT_MS)).await;
        let (now_named, term) = world.leader_reported_by(follower);
        assert!(now_named.is_some() && now_named != named, "no new leader after two election timeouts");
        assert!(term > first_term, "a new leader in the same term");
        assert_eq!(world.leader_reported_by(leader).0, None, "the cut-off leader still named after its timeout");
        assert!(world.client_write("k3".into()).is_some(), "no write through the new leader");
        assert!(world.violations.is_empty(), "{:?}", world.violations);
    });
}
