//! Chaos on real processes: one `lifeboat agent` per member (child mode, so each
//! agent runs its own etcd), the real S3 server, and a client logging every
//! acknowledged write. Scenario names refer to `lifeboat-scenarios`.

use crate::support::*;
use lifeboat_runtime::testkit::{self, free_port, http_get, wait_until, S3Server};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Node {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    state_dir: PathBuf,
    agent: Option<Child>,
}

/// N agents, each supervising its own etcd, sharing one S3 store.
struct AgentCluster {
    nodes: Vec<Node>,
    s3: S3Server,
    directory: tempfile::TempDir,
}

const CHECK_INTERVAL_MS: u64 = 300;

impl AgentCluster {
    fn start(size: usize) -> Option<AgentCluster> {
        if !testkit::require(&["etcd", "etcdctl", "etcdutl", "weed"]) {
            return None;
        }
        let s3 = S3Server::start();
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(s3.create_bucket(BUCKET));
        let directory = tempfile::Builder::new().prefix("lifeboat-chaos-").tempdir().unwrap();
        let nodes = (0..size)
            .map(|index| Node {
                name: format!("n{index}"),
                client_url: format!("http://127.0.0.1:{}", free_port(&[])),
                peer_url: format!("http://127.0.0.1:{}", free_port(&[])),
                data_dir: directory.path().join(format!("n{index}.data")),
                state_dir: directory.path().join(format!("n{index}.state")),
                agent: None,
            })
            .collect();
        let mut cluster = AgentCluster { nodes, s3, directory };
        for index in 0..size {
            cluster.start_agent(index);
        }
        cluster.wait_all_healthy(Duration::from_secs(60));
        Some(cluster)
    }

    fn endpoints(&self) -> String {
        self.nodes.iter().map(|node| node.client_url.clone()).collect::<Vec<_>>().join(",")
    }

    fn initial_cluster(&self) -> String {
        self.nodes.iter().map(|node| format!("{}={}", node.name, node.peer_url)).collect::<Vec<_>>().join(",")
    }

    fn start_agent(&mut self, index: usize) {
        let (endpoints, initial_cluster) = (self.endpoints(), self.initial_cluster());
        let node = &self.nodes[index];
        std::fs::create_dir_all(&node.state_dir).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.state_dir.join("agent.log")).unwrap();
        let mut command = lifeboat_command();
        command
            .env("LIFEBOAT_LOG", "info")
            .envs(self.s3.env())
            .args(["agent", "--member-control", "child", "--name", &node.name])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--state-dir")
            .arg(&node.state_dir)
            .args(["--client-url", &node.client_url, "--peer-url", &node.peer_url])
            .args(["--initial-cluster", &initial_cluster, "--endpoints", &endpoints])
            .args([
                "--initial-cluster-token",
                "chaos",
                "--store",
                &format!("s3://{BUCKET}/chaos"),
                "--cluster",
                "chaos",
            ])
            .args(["--check-interval-ms", &CHECK_INTERVAL_MS.to_string(), "--failures-max", "3"])
            .args(["--snapshot-interval-ms", "2000", "--timeout-ms", "1000"])
            .arg("--etcd")
            .arg(testkit::binary("etcd"))
            .arg("--etcdutl")
            .arg(testkit::binary("etcdutl"))
            .args([
                "--etcd-arg=--heartbeat-interval=50",
                "--etcd-arg=--election-timeout=500",
                "--etcd-arg=--log-level=warn",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.nodes[index].agent = Some(command.spawn().unwrap());
    }

    fn healthy(&self, index: usize) -> bool {
        let address = self.nodes[index].client_url.trim_start_matches("http://").to_owned();
        http_get(&address, "/health").is_some_and(|(status, body)| status == 200 && body.contains("\"true\""))
    }

    fn wait_all_healthy(&self, timeout: Duration) {
        let healthy = wait_until(timeout, || (0..self.nodes.len()).all(|index| self.healthy(index)));
        assert!(healthy, "cluster not healthy after {timeout:?}:\n{}", self.logs());
    }

    /// Voting members, learners, as the cluster reports them.
    fn membership(&self) -> Option<(usize, usize)> {
        let healthy = (0..self.nodes.len()).find(|index| self.healthy(*index))?;
        let output = Command::new(testkit::binary("etcdctl"))
            .args(["--endpoints", &self.nodes[healthy].client_url, "member", "list", "-w", "json"])
            .output()
            .ok()?;
        let list: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        let members = list["members"].as_array()?;
        let learners = members.iter().filter(|member| member["isLearner"] == true).count();
        Some((members.len() - learners, learners))
    }

    /// kill -9 the etcd of `index` (the agent stays up and will notice).
    fn kill_etcd(&self, index: usize) {
        let needle = self.nodes[index].data_dir.to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) && cmdline.contains("--data-dir") && !cmdline.contains(" agent ") {
                // SAFETY: a signal to a process this test started (through its agent).
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }

    /// The disk is gone: move it out from under the running etcd, then kill it.
    fn wipe(&self, index: usize) {
        let node = &self.nodes[index];
        std::fs::rename(&node.data_dir, node.data_dir.with_extension("lost")).unwrap();
        self.kill_etcd(index);
    }

    fn journal(&self, index: usize) -> String {
        std::fs::read_to_string(self.nodes[index].state_dir.join("journal.jsonl")).unwrap_or_default()
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| {
                let log = std::fs::read_to_string(node.state_dir.join("agent.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!("--- {} ---\n{}\n", node.name, tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect()
    }
}

impl Drop for AgentCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut agent) = node.agent.take() {
                testkit::terminate(&mut agent, Duration::from_secs(10));
            }
        }
        let _ = &self.directory;
    }
}

/// Writes keys continuously, logging each acknowledged write with its revision.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, i64)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(endpoints: Vec<String>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (thread_stop, thread_acked) = (Arc::clone(&stop), Arc::clone(&acked));
        let thread = std::thread::spawn(move || {
            let mut sequence = 0u64;
            while !thread_stop.load(Ordering::Relaxed) {
                let key = format!("w/{sequence:08}");
                for endpoint in &endpoints {
                    if let Some(revision) = put(endpoint, &key, &format!("v{sequence}")) {
                        thread_acked.lock().unwrap().push((key.clone(), revision));
                        break;
                    }
                }
                sequence += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Writer { stop, acked, thread: Some(thread) }
    }

    fn stop(mut self) -> Vec<(String, i64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// One put through etcd's JSON gateway; the revision when acknowledged.
fn put(endpoint: &str, key: &str, value: &str) -> Option<i64> {
    use std::io::{Read, Write};
    let address = endpoint.trim_start_matches("http://");
    let body = format!(
        "{{\"key\":\"{}\",\"value\":\"{}\"}}",
        aws_smithy_types::base64::encode(key),
        aws_smithy_types::base64::encode(value)
    );
    let mut stream = std::net::TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_millis(300)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "POST /v3/kv/put HTTP/1.0\r\nHost: {address}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.0 200") && !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(response.split_once("\r\n\r\n")?.1).ok()?;
    json["header"]["revision"].as_str()?.parse().ok()
}

/// Every acknowledged key, read back from `endpoint`.
fn missing_writes(endpoint: &str, acked: &[(String, i64)]) -> Vec<String> {
    let output = Command::new(testkit::binary("etcdctl"))
        .args(["--endpoints", endpoint, "get", "w/", "--prefix", "--keys-only"])
        .output()
        .unwrap();
    let present: std::collections::BTreeSet<String> =
        String::from_utf8_lossy(&output.stdout).lines().filter(|line| !line.is_empty()).map(str::to_owned).collect();
    acked.iter().filter(|(key, _)| !present.contains(key)).map(|(key, _)| key.clone()).collect()
}

/// Scenario `member-disk-wiped`: one of three loses its disk; its agent replaces it
/// (remove, re-add as learner, promote); no acknowledged write is lost.
#[test]
fn one_of_three_wiped_is_replaced_without_loss() {
    let Some(cluster) = AgentCluster::start(3) else { return };
    let writer = Writer::start(cluster.nodes.iter().map(|node| node.client_url.clone()).collect());
    std::thread::sleep(Duration::from_millis(500));
    let fault_at = Instant::now();
    cluster.wipe(2);
    let recovered = wait_until(Duration::from_secs(90), || {
        cluster.journal(2).contains("\"replaced\"")
            && (0..3).all(|index| cluster.healthy(index))
            && cluster.membership() == Some((3, 0))
    });
    let rto = fault_at.elapsed();
    let acked = writer.stop();
    assert!(recovered, "member not replaced within 90 s:\n{}\n{}", cluster.logs(), cluster.journal(2));
    eprintln!("RTO member-disk-wiped (N=3): {:.1} s, {} writes acknowledged", rto.as_secs_f64(), acked.len());
    assert!(acked.len() > 50, "the writer kept writing");
    for node in &cluster.nodes {
        let missing = missing_writes(&node.client_url, &acked);
        assert!(
            missing.is_empty(),
            "{} lacks {} acknowledged writes, e.g. {:?}",
            node.name,
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    let journal = cluster.journal(2);
    assert!(journal.contains("\"reconfigure\""), "the supervising agent decided through reconfigure");
    assert!(
        !cluster.journal(0).contains("\"replaced\"") && !cluster.journal(1).contains("\"replaced\""),
        "only the wiped member changed"
    );
}
