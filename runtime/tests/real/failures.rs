//! Bad snapshots, dead endpoints and crashes half way: clear errors, the right
//! exit code, nothing damaged.

use crate::support::*;
use lifeboat_testkit as testkit;
use std::time::Duration;

fn restore_args<'a>(data_dir: &'a str, peer_url: &'a str, snapshot: &'a str) -> Vec<&'a str> {
    vec![
        "restore",
        "--output",
        "json",
        "--snapshot",
        snapshot,
        "--data-dir",
        data_dir,
        "--name",
        "m0",
        "--initial-cluster",
        peer_url,
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:1",
        "--initial-cluster-token",
        "t",
    ]
}

/// A corrupt or truncated snapshot is refused (exit 6) and the data dir is not
/// created; with `latest`, the previous good snapshot is restored instead.
#[test]
fn corrupt_and_truncated_snapshots_are_refused() {
    for kind in STORE_KINDS {
        let Some(fixture) = fixture(kind, 1) else {
            return;
        };
        fixture.etcd.put_many("app/", 300, 100);
        let good = fixture.save_json(&[]);
        fixture.etcd.put_many("more/", 300, 100);
        let bad = fixture.save_json(&[]);
        let bad_key = bad["key"].as_str().unwrap();
        let mut bytes = fixture.read_object(bad_key);
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fixture.write_object(bad_key, bytes.clone());

        let data_dir = fixture.path("corrupt.data");
        let data_dir_text = data_dir.to_str().unwrap().to_owned();
        let output =
            fixture.lifeboat(&restore_args(&data_dir_text, "m0=http://127.0.0.1:1", bad["name"].as_str().unwrap()));
        assert_eq!(output.status.code(), Some(6), "{kind:?}: {}", stderr(&output));
        assert!(stderr(&output).contains("corrupt"), "{}", stderr(&output));
        assert!(!data_dir.exists(), "data dir untouched");

        // Truncated: the same object cut short.
        fixture.write_object(bad_key, bytes[..bytes.len() - 4096].to_vec());
        let output =
            fixture.lifeboat(&restore_args(&data_dir_text, "m0=http://127.0.0.1:1", bad["name"].as_str().unwrap()));
        assert_eq!(output.status.code(), Some(6), "{kind:?}: {}", stderr(&output));
        assert!(!data_dir.exists());

        // `snapshots verify` flags it too.
        let output = fixture.lifeboat(&["snapshots", "verify", "--all"]);
        assert_eq!(output.status.code(), Some(6));

        // Latest skips the damaged one and restores the previous good snapshot.
        let output = fixture.lifeboat_ok(&restore_args(&data_dir_text, "m0=http://127.0.0.1:1", "latest"));
        let report: serde_json::Value = serde_json::from_str(&output).unwrap();
        assert_eq!(report["snapshot"], good["name"], "{kind:?}: {report}");
        assert_eq!(report["skipped"].as_array().unwrap().len(), 1);
        assert!(data_dir.join("member").is_dir());
    }
}

/// A file that is not an etcd snapshot at all, under the kube-aws key, is refused.
#[test]
fn foreign_snapshot_db_is_refused() {
    let Some(fixture) = fixture(StoreKind::File, 1) else {
        return;
    };
    let key = format!("{}snapshot.db", fixture.snapshots_prefix());
    std::fs::create_dir_all(fixture.path("store").join(fixture.snapshots_prefix())).unwrap();
    fixture.write_object(&key, b"this is not a bolt database at all".repeat(100));
    let data_dir = fixture.path("foreign.data");
    let output = fixture.lifeboat(&restore_args(data_dir.to_str().unwrap(), "m0=http://127.0.0.1:1", "latest"));
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    assert!(stderr(&output).contains("not an etcd snapshot"), "{}", stderr(&output));
    assert!(!data_dir.exists());
}

/// A non-empty data dir is never touched (exit 8), before any download.
#[test]
fn non_empty_data_dir_is_refused() {
    let Some(fixture) = fixture(StoreKind::File, 1) else {
        return;
    };
    fixture.save_json(&[]);
    let data_dir = fixture.path("busy.data");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("precious"), b"keep me").unwrap();
    let output = fixture.lifeboat(&restore_args(data_dir.to_str().unwrap(), "m0=http://127.0.0.1:1", "latest"));
    assert_eq!(output.status.code(), Some(8), "{}", stderr(&output));
    assert!(stderr(&output).contains("not empty"));
    assert_eq!(std::fs::read(data_dir.join("precious")).unwrap(), b"keep me");
}

/// S3 down: a clear error naming the endpoint, exit 5, nothing written.
/// A bucket that does not exist: exit 7 and a hint.
#[test]
fn unreachable_store_and_missing_bucket() {
    let Some(mut fixture) = fixture(StoreKind::S3, 1) else {
        return;
    };
    let s3 = fixture.s3.as_mut().unwrap();
    s3.stop();
    let output = fixture.lifeboat(&["save"]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(stderr(&output).contains("unreachable"), "{}", stderr(&output));
    assert!(stderr(&output).contains("snapshot.db and earlier snapshots are unchanged"));
    fixture.s3.as_mut().unwrap().resume();
    assert!(fixture.list_keys().is_empty(), "nothing partial after a failed save");

    let mut command = lifeboat_command();
    command
        .env("LIFEBOAT_ENDPOINTS", fixture.etcd.endpoints_joined())
        .env("LIFEBOAT_CLUSTER", CLUSTER)
        .envs(fixture.s3.as_ref().unwrap().env())
        .args(["save", "--store", "s3://no-such-bucket-here/x"]);
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    assert!(stderr(&output).contains("does not exist"), "{}", stderr(&output));

    // And the next save, with the store back, succeeds.
    fixture.save_json(&[]);
}

/// Killed half way through a large save, or the store dying under it: no object
/// under a final name without its manifest, snapshot.db unchanged.
#[test]
fn crash_or_outage_half_way_leaves_nothing_partial() {
    let Some(mut fixture) = fixture(StoreKind::S3, 1) else {
        return;
    };
    fixture.etcd.put_many("small/", 10, 10);
    let first = fixture.save_json(&[]);
    let latest_key = first["latest_key"].as_str().unwrap().to_owned();
    let latest_before = fixture.read_object(&latest_key);
    let keys_before = fixture.list_keys();
    fixture.etcd.put_many("big/", 6_000, 10_240);

    for fault in ["kill lifeboat", "stop S3"] {
        let mut command = lifeboat_command();
        command
            .env("LIFEBOAT_ENDPOINTS", fixture.etcd.endpoints_joined())
            .env("LIFEBOAT_STORE", fixture.store_url())
            .env("LIFEBOAT_CLUSTER", CLUSTER)
            .envs(fixture.s3.as_ref().unwrap().env())
            .args(["save", "--upload-concurrency", "1", "--part-size-mib", "5"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        // Wait until a multipart upload is under way, then strike.
        let client = fixture.s3.as_ref().unwrap().client();
        let started = testkit::wait_until(Duration::from_secs(30), || {
            fixture.runtime.block_on(async {
                client
                    .list_multipart_uploads()
                    .bucket(BUCKET)
                    .send()
                    .await
                    .map(|output| !output.uploads.unwrap_or_default().is_empty())
                    .unwrap_or(false)
            })
        });
        assert!(started, "{fault}: the save never started uploading");
        match fault {
            "kill lifeboat" => {
                child.kill().unwrap();
                child.wait().unwrap();
            }
            _ => {
                fixture.s3.as_mut().unwrap().stop();
                let output = child.wait_with_output().unwrap();
                assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
                fixture.s3.as_mut().unwrap().resume();
            }
        }
        assert_eq!(fixture.list_keys(), keys_before, "{fault}: no new object under a final name");
        assert_eq!(fixture.read_object(&latest_key), latest_before, "{fault}: snapshot.db unchanged");
    }
    // The next save succeeds and replaces snapshot.db.
    let next = fixture.save_json(&[]);
    assert_ne!(next["sha256"], first["sha256"]);
}

/// HTTPS to the store with no CA certificates to trust (a scratch or distroless
/// image): a clear error naming the fix, exit 5, instead of a TLS failure on every
/// request (or a panic in debug builds). Plain http needs none.
#[test]
fn https_store_without_ca_certificates_says_so() {
    let scratch = tempfile::tempdir().unwrap();
    let no_bundle = scratch.path().join("no-such-bundle.pem");
    let run = |endpoint: &str| {
        let mut command = lifeboat_command();
        command
            .env("SSL_CERT_FILE", &no_bundle)
            .env_remove("SSL_CERT_DIR")
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(["snapshots", "list", "--store", "s3://bucket/p", "--cluster", "c", "--s3-endpoint", endpoint]);
        command.output().unwrap()
    };
    let output = run("https://127.0.0.1:9");
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(stderr(&output).contains("needs CA certificates"), "{}", stderr(&output));
    assert!(stderr(&output).contains("SSL_CERT_FILE"), "{}", stderr(&output));
    let output = run("http://127.0.0.1:9");
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(stderr(&output).contains("unreachable"), "plain http needs no CA roots: {}", stderr(&output));
}
