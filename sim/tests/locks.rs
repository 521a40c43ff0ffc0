//! The model's locks behave as etcd's lease-backed locks do: they live in the
//! cluster's data (a snapshot carries them, a restore brings them back), none
//! expires while the cluster has no leader, and a new leader gives each its whole
//! TTL again. A disaster recovery can so restore a lock whose holder is gone.
#![cfg(madsim)]

use lifeboat_sim::model::{Node, SnapshotContent, World};
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

#[test]
fn locks_outlive_a_quorum_loss_and_come_back_with_a_restore() {
    let base = std::env::temp_dir().join(format!("lifeboat-sim-locks-{}", std::process::id()));
    let runtime = madsim::runtime::Runtime::new();
    let dir = base.clone();
    runtime.block_on(async move {
        let mut world = World::new(nodes(&dir), false);
        for node in 0..3 {
            world.start(node, INITIAL, "new", "t").expect("bootstrap");
        }
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
    let _ = std::fs::remove_dir_all(&base);
}
