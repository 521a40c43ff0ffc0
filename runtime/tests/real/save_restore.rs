//! The main path, on S3 and on file://: save → objects where the layout says,
//! readable by etcd's own tools → restore → every key back.

use crate::support::*;
use sha2::{Digest, Sha256};
use std::process::Command;

const KEYS: usize = 2_000;

/// `snapshot.db` sits at the exact kube-aws key and etcdutl reads it: the revision
/// is the cluster's at save time and every key is in it.
#[test]
fn save_writes_the_exact_key_readable_by_etcdutl() {
    for kind in STORE_KINDS {
        let Some(fixture) = fixture(kind, 3) else {
            return;
        };
        fixture.etcd.put_many("app/", KEYS, 200);
        let revision = current_revision(&fixture.etcd.members[0].client_url);
        let textfile = fixture.path("lifeboat.prom");
        let report = fixture.save_json(&["--metrics-file", textfile.to_str().unwrap()]);
        assert_eq!(report["revision"].as_i64(), Some(revision), "{kind:?}: {report}");
        // For node-exporter's textfile collector: the save's figures, whole.
        let figures = std::fs::read_to_string(&textfile).expect("--metrics-file written");
        assert!(figures.lines().any(|line| line == format!("lifeboat_last_save_revision {revision}")), "{figures}");
        assert!(figures.contains("lifeboat_last_save_timestamp_seconds "), "{figures}");

        let latest_key = format!("{}snapshot.db", fixture.snapshots_prefix());
        assert_eq!(report["latest_key"].as_str(), Some(latest_key.as_str()));
        let bytes = fixture.read_object(&latest_key);
        let path = fixture.path("downloaded.db");
        std::fs::write(&path, &bytes).unwrap();
        let (snapshot_revision, total_keys) = snapshot_status(&path);
        assert_eq!(snapshot_revision, revision, "{kind:?}");
        // The reference: what `etcdctl snapshot save` gets from the same cluster.
        let reference = fixture.path("reference.db");
        etcdctl(&fixture.etcd.members[0].client_url, &["snapshot", "save", reference.to_str().unwrap()]);
        assert_eq!(snapshot_status(&reference), (revision, total_keys), "{kind:?}: as etcdctl's own snapshot");
        assert!(total_keys >= KEYS as i64, "{kind:?}: every key written is in the snapshot");
    }
}

/// The versioned object and its manifest agree: sha256 and size, plain and zstd;
/// `snapshots list` and `verify` see both.
#[test]
fn versioned_snapshots_match_their_manifests() {
    for kind in STORE_KINDS {
        let Some(fixture) = fixture(kind, 3) else {
            return;
        };
        fixture.etcd.put_many("app/", 500, 1_000);
        let plain = fixture.save_json(&[]);
        let compressed = fixture.save_json(&["--compression", "zstd"]);
        for report in [&plain, &compressed] {
            let key = report["key"].as_str().unwrap();
            let manifest_key = report["manifest_key"].as_str().unwrap();
            let manifest: serde_json::Value = serde_json::from_slice(&fixture.read_object(manifest_key)).unwrap();
            let stored = fixture.read_object(key);
            assert_eq!(manifest["stored_sha256"].as_str().unwrap(), hex::encode(Sha256::digest(&stored)), "{kind:?}");
            assert_eq!(manifest["stored_size_bytes"].as_u64().unwrap(), stored.len() as u64);
            let decoded = if key.ends_with(".zst") { zstd::decode_all(&stored[..]).unwrap() } else { stored.clone() };
            assert_eq!(manifest["sha256"].as_str().unwrap(), hex::encode(Sha256::digest(&decoded)));
            assert_eq!(manifest["size_bytes"].as_u64().unwrap(), decoded.len() as u64);
            assert_eq!(manifest["cluster"].as_str(), Some(CLUSTER));
            assert_eq!(manifest["members"].as_array().unwrap().len(), 3);
        }
        assert!(compressed["key"].as_str().unwrap().ends_with(".db.zst"));
        assert!(compressed["stored_size_bytes"].as_u64() < compressed["size_bytes"].as_u64(), "zstd shrinks etcd data");
        // snapshot.db stays plain even when the versioned object is compressed.
        let latest = fixture.read_object(compressed["latest_key"].as_str().unwrap());
        assert_eq!(hex::encode(Sha256::digest(&latest)), compressed["sha256"].as_str().unwrap());

        let listing: serde_json::Value =
            serde_json::from_str(&fixture.lifeboat_ok(&["snapshots", "list", "--output", "json"])).unwrap();
        let snapshots = listing["snapshots"].as_array().unwrap();
        assert_eq!(snapshots.len(), 2);
        assert!(snapshots.iter().all(|entry| entry["problem"].is_null()), "{listing}");
        let verify: serde_json::Value =
            serde_json::from_str(&fixture.lifeboat_ok(&["snapshots", "verify", "--all", "--output", "json"])).unwrap();
        assert_eq!(verify.as_array().unwrap().len(), 3, "two versioned snapshots and snapshot.db: {verify}");
        assert!(verify.as_array().unwrap().iter().all(|row| row["ok"] == true), "{verify}");

        // An object whose manifest is not written (yet): a save in progress. `verify --all`
        // lists it as skipped and still succeeds; asked for by name, it is not a backup.
        let orphan = "20260101T000000.000Z-r1.db";
        fixture.write_object(
            &format!("{}{orphan}", fixture.snapshots_prefix()),
            fixture.read_object(plain["key"].as_str().unwrap()),
        );
        let verify: serde_json::Value =
            serde_json::from_str(&fixture.lifeboat_ok(&["snapshots", "verify", "--all", "--output", "json"])).unwrap();
        let rows = verify.as_array().unwrap();
        assert_eq!(rows.len(), 4, "{verify}");
        let skipped: Vec<_> = rows.iter().filter(|row| row["skipped"] == true).collect();
        assert_eq!(skipped.len(), 1, "{verify}");
        assert_eq!(skipped[0]["snapshot"], orphan, "{verify}");
        let output = fixture.lifeboat(&["snapshots", "verify", orphan]);
        assert_eq!(output.status.code(), Some(6), "{kind:?}: {}", String::from_utf8_lossy(&output.stdout));
        assert!(String::from_utf8_lossy(&output.stdout).contains("no manifest"));
    }
}

/// A member restored from the latest snapshot serves every key written before the save.
#[test]
fn restore_brings_back_every_key() {
    for kind in STORE_KINDS {
        let Some(fixture) = fixture(kind, 3) else {
            return;
        };
        fixture.etcd.put_many("app/", KEYS, 100);
        fixture.save_json(&["--compression", "zstd"]);
        // Written after the save: must not be in the restore.
        fixture.etcd.put_many("late/", 10, 10);

        let data_dir = fixture.path("restored.data");
        let peer_url = format!("http://127.0.0.1:{}", lifeboat_testkit::free_port(&[]));
        let output = fixture.lifeboat_ok(&[
            "restore",
            "--output",
            "json",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--name",
            "restored",
            "--initial-cluster",
            &format!("restored={peer_url}"),
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster-token",
            "it-restored",
        ]);
        let report: serde_json::Value = serde_json::from_str(&output).unwrap();
        assert!(report["snapshot"].as_str().unwrap().ends_with(".db.zst"), "{report}");
        assert!(data_dir.join("member").is_dir());

        let restored = start_restored(&fixture, &data_dir, "restored", &peer_url, "it-restored");
        assert_eq!(count_keys(&restored.client_url, "app/"), KEYS as i64, "{kind:?}");
        assert_eq!(count_keys(&restored.client_url, "late/"), 0, "{kind:?}");
        let value = etcdctl(&restored.client_url, &["get", "app/001234", "--print-value-only"]);
        assert!(value.starts_with("value-1234-"), "{value}");
    }
}

/// Prune keeps the newest N and never the newest verified one, deleting the rest
/// with their manifests.
#[test]
fn prune_applies_retention() {
    let Some(fixture) = fixture(StoreKind::File, 1) else {
        return;
    };
    fixture.etcd.put_many("app/", 10, 10);
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(fixture.save_json(&[])["name"].as_str().unwrap().to_owned());
    }
    let dry: serde_json::Value = serde_json::from_str(&fixture.lifeboat_ok(&[
        "snapshots",
        "prune",
        "--keep-last",
        "2",
        "--keep-hourly",
        "0",
        "--keep-daily",
        "0",
        "--dry-run",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(dry["deleted"].as_array().unwrap().len(), 2);
    assert_eq!(fixture.list_keys().len(), 4 * 2 + 1, "dry run deletes nothing");
    fixture.lifeboat_ok(&["snapshots", "prune", "--keep-last", "2", "--keep-hourly", "0", "--keep-daily", "0"]);
    let keys = fixture.list_keys();
    assert_eq!(keys.len(), 2 * 2 + 1, "{keys:?}");
    for name in &names[2..] {
        assert!(keys.iter().any(|key| key.ends_with(name.as_str())), "{name} kept");
    }
    for name in &names[..2] {
        assert!(!keys.iter().any(|key| key.contains(name.as_str())), "{name} and its manifest deleted");
    }
}

/// Revisions move forward across a restore where etcdutl can bump them (3.5.10 or
/// later): the restored member's revision is a billion above the snapshot's, and a
/// watcher resuming from an old revision is told it was compacted, as Kubernetes'
/// informers need. Where etcdutl cannot (3.4, 3.5.1), the restore says so.
#[test]
fn restored_revisions_move_forward_where_etcdutl_can() {
    let Some(fixture) = fixture(StoreKind::File, 1) else {
        return;
    };
    fixture.etcd.put_many("app/", 50, 10);
    let saved = fixture.save_json(&[]);
    let revision = saved["revision"].as_i64().unwrap();
    let data_dir = fixture.path("bumped.data");
    let peer_url = format!("http://127.0.0.1:{}", lifeboat_testkit::free_port(&[]));
    let output = fixture.lifeboat(&[
        "restore",
        "--output",
        "json",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--name",
        "bumped",
        "--initial-cluster",
        &format!("bumped={peer_url}"),
        "--initial-advertise-peer-urls",
        &peer_url,
        "--initial-cluster-token",
        "it-bumped",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let help = std::process::Command::new(lifeboat_testkit::binary("etcdutl"))
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore", "--help"])
        .output()
        .unwrap();
    let can_bump = format!("{}{}", String::from_utf8_lossy(&help.stdout), String::from_utf8_lossy(&help.stderr))
        .contains("--bump-revision");
    let restored = start_restored(&fixture, &data_dir, "bumped", &peer_url, "it-bumped");
    let now = current_revision(&restored.client_url);
    if !can_bump {
        assert!(report["bump_revision"].is_null(), "{report}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("cannot bump revisions"));
        assert!(now < revision + 1_000, "no bump: {now} from {revision}");
        return;
    }
    assert_eq!(report["bump_revision"].as_u64(), Some(1_000_000_000), "{report}");
    assert!(now >= revision + 1_000_000_000, "revision {now} is not above the snapshot's {revision} by the bump");
    let watch = std::process::Command::new(lifeboat_testkit::binary("etcdctl"))
        .args(["--endpoints", &restored.client_url, "watch", "app/", "--prefix", "--rev", &revision.to_string()])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&watch.stdout), String::from_utf8_lossy(&watch.stderr));
    assert!(
        said.contains("compacted"),
        "a watch from the old revision {revision} is not told it was compacted: {said}"
    );
}

/// `save`, `snapshots verify` and `restore` draw a progress bar on a terminal (here a
/// pseudo-terminal from util-linux's `script`), and nothing in a pipe or with
/// `--output json`.
#[test]
fn progress_is_drawn_on_a_terminal_only() {
    let Some(fixture) = fixture(StoreKind::File, 1) else { return };
    let endpoint = fixture.etcd.endpoints()[0].clone();
    for index in 0..200 {
        etcdctl(&endpoint, &["put", &format!("progress/{index:04}"), &"x".repeat(4096)]);
    }
    let on_terminal = |args: &str| -> String {
        let template = fixture.command(&[]);
        let mut script = Command::new("script");
        for (key, value) in template.get_envs() {
            match value {
                Some(value) => script.env(key, value),
                None => script.env_remove(key),
            };
        }
        let line = format!("{} {args}", env!("CARGO_BIN_EXE_lifeboat"));
        let output = script.args(["-qec", &line, "/dev/null"]).output().expect("run util-linux's script");
        assert!(
            output.status.success(),
            "{line} under a terminal failed:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let saved = on_terminal("save");
    assert!(saved.contains("saving: "), "no progress on a terminal:\n{saved}");
    assert!(saved.contains("saved "), "the result still prints:\n{saved}");
    // A frame of the bar: its message, then bytes and their rate.
    let drawn = |text: &str, message: &str| text.contains(message) && text.contains("B/s)");
    assert!(drawn(&saved, "saving"), "no progress bar frame:\n{saved}");
    let verified = on_terminal("snapshots verify --all");
    assert!(drawn(&verified, "verifying"), "no progress on a terminal:\n{verified}");
    let data_dir = fixture.path("restored");
    let restored = on_terminal(&format!(
        "restore --no-log --data-dir {} --name etcd0 --initial-cluster etcd0=http://127.0.0.1:2380 \
         --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster-token progress",
        data_dir.display()
    ));
    assert!(drawn(&restored, "restor") || drawn(&restored, "downloading"), "no progress on a terminal:\n{restored}");
    assert!(data_dir.join("member").is_dir(), "the restore under a terminal built the data dir");
    let json = on_terminal("save --output json");
    assert!(!json.contains("B/s)"), "a bar with --output json:\n{json}");
    let piped = fixture.lifeboat(&["save"]);
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(piped.status.success() && !stderr.contains("saving: ") && !stderr.contains('\u{1b}'), "{stderr}");
}
