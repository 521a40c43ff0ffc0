//! A real etcd cluster of N members on loopback.

use super::{binary, free_port, http_get, terminate, wait_until};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct EtcdMember {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    /// Plain-HTTP `/health` and `/metrics` (`--listen-metrics-urls`), reachable
    /// however the client URL is secured.
    pub metrics_url: String,
    child: Option<Child>,
}

impl EtcdMember {
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// `/health` answers `"health":"true"` only while the member is in a cluster with quorum.
    pub fn is_healthy(&self) -> bool {
        http_get(self.metrics_url.trim_start_matches("http://"), "/health")
            .is_some_and(|(status, body)| status == 200 && body.contains("\"true\""))
    }
}

pub struct LocalEtcdCluster {
    pub members: Vec<EtcdMember>,
    pub token: String,
    /// Certificates when the cluster serves TLS (clients and peers, certificates required).
    pub pki: Option<super::KubeadmPki>,
    directory: tempfile::TempDir,
}

impl LocalEtcdCluster {
    /// Starts `size` members and waits (at most 30 s) until all are healthy.
    pub fn start(size: usize) -> LocalEtcdCluster {
        Self::start_with(size, false)
    }

    /// Starts `size` members serving clients and peers over mutual TLS, with a fresh
    /// kubeadm-style PKI in `<temp dir>/pki` (see [`super::KubeadmPki`]).
    pub fn start_tls(size: usize) -> LocalEtcdCluster {
        Self::start_with(size, true)
    }

    fn start_with(size: usize, tls: bool) -> LocalEtcdCluster {
        let directory = tempfile::Builder::new().prefix("lifeboat-etcd-").tempdir().expect("create a temp dir");
        let token = format!("lifeboat-test-{}", std::process::id());
        let scheme = if tls { "https" } else { "http" };
        let pki = tls.then(|| super::KubeadmPki::generate(&directory.path().join("pki")));
        let members: Vec<EtcdMember> = (0..size)
            .map(|index| EtcdMember {
                name: format!("etcd{index}"),
                client_url: format!("{scheme}://127.0.0.1:{}", free_port(&[])),
                peer_url: format!("{scheme}://127.0.0.1:{}", free_port(&[])),
                data_dir: directory.path().join(format!("etcd{index}.data")),
                metrics_url: format!("http://127.0.0.1:{}", free_port(&[])),
                child: None,
            })
            .collect();
        let mut cluster = LocalEtcdCluster { members, token, pki, directory };
        let initial_cluster = cluster.initial_cluster();
        for index in 0..size {
            let token = cluster.token.clone();
            cluster.spawn(index, &initial_cluster, "new", &token);
        }
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// `etcd0=http://…,etcd1=http://…`, as `--initial-cluster` takes it.
    pub fn initial_cluster(&self) -> String {
        self.members.iter().map(|member| format!("{}={}", member.name, member.peer_url)).collect::<Vec<_>>().join(",")
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|member| member.client_url.clone()).collect()
    }

    pub fn endpoints_joined(&self) -> String {
        self.endpoints().join(",")
    }

    /// Starts member `index` on its data dir; `state` is `new` or `existing`.
    pub fn spawn(&mut self, index: usize, initial_cluster: &str, state: &str, token: &str) {
        let member = &self.members[index];
        let log = std::fs::File::create(self.directory.path().join(format!("{}.log", member.name)))
            .expect("create a log file");
        let child = Command::new(binary("etcd"))
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .arg("--listen-client-urls")
            .arg(&member.client_url)
            .arg("--advertise-client-urls")
            .arg(&member.client_url)
            .arg("--listen-peer-urls")
            .arg(&member.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&member.peer_url)
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg(token)
            .arg("--listen-metrics-urls")
            .arg(&member.metrics_url)
            .args(self.pki.as_ref().map(super::KubeadmPki::etcd_flags).unwrap_or_default())
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--quota-backend-bytes", "8589934592"])
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone a log handle"))
            .stderr(log)
            .spawn()
            .expect("start etcd (run scripts/install-deps)");
        self.members[index].child = Some(child);
    }

    /// Waits until every running member reports healthy; panics with the logs' tail otherwise.
    pub fn wait_healthy(&self, timeout: Duration) {
        let healthy = wait_until(timeout, || self.members.iter().all(EtcdMember::is_healthy));
        if !healthy {
            panic!("etcd cluster not healthy after {timeout:?}: {}", self.log_tail());
        }
    }

    pub fn log_tail(&self) -> String {
        self.members
            .iter()
            .map(|member| {
                let log = std::fs::read_to_string(self.directory.path().join(format!("{}.log", member.name)))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                format!("\n--- {} ---\n{}", member.name, tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect()
    }

    /// SIGTERM and wait (a leader can take over a second to step down).
    pub fn stop(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Writes `count` keys `prefix{i:06}` with values of `value_bytes`, in
    /// transactions of ~100 puts through etcd's JSON gateway (fast, no client needed).
    pub fn put_many(&self, prefix: &str, count: usize, value_bytes: usize) {
        if self.pki.is_some() {
            for index in 0..count {
                let mut value = format!("value-{index}-");
                value.extend(std::iter::repeat_n('x', value_bytes.saturating_sub(value.len())));
                self.etcdctl(&["put", &format!("{prefix}{index:06}"), &value]);
            }
            return;
        }
        put_many(&self.members[0].client_url, prefix, count, value_bytes);
    }

    /// Runs etcdctl against every member (with the client certificate on a TLS
    /// cluster); panics with its stderr when it fails, returns its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let output = Command::new(binary("etcdctl"))
            .arg(format!("--endpoints={}", self.endpoints_joined()))
            .args(self.pki.as_ref().map(super::KubeadmPki::etcdctl_flags).unwrap_or_default())
            .args(args)
            .output()
            .expect("run etcdctl (run scripts/install-deps)");
        assert!(output.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for LocalEtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    aws_smithy_types::base64::encode(bytes)
}

/// Puts keys through `POST /v3/kv/txn`, ~100 per request (under etcd's 1.5 MiB limit).
pub fn put_many(client_url: &str, prefix: &str, count: usize, value_bytes: usize) {
    use std::io::{Read, Write};
    let address = client_url.trim_start_matches("http://");
    let per_request = (1_000_000 / value_bytes.max(1)).clamp(1, 100);
    let mut index = 0;
    while index < count {
        let end = (index + per_request).min(count);
        let puts: Vec<String> = (index..end)
            .map(|key_index| {
                let key = format!("{prefix}{key_index:06}");
                let mut value = format!("value-{key_index}-").into_bytes();
                value.resize(value_bytes, b'x');
                format!(
                    "{{\"requestPut\":{{\"key\":\"{}\",\"value\":\"{}\"}}}}",
                    base64(key.as_bytes()),
                    base64(&value)
                )
            })
            .collect();
        let body = format!("{{\"success\":[{}]}}", puts.join(","));
        let mut stream = std::net::TcpStream::connect(address).expect("connect to etcd's gateway");
        write!(
            stream,
            "POST /v3/kv/txn HTTP/1.0\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send a txn");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read the txn answer");
        assert!(response.contains("\"succeeded\":true"), "txn failed: {}", &response[..response.len().min(300)]);
        index = end;
    }
}
