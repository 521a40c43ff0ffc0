//! Server-side encryption against the real S3 server: SSE-C objects that cannot
//! be read without their key, SSE-S3 asked on every write, and settings refused
//! before anything is written.

use crate::support::*;
use sha2::{Digest, Sha256};

/// A 256-bit key, different per test run.
fn key_file(fixture: &Fixture, name: &str, seed: &str) -> String {
    let key = Sha256::digest(format!("{seed}-{}-{:?}", std::process::id(), std::time::SystemTime::now()));
    let path = fixture.path(name);
    std::fs::write(&path, key).unwrap();
    path.display().to_string()
}

/// Every object lifeboat wrote under the cluster's prefix (snapshots, manifests,
/// the latest pointer).
fn written_keys(fixture: &Fixture) -> Vec<String> {
    let keys = fixture.list_keys();
    assert!(keys.len() >= 3, "a save writes the versioned object, its manifest and snapshot.db: {keys:?}");
    keys
}

/// SSE-C: what lifeboat writes with `--s3-sse-c-key-file` the server keeps
/// encrypted (a plain read is refused), lifeboat reads it back with the key, and
/// without the key (or with another) the error names the flag.
#[test]
fn sse_c_objects_are_read_only_with_their_key() {
    let Some(fixture) = fixture(StoreKind::S3, 1) else { return };
    fixture.etcd.put_many("app/", 200, 100);
    let key = key_file(&fixture, "sse-c.key", "right");
    let report = fixture.save_json(&["--s3-sse-c-key-file", &key]);
    assert!(report["revision"].as_i64().is_some_and(|revision| revision > 0), "{report}");

    let client = fixture.s3.as_ref().unwrap().client();
    for object in written_keys(&fixture) {
        let plain = fixture.runtime.block_on(client.get_object().bucket(BUCKET).key(&object).send());
        assert!(plain.is_err(), "{object} reads without its SSE-C key: the server did not encrypt it");
    }

    let with_key = fixture.lifeboat_ok(&["snapshots", "verify", "--all", "--s3-sse-c-key-file", &key]);
    assert!(with_key.contains("ok") || with_key.contains("OK") || with_key.contains("verified"), "{with_key}");

    let other = key_file(&fixture, "other.key", "wrong");
    for extra in [vec![], vec!["--s3-sse-c-key-file", other.as_str()]] {
        let mut args = vec!["snapshots", "verify", "--all"];
        args.extend(extra.iter().copied());
        let output = fixture.lifeboat(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} read SSE-C objects without their key");
        assert!(stderr.contains("--s3-sse-c-key-file"), "{args:?}: the error names the flag:\n{stderr}");
        for secret in [&key, &other] {
            let encoded = aws_smithy_types::base64::encode(std::fs::read(secret).unwrap());
            assert!(!stderr.contains(&encoded), "{args:?}: a key reached the output");
        }
    }
}

/// SSE-S3: every object of a save is stored encrypted, as the server reports it.
#[test]
fn sse_s3_is_asked_on_every_write() {
    let Some(fixture) = fixture(StoreKind::S3, 1) else { return };
    fixture.etcd.put_many("app/", 200, 100);
    fixture.save_json(&["--s3-sse", "AES256"]);
    let client = fixture.s3.as_ref().unwrap().client();
    for object in written_keys(&fixture) {
        let head = fixture.runtime.block_on(client.head_object().bucket(BUCKET).key(&object).send()).unwrap();
        assert_eq!(
            head.server_side_encryption().map(|sse| sse.as_str().to_owned()).as_deref(),
            Some("AES256"),
            "{object} is not stored with SSE-S3"
        );
    }
    fixture.lifeboat_ok(&["snapshots", "verify", "--all"]);
}

/// Settings that cannot work are refused with exit 2 before anything is written:
/// a key file that is not 32 bytes, an unknown mode, SSE-C together with SSE-KMS.
#[test]
fn bad_encryption_settings_are_refused_up_front() {
    let Some(fixture) = fixture(StoreKind::S3, 1) else { return };
    let short = fixture.path("short.key");
    std::fs::write(&short, [7u8; 31]).unwrap();
    let short = short.display().to_string();
    let good = key_file(&fixture, "good.key", "good");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--s3-sse-c-key-file", short.as_str()], "32 bytes"),
        (vec!["--s3-sse", "aes256-please"], "AES256"),
        (vec!["--s3-sse", "aws:kms", "--s3-sse-c-key-file", good.as_str()], "exclude each other"),
        (vec!["--s3-sse", "AES256", "--s3-sse-kms-key-id", "k"], "aws:kms"),
    ];
    for (extra, hint) in cases {
        let mut args = vec!["save"];
        args.extend(extra.iter().copied());
        let output = fixture.lifeboat(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(hint), "{args:?}: the error says {hint:?}:\n{stderr}");
    }
    assert!(fixture.list_keys().is_empty(), "nothing was written");
}

/// SSE-KMS needs a KMS behind the server, which the test server lacks: a stand-in
/// endpoint records what lifeboat sends, and the object-creating request carries
/// the KMS mode and key id (SeaweedFS without a KMS fails the upload instead).
#[test]
fn sse_kms_headers_are_sent_on_writes() {
    let Some(fixture) = fixture(StoreKind::S3, 1) else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let recorder = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Read, Write};
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            while reader.read_line(&mut head).is_ok_and(|read| read > 2) {}
            let length = head
                .lines()
                .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(0);
            let _ = std::io::copy(&mut reader.by_ref().take(length), &mut std::io::sink());
            recorder.lock().unwrap().push(head);
            let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let output = fixture.lifeboat(&[
        "save",
        "--s3-endpoint",
        &endpoint,
        "--s3-sse",
        "aws:kms",
        "--s3-sse-kms-key-id",
        "lifeboat-test-key",
    ]);
    assert!(!output.status.success(), "the stand-in endpoint returns no upload id");
    let requests = seen.lock().unwrap().clone();
    let create = requests
        .iter()
        .find(|request| {
            request.starts_with("POST ") && request.lines().next().is_some_and(|line| line.contains("uploads"))
        })
        .unwrap_or_else(|| panic!("no CreateMultipartUpload among {requests:#?}"));
    let lower = create.to_ascii_lowercase();
    assert!(lower.contains("x-amz-server-side-encryption: aws:kms"), "{create}");
    assert!(lower.contains("x-amz-server-side-encryption-aws-kms-key-id: lifeboat-test-key"), "{create}");
}

/// A client-side key as `LIFEBOAT_ENCRYPTION_KEY` takes it (hex), different per run.
fn client_key(seed: &str) -> String {
    hex::encode(Sha256::digest(format!("client-{seed}-{}-{:?}", std::process::id(), std::time::SystemTime::now())))
}

/// `lifeboat restore` of `snapshot` (or the newest) into `dir`, as member `dir`
/// with peer URL `peer_url`; the output.
fn restore_as(fixture: &Fixture, dir: &str, snapshot: Option<&str>, peer_url: &str) -> std::process::Output {
    let data_dir = fixture.path(dir);
    let peer_url = peer_url.to_owned();
    let mut args = vec![
        "restore".to_owned(),
        "--no-log".to_owned(),
        "--output".to_owned(),
        "json".to_owned(),
        "--data-dir".to_owned(),
        data_dir.display().to_string(),
        "--name".to_owned(),
        dir.to_owned(),
        "--initial-cluster".to_owned(),
        format!("{dir}={peer_url}"),
        "--initial-advertise-peer-urls".to_owned(),
        peer_url,
        "--initial-cluster-token".to_owned(),
        format!("{dir}-token"),
    ];
    if let Some(snapshot) = snapshot {
        args.extend(["--snapshot".to_owned(), snapshot.to_owned()]);
    }
    fixture.lifeboat(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn restore_into(fixture: &Fixture, dir: &str, snapshot: Option<&str>) -> std::process::Output {
    restore_as(fixture, dir, snapshot, &format!("http://127.0.0.1:{}", lifeboat_testkit::free_port(&[])))
}

/// Client-side encryption, on S3 and on a directory: every object lifeboat writes
/// is sealed (no etcd page, no manifest text in the store), everything reads back
/// with the key (list with its ID, verify, restore key by key), and without the
/// key, with another key, or after one byte changed, nothing is restored and the
/// exit code is 6 with an error that says what to do.
#[test]
fn client_side_encryption_round_trips_and_refuses_what_it_cannot_open() {
    for kind in STORE_KINDS {
        let Some(mut fixture) = fixture(kind, 1) else { return };
        fixture.etcd.put_many("app/", 300, 100);
        let key = client_key("right");
        fixture.encryption_key = Some(key.clone());
        let older = fixture.save_json(&["--compression", "zstd"]);
        fixture.etcd.put_many("more/", 20, 10);
        let newer = fixture.save_json(&["--compression", "none"]);
        let newer_name = newer["name"].as_str().unwrap().to_owned();

        let keys = fixture.list_keys();
        assert_eq!(keys.len(), 2 * 2 + 1, "{kind:?}: two snapshots, two manifests, snapshot.db: {keys:?}");
        for object in &keys {
            let raw = fixture.read_object(object);
            assert!(raw.starts_with(b"LBSEAL1"), "{kind:?}: {object} is not sealed");
            for plain in [&b"sha256"[..], b"app/000123", b"value-123-"] {
                assert!(!raw.windows(plain.len()).any(|window| window == plain), "{kind:?}: {object} shows plaintext");
            }
        }

        let listing: serde_json::Value =
            serde_json::from_str(&fixture.lifeboat_ok(&["snapshots", "list", "--output", "json"])).unwrap();
        let entries = listing["snapshots"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "{kind:?}: {listing}");
        let key_id = entries[0]["manifest"]["key_id"].as_str().unwrap_or_default().to_owned();
        assert_eq!(key_id.len(), 16, "{kind:?}: each manifest records the key ID: {listing}");
        assert!(entries.iter().all(|entry| entry["problem"].is_null()), "{kind:?}: {listing}");
        fixture.lifeboat_ok(&["snapshots", "verify", "--all"]);

        let peer_url = format!("http://127.0.0.1:{}", lifeboat_testkit::free_port(&[]));
        let restored = restore_as(&fixture, "with-key", None, &peer_url);
        assert!(restored.status.success(), "{kind:?}: {}", stderr(&restored));
        let report: serde_json::Value = serde_json::from_slice(&restored.stdout).unwrap();
        assert_eq!(report["snapshot"].as_str(), Some(newer_name.as_str()), "{kind:?}: {report}");
        let member = start_restored(&fixture, &fixture.path("with-key"), "with-key", &peer_url, "with-key-token");
        assert_eq!(count_keys(&member.client_url, "app/"), 300, "{kind:?}");
        assert_eq!(count_keys(&member.client_url, "more/"), 20, "{kind:?}");
        drop(member);

        // Without the key, with another: exit 6, the key's ID or the setting named, no data dir.
        for (label, other) in [("no-key", None), ("wrong-key", Some(client_key("wrong")))] {
            fixture.encryption_key = other;
            for args in [vec!["snapshots", "verify", "--all"], vec!["snapshots", "verify", &newer_name]] {
                let output = fixture.lifeboat(&args);
                let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), stderr(&output));
                assert_eq!(output.status.code(), Some(6), "{kind:?} {label} {args:?}: {said}");
                assert!(said.contains(&key_id), "{kind:?} {label}: the error names the key:\n{said}");
                assert!(said.contains("LIFEBOAT_ENCRYPTION_KEY"), "{kind:?} {label}:\n{said}");
            }
            for snapshot in [None, Some(newer_name.as_str())] {
                let output = restore_into(&fixture, label, snapshot);
                assert_eq!(output.status.code(), Some(6), "{kind:?} {label} {snapshot:?}: {}", stderr(&output));
                assert!(stderr(&output).contains(&key_id), "{kind:?} {label}: {}", stderr(&output));
                assert!(!fixture.path(label).exists(), "{kind:?} {label}: nothing was restored");
            }
            // Prune cannot see these backups: it deletes nothing rather than treat them
            // as orphans (or their log as unreachable).
            let pruned = fixture.lifeboat(&PRUNE_TO_NEWEST);
            assert_eq!(pruned.status.code(), Some(6), "{kind:?} {label}: {}", stderr(&pruned));
            assert!(stderr(&pruned).contains("prune deletes nothing"), "{kind:?} {label}: {}", stderr(&pruned));
            assert_eq!(fixture.list_keys(), keys, "{kind:?} {label}: nothing deleted");
        }
        fixture.encryption_key = Some(key.clone());

        // One byte changed in the newer snapshot: it fails verification (6), a restore by
        // name refuses it, the newest restore falls back to what still opens.
        let newer_key = keys.iter().find(|object| object.ends_with(&newer_name)).unwrap().clone();
        let mut tampered = fixture.read_object(&newer_key);
        let middle = tampered.len() / 2;
        tampered[middle] ^= 0x01;
        fixture.write_object(&newer_key, tampered);
        let output = fixture.lifeboat(&["snapshots", "verify", &newer_name]);
        let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), stderr(&output));
        assert_eq!(output.status.code(), Some(6), "{kind:?}: {said}");
        assert!(said.contains("fails authentication"), "{kind:?}:\n{said}");
        let output = restore_into(&fixture, "tampered", Some(&newer_name));
        assert_eq!(output.status.code(), Some(6), "{kind:?}: {}", stderr(&output));
        assert!(!fixture.path("tampered").exists(), "{kind:?}: nothing restored from a tampered object");
        let fallback = restore_into(&fixture, "fallback", None);
        assert!(fallback.status.success(), "{kind:?}: {}", stderr(&fallback));
        let report: serde_json::Value = serde_json::from_slice(&fallback.stdout).unwrap();
        assert_ne!(report["snapshot"].as_str(), Some(newer_name.as_str()), "{kind:?}: {report}");
        assert!(report["skipped"].to_string().contains("fails authentication"), "{kind:?}: {report}");

        // A valid record moved under another name (the older manifest over the newer's)
        // does not open there: the snapshot is listed with the problem, not used.
        let older_name = older["name"].as_str().unwrap();
        let manifest_of =
            |name: &str| keys.iter().find(|object| object.ends_with(&format!("{name}.manifest.json"))).unwrap().clone();
        fixture.write_object(&manifest_of(&newer_name), fixture.read_object(&manifest_of(older_name)));
        let listing: serde_json::Value =
            serde_json::from_str(&fixture.lifeboat_ok(&["snapshots", "list", "--output", "json"])).unwrap();
        let moved =
            listing["snapshots"].as_array().unwrap().iter().find(|entry| entry["name"] == newer_name.as_str()).unwrap();
        assert!(moved["problem"].as_str().unwrap_or_default().contains("fails authentication"), "{kind:?}: {listing}");
        assert!(!serde_json::to_string(&listing).unwrap().contains(key.as_str()), "{kind:?}: the key in JSON");
    }
}

/// Bad key settings are refused with exit 2 before anything is written: a key of the
/// wrong length in a file or in the environment, and both ways at once.
#[test]
fn bad_client_side_keys_are_refused_up_front() {
    let Some(mut fixture) = fixture(StoreKind::File, 1) else { return };
    let short = fixture.path("short.key");
    std::fs::write(&short, [7u8; 31]).unwrap();
    let short = short.display().to_string();
    let output = fixture.lifeboat(&["save", "--encryption-key-file", &short]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("256-bit key"), "{}", stderr(&output));
    fixture.encryption_key = Some("not-a-key".into());
    let output = fixture.lifeboat(&["save"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("LIFEBOAT_ENCRYPTION_KEY") && !stderr(&output).contains("not-a-key"),
        "{}",
        stderr(&output)
    );
    fixture.encryption_key = Some(client_key("both"));
    let output = fixture.lifeboat(&["save", "--encryption-key-file", &short]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("one way only"), "{}", stderr(&output));
    assert!(fixture.list_keys().is_empty(), "nothing was written");
}

/// An agent whose key cannot open the backups in the store (here: another key)
/// journals it at start and claims no recovery it could neither verify nor
/// make the other members read.
#[test]
fn an_agent_with_the_wrong_key_says_so_and_turns_recovery_off() {
    let Some(mut fixture) = fixture(StoreKind::S3, 1) else { return };
    fixture.etcd.put_many("app/", 20, 10);
    fixture.encryption_key = Some(client_key("written"));
    fixture.save_json(&[]);
    fixture.encryption_key = Some(client_key("agent"));
    let member = &fixture.etcd.members[0];
    let state_dir = fixture.path("state");
    let mut agent = fixture
        .command(&["agent", "--member-control", "none", "--name", &member.name])
        .arg("--data-dir")
        .arg(&member.data_dir)
        .arg("--state-dir")
        .arg(&state_dir)
        .args(["--client-url", &member.client_url, "--peer-url", &member.peer_url])
        .args(["--initial-cluster", &format!("{}={}", member.name, member.peer_url)])
        .args(["--check-interval-ms", "300", "--snapshot-interval-ms", "3600000"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(fixture.path("agent.err")).unwrap())
        .spawn()
        .unwrap();
    let journal = state_dir.join("journal.jsonl");
    let said = lifeboat_testkit::wait_until(std::time::Duration::from_secs(30), || {
        std::fs::read_to_string(&journal).is_ok_and(|text| text.contains("\"event\":\"store-key-mismatch\""))
    });
    lifeboat_testkit::terminate(&mut agent, std::time::Duration::from_secs(10));
    let text = std::fs::read_to_string(&journal).unwrap_or_default();
    assert!(
        said,
        "no store-key-mismatch in the journal:\n{text}\n{}",
        std::fs::read_to_string(fixture.path("agent.err")).unwrap_or_default()
    );
    assert!(text.contains("automatic disaster recovery is off"), "{text}");
}
