//! Trial restores (`snapshots verify --restore`): a snapshot is restored into a
//! scratch dir, started as a one-member etcd, and its HashKV compared with the
//! source member's at save time.

use crate::support::*;
use lifeboat_testkit as testkit;

fn verify_restore(fixture: &Fixture, extra: &[&str]) -> (std::process::Output, serde_json::Value) {
    let etcd = testkit::binary("etcd").display().to_string();
    let scratch = fixture.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let scratch = scratch.display().to_string();
    let mut args = vec!["snapshots", "verify", "--restore", "--etcd", &etcd, "--scratch-dir", &scratch];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--output", "json"]);
    let output = fixture.lifeboat(&args);
    let rows = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    (output, rows)
}

/// A fresh save is proven by its trial restore: same HashKV as the source at the
/// snapshot's revision, on both stores; the scratch dir is gone afterwards.
#[test]
fn a_saved_snapshot_restores_to_the_source_history() {
    for kind in STORE_KINDS {
        let Some(fixture) = fixture(kind, 3) else { return };
        fixture.etcd.put_many("app/", 500, 200);
        let report = fixture.save_json(&[]);
        let manifest: serde_json::Value =
            serde_json::from_slice(&fixture.read_object(report["manifest_key"].as_str().unwrap())).unwrap();
        assert!(manifest["kv_hash"]["hash"].as_u64().is_some(), "{kind:?}: the manifest carries the source's HashKV");

        let name = report["key"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        let (output, rows) = verify_restore(&fixture, &[&name]);
        assert!(output.status.success(), "{kind:?}: {}\n{rows}", String::from_utf8_lossy(&output.stderr));
        let row = &rows[0];
        assert_eq!(row["trial"]["result"], "proven", "{kind:?}: {rows}");
        assert_eq!(row["trial"]["hash"], manifest["kv_hash"]["hash"], "{kind:?}");
        let left: Vec<_> = std::fs::read_dir(fixture.path("scratch")).unwrap().collect();
        assert!(left.is_empty(), "{kind:?}: the trial's scratch dir is removed");
        // The proof is recorded beside the manifest, and the listing says so.
        let proof_key = report["manifest_key"].as_str().unwrap().replace(".manifest.json", ".trial.json");
        let proof: serde_json::Value = serde_json::from_slice(&fixture.read_object(&proof_key)).unwrap();
        assert_eq!(proof["hash"], manifest["kv_hash"]["hash"], "{kind:?}: {proof}");
        let listing: serde_json::Value =
            serde_json::from_str(&fixture.lifeboat_ok(&["snapshots", "list", "--output", "json"])).unwrap();
        assert_eq!(listing["snapshots"][0]["proven"], true, "{kind:?}: {listing}");
        let table = fixture.lifeboat_ok(&["snapshots", "list"]);
        assert!(table.contains("proven"), "{kind:?}: {table}");
    }
}

/// A snapshot whose bytes match its manifest but whose data is not what the
/// cluster held (here: another cluster's snapshot with a manifest forged to
/// match) passes the sha256 check and fails the trial restore (exit 6).
#[test]
fn a_snapshot_of_other_data_fails_the_trial() {
    let Some(fixture) = fixture(StoreKind::File, 1) else { return };
    let Some(other) = crate::support::fixture(StoreKind::File, 1) else { return };
    fixture.etcd.put_many("app/", 300, 100);
    other.etcd.put_many("other/", 400, 100);
    let ours = fixture.save_json(&[]);
    let theirs = other.save_json(&[]);
    assert!(theirs["revision"].as_i64() >= ours["revision"].as_i64(), "the other history reaches our revision");

    let our_key = ours["key"].as_str().unwrap();
    let manifest_key = ours["manifest_key"].as_str().unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&fixture.read_object(manifest_key)).unwrap();
    let their_manifest: serde_json::Value =
        serde_json::from_slice(&other.read_object(theirs["manifest_key"].as_str().unwrap())).unwrap();
    for field in ["sha256", "size_bytes", "stored_sha256", "stored_size_bytes"] {
        manifest[field] = their_manifest[field].clone();
    }
    fixture.write_object(our_key, other.read_object(theirs["key"].as_str().unwrap()));
    fixture.write_object(manifest_key, serde_json::to_vec_pretty(&manifest).unwrap());

    let name = our_key.rsplit('/').next().unwrap().to_owned();
    let plain = fixture.lifeboat(&["snapshots", "verify", &name]);
    assert!(plain.status.success(), "the bytes match the forged manifest: {}", String::from_utf8_lossy(&plain.stdout));
    let (output, rows) = verify_restore(&fixture, &[&name]);
    assert_eq!(output.status.code(), Some(6), "{rows}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(rows[0]["trial"]["result"], "mismatch", "{rows}");
    // Damaged after upload: never marked proven.
    assert!(
        !fixture.list_keys().iter().any(|key| key.ends_with(".trial.json")),
        "a snapshot that failed its trial has no proof: {:?}",
        fixture.list_keys()
    );
}

/// A scratch member (what a trial restore and a log replay start) whose port is taken
/// between its choice and etcd's bind moves to fresh ports and comes up: CI once saw
/// `bind: address already in use` fail a replay after a 60 s wait. An etcd that exits
/// for any other reason is reported at once with its log, not after the timeout.
#[test]
fn a_scratch_member_moves_off_a_taken_port_and_reports_an_exit_at_once() {
    use lifeboat_runtime::backup::scratch::{NotReady, ScratchMember};
    use lifeboat_runtime::etcd::EtcdClient;
    use std::time::Duration;
    if !testkit::require(&["etcd"]) {
        return;
    }
    let etcd = testkit::binary("etcd");
    let directory = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let probe = |url: String| async move {
        let client = EtcdClient::new(vec![url.clone()], Duration::from_secs(2));
        let mut connection = client.replay_target(&url).await.map_err(|error| error.to_string())?;
        connection.revision().await.map_err(|error| error.to_string())
    };
    runtime.block_on(async {
        let mut member = ScratchMember::new(directory.path(), "scratch", "scratch").unwrap();
        // No data dir, started as an existing member: etcd exits at once. A 10-minute
        // timeout makes "reported only after the timeout" a hang, not a pass.
        let exited = member.start_ready(&etcd, Vec::new(), Duration::from_secs(600), probe).await;
        match exited {
            Err(NotReady::Exited { log }) => assert!(!log.is_empty(), "the exit names etcd's log"),
            Err(other) => panic!("expected an exit reported with the log, got {other:?}"),
            Ok(_) => panic!("etcd cannot start as an existing member with no data"),
        }

        // A data dir of its own: one start as a new one-member cluster, stopped when ready.
        let mut first = std::process::Command::new(&etcd)
            .args(["--name", "scratch", "--data-dir"])
            .arg(member.data_dir())
            .args(["--listen-client-urls", &member.client_url, "--advertise-client-urls", &member.client_url])
            .args(["--listen-peer-urls", &member.peer_url, "--initial-advertise-peer-urls", &member.peer_url])
            .args(["--initial-cluster", &format!("scratch={}", member.peer_url), "--initial-cluster-token", "scratch"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while probe(member.client_url.clone()).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "the one-member cluster did not answer within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::process::Command::new("kill").arg(first.id().to_string()).status().unwrap();
        first.wait().unwrap();

        // Someone takes its client port before etcd binds it.
        let taken = member.client_url.clone();
        let port = taken.rsplit(':').next().unwrap();
        let _holder = std::net::TcpListener::bind(format!("127.0.0.1:{port}")).unwrap();
        let (running, revision) = member
            .start_ready(&etcd, Vec::new(), Duration::from_secs(600), probe)
            .await
            .unwrap_or_else(|error| panic!("the scratch member should move to fresh ports: {error:?}"));
        assert!(revision.0 >= 1, "it answers with its data: revision {revision:?}");
        assert_ne!(member.client_url, taken, "it moved off the taken port");
        let log = std::fs::read_to_string(member.log()).unwrap();
        assert!(log.contains("address already in use"), "the first start did hit the taken port:\n{log}");
        lifeboat_runtime::ports::LocalMember::stop(&running).await.unwrap();
    });
}
