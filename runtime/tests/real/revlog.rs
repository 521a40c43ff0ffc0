//! The revision log on real etcd and real stores: `lifeboat log stream` writes
//! it, `lifeboat restore --to-revision/--to-time` replays it, and the restored
//! data is compared key by key (value, create and mod revision, version, lease)
//! with what the original cluster returns for `get --rev R`.

use crate::support::*;
use lifeboat_testkit as testkit;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `lifeboat log stream`, stopped (SIGTERM) on drop.
struct Writer(Child);

impl Writer {
    fn start(fixture: &Fixture) -> Writer {
        let log = std::fs::File::create(fixture.path("writer.log")).unwrap();
        let child = fixture
            .command(&["log", "stream", "--flush-interval-ms", "200", "--output", "json"])
            .env("LIFEBOAT_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the log writer");
        Writer(child)
    }

    /// Stops it and returns what it printed (its stats as JSON).
    fn stop(mut self) -> serde_json::Value {
        testkit::terminate(&mut self.0, Duration::from_secs(20));
        let mut text = String::new();
        if let Some(mut stdout) = self.0.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
        }
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        testkit::terminate(&mut self.0, Duration::from_secs(5));
    }
}

fn log_status(fixture: &Fixture) -> serde_json::Value {
    serde_json::from_str(&fixture.lifeboat_ok(&["log", "status", "--output", "json"])).expect("log status prints JSON")
}

/// A cluster with a snapshot, a log writer, and a first round of history in
/// the log: the client URL and the running writer.
fn logging_cluster(fixture: &Fixture) -> (String, Writer) {
    let client = fixture.etcd.endpoints()[0].clone();
    fixture.etcd.put_many("seed/", 20, 100);
    fixture.save_json(&[]);
    let writer = Writer::start(fixture);
    write_history(&client, 1);
    wait_caught_up(fixture);
    (client, writer)
}

/// Waits until the log holds every revision the cluster has.
fn wait_caught_up(fixture: &Fixture) {
    let caught_up = testkit::wait_until(Duration::from_secs(60), || {
        let target = current_revision(&fixture.etcd.endpoints()[0]);
        log_status(fixture)
            .as_array()
            .is_some_and(|views| views.iter().any(|view| view["last_revision"].as_i64() == Some(target)))
    });
    assert!(
        caught_up,
        "the log did not catch up: {}\nwriter log: {}",
        log_status(fixture),
        std::fs::read_to_string(fixture.path("writer.log")).unwrap_or_default()
    );
}

/// `etcdctl txn` with success operations (one revision for all of them).
fn txn(client_url: &str, operations: &[&str]) {
    let mut child = Command::new(testkit::binary("etcdctl"))
        .args(["--endpoints", client_url, "txn", "--interactive=false"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run etcdctl txn");
    // Compares (none), a blank line, the success operations, a blank line, the failure operations (none).
    let script = format!("\n{}\n\n\n", operations.join("\n"));
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "etcdctl txn {operations:?}");
}

/// A history with every kind of change: puts, overwrites, deletes, range
/// deletes, multi-key transactions, leased keys and a revoked lease.
fn write_history(client_url: &str, round: usize) {
    let put = |key: &str, value: &str| {
        etcdctl(client_url, &["put", key, value]);
    };
    for index in 0..15 {
        put(&format!("app/{round}/{index:03}"), &format!("v{round}-{index}"));
    }
    for index in 0..5 {
        put(&format!("app/{round}/{index:03}"), &format!("overwritten-{round}-{index}"));
    }
    etcdctl(client_url, &["del", &format!("app/{round}/001")]);
    txn(client_url, &[&format!("put tx/{round}/a 1"), &format!("put tx/{round}/b 2"), &format!("del app/{round}/002")]);
    let lease = etcdctl(client_url, &["lease", "grant", "600"]);
    let lease = lease.split_whitespace().nth(1).expect("a lease ID").to_owned();
    etcdctl(client_url, &["put", &format!("leased/{round}/a"), "x", &format!("--lease={lease}")]);
    etcdctl(client_url, &["put", &format!("leased/{round}/b"), "y", &format!("--lease={lease}")]);
    let short = etcdctl(client_url, &["lease", "grant", "600"]);
    let short = short.split_whitespace().nth(1).expect("a lease ID").to_owned();
    etcdctl(client_url, &["put", &format!("leased/{round}/gone"), "z", &format!("--lease={short}")]);
    etcdctl(client_url, &["lease", "revoke", &short]);
    etcdctl(client_url, &["del", &format!("app/{round}/01"), "--prefix"]);
    for index in 0..5 {
        put(&format!("app/{round}/{index:03}"), &format!("again-{round}-{index}"));
    }
}

/// Every key of a member as `get --prefix ""` returns it (optionally at a
/// revision): key, value, create/mod revision, version and lease.
fn contents(client_url: &str, revision: Option<i64>) -> Vec<serde_json::Value> {
    let mut args = vec!["get", "", "--prefix", "-w", "json"];
    let at = revision.map(|revision| format!("--rev={revision}"));
    if let Some(at) = &at {
        args.push(at);
    }
    let parsed: serde_json::Value = serde_json::from_str(&etcdctl(client_url, &args)).expect("etcdctl prints JSON");
    parsed["kvs"].as_array().cloned().unwrap_or_default()
}

fn restore(fixture: &Fixture, dir: &str, peer_url: &str, extra: &[&str]) -> std::process::Output {
    let data_dir = fixture.path(dir).display().to_string();
    let scratch = fixture.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let scratch = scratch.display().to_string();
    let initial_cluster = format!("{dir}={peer_url}");
    let token = format!("{dir}-token");
    let mut args = vec![
        "restore",
        "--data-dir",
        &data_dir,
        "--name",
        dir,
        "--initial-cluster",
        &initial_cluster,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster-token",
        &token,
        "--scratch-dir",
        &scratch,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    fixture.lifeboat(&args)
}

/// Restores to `extra`'s target and checks that the restored member holds
/// exactly what the original held at `expected`, revision numbers included.
fn restore_and_compare(fixture: &Fixture, dir: &str, extra: &[&str], expected: i64) -> serde_json::Value {
    let original = contents(&fixture.etcd.endpoints()[0], Some(expected));
    restore_and_compare_with(fixture, dir, extra, expected, original)
}

/// The same, against contents read from the original before it was compacted.
fn restore_and_compare_with(
    fixture: &Fixture,
    dir: &str,
    extra: &[&str],
    expected: i64,
    original: Vec<serde_json::Value>,
) -> serde_json::Value {
    let peer_url = format!("http://127.0.0.1:{}", testkit::free_port(&[]));
    let mut extra = extra.to_vec();
    extra.extend_from_slice(&["--bump-revision", "0"]);
    let output = restore(fixture, dir, &peer_url, &extra);
    assert!(output.status.success(), "restore {extra:?}: {}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("restore prints JSON");
    assert_eq!(report["log"]["reached"].as_i64(), Some(expected), "restore {extra:?}: {report}");
    let member = start_restored(fixture, &fixture.path(dir), dir, &peer_url, &format!("{dir}-token"));
    let restored = contents(&member.client_url, None);
    assert!(!original.is_empty());
    assert_eq!(restored.len(), original.len(), "restore {extra:?}: key count at revision {expected}");
    assert_eq!(restored, original, "restore {extra:?}: the data at revision {expected}");
    assert_eq!(current_revision(&member.client_url), expected, "restore {extra:?}: the member's revision");
    report
}

/// Restore to any revision after a snapshot, on both stores: every target
/// gives exactly the original's keys, values, revisions, versions and leases
/// at that revision; the newest snapshot at or below the target is the base.
#[test]
fn restore_reaches_any_revision_exactly() {
    for kind in STORE_KINDS {
        let Some(fixture) = fixture(kind, 3) else { return };
        let client = fixture.etcd.endpoints()[0].clone();
        fixture.etcd.put_many("seed/", 50, 100);
        let first = fixture.save_json(&[]);
        let first_revision = first["revision"].as_i64().unwrap();
        let writer = Writer::start(&fixture);
        write_history(&client, 1);
        wait_caught_up(&fixture);
        let middle = current_revision(&client);
        let second = fixture.save_json(&[]);
        let second_revision = second["revision"].as_i64().unwrap();
        write_history(&client, 2);
        wait_caught_up(&fixture);
        let end = current_revision(&client);
        let stats = writer.stop();
        assert_eq!(stats["last_revision"].as_i64(), Some(end), "{kind:?}: the writer's own account: {stats}");
        assert_eq!(stats["gaps"].as_i64(), Some(0), "{kind:?}: {stats}");

        let status = log_status(&fixture);
        let view = &status[0];
        assert_eq!(view["gaps"].as_array().map(Vec::len), Some(0), "{kind:?}: {status}");
        assert_eq!(view["lag"]["revisions"].as_i64(), Some(0), "{kind:?}: {status}");

        for (index, target) in
            [first_revision + 1, first_revision + 7, middle - 3, second_revision, second_revision + 1, end - 4]
                .into_iter()
                .enumerate()
        {
            let report =
                restore_and_compare(&fixture, &format!("to{index}"), &["--to-revision", &target.to_string()], target);
            let base = if target >= second_revision { second_revision } else { first_revision };
            assert_eq!(report["revision"].as_i64(), Some(target), "{kind:?}: {report}");
            assert!(
                report["log"]["snapshot_revision"].as_i64().unwrap() >= base,
                "{kind:?}: the newest snapshot at or below {target} is the base: {report}"
            );
        }
        // Latest: the whole log.
        let report = restore_and_compare(&fixture, "latest", &[], end);
        assert!(report["log"]["revisions_applied"].as_u64().unwrap() >= 1, "{kind:?}: {report}");
        // Before the first snapshot there is nothing to start from.
        let before =
            restore(&fixture, "before", "http://127.0.0.1:1", &[&format!("--to-revision={}", first_revision - 1)]);
        assert_eq!(before.status.code(), Some(7), "{kind:?}: {}", stderr(&before));
        assert!(stderr(&before).contains("reach revision"), "{kind:?}: {}", stderr(&before));
        assert!(!fixture.path("before").exists(), "{kind:?}: a refused restore creates no data dir");

        // verify --all reads every segment.
        let verified = fixture.lifeboat(&["snapshots", "verify", "--all", "--output", "json"]);
        assert!(verified.status.success(), "{kind:?}: {}", stderr(&verified));
        let rows: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
        let segments =
            rows.as_array().unwrap().iter().filter(|row| row["snapshot"].as_str().unwrap().starts_with("log/")).count();
        assert!(segments >= 2, "{kind:?}: every segment is checked: {rows}");

        // Retention: keeping only the newest snapshot drops the segments that end at or
        // below it; the log after it still restores, a revision before it no longer does.
        let pruned = fixture.lifeboat_ok(&[&PRUNE_TO_NEWEST[..], &["--output", "json"]].concat());
        let pruned: serde_json::Value = serde_json::from_str(&pruned).unwrap();
        let dropped = pruned["segments_deleted"].as_array().map(Vec::len).unwrap_or(0);
        assert!(dropped >= 1, "{kind:?}: segments before the kept snapshot go: {pruned}");
        let left = log_status(&fixture);
        assert!(
            left[0]["first_revision"].as_i64().unwrap() <= second_revision + 1,
            "{kind:?}: the kept chain is whole: {left}"
        );
        let gone =
            restore(&fixture, "gone", "http://127.0.0.1:1", &["--to-revision", &(first_revision + 1).to_string()]);
        assert_eq!(gone.status.code(), Some(7), "{kind:?}: {}", stderr(&gone));
        restore_and_compare(&fixture, "after-prune", &["--to-revision", &(end - 1).to_string()], end - 1);
    }
}

/// `--to-time`: the last revision the writer had seen at that time, on a
/// 3-member cluster and both stores; the revision bump still applies on top of
/// a replay.
#[test]
fn restore_reaches_a_point_in_time() {
    for kind in STORE_KINDS {
        let Some(fixture) = fixture(kind, 3) else { return };
        restore_to_a_point_in_time(&fixture);
    }
}

fn restore_to_a_point_in_time(fixture: &Fixture) {
    let (client, writer) = logging_cluster(fixture);
    let before = current_revision(&client);
    let moment = lifeboat::Millis(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
    );
    std::thread::sleep(Duration::from_millis(50));
    write_history(&client, 2);
    wait_caught_up(fixture);
    drop(writer);
    let at = moment.to_rfc3339();
    restore_and_compare(fixture, "at-time", &["--to-time", &at], before);

    let bad = restore(fixture, "bad-time", "http://127.0.0.1:1", &["--to-time", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("RFC 3339"), "{}", stderr(&bad));

    // With the default bump (etcdutl 3.5.10+), revisions move forward past the replayed ones.
    let peer_url = format!("http://127.0.0.1:{}", testkit::free_port(&[]));
    let bumped = restore(fixture, "bumped", &peer_url, &["--to-revision", &before.to_string()]);
    assert!(bumped.status.success(), "{}", stderr(&bumped));
    let report: serde_json::Value = serde_json::from_slice(&bumped.stdout).unwrap();
    if let Some(bump) = report["bump_revision"].as_i64() {
        let member = start_restored(fixture, &fixture.path("bumped"), "bumped", &peer_url, "bumped-token");
        assert!(current_revision(&member.client_url) >= before + bump, "{report}");
        let keys = contents(&member.client_url, None);
        assert_eq!(keys.len(), contents(&client, Some(before)).len(), "{report}");
    }
}

/// A compacted history ends a chain: the writer saves a new snapshot and starts
/// over, the hole shows in `log status`, a target inside it is refused with a
/// clear error, and a damaged segment stops a restore that needs it.
#[test]
fn compaction_starts_a_new_chain_and_damage_is_reported() {
    let Some(fixture) = fixture(StoreKind::File, 1) else { return };
    let (client, writer) = logging_cluster(&fixture);
    let stats = writer.stop();
    let first_chain_end = stats["last_revision"].as_i64().unwrap();
    // Written while no writer runs, then compacted away.
    let early = contents(&client, Some(first_chain_end - 2));
    write_history(&client, 2);
    let lost = current_revision(&client);
    etcdctl(&client, &["compact", &lost.to_string()]);
    let writer = Writer::start(&fixture);
    write_history(&client, 3);
    wait_caught_up(&fixture);
    let end = current_revision(&client);
    let stats = writer.stop();
    assert_eq!(stats["gaps"].as_i64(), Some(1), "{stats}");
    assert_eq!(stats["snapshots"].as_i64(), Some(1), "a new chain starts from a new snapshot: {stats}");

    let status = log_status(&fixture);
    let gaps = status[0]["gaps"].as_array().cloned().unwrap_or_default();
    assert_eq!(gaps.len(), 1, "{status}");
    assert_eq!(gaps[0][0].as_i64(), Some(first_chain_end), "{status}");

    let inside =
        restore(&fixture, "inside", "http://127.0.0.1:1", &["--to-revision", &(first_chain_end + 3).to_string()]);
    assert_eq!(inside.status.code(), Some(7), "{}", stderr(&inside));
    assert!(stderr(&inside).contains("holes after"), "{}", stderr(&inside));
    restore_and_compare(&fixture, "latest", &[], end);
    let target = (first_chain_end - 2).to_string();
    restore_and_compare_with(&fixture, "early", &["--to-revision", &target], first_chain_end - 2, early);

    // Damage the last segment: a restore that needs it fails as corrupt (exit 6); `latest`
    // stops before it and says so.
    let log_dir = fixture.path("store").join(CLUSTER).join("exported").join("etcd-log");
    let cluster_dir = std::fs::read_dir(&log_dir).unwrap().next().unwrap().unwrap().path();
    let mut segments: Vec<_> = std::fs::read_dir(&cluster_dir).unwrap().map(|entry| entry.unwrap().path()).collect();
    segments.sort();
    let last = segments.last().unwrap().clone();
    let mut bytes = std::fs::read(&last).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&last, bytes).unwrap();
    let damaged = restore(&fixture, "damaged", "http://127.0.0.1:1", &["--to-revision", &end.to_string()]);
    assert_eq!(damaged.status.code(), Some(6), "{}", stderr(&damaged));
    let verified = fixture.lifeboat(&["snapshots", "verify", "--all"]);
    assert_eq!(verified.status.code(), Some(6), "verify --all finds the damaged segment");
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("damaged"),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    assert!(!fixture.path("damaged").exists());
    let peer_url = format!("http://127.0.0.1:{}", testkit::free_port(&[]));
    let latest = restore(&fixture, "latest-damaged", &peer_url, &["--bump-revision", "0"]);
    assert!(latest.status.success(), "{}", stderr(&latest));
    let report: serde_json::Value = serde_json::from_slice(&latest.stdout).unwrap();
    assert!(report["log"]["stopped_early"].as_str().is_some_and(|why| why.contains("damaged")), "{report}");
    assert!(report["log"]["reached"].as_i64().unwrap() < end, "{report}");
}

/// With client-side encryption the log's segments are sealed like everything
/// else, and `log status`, `--to-time` and `--to-revision` read them through it.
#[test]
fn the_log_is_encrypted_and_replays_with_the_key() {
    let Some(mut fixture) = fixture(StoreKind::File, 3) else { return };
    fixture.encryption_key = Some("a0".repeat(32));
    restore_to_a_point_in_time(&fixture);
    let log_root = fixture.scratch.path().join("store").join(CLUSTER).join("exported/etcd-log");
    let mut segments = 0;
    for cluster in std::fs::read_dir(&log_root).expect("the log is in the store") {
        for segment in std::fs::read_dir(cluster.unwrap().path()).unwrap() {
            let raw = std::fs::read(segment.unwrap().path()).unwrap();
            assert!(raw.starts_with(b"LBSEAL1"), "a segment is sealed");
            segments += 1;
        }
    }
    assert!(segments >= 2, "{segments} segments");
    fixture.encryption_key = None;
    let refused = restore(&fixture, "no-key", "http://127.0.0.1:1", &["--to-revision", "30"]);
    assert_eq!(refused.status.code(), Some(6), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("LIFEBOAT_ENCRYPTION_KEY"), "{}", stderr(&refused));
    assert!(!fixture.path("no-key").exists());
}
