//! No secret reaches an output: an agent with every kind of secret lifeboat takes
//! (an etcd user's password, the TLS client key, the S3 secret key, an SSE-C key,
//! the client-side encryption key)
//! runs with debug logging until it has saved; then its logs, its journal, and
//! the JSON of `status`, `check` and `snapshots list` are searched for each.

use crate::support::*;
use lifeboat_testkit::{self as testkit, wait_until, LocalEtcdCluster, S3Server};
use std::process::Stdio;
use std::time::Duration;

#[test]
fn no_secret_reaches_logs_journal_or_json() {
    if !testkit::require(&["etcd", "etcdctl", "etcdutl", "weed"]) {
        return;
    }
    let etcd = LocalEtcdCluster::start_tls(1);
    let s3 = S3Server::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(s3.create_bucket(BUCKET));
    let scratch = tempfile::Builder::new().prefix("lifeboat-secrets-").tempdir().unwrap();
    let password = "correct-horse-battery-staple";
    etcd.put_many("app/", 20, 64);
    etcd.etcdctl(&["user", "add", "root", &format!("--new-user-password={password}")]);
    etcd.etcdctl(&["auth", "enable"]);
    let password_file = scratch.path().join("password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let sse_key = [0x5au8, 0x17, 0xc3, 0x88].repeat(8);
    let sse_key_file = scratch.path().join("sse-c.key");
    std::fs::write(&sse_key_file, &sse_key).unwrap();
    let client_side_key = [0x3cu8, 0xa9, 0x51, 0x07].repeat(8);
    let client_side_key_file = scratch.path().join("client-side.key");
    std::fs::write(&client_side_key_file, hex::encode(&client_side_key)).unwrap();
    let pki = etcd.pki.as_ref().unwrap();
    let client_key = std::fs::read_to_string(pki.path("healthcheck-client.key")).unwrap();

    let member = &etcd.members[0];
    let state_dir = scratch.path().join("state");
    let (password_path, sse_path, pki_dir) =
        (password_file.display().to_string(), sse_key_file.display().to_string(), pki.dir.display().to_string());
    let client_side_path = client_side_key_file.display().to_string();
    let common: Vec<String> = [
        "--store",
        &format!("s3://{BUCKET}/secrets"),
        "--cluster",
        CLUSTER,
        "--endpoints",
        &member.client_url,
        "--kubeadm",
        "--kubeadm-pki",
        &pki_dir,
        "--user",
        "root",
        "--password-file",
        &password_path,
        "--s3-sse-c-key-file",
        &sse_path,
        "--encryption-key-file",
        &client_side_path,
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    let log = scratch.path().join("agent.log");
    let mut agent = lifeboat_command()
        .env("LIFEBOAT_LOG", "debug")
        .envs(s3.env())
        .args(["agent", "--member-control", "none", "--name", &member.name])
        .arg("--data-dir")
        .arg(&member.data_dir)
        .arg("--state-dir")
        .arg(&state_dir)
        .args(["--client-url", &member.client_url, "--peer-url", &member.peer_url])
        .args(["--initial-cluster", &format!("{}={}", member.name, member.peer_url)])
        .args(["--check-interval-ms", "300", "--snapshot-interval-ms", "1000"])
        .arg("--etcdutl")
        .arg(testkit::binary("etcdutl"))
        .args(&common)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(scratch.path().join("agent.err")).unwrap())
        .spawn()
        .unwrap();
    let journal = state_dir.join("journal.jsonl");
    let saved = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&journal).is_ok_and(|text| text.contains("\"event\":\"saved\""))
    });
    testkit::terminate(&mut agent, Duration::from_secs(10));
    let mut seen = String::new();
    for file in [log.clone(), scratch.path().join("agent.err"), journal.clone()] {
        seen.push_str(&std::fs::read_to_string(&file).unwrap_or_default());
    }
    assert!(saved, "the agent saved nothing within 60 s:\n{seen}");

    for command in [
        vec!["status", "--journal", "--output", "json", "--state-dir", state_dir.to_str().unwrap()],
        vec!["check", "--output", "json"],
        vec!["snapshots", "list", "--output", "json"],
        vec!["snapshots", "verify", "--output", "json"],
    ] {
        let mut args = command.clone();
        if command[0] != "status" {
            args.extend(common.iter().map(String::as_str));
        }
        let output = lifeboat_command().env("LIFEBOAT_LOG", "debug").envs(s3.env()).args(&args).output().unwrap();
        seen.push_str(&String::from_utf8_lossy(&output.stdout));
        seen.push_str(&String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{command:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }

    let s3_secret = s3.env().into_iter().find(|(key, _)| key == "AWS_SECRET_ACCESS_KEY").unwrap().1;
    let key_body: Vec<&str> = client_key.lines().filter(|line| !line.starts_with("-----") && line.len() > 16).collect();
    let mut secrets: Vec<(String, &str)> = vec![
        (password.to_owned(), "the etcd password"),
        (s3_secret, "the S3 secret key"),
        (aws_smithy_types::base64::encode(&sse_key), "the SSE-C key (base64)"),
        (hex::encode(&sse_key), "the SSE-C key (hex)"),
        (hex::encode(&client_side_key), "the client-side key (hex)"),
        (aws_smithy_types::base64::encode(&client_side_key), "the client-side key (base64)"),
    ];
    secrets.extend(key_body.iter().map(|line| ((*line).to_owned(), "the TLS client key")));
    assert!(seen.len() > 1_000, "the outputs were gathered: {} bytes", seen.len());
    for (secret, what) in secrets {
        assert!(!seen.contains(&secret), "{what} reached an output");
    }
}
