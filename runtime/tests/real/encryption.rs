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
