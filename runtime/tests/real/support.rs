//! Shared test fixtures: a cluster, a store (S3 or file), and a way to run lifeboat.

use lifeboat_testkit::{self as testkit, LocalEtcdCluster, S3Server};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BUCKET: &str = "lifeboat-it";
pub const CLUSTER: &str = "it";

/// Which store a test runs against; every store-facing test runs on both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    S3,
    File,
}

pub const STORE_KINDS: [StoreKind; 2] = [StoreKind::S3, StoreKind::File];

/// `snapshots prune` keeping only the newest snapshot.
pub const PRUNE_TO_NEWEST: [&str; 8] =
    ["snapshots", "prune", "--keep-last", "1", "--keep-hourly", "0", "--keep-daily", "0"];

/// Everything one test needs, torn down on drop.
pub struct Fixture {
    pub etcd: LocalEtcdCluster,
    pub s3: Option<S3Server>,
    pub kind: StoreKind,
    pub scratch: tempfile::TempDir,
    pub runtime: tokio::runtime::Runtime,
    /// Client-side encryption: every command gets it in `LIFEBOAT_ENCRYPTION_KEY`.
    pub encryption_key: Option<String>,
}

/// `None` (skip) outside CI when etcd or the S3 server is not installed.
pub fn fixture(kind: StoreKind, members: usize) -> Option<Fixture> {
    let needed: &[&str] = match kind {
        StoreKind::S3 => &["etcd", "etcdctl", "etcdutl", "weed"],
        StoreKind::File => &["etcd", "etcdctl", "etcdutl"],
    };
    if !testkit::require(needed) {
        return None;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let s3 = (kind == StoreKind::S3).then(|| {
        let server = S3Server::start();
        runtime.block_on(server.create_bucket(BUCKET));
        server
    });
    let etcd = LocalEtcdCluster::start(members);
    let scratch = tempfile::Builder::new().prefix("lifeboat-it-").tempdir().expect("a temp dir");
    Some(Fixture { etcd, s3, kind, scratch, runtime, encryption_key: None })
}

impl Fixture {
    pub fn store_url(&self) -> String {
        match self.kind {
            StoreKind::S3 => format!("s3://{BUCKET}/backups"),
            StoreKind::File => format!("file://{}", self.scratch.path().join("store").display()),
        }
    }

    /// The key prefix of snapshots, relative to the bucket or the store directory.
    pub fn snapshots_prefix(&self) -> String {
        match self.kind {
            StoreKind::S3 => format!("backups/{CLUSTER}/exported/etcd-snapshots/"),
            StoreKind::File => format!("{CLUSTER}/exported/etcd-snapshots/"),
        }
    }

    /// `lifeboat ARGS` with this fixture's endpoints, store and credentials.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = lifeboat_command();
        command
            .env("LIFEBOAT_ENDPOINTS", self.etcd.endpoints_joined())
            .env("LIFEBOAT_STORE", self.store_url())
            .env("LIFEBOAT_CLUSTER", CLUSTER)
            .env("LIFEBOAT_ETCDUTL", testkit::binary("etcdutl"))
            .env("LIFEBOAT_ETCD", testkit::binary("etcd"))
            .env("LIFEBOAT_TIMEOUT_MS", "5000");
        if let Some(s3) = &self.s3 {
            command.envs(s3.env());
        }
        if let Some(key) = &self.encryption_key {
            command.env("LIFEBOAT_ENCRYPTION_KEY", key);
        }
        command.args(args);
        command
    }

    /// Runs `lifeboat ARGS` with this fixture's endpoints, store and credentials.
    pub fn lifeboat(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run lifeboat")
    }

    pub fn lifeboat_ok(&self, args: &[&str]) -> String {
        let output = self.lifeboat(args);
        assert!(
            output.status.success(),
            "lifeboat {args:?} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn save_json(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["save", "--output", "json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.lifeboat_ok(&args)).expect("save prints JSON")
    }

    /// Reads an object by key (relative to bucket or store directory).
    pub fn read_object(&self, key: &str) -> Vec<u8> {
        match self.kind {
            StoreKind::File => std::fs::read(self.scratch.path().join("store").join(key)).expect("read the object"),
            StoreKind::S3 => {
                let client = self.s3.as_ref().expect("S3 fixture").client();
                self.runtime.block_on(async {
                    let output = client.get_object().bucket(BUCKET).key(key).send().await.expect("get the object");
                    output.body.collect().await.expect("read the body").into_bytes().to_vec()
                })
            }
        }
    }

    /// Overwrites an object by key, bypassing lifeboat (to simulate damage).
    pub fn write_object(&self, key: &str, body: Vec<u8>) {
        match self.kind {
            StoreKind::File => {
                std::fs::write(self.scratch.path().join("store").join(key), body).expect("write the object")
            }
            StoreKind::S3 => {
                let client = self.s3.as_ref().expect("S3 fixture").client();
                self.runtime.block_on(async {
                    client.put_object().bucket(BUCKET).key(key).body(body.into()).send().await.expect("put the object");
                });
            }
        }
    }

    /// Every key under the snapshots prefix, sorted.
    pub fn list_keys(&self) -> Vec<String> {
        let prefix = self.snapshots_prefix();
        let mut keys = match self.kind {
            StoreKind::File => {
                let directory = self.scratch.path().join("store").join(&prefix);
                match std::fs::read_dir(&directory) {
                    Ok(entries) => entries
                        .map(|entry| format!("{prefix}{}", entry.expect("an entry").file_name().to_string_lossy()))
                        .collect(),
                    Err(_) => Vec::new(),
                }
            }
            StoreKind::S3 => {
                let client = self.s3.as_ref().expect("S3 fixture").client();
                self.runtime.block_on(async {
                    let output = client.list_objects_v2().bucket(BUCKET).prefix(&prefix).send().await.expect("list");
                    output.contents.unwrap_or_default().into_iter().filter_map(|object| object.key).collect()
                })
            }
        };
        keys.sort();
        keys
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }
}

pub fn lifeboat_command() -> Command {
    lifeboat_command_in(None)
}

/// `lifeboat`, run inside network namespace `netns` when given (`ip netns exec`).
pub fn lifeboat_command_in(netns: Option<&str>) -> Command {
    let mut command = match netns {
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_lifeboat")]);
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_lifeboat")),
    };
    for (key, _) in std::env::vars() {
        if key.starts_with("LIFEBOAT_") && key != "LIFEBOAT_BIN_DIR" {
            command.env_remove(key);
        }
    }
    command.env("LIFEBOAT_LOG", "warn").env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

/// `etcdutl snapshot status -w json` of a snapshot file: (revision, total keys).
pub fn snapshot_status(path: &Path) -> (i64, i64) {
    let output = Command::new(testkit::binary("etcdutl"))
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .output()
        .expect("run etcdutl");
    assert!(output.status.success(), "etcdutl snapshot status failed: {}", String::from_utf8_lossy(&output.stderr));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("etcdutl prints JSON");
    (status["revision"].as_i64().expect("revision"), status["totalKey"].as_i64().expect("totalKey"))
}

/// The current revision of the cluster, through etcd's JSON gateway.
pub fn current_revision(client_url: &str) -> i64 {
    let status = etcdctl(client_url, &["endpoint", "status", "-w", "json"]);
    let parsed: serde_json::Value = serde_json::from_str(&status).expect("etcdctl prints JSON");
    parsed[0]["Status"]["header"]["revision"].as_i64().expect("a revision")
}

pub fn etcdctl(endpoint: &str, args: &[&str]) -> String {
    let output = Command::new(testkit::binary("etcdctl"))
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .output()
        .expect("run etcdctl");
    assert!(output.status.success(), "etcdctl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Starts a single etcd from a restored data dir and returns its client URL.
pub fn start_restored(fixture: &Fixture, data_dir: &Path, name: &str, peer_url: &str, token: &str) -> RestoredEtcd {
    let client_url = format!("http://127.0.0.1:{}", testkit::free_port(&[]));
    let log = std::fs::File::create(fixture.path(&format!("{name}.log"))).expect("a log");
    let child = Command::new(testkit::binary("etcd"))
        .args(["--name", name, "--data-dir"])
        .arg(data_dir)
        .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url])
        .args(["--initial-cluster", &format!("{name}={peer_url}"), "--initial-cluster-token", token])
        .arg("--log-level=warn")
        .stdout(log.try_clone().expect("clone"))
        .stderr(log)
        .spawn()
        .expect("start etcd");
    let restored = RestoredEtcd { child, client_url };
    let address = restored.client_url.trim_start_matches("http://").to_owned();
    let healthy = testkit::wait_until(std::time::Duration::from_secs(30), || {
        testkit::http_get(&address, "/health").is_some_and(|(status, body)| status == 200 && body.contains("\"true\""))
    });
    assert!(healthy, "restored etcd did not become healthy");
    restored
}

pub struct RestoredEtcd {
    child: std::process::Child,
    pub client_url: String,
}

impl Drop for RestoredEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The count of keys under `prefix` (`--limit 1` with `-w fields` prints the whole
/// range's count, also on etcd 3.4's etcdctl, which has no `--count-only`).
pub fn count_keys(client_url: &str, prefix: &str) -> i64 {
    let text = etcdctl(client_url, &["get", prefix, "--prefix", "--keys-only", "--limit", "1", "-w", "fields"]);
    text.lines()
        .find_map(|line| line.strip_prefix("\"Count\" : "))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {text}"))
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
