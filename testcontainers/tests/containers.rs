//! The catalogue's scenarios that containers can express, against real etcd, a
//! real S3 server and real agents in locally built images: a member lost and
//! replaced, the majority lost and restored, an isolated member, an S3 outage,
//! a crash-restart; and the image override.

use lifeboat_testcontainers::cluster::{wait_for, DockerCluster, CHECK_INTERVAL_MS};
use lifeboat_testcontainers::images::{self, require_docker, Overrides};
use lifeboat_testcontainers::watchdog::{docker_within, Watchdog, DOCKER_CALL_LIMIT};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::ImageExt;

/// A client writing `w/<n>` keys in the background, logging what was acknowledged.
struct Writer {
    acked: Arc<Mutex<Vec<(String, i64)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    async fn start(cluster: &DockerCluster) -> Writer {
        let mut client = cluster.client().await.expect("an etcd client");
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, done) = (acked.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut next = 0u64;
            while !done.load(Ordering::Relaxed) {
                let key = format!("w/{next:08}");
                if let Ok(response) = client.put(key.clone(), "value", None).await {
                    let revision = response.header().map(|header| header.revision()).unwrap_or(0);
                    log.lock().unwrap().push((key, revision));
                    next += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Writer { acked, stop, task }
    }

    /// Waits (at most 10 s) until `count` writes were acknowledged.
    async fn wait_acked(&self, count: usize) {
        let acked = wait_for(Duration::from_secs(10), || async { self.acked.lock().unwrap().len() >= count }).await;
        assert!(acked, "fewer than {count} writes acknowledged in 10 s");
    }

    async fn finish(self) -> Vec<(String, i64)> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

async fn keys(cluster: &DockerCluster) -> std::collections::BTreeSet<String> {
    let mut client = cluster.client().await.expect("an etcd client");
    let options = etcd_client::GetOptions::new().with_prefix().with_keys_only();
    let response = client.get("w/", Some(options)).await.expect("read the keys back");
    response.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect()
}

async fn assert_all_present(cluster: &DockerCluster, acked: &[(String, i64)], up_to_revision: i64) {
    let present = keys(cluster).await;
    let missing: Vec<&String> = acked
        .iter()
        .filter(|(key, revision)| *revision <= up_to_revision && !present.contains(key))
        .map(|(key, _)| key)
        .collect();
    if !missing.is_empty() {
        panic!(
            "{} acknowledged writes lost, e.g. {:?}:\n{}",
            missing.len(),
            &missing[..missing.len().min(5)],
            cluster.logs().await
        );
    }
}

/// Writes at least 50 keys, then waits for a periodic save to cover them all
/// (its manifest written).
/// Returns the acknowledged writes and the last one's revision.
async fn writes_then_a_snapshot(cluster: &DockerCluster) -> (Vec<(String, i64)>, i64) {
    let writer = Writer::start(cluster).await;
    writer.wait_acked(50).await;
    let acked = writer.finish().await;
    let last = acked.last().map(|(_, revision)| *revision).unwrap_or(0);
    let saved = wait_for(Duration::from_secs(30), || async {
        cluster
            .store_keys("tc/")
            .await
            .iter()
            // The manifest, not the object: a snapshot is a backup only once its
            // manifest is written (a save lost between the two is not one).
            .filter_map(|key| {
                key.rsplit('/').next()?.strip_suffix(".manifest.json")?.parse::<lifeboat::SnapshotName>().ok()
            })
            .any(|name| name.revision().0 >= last)
    })
    .await;
    assert!(saved, "no snapshot at revision {last}:\n{}", cluster.logs().await);
    (acked, last)
}

/// Recovery claims (`…/coordination/epochs/<10 digits>.json`), whatever their outcome.
fn epochs(keys: &[String]) -> Vec<&String> {
    keys.iter()
        .filter(|key| {
            key.split_once("/coordination/epochs/")
                .and_then(|(_, name)| name.strip_suffix(".json"))
                .is_some_and(|stem| stem.len() == 10 && stem.bytes().all(|byte| byte.is_ascii_digit()))
        })
        .collect()
}

/// Claims whose outcome record says committed: the recoveries that took place.
async fn committed_epochs<'a>(cluster: &DockerCluster, keys: &'a [String]) -> Vec<&'a String> {
    let mut committed = Vec::new();
    for key in epochs(keys) {
        let outcome_key = key.replace(".json", ".outcome.json");
        if let Some(body) = cluster.get_object(&outcome_key).await {
            let outcome: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if outcome["outcome"] == "committed" {
                committed.push(key);
            }
        }
    }
    committed
}

/// Waits until member `index`'s agent has replaced it and all 3 members are healthy.
async fn wait_replaced(cluster: &DockerCluster, index: usize, fault: &str, started: Instant) {
    let replaced = wait_for(Duration::from_secs(120), || async {
        cluster.journal(index).contains("\"replaced\"") && cluster.healthy_count().await == 3
    })
    .await;
    assert!(replaced, "m{index} was not replaced:\n{}", cluster.logs().await);
    println!("{fault} → 3 healthy again in {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_lost_and_replaced_without_losing_a_write() {
    if !require_docker() {
        return;
    }
    let mut cluster = DockerCluster::start(3).await;
    println!("images built in {:.1} s", images::images().await.build_seconds);
    let writer = Writer::start(&cluster).await;
    writer.wait_acked(50).await;

    let started = Instant::now();
    cluster.lose(2).await;
    cluster.start_member(2).await;
    wait_replaced(&cluster, 2, "member lost", started).await;
    let acked = writer.finish().await;
    assert_all_present(&cluster, &acked, i64::MAX).await;
    assert!(epochs(&cluster.store_keys("tc/").await).is_empty(), "a minority failure must not start a recovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_lost_and_restored_from_the_newest_snapshot() {
    if !require_docker() {
        return;
    }
    let mut cluster = DockerCluster::start(3).await;
    let (acked, _) = writes_then_a_snapshot(&cluster).await;

    let started = Instant::now();
    cluster.lose(1).await;
    cluster.lose(2).await;
    cluster.start_member(1).await;
    cluster.start_member(2).await;
    let restored = wait_for(Duration::from_secs(180), || async {
        let keys = cluster.store_keys("tc/").await;
        !committed_epochs(&cluster, &keys).await.is_empty() && cluster.healthy_count().await == 3
    })
    .await;
    assert!(restored, "no recovery:\n{}", cluster.logs().await);
    println!("2 of 3 lost → restored, 3 healthy in {:.1} s", started.elapsed().as_secs_f64());
    let keys = cluster.store_keys("tc/").await;
    let epochs = committed_epochs(&cluster, &keys).await;
    assert_eq!(epochs.len(), 1, "exactly one recovery epoch: {epochs:?}");
    let record: serde_json::Value =
        serde_json::from_slice(&cluster.get_object(epochs[0]).await.expect("the epoch record")).expect("json");
    let snapshot: lifeboat::SnapshotName =
        record["snapshot"].as_str().expect("a snapshot name").parse().expect("a snapshot name");
    // The data equals the chosen snapshot: every write it covers is back, nothing else is.
    assert_all_present(&cluster, &acked, snapshot.revision().0).await;
    let written: std::collections::BTreeSet<String> = acked.iter().map(|(key, _)| key.clone()).collect();
    assert!(self::keys(&cluster).await.is_subset(&written));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_member_rejoins_without_a_recovery() {
    if !require_docker() {
        return;
    }
    // Back on the network, m0's etcd answers no read until its leader has redialled
    // it (seconds: etcd's peer write timeout is 5 s), its raft index frozen; K = 3
    // checks of 0.5 s would count it failed, the failure grace (15 s) does not.
    let cluster = DockerCluster::start(3).await;
    let writer = Writer::start(&cluster).await;
    cluster.disconnect(0);
    // The fault: a short partition, 12 check intervals (6 s). The long one is
    // `a_member_behind_after_a_long_partition_is_not_replaced`.
    tokio::time::sleep(Duration::from_millis(CHECK_INTERVAL_MS * 12)).await;
    assert!(cluster.healthy(1).await && cluster.healthy(2).await, "the majority must keep serving");
    let started = Instant::now();
    cluster.reconnect(0);
    assert!(cluster.wait_healthy(3, Duration::from_secs(60)).await, "m0 did not rejoin:\n{}", cluster.logs().await);
    println!("isolated member back in {:.1} s", started.elapsed().as_secs_f64());
    let acked = writer.finish().await;
    assert!(!acked.is_empty());
    assert_all_present(&cluster, &acked, i64::MAX).await;
    assert!(epochs(&cluster.store_keys("tc/").await).is_empty(), "an isolated agent must not start a recovery");
    assert!(
        !cluster.journal(0).contains("replace-started"),
        "the isolated member was replaced:\n{}",
        cluster.journal(0)
    );
}

/// Scenario `member-rejoins-behind`: m0 is cut off for a minute under writes, so it
/// rejoins thousands of entries behind. It fails its health checks for 2 to 6
/// rounds after the network heals: first its raft index is frozen (its leader has
/// not redialled it yet; the failure grace covers that), then it climbs (catching
/// up; not counted). Its agent must not replace it: before both rules it did, in
/// 2 of 5 runs even at K = 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_after_a_long_partition_is_not_replaced() {
    if !require_docker() {
        return;
    }
    let cluster = DockerCluster::start(3).await;
    let writer = Writer::start(&cluster).await;
    writer.wait_acked(20).await;
    cluster.disconnect(0);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let cut = cluster.journal(0).len();
    let started = Instant::now();
    cluster.reconnect(0);
    assert!(cluster.wait_healthy(3, Duration::from_secs(120)).await, "m0 did not rejoin:\n{}", cluster.logs().await);
    println!("m0 healthy again {:.1} s after the partition healed", started.elapsed().as_secs_f64());
    // A few more rounds, so a replacement decided late would show.
    tokio::time::sleep(Duration::from_millis(CHECK_INTERVAL_MS * 8)).await;
    let acked = writer.finish().await;
    let journal = cluster.journal(0);
    let after = journal.get(cut..).unwrap_or_default();
    let behind = after
        .lines()
        .filter(|line| line.contains("\"observation\"") && line.contains("\"unhealthy_raft_index\":{\""))
        .count();
    println!("m0's agent saw a member unhealthy with its raft index answering in {behind} rounds");
    assert!(!after.contains("replace-started"), "m0 was replaced while it caught up:\n{after}");
    assert_all_present(&cluster, &acked, i64::MAX).await;
    assert!(epochs(&cluster.store_keys("tc/").await).is_empty(), "a recovery was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_agent_that_sees_the_store_starts_no_recovery() {
    if !require_docker() {
        return;
    }
    let cluster = DockerCluster::start(3).await;
    cluster.isolate_keeping_store(0);
    // m0's agent sees quorum lost for more than K checks, but its peers' heartbeats
    // in the store are fresh: it warns once and declines a recovery, for rounds after
    // that too (each round waits for the unreachable peers to time out, slower on a
    // loaded machine).
    let declined = wait_for(Duration::from_secs(90), || async {
        let journal = cluster.journal(0);
        journal
            .split_once("QuorumLostPeersHealthy")
            .is_some_and(|(_, after)| after.matches("\"observation\"").count() >= 3)
    })
    .await;
    assert!(declined, "m0 never saw quorum lost with its peers healthy:\n{}", cluster.journal(0));
    assert!(epochs(&cluster.store_keys("tc/").await).is_empty(), "an isolated agent started a recovery");
    cluster.rejoin(0);
    assert!(cluster.wait_healthy(3, Duration::from_secs(60)).await, "m0 did not rejoin:\n{}", cluster.logs().await);
    assert!(epochs(&cluster.store_keys("tc/").await).is_empty(), "an isolated agent started a recovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_five_lost_are_replaced_one_at_a_time() {
    if !require_docker() {
        return;
    }
    let mut cluster = DockerCluster::start(5).await;
    let writer = Writer::start(&cluster).await;
    writer.wait_acked(50).await;
    let started = Instant::now();
    cluster.lose(3).await;
    cluster.lose(4).await;
    cluster.start_member(3).await;
    cluster.start_member(4).await;
    let replaced = wait_for(Duration::from_secs(180), || async {
        cluster.journal(3).contains("\"replaced\"")
            && cluster.journal(4).contains("\"replaced\"")
            && cluster.healthy_count().await == 5
    })
    .await;
    assert!(replaced, "m3 and m4 were not both replaced:\n{}", cluster.logs().await);
    println!("2 of 5 lost → 5 healthy again in {:.1} s", started.elapsed().as_secs_f64());
    let acked = writer.finish().await;
    assert_all_present(&cluster, &acked, i64::MAX).await;
    assert!(epochs(&cluster.store_keys("tc/").await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_restarted_empty_restore_one_epoch() {
    if !require_docker() {
        return;
    }
    let mut cluster = DockerCluster::start(3).await;
    let (acked, last) = writes_then_a_snapshot(&cluster).await;
    let started = Instant::now();
    for index in 0..3 {
        cluster.lose(index).await;
    }
    for index in 0..3 {
        cluster.start_member(index).await;
    }
    let restored = wait_for(Duration::from_secs(180), || async { cluster.healthy_count().await == 3 }).await;
    assert!(restored, "no recovery:\n{}", cluster.logs().await);
    println!("all restarted empty → restored in {:.1} s", started.elapsed().as_secs_f64());
    let keys = cluster.store_keys("tc/").await;
    assert_eq!(committed_epochs(&cluster, &keys).await.len(), 1, "exactly one recovery epoch");
    assert_all_present(&cluster, &acked, last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_then_saves_resume_whole() {
    if !require_docker() {
        return;
    }
    let cluster = DockerCluster::start(3).await;
    let manifests = |keys: Vec<String>| keys.into_iter().filter(|key| key.ends_with(".manifest.json")).count();
    assert!(wait_for(Duration::from_secs(30), || async { manifests(cluster.store_keys("tc/").await) >= 1 }).await);
    cluster.pause_s3().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.unpause_s3().await;
    let before = manifests(cluster.store_keys("tc/").await);
    let resumed =
        wait_for(Duration::from_secs(60), || async { manifests(cluster.store_keys("tc/").await) > before }).await;
    assert!(resumed, "no save after the outage:\n{}", cluster.logs().await);
    // Every snapshot in the store verifies (nothing partial under a final name).
    let lifeboat = images::lifeboat_binary().expect("the lifeboat binary");
    let output = std::process::Command::new(lifeboat)
        .args(["snapshots", "verify", "--all", "--store", "s3://lifeboat/tc", "--cluster", "tc"])
        .env("LIFEBOAT_S3_ENDPOINT", cluster.s3_endpoint_on_host().await)
        .env("LIFEBOAT_S3_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", images::S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", images::S3_SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run lifeboat snapshots verify");
    assert!(
        output.status.success(),
        "verify failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_volume_is_replaced_without_losing_a_write() {
    if !require_docker() {
        return;
    }
    let cluster = DockerCluster::start(3).await;
    let writer = Writer::start(&cluster).await;
    writer.wait_acked(50).await;
    let started = Instant::now();
    cluster.wipe(1).await;
    wait_replaced(&cluster, 1, "volume wiped", started).await;
    let acked = writer.finish().await;
    assert_all_present(&cluster, &acked, i64::MAX).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_restart_is_transient() {
    if !require_docker() {
        return;
    }
    let cluster = DockerCluster::start(3).await;
    cluster.kill(1).await;
    tokio::time::sleep(Duration::from_millis(CHECK_INTERVAL_MS)).await;
    cluster.restart(1).await;
    assert!(cluster.wait_healthy(3, Duration::from_secs(60)).await, "m1 did not come back:\n{}", cluster.logs().await);
    // A clean stop and start too: same disk, same member.
    cluster.stop(2, 5).await;
    cluster.restart(2).await;
    assert!(cluster.wait_healthy(3, Duration::from_secs(60)).await, "m2 did not come back:\n{}", cluster.logs().await);
    for index in 0..3 {
        assert!(!cluster.journal(index).contains("replace-started"), "a transient crash caused a replacement");
    }
    // The agent and its etcd ran as the image's unprivileged user, unless the harness runs another image.
    if std::env::var("LIFEBOAT_AGENT_IMAGE").map_or(true, |image| image.trim().is_empty()) {
        use std::os::unix::fs::MetadataExt;
        for written in ["state/journal.jsonl", "etcd/member"] {
            let owner = std::fs::metadata(cluster.members[0].disk.join(written)).map(|metadata| metadata.uid());
            assert_eq!(owner.ok(), Some(65532), "{written} on m0's disk is owned by the image's user");
        }
    }
}

/// The image the tests run is the one users deploy: built by `scripts/build-image`
/// from `runtime/container/Dockerfile`, unprivileged by default, and it answers.
/// LIFEBOAT_AGENT_IMAGE points the harness at another one (here a second tag of the
/// same image; elsewhere one from a registry), and that one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_image_runs_and_can_be_overridden() {
    if !require_docker() {
        return;
    }
    let default = images::images().await.clone();
    // A deadline for the whole test, and bounded Docker calls, as the clusters have.
    let watchdog = Watchdog::arm();
    let inspect = |format: &str, image: &str| {
        docker_within(&["image", "inspect", "--format", format, image], DOCKER_CALL_LIMIT).unwrap_or_default()
    };
    assert_eq!(inspect("{{.Config.User}}", &default.agent.full()), "65532:65532", "the image runs unprivileged");
    assert_eq!(inspect("{{json .Config.Entrypoint}}", &default.agent.full()), r#"["/usr/local/bin/lifeboat"]"#);
    let other = images::ImageRef { name: "lifeboat-test-agent-override".into(), tag: default.agent.tag.clone() };
    watchdog.step("docker tag");
    let tagged = docker_within(&["tag", &default.agent.full(), &other.full()], DOCKER_CALL_LIMIT);
    assert!(tagged.is_ok(), "{tagged:?}");
    let overrides = Overrides::from_lookup(|name| (name == "LIFEBOAT_AGENT_IMAGE").then(|| other.full()));
    let built = images::build(&overrides).await.expect("build with the override");
    assert_eq!(built.agent, other);
    let lifeboat = built.agent.generic().with_wait_for(WaitFor::message_on_stdout("lifeboat ")).with_cmd(["--version"]);
    watchdog.step("run lifeboat --version");
    lifeboat.start().await.expect("the image answers `lifeboat --version`");
    // The etcd it launches, restores and trial-restores with is inside, with what it loads.
    for (tool, command, answer) in
        [("etcd", "--version", "etcd Version: "), ("etcdutl", "version", "etcdutl version: ")]
    {
        let version = built
            .agent
            .generic()
            .with_entrypoint(&format!("/usr/local/bin/{tool}"))
            .with_wait_for(WaitFor::message_on_stdout(answer))
            .with_cmd([command]);
        watchdog.step(format!("run {tool} {command}"));
        version.start().await.unwrap_or_else(|error| panic!("{tool} runs in the image: {error}"));
    }
    let _ = docker_within(&["rmi", &other.full()], DOCKER_CALL_LIMIT);
}

/// Every catalogue scenario the container harness can express has a test here.
#[test]
fn the_catalogue_is_covered() {
    let covered = [
        ("steady-snapshots", "s3_outage_then_saves_resume_whole (saves every 2 s, verified)"),
        ("member-crash-restart", "crash_restart_is_transient"),
        ("member-disk-wiped", "wiped_volume_is_replaced_without_losing_a_write"),
        ("two-of-five-lost", "two_of_five_lost_are_replaced_one_at_a_time"),
        ("two-of-three-lost", "majority_lost_and_restored_from_the_newest_snapshot"),
        ("all-restarted-empty", "all_restarted_empty_restore_one_epoch"),
        ("minority-partition", "isolated_member_rejoins_without_a_recovery"),
        ("member-rejoins-behind", "a_member_behind_after_a_long_partition_is_not_replaced"),
        ("isolated-agent-sees-store", "isolated_agent_that_sees_the_store_starts_no_recovery"),
        ("store-outage-during-save", "s3_outage_then_saves_resume_whole"),
    ];
    for scenario in lifeboat_scenarios::catalogue() {
        if scenario.harnesses.contains(&lifeboat_scenarios::Harness::Containers) {
            assert!(
                covered.iter().any(|(name, _)| *name == scenario.name),
                "{} is marked for containers but no container test runs it",
                scenario.name
            );
        }
    }
}
