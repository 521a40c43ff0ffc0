//! Chaos on real processes: one `lifeboat agent` per member, the real S3 server,
//! and a client logging every acknowledged write. Each agent runs its etcd as a
//! child, or (the production default) etcd is a unit of a systemd stand-in
//! (`systemctl-standin.sh`: `Restart=`, ExecStartPre `lifeboat reconfigure`) that
//! the agent drives through `systemctl`. Scenario names refer to `lifeboat-scenarios`.

use crate::support::*;
use lifeboat_runtime::store::sealed::{self, SealKey};
use lifeboat_testkit::{self as testkit, free_port, http_get, wait_until, S3Server};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Node {
    /// Network namespace the node runs in, when a test isolates it.
    netns: Option<String>,
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    state_dir: PathBuf,
    /// The agent's `--metrics-listen` address (`/metrics`, `/healthz`, `/readyz`).
    metrics: String,
    /// etcd's plain-HTTP `--listen-metrics-urls` address (`/health`), for TLS clusters.
    etcd_metrics: String,
    agent: Option<Child>,
}

/// How each member's etcd runs beside its agent (`--member-control`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    Child,
    Systemd,
}

/// N agents sharing one S3 store, each with its own etcd.
struct AgentCluster {
    nodes: Vec<Node>,
    s3: S3Server,
    directory: tempfile::TempDir,
    control: Control,
    /// The systemd stand-in's `Restart=` loop (systemd mode).
    supervisor: Option<Child>,
    /// Clients and peers speak mutual TLS with these kubeadm-style certificates.
    pki: Option<testkit::KubeadmPki>,
    /// The agents' `--snapshot-interval-ms` (applies to agents started afterwards).
    snapshot_interval_ms: u64,
    /// The agents' `--trial-interval-ms`, when set (agents started afterwards).
    trial_interval_ms: Option<u64>,
    /// etcd's root user, once auth is enabled: its password, and the file the agents read it from.
    auth: Option<(String, PathBuf)>,
    /// Client-side encryption (agents started afterwards): the key, and its file.
    encryption: Option<(std::sync::Arc<SealKey>, PathBuf)>,
    /// etcd flags a test adds to every member's (a small backend quota, say).
    extra_etcd_flags: Vec<String>,
}

/// The shipped drop-in's `RestartSec=`.
const RESTART_SEC: &str = "5";

const CHECK_INTERVAL_MS: u64 = 300;
/// The agents' `--failure-grace-ms`: K = 3 checks span 600 ms, the grace a little more.
const FAILURE_GRACE_MS: u64 = 1_000;
/// etcd's `--auth-token-ttl` once auth is on (etcd's default is 300).
const AUTH_TOKEN_TTL_SECONDS: u64 = 2;
/// etcd's flags besides the launch settings lifeboat chooses.
const ETCD_FLAGS: &[&str] = &["--heartbeat-interval=50", "--election-timeout=500", "--log-level=warn"];

impl AgentCluster {
    fn start(size: usize) -> Option<AgentCluster> {
        AgentCluster::start_with(size, None, Control::Child)
    }

    /// With `isolation`, node 0 runs in its own network namespace and everything
    /// else listens on the host side of the veth pair, so node 0 can be cut off.
    fn start_with(size: usize, isolation: Option<&Isolation>, control: Control) -> Option<AgentCluster> {
        AgentCluster::start_full(size, isolation, control, false)
    }

    /// With `tls`, every member serves clients and peers over mutual TLS (as kubeadm's
    /// etcd does) and the agents connect with the healthcheck-client certificate.
    fn start_full(size: usize, isolation: Option<&Isolation>, control: Control, tls: bool) -> Option<AgentCluster> {
        AgentCluster::start_inner(size, isolation, control, tls, &[])
    }

    /// Child mode, with `etcd_flags` added to every member's etcd.
    fn start_with_etcd_flags(size: usize, etcd_flags: &[&str]) -> Option<AgentCluster> {
        let flags: Vec<String> = etcd_flags.iter().map(|flag| (*flag).to_owned()).collect();
        AgentCluster::start_inner(size, None, Control::Child, false, &flags)
    }

    fn start_inner(
        size: usize,
        isolation: Option<&Isolation>,
        control: Control,
        tls: bool,
        extra_etcd_flags: &[String],
    ) -> Option<AgentCluster> {
        if !testkit::require(&["etcd", "etcdctl", "etcdutl", "weed"]) {
            return None;
        }
        let host = isolation.map(|isolation| isolation.host_ip.clone()).unwrap_or_else(|| "127.0.0.1".into());
        let s3 = S3Server::start_on(&host);
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(s3.create_bucket(BUCKET));
        let directory = tempfile::Builder::new().prefix("lifeboat-chaos-").tempdir().unwrap();
        let pki = tls.then(|| testkit::KubeadmPki::generate(&directory.path().join("pki")));
        let scheme = if tls { "https" } else { "http" };
        let nodes = (0..size)
            .map(|index| {
                let (ip, netns) = match isolation {
                    Some(isolation) if index == 0 => (isolation.ns_ip.clone(), Some(isolation.netns.clone())),
                    _ => (host.clone(), None),
                };
                (index, ip, netns)
            })
            .map(|(index, ip, netns)| Node {
                netns,
                name: format!("n{index}"),
                client_url: format!("{scheme}://{ip}:{}", free_port(&[])),
                peer_url: format!("{scheme}://{ip}:{}", free_port(&[])),
                data_dir: directory.path().join(format!("n{index}.data")),
                state_dir: directory.path().join(format!("n{index}.state")),
                metrics: format!("{ip}:{}", free_port(&[])),
                etcd_metrics: format!("{ip}:{}", free_port(&[])),
                agent: None,
            })
            .collect();
        let mut cluster = AgentCluster {
            nodes,
            s3,
            directory,
            control,
            supervisor: None,
            pki,
            snapshot_interval_ms: 2000,
            trial_interval_ms: None,
            auth: None,
            encryption: None,
            extra_etcd_flags: extra_etcd_flags.to_vec(),
        };
        if control == Control::Systemd {
            cluster.boot_units();
        }
        for index in 0..size {
            cluster.start_agent(index);
        }
        cluster.wait_all_healthy(Duration::from_secs(60));
        // A member that starts late joins as it is: bootstrap never replaces anyone.
        for index in 0..size {
            assert!(
                !cluster.journal(index).contains("replace-started"),
                "n{index} replaced itself during bootstrap:\n{}",
                cluster.journal(index)
            );
        }
        Some(cluster)
    }

    fn endpoints(&self) -> String {
        self.nodes.iter().map(|node| node.client_url.clone()).collect::<Vec<_>>().join(",")
    }

    fn initial_cluster(&self) -> String {
        self.nodes.iter().map(|node| format!("{}={}", node.name, node.peer_url)).collect::<Vec<_>>().join(",")
    }

    fn units_dir(&self) -> PathBuf {
        self.directory.path().join("units")
    }

    fn unit(&self, index: usize) -> String {
        format!("etcd-{}.service", self.nodes[index].name)
    }

    fn environment_file(&self, index: usize) -> PathBuf {
        self.directory.path().join(format!("{}.etcd.env", self.nodes[index].name))
    }

    /// The flags every `lifeboat` of member `index` takes: the agent, and under
    /// systemd its `reconfigure` in ExecStartPre.
    fn member_args(&self, index: usize) -> Vec<String> {
        let node = &self.nodes[index];
        let mut args: Vec<String> = vec!["--name".into(), node.name.clone()];
        args.extend(["--data-dir".into(), node.data_dir.display().to_string()]);
        args.extend(["--state-dir".into(), node.state_dir.display().to_string()]);
        args.extend(["--client-url".into(), node.client_url.clone(), "--peer-url".into(), node.peer_url.clone()]);
        args.extend(["--initial-cluster".into(), self.initial_cluster(), "--endpoints".into(), self.endpoints()]);
        args.extend(["--initial-cluster-token".into(), "chaos".into()]);
        args.extend(["--store".into(), format!("s3://{BUCKET}/chaos"), "--cluster".into(), "chaos".into()]);
        args.extend(["--timeout-ms".into(), "1000".into()]);
        args.extend(["--etcdutl".into(), testkit::binary("etcdutl").display().to_string()]);
        // The same flags etcdctl takes: the CA, and the client certificate; with auth,
        // the user, its password from a file.
        args.extend(self.pki.as_ref().map(testkit::KubeadmPki::etcdctl_flags).unwrap_or_default());
        if let Some((_, file)) = &self.auth {
            args.extend(["--user".into(), "root".into(), "--password-file".into(), file.display().to_string()]);
        }
        if let Some((_, file)) = &self.encryption {
            args.extend(["--encryption-key-file".into(), file.display().to_string()]);
        }
        // The member in child mode; in both modes the scratch member a recovery replays the log into.
        args.extend(["--etcd".into(), testkit::binary("etcd").display().to_string()]);
        match self.control {
            Control::Child => {
                args.extend(["--member-control".into(), "child".into()]);
                args.extend(self.etcd_flags(index).iter().map(|flag| format!("--etcd-arg={flag}")));
            }
            Control::Systemd => {
                args.extend(["--member-control".into(), "systemd".into(), "--unit".into(), self.unit(index)]);
                args.extend(["--environment-file".into(), self.environment_file(index).display().to_string()]);
            }
        }
        args
    }

    /// The systemd stand-in: `systemctl` on the agents' PATH, one unit per member
    /// (ExecStartPre `lifeboat reconfigure`, ExecStart etcd reading the environment
    /// file), each started as at boot, and the `Restart=` loop.
    fn boot_units(&mut self) {
        let bin = self.directory.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let standin = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/real/systemctl-standin.sh");
        std::fs::copy(standin, bin.join("systemctl")).unwrap();
        let quote = |text: &str| format!("'{}'", text.replace('\'', r"'\''"));
        for index in 0..self.nodes.len() {
            let dir = self.units_dir().join(self.unit(index));
            std::fs::create_dir_all(&dir).unwrap();
            let mut environment: Vec<String> =
                self.s3.env().into_iter().map(|(key, value)| format!("{key}={}", quote(&value))).collect();
            environment.push("LIFEBOAT_LOG=info".into());
            let reconfigure: Vec<String> = self.member_args(index).iter().map(|arg| quote(arg)).collect();
            let pre = format!(
                "#!/bin/sh\nexec env {} {} reconfigure {}\n",
                environment.join(" "),
                quote(env!("CARGO_BIN_EXE_lifeboat")),
                reconfigure.join(" ")
            );
            let flags: Vec<String> = self.etcd_flags(index).iter().map(|flag| quote(flag)).collect();
            let main = format!(
                "#!/bin/sh\nset -a\n. {}\nset +a\nexec {} {}\n",
                quote(&self.environment_file(index).display().to_string()),
                quote(&testkit::binary("etcd").display().to_string()),
                flags.join(" ")
            );
            for (name, body) in [("pre", pre), ("main", main)] {
                std::fs::write(dir.join(name), body).unwrap();
                std::fs::set_permissions(dir.join(name), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            }
        }
        for index in 0..self.nodes.len() {
            let started = self.systemctl(&["start", &self.unit(index)]);
            assert!(started, "{} did not start at boot:\n{}", self.unit(index), self.unit_log(index));
        }
        let supervisor = Command::new("bash")
            .arg(bin.join("systemctl"))
            .args(["supervise", RESTART_SEC])
            .env("LIFEBOAT_TEST_SYSTEMD", self.units_dir())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.supervisor = Some(supervisor);
    }

    /// `systemctl ARGS` through the stand-in; true on success.
    fn systemctl(&self, args: &[&str]) -> bool {
        // Run by bash, not exec'd: the stand-in was copied in moments ago, and a process
        // another test forks meanwhile holds the copy open for writing until it execs,
        // so exec'ing it can fail with "Text file busy" (CI, the 3.4.23 matrix run:
        // `systemctl start` failed at boot with nothing in the unit's log).
        match Command::new("bash")
            .arg(self.directory.path().join("bin").join("systemctl"))
            .args(args)
            .env("LIFEBOAT_TEST_SYSTEMD", self.units_dir())
            .status()
        {
            Ok(status) => status.success(),
            Err(error) => {
                eprintln!("systemctl {}: {error}", args.join(" "));
                false
            }
        }
    }

    /// What ExecStartPre (`reconfigure`) and etcd printed under the stand-in.
    fn unit_log(&self, index: usize) -> String {
        std::fs::read_to_string(self.units_dir().join(self.unit(index)).join("log")).unwrap_or_default()
    }

    fn start_agent(&mut self, index: usize) {
        let args = self.member_args(index);
        let node = &self.nodes[index];
        std::fs::create_dir_all(&node.state_dir).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.state_dir.join("agent.log")).unwrap();
        let mut command = lifeboat_command_in(node.netns.as_deref());
        command
            .env("LIFEBOAT_LOG", "info")
            .envs(self.s3.env())
            .arg("agent")
            .args(&args)
            .args(["--check-interval-ms", &CHECK_INTERVAL_MS.to_string(), "--failures-max", "3"])
            // Scaled down with the checks (production: 15 s against 10 s checks), so each
            // test still takes the path it names rather than the unit's Restart= loop.
            .args(["--failure-grace-ms", &FAILURE_GRACE_MS.to_string()])
            .args(["--metrics-listen", &node.metrics])
            .args(["--snapshot-interval-ms", &self.snapshot_interval_ms.to_string()])
            .args(
                self.trial_interval_ms
                    .map(|ms| vec!["--trial-interval-ms".to_owned(), ms.to_string()])
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if self.control == Control::Systemd {
            let path = format!(
                "{}:{}",
                self.directory.path().join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            );
            command.env("PATH", path).env("LIFEBOAT_TEST_SYSTEMD", self.units_dir());
        }
        self.nodes[index].agent = Some(command.spawn().unwrap());
    }

    /// etcd's flags besides the launch settings lifeboat chooses: timing, and with
    /// TLS kubeadm's certificate flags plus a plain-HTTP `/health` for the test.
    fn etcd_flags(&self, index: usize) -> Vec<String> {
        let mut flags: Vec<String> = ETCD_FLAGS.iter().map(|flag| (*flag).to_owned()).collect();
        flags.extend(self.extra_etcd_flags.iter().cloned());
        if let Some(pki) = &self.pki {
            flags.extend(pki.etcd_flags());
            flags.push(format!("--listen-metrics-urls=http://{}", self.nodes[index].etcd_metrics));
        }
        if self.auth.is_some() {
            // Tokens a long-running agent must renew many times over a test.
            flags.push(format!("--auth-token-ttl={AUTH_TOKEN_TTL_SECONDS}"));
        }
        flags
    }

    /// `--cacert`, `--cert`, `--key` for etcdctl, with TLS; and `--user`, with auth.
    fn etcdctl_flags(&self) -> Vec<String> {
        let mut flags = self.pki.as_ref().map(testkit::KubeadmPki::etcdctl_flags).unwrap_or_default();
        if let Some((password, _)) = &self.auth {
            flags.push(format!("--user=root:{password}"));
        }
        flags
    }

    fn healthy(&self, index: usize) -> bool {
        let address = match self.pki {
            Some(_) => self.nodes[index].etcd_metrics.clone(),
            None => self.nodes[index].client_url.trim_start_matches("http://").to_owned(),
        };
        http_get(&address, "/health").is_some_and(|(status, body)| status == 200 && body.contains("\"true\""))
    }

    /// The gRPC calls of `method` the members have answered (any outcome), from
    /// etcd's own metrics (served over plain HTTP with TLS); `None` if one is silent.
    fn grpc_calls(&self, method: &str) -> Option<u64> {
        let label = format!("grpc_method=\"{method}\"");
        let mut calls = 0;
        for node in &self.nodes {
            let (_, body) = http_get(&node.etcd_metrics, "/metrics")?;
            calls += body
                .lines()
                .filter(|line| line.starts_with("grpc_server_handled_total{") && line.contains(&label))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64;
        }
        Some(calls)
    }

    /// Member `index` answers a client with the CA and a client certificate, and
    /// refuses one with the CA alone.
    fn serves_mutual_tls(&self, index: usize) -> bool {
        let Some(pki) = &self.pki else { return false };
        let health = |flags: &[String]| {
            Command::new(testkit::binary("etcdctl"))
                .args(flags)
                .args(["--endpoints", &self.nodes[index].client_url, "--command-timeout=3s", "endpoint", "health"])
                .output()
                .is_ok_and(|output| output.status.success())
        };
        let ca_only = vec![format!("--cacert={}", pki.path("ca.crt").display())];
        health(&self.etcdctl_flags()) && !health(&ca_only)
    }

    /// A client writing through every member, over TLS when the cluster speaks it.
    fn writer(&self) -> Writer {
        Writer::start(self.nodes.iter().map(|node| node.client_url.clone()).collect(), self.etcdctl_flags())
    }

    /// The acknowledged keys that member `index` does not hold.
    fn missing_writes(&self, index: usize, acked: &[Acked]) -> Vec<String> {
        missing_writes_over(&self.nodes[index].client_url, acked, &self.etcdctl_flags())
    }

    fn wait_all_healthy(&self, timeout: Duration) {
        let healthy = wait_until(timeout, || (0..self.nodes.len()).all(|index| self.healthy(index)));
        assert!(healthy, "cluster not healthy after {timeout:?}:\n{}", self.logs());
    }

    /// Voting members, learners, as the cluster reports them.
    fn membership(&self) -> Option<(usize, usize)> {
        let healthy = (0..self.nodes.len()).find(|index| self.healthy(*index))?;
        let output = Command::new(testkit::binary("etcdctl"))
            .args(self.etcdctl_flags())
            .args(["--endpoints", &self.nodes[healthy].client_url, "member", "list", "-w", "json"])
            .output()
            .ok()?;
        let list: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        let members = list["members"].as_array()?;
        let learners = members.iter().filter(|member| member["isLearner"] == true).count();
        Some((members.len() - learners, learners))
    }

    /// kill -9 the etcd of `index` (the agent stays up and will notice; under
    /// systemd, `Restart=` brings it back through `reconfigure` after RestartSec).
    fn kill_etcd(&self, index: usize) {
        if self.control == Control::Systemd {
            let pid_file = self.units_dir().join(self.unit(index)).join("pid");
            if let Some(pid) = std::fs::read_to_string(pid_file).ok().and_then(|pid| pid.trim().parse::<i32>().ok()) {
                // SAFETY: a signal to a process this test started (through the stand-in).
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            return;
        }
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

    /// The agent's machine dies: SIGKILL, nothing flushed on the way out.
    fn kill_agent(&mut self, index: usize) {
        if let Some(mut agent) = self.nodes[index].agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }

    /// Stops an agent (SIGTERM: it stops its etcd on the way out).
    fn stop_agent(&mut self, index: usize) {
        if let Some(mut agent) = self.nodes[index].agent.take() {
            testkit::terminate(&mut agent, Duration::from_secs(20));
        }
    }

    /// Restarts every agent, one at a time, so settings changed since (snapshot and
    /// trial intervals) apply; then waits for every member to be healthy again.
    fn restart_agents(&mut self) {
        for index in 0..self.nodes.len() {
            self.stop_agent(index);
            self.start_agent(index);
        }
        self.wait_all_healthy(Duration::from_secs(60));
    }

    /// Waits until one agent writes the revision log.
    fn wait_log_writer(&self) {
        let writing = wait_until(Duration::from_secs(60), || {
            (0..self.nodes.len()).any(|index| self.agent_log(index).contains("writing the revision log"))
        });
        assert!(writing, "no agent writes the revision log:\n{}", self.logs());
    }

    /// Every machine dies: agents first (SIGKILL, nothing flushed), then etcd and its disk.
    fn lose_every_machine(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill_agent(index);
        }
        for index in 0..self.nodes.len() {
            self.wipe(index);
        }
    }

    /// New machines in their place: empty disks, no memory of an epoch, agents started.
    fn start_empty_machines(&mut self) {
        for node in &self.nodes {
            let _ = std::fs::remove_file(node.state_dir.join("epoch"));
        }
        for index in 0..self.nodes.len() {
            self.start_agent(index);
        }
    }

    /// The newest revision any agent's revision-log writer flushed (its `/metrics`).
    fn log_revision(&self) -> i64 {
        (0..self.nodes.len())
            .filter_map(|index| self.metric(index, "lifeboat_log_last_revision"))
            .fold(0, |newest, revision| newest.max(revision as i64))
    }

    /// `lifeboat snapshots list --output json` over the cluster's store.
    fn snapshot_listing(&self) -> serde_json::Value {
        let store = format!("s3://{BUCKET}/chaos");
        let listing = lifeboat_command()
            .envs(self.s3.env())
            .args(["snapshots", "list", "--output", "json", "--store", &store, "--cluster", "chaos"])
            .output()
            .unwrap();
        serde_json::from_slice(&listing.stdout).expect("snapshots list prints JSON")
    }

    /// Recovery epochs committed in the store (claims a quorum joined), oldest first.
    fn epochs(&self) -> Vec<serde_json::Value> {
        self.claims()
            .into_iter()
            .filter(|(_, outcome)| outcome.as_deref() == Some("committed"))
            .map(|(claim, _)| claim)
            .collect()
    }

    /// Every object in the cluster's part of the store, with its first bytes.
    fn stored_objects(&self) -> Vec<(String, Vec<u8>)> {
        let client = self.s3.client();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut objects = Vec::new();
            let mut token = None;
            loop {
                let listing = client
                    .list_objects_v2()
                    .bucket(BUCKET)
                    .prefix("chaos/")
                    .set_continuation_token(token)
                    .send()
                    .await
                    .unwrap();
                for key in listing.contents.unwrap_or_default().into_iter().filter_map(|object| object.key) {
                    let body = client.get_object().bucket(BUCKET).key(&key).range("bytes=0-15").send().await.unwrap();
                    objects.push((key, body.body.collect().await.unwrap().into_bytes().to_vec()));
                }
                token = listing.next_continuation_token;
                if token.is_none() {
                    return objects;
                }
            }
        })
    }

    /// Every recovery claim in the store with its outcome, if decided, oldest first.
    fn claims(&self) -> Vec<(serde_json::Value, Option<String>)> {
        let client = self.s3.client();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let prefix = "chaos/chaos/coordination/epochs/";
            let listing = client.list_objects_v2().bucket(BUCKET).prefix(prefix).send().await.unwrap();
            let keys: Vec<String> =
                listing.contents.unwrap_or_default().into_iter().filter_map(|object| object.key).collect();
            let get = |key: String| {
                let client = client.clone();
                async move {
                    let body = client.get_object().bucket(BUCKET).key(&key).send().await.unwrap();
                    let bytes = body.body.collect().await.unwrap().into_bytes().to_vec();
                    let plain = match &self.encryption {
                        Some((seal, _)) => {
                            sealed::open_record(seal, &key, &bytes).expect("a record sealed with the key")
                        }
                        None => bytes,
                    };
                    serde_json::from_slice::<serde_json::Value>(&plain).unwrap()
                }
            };
            let mut claims = Vec::new();
            for key in &keys {
                let Some(stem) = key.strip_prefix(prefix).and_then(|name| name.strip_suffix(".json")) else { continue };
                if stem.len() != 10 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
                    continue;
                }
                let outcome_key = format!("{prefix}{stem}.outcome.json");
                let outcome = match keys.contains(&outcome_key) {
                    true => get(outcome_key).await["outcome"].as_str().map(str::to_owned),
                    false => None,
                };
                claims.push((get(key.clone()).await, outcome));
            }
            claims
        })
    }

    /// The number `field` of every `event` entry in any member's journal.
    fn journaled_numbers(&self, event: &str, field: &str) -> Vec<i64> {
        self.journal_entries(event).iter().filter_map(|entry| entry[field].as_i64()).collect()
    }

    /// Every `event` entry in any member's journal.
    fn journal_entries(&self, event: &str) -> Vec<serde_json::Value> {
        let marker = format!("\"event\":\"{event}\"");
        (0..self.nodes.len())
            .flat_map(|index| {
                self.journal(index)
                    .lines()
                    .filter(|line| line.contains(&marker))
                    .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A disaster recovery is done: an epoch committed, every member healthy and a voter.
    fn recovered(&self) -> bool {
        let size = self.nodes.len();
        !self.epochs().is_empty() && (0..size).all(|index| self.healthy(index)) && self.membership() == Some((size, 0))
    }

    /// The value of `metric` (a line `NAME VALUE`, no labels) on member `index`'s `/metrics`.
    fn metric(&self, index: usize, metric: &str) -> Option<f64> {
        let (_, body) = http_get(&self.nodes[index].metrics, "/metrics")?;
        let prefix = format!("{metric} ");
        body.lines().find_map(|line| line.strip_prefix(prefix.as_str())?.trim().parse().ok())
    }

    fn agent_log(&self, index: usize) -> String {
        std::fs::read_to_string(self.nodes[index].state_dir.join("agent.log")).unwrap_or_default()
    }

    fn journal(&self, index: usize) -> String {
        std::fs::read_to_string(self.nodes[index].state_dir.join("journal.jsonl")).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let tail = |text: &str| {
            let lines: Vec<&str> = text.lines().rev().take(15).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        (0..self.nodes.len())
            .map(|index| {
                let node = &self.nodes[index];
                let log = std::fs::read_to_string(node.state_dir.join("agent.log")).unwrap_or_default();
                let unit = match self.control {
                    Control::Child => String::new(),
                    Control::Systemd => {
                        format!("--- {} (reconfigure, etcd) ---\n{}\n", self.unit(index), tail(&self.unit_log(index)))
                    }
                };
                format!("--- {} ---\n{}\n{unit}", node.name, tail(&log))
            })
            .collect()
    }
}

impl Drop for AgentCluster {
    fn drop(&mut self) {
        if let Some(mut supervisor) = self.supervisor.take() {
            let _ = supervisor.kill();
            let _ = supervisor.wait();
        }
        for node in &mut self.nodes {
            if let Some(mut agent) = node.agent.take() {
                testkit::terminate(&mut agent, Duration::from_secs(10));
            }
        }
        if self.control == Control::Systemd {
            for index in 0..self.nodes.len() {
                self.systemctl(&["stop", &self.unit(index)]);
            }
        }
        let _ = &self.directory;
    }
}

/// Writes keys continuously, logging each acknowledged write with its revision.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// One acknowledged write: key, revision, and when the acknowledgement arrived.
#[derive(Clone, Debug)]
struct Acked {
    key: String,
    revision: i64,
    at: Instant,
}

/// Puts `key` through the first endpoint that acknowledges it; its revision.
fn put_anywhere(endpoints: &[String], tls_flags: &[String], key: &str, value: &str) -> Option<i64> {
    endpoints.iter().find_map(|endpoint| match tls_flags.is_empty() {
        true => put(endpoint, key, value),
        false => put_over_tls(endpoint, key, value, tls_flags),
    })
}

impl Writer {
    /// One client writing as fast as its acknowledgements come back (about 150
    /// puts per second here). With `tls_flags` (etcdctl's), each put goes through
    /// etcdctl over TLS; else through etcd's JSON gateway.
    fn start(endpoints: Vec<String>, tls_flags: Vec<String>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (thread_stop, thread_acked) = (Arc::clone(&stop), Arc::clone(&acked));
        let thread = std::thread::spawn(move || {
            let mut sequence = 0u64;
            while !thread_stop.load(Ordering::Relaxed) {
                let key = format!("w/{sequence:08}");
                if let Some(revision) = put_anywhere(&endpoints, &tls_flags, &key, &format!("v{sequence}")) {
                    thread_acked.lock().unwrap().push(Acked { key, revision, at: Instant::now() });
                }
                sequence += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Writer { stop, acked, threads: vec![thread] }
    }

    /// A steady offered load of `rate` puts per second (JSON gateway), from enough
    /// clients that each has 20 ms per put: put k is due at start + k / rate, and a
    /// client behind its schedule writes at once, so the load stays at `rate` as long
    /// as the cluster keeps up (`acked_count` over the time tells whether it did).
    fn paced(endpoints: Vec<String>, rate: u32) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let clients = (rate / 50).clamp(1, 32) as u64;
        let started = Instant::now();
        let period = Duration::from_secs(1) / rate.max(1);
        let threads = (0..clients)
            .map(|client| {
                let (stop, acked, endpoints) = (Arc::clone(&stop), Arc::clone(&acked), endpoints.clone());
                std::thread::spawn(move || {
                    let mut sequence = client;
                    while !stop.load(Ordering::Relaxed) {
                        let due = started + period * u32::try_from(sequence).unwrap();
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let key = format!("w/{sequence:08}");
                        if let Some(revision) = put_anywhere(&endpoints, &[], &key, &format!("v{sequence}")) {
                            acked.lock().unwrap().push(Acked { key, revision, at: Instant::now() });
                        }
                        sequence += clients;
                    }
                })
            })
            .collect();
        Writer { stop, acked, threads }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn stop(mut self) -> Vec<Acked> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
        let mut acked = self.acked.lock().unwrap().clone();
        acked.sort_by_key(|write| write.revision);
        acked
    }
}

/// One put through etcd's JSON gateway; the revision when acknowledged.
fn put(endpoint: &str, key: &str, value: &str) -> Option<i64> {
    let body = serde_json::json!({
        "key": aws_smithy_types::base64::encode(key),
        "value": aws_smithy_types::base64::encode(value),
    });
    gateway(endpoint, "/v3/kv/put", &body, Duration::from_secs(2))
}

/// One request to etcd's JSON gateway; the revision of the answer when it is a 200.
fn gateway(endpoint: &str, path: &str, body: &serde_json::Value, timeout: Duration) -> Option<i64> {
    use std::io::{Read, Write};
    let address = endpoint.trim_start_matches("http://");
    let body = body.to_string();
    let mut stream = std::net::TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_millis(300)).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    write!(stream, "POST {path} HTTP/1.0\r\nHost: {address}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.0 200") && !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(response.split_once("\r\n\r\n")?.1).ok()?;
    json["header"]["revision"].as_str()?.parse().ok()
}

/// One put through etcdctl with TLS flags; the revision when acknowledged.
fn put_over_tls(endpoint: &str, key: &str, value: &str, flags: &[String]) -> Option<i64> {
    let output = Command::new(testkit::binary("etcdctl"))
        .args(flags)
        .args(["--endpoints", endpoint, "--command-timeout=2s", "put", key, value, "-w", "json"])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    json["header"]["revision"].as_i64()
}

/// The acknowledged keys that `endpoint` does not hold.
fn missing_writes(endpoint: &str, acked: &[Acked]) -> Vec<String> {
    missing_writes_over(endpoint, acked, &[])
}

/// The same, with etcdctl's TLS flags when the cluster speaks TLS.
fn missing_writes_over(endpoint: &str, acked: &[Acked], flags: &[String]) -> Vec<String> {
    let output = Command::new(testkit::binary("etcdctl"))
        .args(flags)
        .args(["--endpoints", endpoint, "get", "w/", "--prefix", "--keys-only"])
        .output()
        .unwrap();
    let present: std::collections::BTreeSet<String> =
        String::from_utf8_lossy(&output.stdout).lines().filter(|line| !line.is_empty()).map(str::to_owned).collect();
    acked.iter().filter(|write| !present.contains(&write.key)).map(|write| write.key.clone()).collect()
}

/// Scenario `member-disk-wiped`: one of three loses its disk; its agent replaces it
/// (remove, re-add as learner, promote); no acknowledged write is lost.
#[test]
fn one_of_three_wiped_is_replaced_without_loss() {
    one_of_three_wiped(Control::Child, false);
}

/// The same over mutual TLS: agents connect with kubeadm's healthcheck-client
/// certificate, and the replaced member comes back serving clients and peers with
/// TLS and client-certificate auth, as before.
#[test]
fn one_of_three_wiped_is_replaced_over_tls() {
    one_of_three_wiped(Control::Child, true);
}

/// The same under systemd: the agent's `systemctl start` runs `reconfigure` as
/// ExecStartPre, which must leave the start to the replacement in progress
/// (before, it tried to resume that replacement itself, met the agent's lock, and
/// etcd never started).
#[test]
fn one_of_three_wiped_is_replaced_under_systemd() {
    one_of_three_wiped(Control::Systemd, false);
}

/// RBAC on top of mutual TLS, as many production clusters run: etcd's root user with
/// a password, and auth tokens that expire every 2 s (`--auth-token-ttl`), so each
/// long-running agent must get new ones again and again. The agents (password from a
/// file) keep saving long past the first tokens' expiry, and a wiped member is
/// replaced under auth (learner, promotion) with no acknowledged write lost.
#[test]
fn with_rbac_users_agents_keep_saving_and_replace_a_wiped_member() {
    let Some(mut cluster) = AgentCluster::start_full(3, None, Control::Child, true) else { return };
    let password = "correct-horse-battery";
    let etcdctl = |flags: &[String], args: &[&str]| {
        let output = Command::new(testkit::binary("etcdctl"))
            .args(flags)
            .args(["--endpoints", &cluster.endpoints()])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    let tls = cluster.etcdctl_flags();
    etcdctl(&tls, &["user", "add", "root", &format!("--new-user-password={password}")]);
    etcdctl(&tls, &["auth", "enable"]);
    let file = cluster.directory.path().join("etcd-password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    cluster.auth = Some((password.to_owned(), file));
    let restarted = unix_millis();
    cluster.restart_agents();
    // Saves still succeed well after the first tokens expired.
    let later = restarted + 10 * AUTH_TOKEN_TTL_SECONDS * 1000;
    let saved_later = wait_until(Duration::from_secs(90), || {
        cluster.journal_entries("saved").iter().filter_map(entry_millis).any(|at| at > later)
    });
    assert!(saved_later, "no save ten token lifetimes after auth was on:\n{}", cluster.logs());
    for index in 0..3 {
        let log = cluster.agent_log(index);
        assert!(!log.contains(password), "n{index}'s log shows the password");
    }
    // Each new connection authenticates: etcd checks the password with bcrypt and
    // writes a token through raft. An agent asks every member for its status each
    // round, and its connections are kept, so etcd must see far fewer
    // authentications than status calls. (Connecting per request made more
    // authentications than status calls, and on a 2-core CI machine the members,
    // busy with bcrypt, missed checks until a healthy one was replaced.)
    let calls = || Some((cluster.grpc_calls("Status")?, cluster.grpc_calls("Authenticate")?));
    let (status_before, auth_before) = calls().expect("etcd's metrics answer");
    let measured =
        wait_until(Duration::from_secs(60), || calls().is_some_and(|(status, _)| status >= status_before + 300));
    let (status_after, auth_after) = calls().expect("etcd's metrics answer");
    assert!(measured, "the agents made {} status calls in 60 s", status_after - status_before);
    let (status_calls, authentications) = (status_after - status_before, auth_after - auth_before);
    eprintln!("under RBAC: {authentications} authentications for {status_calls} status calls");
    assert!(
        authentications * 10 < status_calls,
        "{authentications} authentications for {status_calls} status calls: the agents connect per request"
    );
    let before = cluster.log_revision();
    wiped_one_is_replaced(&cluster, Control::Child, true);
    // The revision log's watch, opened under auth, carried the writes through.
    let logged = wait_until(Duration::from_secs(30), || cluster.log_revision() > before + 50);
    assert!(logged, "the revision log did not move past {before} under auth:\n{}", cluster.logs());
}

fn one_of_three_wiped(control: Control, tls: bool) {
    let Some(cluster) = AgentCluster::start_full(3, None, control, tls) else { return };
    wiped_one_is_replaced(&cluster, control, tls);
}

/// Member 2 loses its disk under a steady write load; its agent replaces it.
fn wiped_one_is_replaced(cluster: &AgentCluster, control: Control, tls: bool) {
    let writer = cluster.writer();
    std::thread::sleep(Duration::from_millis(500));
    let fault_at = Instant::now();
    cluster.wipe(2);
    let recovered = wait_until(Duration::from_secs(90), || {
        cluster.journal(2).contains("\"replaced\"")
            && (0..3).all(|index| cluster.healthy(index))
            && cluster.membership() == Some((3, 0))
    });
    let rto = fault_at.elapsed();
    // Over TLS each put is an etcdctl run: on a loaded machine a quick replacement
    // may finish before 50 writes; keep writing until there are (a condition, with a bound).
    wait_until(Duration::from_secs(60), || writer.acked_count() > 50);
    let acked = writer.stop();
    assert!(recovered, "member not replaced within 90 s:\n{}\n{}", cluster.logs(), cluster.journal(2));
    eprintln!("RTO member-disk-wiped (N=3): {:.1} s, {} writes acknowledged", rto.as_secs_f64(), acked.len());
    assert!(acked.len() > 50, "the writer kept writing");
    for (index, node) in cluster.nodes.iter().enumerate() {
        let missing = cluster.missing_writes(index, &acked);
        assert!(
            missing.is_empty(),
            "{} lacks {} acknowledged writes, e.g. {:?}",
            node.name,
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    let journal = cluster.journal(2);
    assert!(journal.contains("\"reconfigure\""), "the member's start was decided through reconfigure");
    if control == Control::Systemd {
        assert!(
            journal.contains("\"plan\":\"StartAsPrepared\""),
            "the agent's systemctl start ran reconfigure, which left the launch to the replacement:\n{journal}"
        );
    }
    if tls {
        assert!(cluster.serves_mutual_tls(2), "the replaced member serves TLS with client-certificate auth");
    }
    let status = lifeboat_command()
        .args(["status", "--journal", "--lines", "500", "--state-dir"])
        .arg(&cluster.nodes[2].state_dir)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("replace-started") && status.contains("replaced"),
        "status --journal shows the decision: {status}"
    );
    assert!(
        !cluster.journal(0).contains("\"replaced\"") && !cluster.journal(1).contains("\"replaced\""),
        "only the wiped member changed:\n{}\n--- n0 ---\n{}\n--- n1 ---\n{}",
        cluster.logs(),
        cluster.journal(0),
        cluster.journal(1)
    );

    // What an SRE's Prometheus sees: the replacement counted where it happened, a
    // save from the leader, and every agent live and ready.
    let scrape = |index: usize, path: &str| http_get(&cluster.nodes[index].metrics, path);
    let replaced = r#"lifeboat_replacements_total{outcome="replaced"} 1"#;
    let metrics = scrape(2, "/metrics").map(|(_, body)| body).unwrap_or_default();
    assert!(metrics.lines().any(|line| line == replaced), "n2's /metrics lacks {replaced:?}:\n{metrics}");
    let saved = wait_until(Duration::from_secs(20), || {
        (0..3).any(|index| {
            scrape(index, "/metrics").is_some_and(|(_, body)| {
                body.lines()
                    .filter_map(|line| line.strip_prefix("lifeboat_last_save_revision "))
                    .any(|revision| revision.trim().parse::<i64>().is_ok_and(|revision| revision > 0))
            })
        })
    });
    assert!(saved, "no agent exports a saved revision");
    for index in 0..3 {
        let ready = wait_until(Duration::from_secs(10), || {
            scrape(index, "/healthz").is_some_and(|(status, _)| status == 200)
                && scrape(index, "/readyz").is_some_and(|(status, _)| status == 200)
        });
        assert!(
            ready,
            "n{index} is not live and ready: {:?} {:?}",
            scrape(index, "/healthz"),
            scrape(index, "/readyz")
        );
    }
}

/// The revision encoded in a snapshot name (`…-r<revision>.db[.zst]`).
fn snapshot_revision(name: &str) -> i64 {
    let stem = name.trim_end_matches(".zst").trim_end_matches(".db");
    stem.rsplit_once("-r").and_then(|(_, revision)| revision.parse().ok()).expect("a snapshot name")
}

/// Checks that the cluster holds exactly the restored snapshot's writes, and
/// returns how many acknowledged writes the recovery lost. Writes acknowledged
/// before `fault_done` came from the old cluster: those at or below the restored
/// revision must be there, none above it may be. Writes acknowledged later came
/// from the recovered cluster and must all be there.
fn check_restored_data(
    cluster: &AgentCluster,
    index: usize,
    acked: &[Acked],
    fault_done: Instant,
    restored_revision: i64,
) -> usize {
    let (old, new): (Vec<Acked>, Vec<Acked>) = acked.iter().cloned().partition(|write| write.at < fault_done);
    let (kept, lost): (Vec<Acked>, Vec<Acked>) = old.into_iter().partition(|write| write.revision <= restored_revision);
    let missing = cluster.missing_writes(index, &kept);
    assert!(
        missing.is_empty(),
        "{} writes at or below revision {restored_revision} are missing: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let resurrected = lost.len() - cluster.missing_writes(index, &lost).len();
    assert_eq!(resurrected, 0, "writes above the restored revision {restored_revision} are present");
    let missing_new = cluster.missing_writes(index, &new);
    assert!(missing_new.is_empty(), "writes acknowledged by the recovered cluster are missing: {missing_new:?}");
    lost.len()
}

/// Scenario `two-of-three-lost` (and its 5-member twin): a majority loses its
/// disks; quorum is gone; one epoch is claimed, the survivor's data is saved first,
/// and every member restores that same snapshot; the cluster holds exactly its data.
fn majority_wiped_runs_one_disaster_recovery(size: usize, wiped: &[usize], control: Control, tls: bool) {
    let Some(cluster) = AgentCluster::start_full(size, None, control, tls) else { return };
    let writer = cluster.writer();
    std::thread::sleep(Duration::from_millis(2500));
    let fault_at = Instant::now();
    for index in wiped {
        cluster.wipe(*index);
    }
    let fault_done = Instant::now();
    let recovered = wait_until(Duration::from_secs(150), || cluster.recovered());
    let rto = fault_at.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let acked = writer.stop();
    assert!(recovered, "no recovery within 150 s:\n{}\n{}", cluster.logs(), cluster.journal(0));
    let epochs = cluster.epochs();
    assert_eq!(epochs.len(), 1, "exactly one recovery epoch: {epochs:?}");
    // Each member entered the epoch once: a second restore would move aside what
    // the new cluster had written since (under systemd, agent and reconfigure both may try).
    for index in 0..size {
        let journal = cluster.journal(index);
        let restores = journal.matches("\"event\":\"restored\"").count();
        assert!(restores <= 1, "n{index} restored {restores} times:\n{journal}");
    }
    let restored_revision = snapshot_revision(epochs[0]["snapshot"].as_str().unwrap());
    if tls {
        for index in 0..size {
            assert!(
                cluster.serves_mutual_tls(index),
                "n{index} serves TLS with client-certificate auth after the recovery"
            );
        }
    }
    for index in 0..size {
        check_restored_data(&cluster, index, &acked, fault_done, restored_revision);
    }
    let lost = check_restored_data(&cluster, 0, &acked, fault_done, restored_revision);
    let last_acked = acked.iter().filter(|write| write.at < fault_done).map(|write| write.revision).max().unwrap_or(0);
    eprintln!(
        "RTO majority-lost (N={size}, {} wiped): {:.1} s; restored revision {restored_revision}, last acknowledged {last_acked}, lost {lost} acknowledged writes ({} revisions); claimed by {}",
        wiped.len(),
        rto.as_secs_f64(),
        (last_acked - restored_revision).max(0),
        epochs[0]["claimed_by"]
    );
    // Never older than a surviving member's data: every survivor that weighed in
    // recorded its revision, and the restored snapshot is at least as new.
    let survivor_revisions = cluster.journaled_numbers("survivor", "local_revision");
    assert!(!survivor_revisions.is_empty(), "no survivor weighed in on the recovery");
    // Survivors vote on the claim with the revision their stopped data dir holds, read
    // by etcdutl after the stop; the restored snapshot is at least as new. A survivor
    // that claimed after saving its own data may find the claim committed by the
    // wiped members' joins before its own vote (etcd 3.5.30 stops slower): then the
    // snapshot restored is the one it saved.
    // Or the survivors' data was in the claimed snapshot already (nothing to save),
    // and the wiped members' joins committed the claim before the survivor's vote.
    let voted = cluster.journaled_numbers("epoch-joined", "revision");
    let saved = cluster.journaled_numbers("saved-survivor", "revision");
    let survivors_in_snapshot = survivor_revisions.iter().all(|revision| *revision <= restored_revision);
    assert!(
        !voted.is_empty() || saved.contains(&restored_revision) || survivors_in_snapshot,
        "no survivor voted with its data dir's revision, and the restored snapshot ({restored_revision}) is not one a survivor saved ({saved:?}):\n{}",
        cluster.journal(0)
    );
    assert!(
        restored_revision >= voted.iter().copied().max().unwrap_or(0),
        "restored {restored_revision} < votes {voted:?}"
    );
    let newest_survivor = survivor_revisions.iter().copied().max().unwrap_or(0);
    assert!(
        restored_revision >= newest_survivor,
        "restored revision {restored_revision} is older than a survivor's data ({newest_survivor})"
    );
}

#[test]
fn two_of_three_wiped_run_one_disaster_recovery() {
    majority_wiped_runs_one_disaster_recovery(3, &[1, 2], Control::Child, false);
}

/// The same under systemd: wiped members' `reconfigure` refuses to start etcd
/// (exit 8) until the epoch is committed; either the agent or `reconfigure`
/// restores each member, never both, and every restored member marks itself
/// started in the epoch first.
#[test]
fn two_of_three_wiped_run_one_disaster_recovery_under_systemd() {
    majority_wiped_runs_one_disaster_recovery(3, &[1, 2], Control::Systemd, false);
}

/// The same over mutual TLS (kubeadm's layout, client and peer certificates
/// required): the restored members come back serving TLS with the same flags.
#[test]
fn two_of_three_wiped_run_one_disaster_recovery_over_tls() {
    majority_wiped_runs_one_disaster_recovery(3, &[1, 2], Control::Child, true);
}

#[test]
fn three_of_five_wiped_run_one_disaster_recovery() {
    majority_wiped_runs_one_disaster_recovery(5, &[2, 3, 4], Control::Child, false);
}

/// Scenario `two-of-five-lost`: two of five lose their disks; each is replaced, one
/// membership change at a time (a lock in etcd), never two learners, never fewer
/// members than a quorum of five, no loss. etcd adds a member only while every voter
/// is connected, so the second dead voter is removed before the first is added back.
#[test]
fn two_of_five_wiped_are_replaced_one_at_a_time() {
    let Some(cluster) = AgentCluster::start(5) else { return };
    let writer = cluster.writer();
    std::thread::sleep(Duration::from_millis(500));
    let fault_at = Instant::now();
    cluster.wipe(3);
    cluster.wipe(4);
    let mut smallest = usize::MAX;
    let mut most_learners = 0;
    let recovered = wait_until(Duration::from_secs(150), || {
        if let Some((voters, learners)) = cluster.membership() {
            smallest = smallest.min(voters + learners);
            most_learners = most_learners.max(learners);
        }
        cluster.journal(3).contains("\"replaced\"")
            && cluster.journal(4).contains("\"replaced\"")
            && (0..5).all(|index| cluster.healthy(index))
            && cluster.membership() == Some((5, 0))
    });
    let rto = fault_at.elapsed();
    let acked = writer.stop();
    assert!(recovered, "not both replaced within 150 s:\n{}", cluster.logs());
    eprintln!("RTO two-of-five-lost (N=5): {:.1} s, {} writes acknowledged", rto.as_secs_f64(), acked.len());
    assert!(smallest >= 3, "the cluster shrank below a quorum of five ({smallest} members seen)");
    assert!(most_learners <= 1, "two learners at once");
    for node in &cluster.nodes {
        let missing = missing_writes(&node.client_url, &acked);
        assert!(missing.is_empty(), "{} lacks {} acknowledged writes", node.name, missing.len());
    }
}

/// Scenario `store-outage-during-save`: the store goes away while agents save;
/// saves fail cleanly (nothing partial), and the next save after it returns succeeds.
#[test]
fn store_outage_fails_saves_cleanly_and_they_resume() {
    let Some(mut cluster) = AgentCluster::start(3) else { return };
    let saves = |cluster: &AgentCluster| -> usize {
        (0..3).map(|index| cluster.journal(index).matches("\"event\":\"saved\"").count()).sum()
    };
    assert!(wait_until(Duration::from_secs(30), || saves(&cluster) >= 1), "no save before the outage");
    cluster.s3.stop();
    let failed =
        wait_until(Duration::from_secs(30), || (0..3).any(|index| cluster.journal(index).contains("\"save-failed\"")));
    let before = saves(&cluster);
    cluster.s3.resume();
    let resumed = wait_until(Duration::from_secs(60), || saves(&cluster) > before);
    assert!(failed, "no save failed during the outage:\n{}", cluster.logs());
    assert!(resumed, "saves did not resume after the outage:\n{}", cluster.logs());
    let mut command = lifeboat_command();
    command.envs(cluster.s3.env()).args([
        "snapshots",
        "verify",
        "--all",
        "--output",
        "json",
        "--store",
        &format!("s3://{BUCKET}/chaos"),
        "--cluster",
        "chaos",
    ]);
    let output = command.output().unwrap();
    assert!(output.status.success(), "a snapshot is partial or corrupt: {}", String::from_utf8_lossy(&output.stdout));
}

/// Scenario `agent-crash-mid-replace`: the agent is killed in the middle of
/// replacing its member; restarted, it takes its lock back and finishes.
#[test]
fn agent_killed_mid_replace_resumes() {
    let Some(mut cluster) = AgentCluster::start(3) else { return };
    let writer = cluster.writer();
    std::thread::sleep(Duration::from_millis(300));
    let state_file = {
        let mut path = cluster.nodes[2].data_dir.clone().into_os_string();
        path.push(".lifeboat-replace.json");
        PathBuf::from(path)
    };
    cluster.wipe(2);
    let mid_replace = wait_until(Duration::from_secs(30), || state_file.exists());
    assert!(mid_replace, "the replacement never started:\n{}", cluster.logs());
    let mut agent = cluster.nodes[2].agent.take().unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    cluster.kill_etcd(2);
    assert!(state_file.exists(), "killed before finishing, the state file remains");
    let restart_at = Instant::now();
    cluster.start_agent(2);
    let recovered = wait_until(Duration::from_secs(90), || {
        (0..3).all(|index| cluster.healthy(index)) && cluster.membership() == Some((3, 0)) && !state_file.exists()
    });
    let acked = writer.stop();
    assert!(recovered, "the replacement did not resume:\n{}\n{}", cluster.logs(), cluster.journal(2));
    eprintln!("resume after agent crash mid-replace: {:.1} s", restart_at.elapsed().as_secs_f64());
    assert!(cluster.journal(2).contains("resuming"), "the restarted agent resumed from its state file");
    for node in &cluster.nodes {
        assert!(missing_writes(&node.client_url, &acked).is_empty(), "{} lost writes", node.name);
    }
}

/// Scenario `all-restarted-empty` (the seed's manual restore): every member stops,
/// every disk is empty when they start again; the agents agree on one epoch and
/// restore the newest snapshot, which holds every write made before it.
#[test]
fn all_restarted_with_empty_disks_are_restored() {
    let Some(mut cluster) = AgentCluster::start(3) else { return };
    let writer = cluster.writer();
    std::thread::sleep(Duration::from_millis(1500));
    let acked = writer.stop();
    // Let a periodic save (every 2 s) capture everything written.
    let last = acked.last().map(|write| write.revision).unwrap_or(0);
    let saved = wait_until(Duration::from_secs(30), || {
        (0..3).any(|index| {
            cluster.journal(index).lines().filter(|line| line.contains("\"saved\"")).any(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|entry| entry["revision"].as_i64())
                    .is_some_and(|revision| revision >= last)
            })
        })
    });
    assert!(saved, "no save after the last write");
    for index in 0..3 {
        cluster.stop_agent(index);
    }
    for node in &cluster.nodes {
        std::fs::remove_dir_all(&node.data_dir).unwrap();
        let _ = std::fs::remove_file(node.state_dir.join("epoch"));
    }
    let restart_at = Instant::now();
    for index in 0..3 {
        cluster.start_agent(index);
    }
    let recovered = wait_until(Duration::from_secs(120), || {
        (0..3).all(|index| cluster.healthy(index)) && cluster.membership() == Some((3, 0))
    });
    let rto = restart_at.elapsed();
    assert!(recovered, "not restored within 120 s:\n{}\n{}", cluster.logs(), cluster.journal(0));
    let epochs = cluster.epochs();
    assert_eq!(epochs.len(), 1, "one epoch for all members: {epochs:?}");
    let missing = missing_writes(&cluster.nodes[0].client_url, &acked);
    assert!(missing.is_empty(), "{} acknowledged writes missing after the restore", missing.len());
    eprintln!("RTO all-restarted-empty (N=3): {:.1} s from restart; epoch {}", rto.as_secs_f64(), epochs[0]);
}

/// The agent beside the leader proves new snapshots by itself: a trial restore
/// of the newest one, its proof beside the manifest, the figure on `/metrics`,
/// and `snapshots list` shows it proven.
#[test]
fn the_leaders_agent_proves_new_snapshots() {
    let Some(mut cluster) = AgentCluster::start(3) else { return };
    cluster.trial_interval_ms = Some(1_500);
    cluster.restart_agents();
    let proven =
        wait_until(Duration::from_secs(90), || !cluster.journaled_numbers("trial-proven", "revision").is_empty());
    assert!(proven, "no trial proved a snapshot:\n{}\n{}", cluster.logs(), cluster.journal(0));
    let provers: Vec<usize> = (0..3).filter(|index| cluster.journal(*index).contains("\"trial-proven\"")).collect();
    let exported = provers
        .iter()
        .any(|index| cluster.metric(*index, "lifeboat_last_proven_revision").is_some_and(|revision| revision > 0.0));
    assert!(exported, "the prover's /metrics carries the proven revision");
    let listing = cluster.snapshot_listing();
    let proven_entries =
        listing["snapshots"].as_array().unwrap().iter().filter(|entry| entry["proven"] == true).count();
    assert!(proven_entries >= 1, "a snapshot is listed as proven: {listing}");
}

/// Every machine dies at once under a steady write load, and comes back with
/// an empty disk. Snapshots are an hour apart, so only the revision log holds
/// the recent writes: the recovery replays it onto the snapshot it restores,
/// and loses only what the log had not flushed (its flush interval, 1 s).
///
/// With client-side encryption: every object the agents write (snapshots, log
/// segments, heartbeats, claims, joins) is sealed, and the recovery reads all of
/// them back through the key.
#[test]
fn all_lost_under_load_lose_at_most_one_log_flush() {
    let Some(mut cluster) = AgentCluster::start(3) else { return };
    cluster.snapshot_interval_ms = 3_600_000;
    let key_file = cluster.directory.path().join("client.key");
    std::fs::write(&key_file, [0x42u8; 32]).unwrap();
    cluster.encryption = Some((std::sync::Arc::new(SealKey::parse(&[0x42; 32]).unwrap()), key_file));
    cluster.restart_agents();
    cluster.wait_log_writer();
    let writer = cluster.writer();
    std::thread::sleep(Duration::from_secs(5));
    // The premise: one recovery, after the fault. A claim before it means the
    // restart above looked like a lost quorum (it did when a stop killed agents
    // mid-start, whose etcd then blocked the next one's).
    assert!(cluster.claims().is_empty(), "a recovery was claimed before the fault:\n{}", cluster.logs());
    let fault_at = Instant::now();
    cluster.lose_every_machine();
    let acked = writer.stop();
    let restart_at = Instant::now();
    cluster.start_empty_machines();
    let recovered = wait_until(Duration::from_secs(150), || cluster.recovered());
    let rto = restart_at.elapsed();
    assert!(recovered, "no recovery within 150 s:\n{}\n{}", cluster.logs(), cluster.journal(0));
    let epochs = cluster.epochs();
    assert_eq!(epochs.len(), 1, "one epoch: {epochs:?}");
    let replayed = cluster.journaled_numbers("log-replayed", "reached");
    assert!(!replayed.is_empty(), "the recovery replayed the revision log:\n{}", cluster.journal(0));
    let restored_revision = snapshot_revision(epochs[0]["snapshot"].as_str().unwrap());
    let lost: Vec<&Acked> = acked.iter().filter(|write| write.revision > restored_revision).collect();
    let missing = missing_writes(&cluster.nodes[0].client_url, &acked);
    assert_eq!(missing.len(), lost.len(), "exactly the writes above the restored revision are gone");
    // The RPO: every write acknowledged more than one flush interval (plus scheduling
    // slack) before the machines died is there.
    let window = Duration::from_millis(1_000 + 700);
    let too_old: Vec<&&Acked> = lost.iter().filter(|write| fault_at.duration_since(write.at) > window).collect();
    assert!(
        too_old.is_empty(),
        "{} lost writes were acknowledged more than {window:?} before the fault (oldest {:?} before)",
        too_old.len(),
        too_old.first().map(|write| fault_at.duration_since(write.at))
    );
    let sealed = cluster.stored_objects();
    let kinds = ["etcd-snapshots/", "etcd-log/", "coordination/heartbeats/", "coordination/epochs/"];
    for kind in kinds {
        assert!(sealed.iter().any(|(key, _)| key.contains(kind)), "the store holds {kind}: {sealed:?}");
    }
    // Snapshots saved before the agents had the key stay plain (and unused); the
    // one the recovery restored, the log and every record are sealed.
    let restored = epochs[0]["snapshot"].as_str().unwrap();
    let needed = |key: &str| !key.contains("etcd-snapshots/") || key.contains(restored);
    assert!(sealed.iter().any(|(key, _)| key.ends_with(restored)), "{restored} is in the store");
    for (key, head) in sealed.iter().filter(|(key, _)| needed(key)) {
        assert!(head.starts_with(b"LBSEAL1"), "{key} is not sealed");
    }
    let last_acked = acked.iter().map(|write| write.revision).max().unwrap_or(0);
    eprintln!(
        "RPO all-lost-under-load (N=3, log flush 1 s, snapshots hourly): {} of {} acknowledged writes lost ({} revisions), restored revision {restored_revision} of {last_acked}; RTO {:.1} s from restart",
        lost.len(),
        acked.len(),
        (last_acked - restored_revision).max(0),
        rto.as_secs_f64()
    );
}

/// Figures for issue 14, run by `scripts/bench-rpo` (not by the suite): every machine
/// dies, disks and all, under a steady offered load of `LIFEBOAT_BENCH_RATE` puts per
/// second (default 100) held for `LIFEBOAT_BENCH_LOAD_SECONDS` (default 30), on top of
/// `LIFEBOAT_BENCH_FILL_MIB` of 100 KiB values (default 0) that a snapshot holds;
/// snapshots every minute (the agent's default). Prints one `FIGURE` line: the
/// acknowledged writes lost with the revision log, what the snapshot the recovery
/// started from would have lost alone (same run), and the recovery time from the
/// restart and from the first claimer's decision to three healthy members.
#[test]
#[ignore = "a benchmark: scripts/bench-rpo runs it"]
fn figure_rpo_and_recovery_time() {
    let number = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let rate = u32::try_from(number("LIFEBOAT_BENCH_RATE", 100)).unwrap();
    let fill_mib = number("LIFEBOAT_BENCH_FILL_MIB", 0);
    let load = Duration::from_secs(number("LIFEBOAT_BENCH_LOAD_SECONDS", 30));
    let Some(mut cluster) = AgentCluster::start(3) else { return };
    cluster.snapshot_interval_ms = 60_000;
    cluster.trial_interval_ms = Some(0);
    cluster.restart_agents();
    cluster.wait_log_writer();
    let endpoints: Vec<String> = cluster.nodes.iter().map(|node| node.client_url.clone()).collect();
    if fill_mib > 0 {
        let filled = fill(&endpoints, fill_mib);
        let saved = wait_until(Duration::from_secs(600), || {
            cluster.snapshot_listing()["snapshots"].as_array().is_some_and(|list| {
                list.iter().any(|entry| entry["name"].as_str().map(snapshot_revision) >= Some(filled))
            })
        });
        assert!(saved, "no snapshot holds the fill (revision {filled}):\n{}", cluster.logs());
    }
    let writer = Writer::paced(endpoints, rate);
    let load_started = Instant::now();
    // The load's length is the figure's input, not a wait for a condition.
    std::thread::sleep(load);
    let fault_at = Instant::now();
    cluster.lose_every_machine();
    let acked = writer.stop();
    let achieved = acked.iter().filter(|write| write.at <= fault_at).count() as f64
        / fault_at.duration_since(load_started).as_secs_f64();
    let restart_at = Instant::now();
    let restart_wall = unix_millis();
    cluster.start_empty_machines();
    let recovered = wait_until(Duration::from_secs(900), || cluster.recovered());
    let healthy_wall = unix_millis();
    let from_restart = restart_at.elapsed();
    assert!(recovered, "no recovery within 900 s:\n{}\n{}", cluster.logs(), cluster.journal(0));
    let epochs = cluster.epochs();
    assert_eq!(epochs.len(), 1, "one epoch: {epochs:?}");
    let restored_revision = snapshot_revision(epochs[0]["snapshot"].as_str().unwrap());
    // The first claimer's decision: its first `survivor` entry since the restart.
    let decided =
        cluster.journal_entries("survivor").iter().filter_map(entry_millis).filter(|at| *at >= restart_wall).min();
    let from_decision = decided.map(|at| healthy_wall.saturating_sub(at) as f64 / 1000.0);
    let base_revision = cluster
        .journal_entries("log-replayed")
        .iter()
        .filter(|entry| entry["snapshot"] == epochs[0]["snapshot"])
        .find_map(|entry| entry["from"].as_str().map(snapshot_revision))
        .unwrap_or(restored_revision);
    let lost: Vec<&Acked> = acked.iter().filter(|write| write.revision > restored_revision).collect();
    let missing = missing_writes(&cluster.nodes[0].client_url, &acked);
    assert_eq!(missing.len(), lost.len(), "exactly the writes above the restored revision are gone");
    let snapshot_alone = acked.iter().filter(|write| write.revision > base_revision).count();
    let oldest_lost = lost.first().map(|write| fault_at.saturating_duration_since(write.at).as_millis()).unwrap_or(0);
    let status = etcdctl(&cluster.nodes[0].client_url, &["endpoint", "status", "-w", "json"]);
    let db_bytes = serde_json::from_str::<serde_json::Value>(&status)
        .ok()
        .and_then(|status| status[0]["Status"]["dbSize"].as_i64());
    eprintln!(
        "FIGURE rate={rate} achieved={achieved:.0} fill_mib={fill_mib} db_mib={:.1} acked={} lost={} oldest_lost_ms={oldest_lost} \
         snapshot_alone_lost={snapshot_alone} restored_revision={restored_revision} base_revision={base_revision} \
         recovery_from_restart_s={:.1} recovery_from_decision_s={}",
        db_bytes.unwrap_or(0) as f64 / 1_048_576.0,
        acked.len(),
        lost.len(),
        from_restart.as_secs_f64(),
        from_decision.map(|seconds| format!("{seconds:.1}")).unwrap_or_else(|| "?".into()),
    );
}

/// When a journal entry was written, in Unix milliseconds.
fn entry_millis(entry: &serde_json::Value) -> Option<u64> {
    entry["at"].as_str().and_then(lifeboat::time::Millis::parse_rfc3339).map(|at| at.0)
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or(0)
}

/// Fills the cluster with `mib` MiB of 100 KiB values under `fill/`, eight per
/// transaction from four clients; the revision of the last one.
fn fill(endpoints: &[String], mib: u64) -> i64 {
    const VALUE_KIB: u64 = 100;
    const PER_TXN: u64 = 8;
    let transactions = (mib * 1024).div_ceil(VALUE_KIB * PER_TXN);
    let value = aws_smithy_types::base64::encode(vec![b'x'; (VALUE_KIB * 1024) as usize]);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (next, value, endpoints) = (Arc::clone(&next), value.clone(), endpoints.to_vec());
            std::thread::spawn(move || {
                let mut newest = 0;
                loop {
                    let txn = next.fetch_add(1, Ordering::Relaxed);
                    if txn >= transactions {
                        return newest;
                    }
                    let puts: Vec<serde_json::Value> = (0..PER_TXN)
                        .map(|put| {
                            let key = format!("fill/{:08}", txn * PER_TXN + put);
                            serde_json::json!({ "requestPut": { "key": aws_smithy_types::base64::encode(key), "value": value } })
                        })
                        .collect();
                    let body = serde_json::json!({ "success": puts });
                    let revision = endpoints
                        .iter()
                        .find_map(|endpoint| gateway(endpoint, "/v3/kv/txn", &body, Duration::from_secs(30)))
                        .unwrap_or_else(|| panic!("the fill's transaction {txn} was refused by every member"));
                    newest = newest.max(revision);
                }
            })
        })
        .collect();
    clients.into_iter().map(|client| client.join().unwrap()).max().unwrap_or(0)
}

/// The catalogue names the scenarios these tests run; each real-process scenario
/// of the catalogue has its test here or a reason it does not.
#[test]
fn catalogue_scenarios_for_processes_are_covered() {
    const COVERED: &[(&str, &str)] = &[
        ("member-disk-wiped", "one_of_three_wiped_is_replaced_without_loss"),
        ("two-of-five-lost", "two_of_five_wiped_are_replaced_one_at_a_time"),
        ("two-of-three-lost", "two_of_three_wiped_run_one_disaster_recovery (+ 3 of 5)"),
        ("all-restarted-empty", "all_restarted_with_empty_disks_are_restored"),
        ("store-outage-during-save", "store_outage_fails_saves_cleanly_and_they_resume"),
        ("agent-crash-mid-replace", "agent_killed_mid_replace_resumes"),
        ("isolated-agent-sees-store", "isolated_member_that_sees_the_store_starts_no_recovery"),
    ];
    // Not yet run on real processes, with the reason (see the issue notes):
    const PENDING: &[&str] = &[
        "steady-snapshots",        // retention under load is covered by prune tests only
        "member-crash-restart",    // needs a supervisor-restart timing assertion
        "minority-partition",      // needs network namespaces: left to the container suite
        "corrupt-latest-snapshot", // restore fallback covered by failures::corrupt_and_truncated_snapshots_are_refused
        "agent-crash-mid-recovery",
        "flapping-member",
        "large-database", // measured by scripts/bench-save
    ];
    let catalogue = lifeboat_scenarios::catalogue();
    for (name, _) in COVERED {
        let scenario = lifeboat_scenarios::find(name).unwrap_or_else(|| panic!("{name} is not in the catalogue"));
        assert!(scenario.harnesses.contains(&lifeboat_scenarios::Harness::Processes), "{name}");
    }
    for scenario in
        catalogue.iter().filter(|scenario| scenario.harnesses.contains(&lifeboat_scenarios::Harness::Processes))
    {
        assert!(
            COVERED.iter().any(|(name, _)| *name == scenario.name) || PENDING.contains(&scenario.name),
            "{} is neither covered nor listed as pending",
            scenario.name
        );
    }
}

/// A network namespace joined to the host by a veth pair: the host side gets
/// `host_ip`, the namespace `ns_ip`. Dropped, it removes both.
struct Isolation {
    netns: String,
    veth: String,
    host_ip: String,
    ns_ip: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

impl Isolation {
    /// `None` (skip) outside CI without root, `ip` or `iptables`; under CI=true it fails.
    fn create() -> Option<Isolation> {
        let root = unsafe { libc::geteuid() } == 0;
        let tools = ["ip", "iptables"].iter().all(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|out| out.status.success())
        });
        if !root || !tools {
            let message = "isolation needs root, `ip` (iproute2) and `iptables`: scripts/install-deps installs them";
            if std::env::var("CI").is_ok_and(|value| value == "true" || value == "1") {
                panic!("{message}");
            }
            eprintln!("SKIPPED: {message}");
            return None;
        }
        let tag = std::process::id() % 250 + 2;
        let isolation = Isolation {
            netns: format!("lifeboat{tag}"),
            veth: format!("lbv{tag}"),
            host_ip: format!("10.231.{tag}.1"),
            ns_ip: format!("10.231.{tag}.2"),
        };
        let peer = format!("{}p", isolation.veth);
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &isolation.netns],
            vec!["link", "add", &isolation.veth, "type", "veth", "peer", "name", &peer],
            vec!["link", "set", &peer, "netns", &isolation.netns],
        ];
        let host_cidr = format!("{}/24", isolation.host_ip);
        let ns_cidr = format!("{}/24", isolation.ns_ip);
        for step in steps {
            assert!(ip(&step), "ip {step:?} failed");
        }
        assert!(ip(&["addr", "add", &host_cidr, "dev", &isolation.veth]));
        assert!(ip(&["link", "set", &isolation.veth, "up"]));
        assert!(ip(&["netns", "exec", &isolation.netns, "ip", "addr", "add", &ns_cidr, "dev", &peer]));
        assert!(ip(&["netns", "exec", &isolation.netns, "ip", "link", "set", &peer, "up"]));
        assert!(ip(&["netns", "exec", &isolation.netns, "ip", "link", "set", "lo", "up"]));
        Some(isolation)
    }

    fn iptables(&self, args: &[&str]) {
        let status = Command::new("ip")
            .args(["netns", "exec", &self.netns, "iptables"])
            .args(args)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "iptables {args:?} in {} failed", self.netns);
    }

    /// Cuts the namespace off from `their_ports` on the host, and the host off from
    /// `our_ports` in the namespace; everything else (the store) still flows.
    fn cut(&self, their_ports: &[u16], our_ports: &[u16]) {
        let join = |ports: &[u16]| ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let (theirs, ours) = (join(their_ports), join(our_ports));
        self.iptables(&[
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            &self.host_ip,
            "-m",
            "multiport",
            "--dports",
            &theirs,
            "-j",
            "DROP",
        ]);
        self.iptables(&[
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "-s",
            &self.host_ip,
            "-m",
            "multiport",
            "--dports",
            &ours,
            "-j",
            "DROP",
        ]);
    }

    fn heal(&self) {
        self.iptables(&["-F"]);
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        ip(&["link", "del", &self.veth]);
        ip(&["netns", "del", &self.netns]);
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|port| port.parse().ok()).expect("a URL with a port")
}

/// A supervisor's stop can come while the agent is still starting, before its
/// first round is done. It is then a stop like any other: exit 0, `agent-stopped`
/// journaled, and its etcd stopped before the agent exits. While the handler was
/// installed only at the loop's first wait, SIGTERM's default action killed the
/// agent there; the etcd it had spawned was still shutting down when the next
/// agent started one, which failed, and three failed checks later that agent
/// replaced a member that had lost nothing.
#[test]
fn a_stop_while_the_agent_starts_is_a_clean_stop() {
    let Some(mut cluster) = AgentCluster::start(1) else { return };
    let client: std::net::SocketAddr =
        cluster.nodes[0].client_url.trim_start_matches("http://").parse().expect("the client URL is an address");
    for round in 0..3 {
        cluster.stop_agent(0);
        // Something that accepts connections on the member's client port and never
        // answers: the agent's first look at the cluster waits out its timeout there,
        // before etcd even starts, and the stop below lands in that window.
        let silent = std::net::TcpListener::bind(client).expect("the stopped member's client port is free");
        let starts = cluster.agent_log(0).matches("serving /metrics").count();
        cluster.start_agent(0);
        let starting =
            wait_until(Duration::from_secs(30), || cluster.agent_log(0).matches("serving /metrics").count() > starts);
        assert!(starting, "round {round}: the agent did not start:\n{}", cluster.agent_log(0));
        let mut agent = cluster.nodes[0].agent.take().expect("the agent just started");
        // SAFETY: plain signal delivery to a child we own and have not reaped.
        unsafe {
            libc::kill(agent.id() as libc::pid_t, libc::SIGTERM);
        }
        drop(silent);
        let mut status = None;
        let exited = wait_until(Duration::from_secs(40), || {
            status = agent.try_wait().ok().flatten();
            status.is_some()
        });
        if !exited {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        assert!(exited, "round {round}: the agent did not stop within 40 s:\n{}", cluster.agent_log(0));
        assert_eq!(
            status.and_then(|status| status.code()),
            Some(0),
            "round {round}: a stop while starting is a clean exit, not death by signal ({status:?}):\n{}",
            cluster.agent_log(0)
        );
        assert!(
            std::net::TcpStream::connect_timeout(&client, Duration::from_millis(500)).is_err(),
            "round {round}: the agent exited with its etcd still serving"
        );
        let journal = cluster.journal(0);
        assert!(
            journal.lines().last().is_some_and(|line| line.contains("\"agent-stopped\"")),
            "round {round}: the journal ends with the stop:\n{journal}"
        );
        cluster.start_agent(0);
        cluster.wait_all_healthy(Duration::from_secs(60));
    }
    assert!(!cluster.journal(0).contains("replace-started"), "the member was never replaced");
}

/// A cluster that reached its backend quota raises NOSPACE and refuses writes, but
/// every member still serves reads and the cluster keeps its quorum. The agents
/// journal the alarm with its fix, keep saving, and neither replace a member nor
/// start a recovery (before, an alarm made every member count as unhealthy: every
/// agent saw quorum lost and a disaster recovery was claimed within K checks).
#[test]
fn a_nospace_alarm_is_reported_and_recovers_nothing() {
    let Some(cluster) = AgentCluster::start_with_etcd_flags(3, &["--quota-backend-bytes=4194304"]) else { return };
    let saved =
        wait_until(Duration::from_secs(30), || (0..3).any(|index| cluster.journal(index).contains("\"saved\"")));
    assert!(saved, "no save before the alarm");
    let value = aws_smithy_types::base64::encode(vec![b'x'; 256 * 1024]);
    let mut refused = false;
    for put in 0..200 {
        let body =
            serde_json::json!({ "key": aws_smithy_types::base64::encode(format!("fill/{put:04}")), "value": value });
        if gateway(&cluster.nodes[0].client_url, "/v3/kv/put", &body, Duration::from_secs(10)).is_none() {
            refused = true;
            break;
        }
    }
    assert!(refused, "200 puts of 256 KiB fitted in a 4 MiB quota");
    let alarmed = wait_until(Duration::from_secs(30), || {
        (0..3).all(|index| {
            let journal = cluster.journal(index);
            journal.contains("\"alarm\"") && journal.contains("NOSPACE on member")
        })
    });
    assert!(alarmed, "an agent did not journal the alarm:\n{}", cluster.logs());
    let saves = || (0..3).map(|index| cluster.journal(index).matches("\"saved\"").count()).sum::<usize>();
    let saves_before = saves();
    // Many rounds of K checks with the alarm raised.
    let more_saves = wait_until(Duration::from_secs(30), || saves() > saves_before + 1);
    std::thread::sleep(Duration::from_millis(10 * CHECK_INTERVAL_MS));
    for index in 0..3 {
        let journal = cluster.journal(index);
        for decision in ["\"disaster-recovery\"", "replace-started", "\"epoch-claim\""] {
            assert!(!journal.contains(decision), "n{index} acted on an alarm ({decision}):\n{journal}");
        }
    }
    assert!(cluster.claims().is_empty(), "a recovery was claimed for an alarm");
    assert!(more_saves, "saves stopped under the alarm:\n{}", cluster.logs());
    let metrics = http_get(&cluster.nodes[0].metrics, "/metrics").map(|(_, body)| body).unwrap_or_default();
    // etcd lists one NOSPACE per member that hit the quota.
    let alarms = metrics
        .lines()
        .find_map(|line| line.strip_prefix("lifeboat_etcd_alarms "))
        .and_then(|value| value.trim().parse::<u64>().ok());
    assert!(alarms.is_some_and(|count| count >= 1), "the alarm is not in the metrics ({alarms:?}):\n{metrics}");
    // `lifeboat check` names the alarm and its fix, and exits 3 (unhealthy), as a script expects.
    let check = lifeboat_command().args(["check", "--endpoints", &cluster.endpoints()]).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(3), "check under an alarm:\n{text}");
    assert!(text.contains("ALARM: NOSPACE") && text.contains("etcdctl alarm disarm"), "check under an alarm:\n{text}");
    let json =
        lifeboat_command().args(["check", "--endpoints", &cluster.endpoints(), "--output", "json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap_or_default();
    assert!(report["alarms"].as_array().is_some_and(|alarms| !alarms.is_empty()), "check --output json: {report}");
    assert_eq!(report["quorum"], true, "an alarm is not a lost quorum: {report}");
}

/// Scenario `isolated-agent-sees-store`: one member and its agent are cut off from
/// their peers but still reach the store. Its agent sees quorum lost, but the
/// peers' fresh heartbeats say the cluster is healthy: no recovery starts, no epoch
/// is claimed, and once healed the member rejoins with nothing lost.
#[test]
fn isolated_member_that_sees_the_store_starts_no_recovery() {
    let Some(isolation) = Isolation::create() else { return };
    let Some(cluster) = AgentCluster::start_with(3, Some(&isolation), Control::Child) else { return };
    let writer = cluster.writer();
    // A verified snapshot exists, so a wrong recovery would have something to restore.
    let saved =
        wait_until(Duration::from_secs(30), || (0..3).any(|index| cluster.journal(index).contains("\"saved\"")));
    assert!(saved, "no save before the partition");
    let theirs: Vec<u16> =
        cluster.nodes[1..].iter().flat_map(|node| [port_of(&node.client_url), port_of(&node.peer_url)]).collect();
    let ours = [port_of(&cluster.nodes[0].client_url), port_of(&cluster.nodes[0].peer_url)];
    cluster.cut_and_wait(&isolation, &theirs, &ours);
    // Not even a claim: the peers' fresh heartbeats keep the isolated agent from one.
    let epochs_during = cluster.claims();
    isolation.heal();
    let healed = wait_until(Duration::from_secs(60), || (0..3).all(|index| cluster.healthy(index)));
    let acked = writer.stop();
    assert!(epochs_during.is_empty(), "an isolated agent started a recovery: {epochs_during:?}");
    assert!(healed, "the member did not rejoin after the partition healed:\n{}", cluster.logs());
    assert!(cluster.claims().is_empty());
    for node in &cluster.nodes {
        assert!(missing_writes(&node.client_url, &acked).is_empty(), "{} lost writes", node.name);
    }
}

impl AgentCluster {
    /// Cuts node 0 off, then waits until its agent has seen quorum lost and refused
    /// to recover (the peers' heartbeats are fresh), plus a few more checks.
    fn cut_and_wait(&self, isolation: &Isolation, theirs: &[u16], ours: &[u16]) {
        isolation.cut(theirs, ours);
        let refused = wait_until(Duration::from_secs(30), || self.journal(0).contains("QuorumLostPeersHealthy"));
        assert!(refused, "the isolated agent never noticed:\n{}\n{}", self.logs(), self.journal(0));
        std::thread::sleep(Duration::from_millis(10 * CHECK_INTERVAL_MS));
        assert!(!self.journal(0).contains("\"disaster-recovery\""), "the isolated agent decided a recovery");
    }
}
