//! A cluster in containers: an S3 server and N members, each member container
//! running `lifeboat agent` which supervises its own etcd, on a private network
//! with its own names. Faults act on containers: kill, stop/start, pause,
//! disconnect from the network, lose the machine (container and disk).
//!
//! Containers and the network go when the cluster is dropped (testcontainers
//! removes them), even when a test fails; member disks are bind-mounted temp
//! dirs, removed with the cluster.

use crate::images::{images, Images, S3Flavour, S3_ACCESS_KEY, S3_PORT, S3_SECRET_KEY};
use crate::watchdog::{docker_within, Watchdog, DOCKER_CALL_LIMIT};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use testcontainers::core::{IntoContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

pub const BUCKET: &str = "lifeboat";
pub const CLUSTER: &str = "tc";
pub const CHECK_INTERVAL_MS: u64 = 500;

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

pub struct Member {
    pub name: String,
    /// The container's name on the network: the host in its URLs.
    pub host: String,
    pub container: Option<ContainerAsync<GenericImage>>,
    /// Bind-mounted as /data: the etcd data dir and the agent's state dir.
    pub disk: PathBuf,
}

pub struct DockerCluster {
    pub images: Images,
    pub network: String,
    pub s3: ContainerAsync<GenericImage>,
    s3_host: String,
    pub members: Vec<Member>,
    directory: PathBuf,
    /// The agents' `--failures-max` (K).
    failures_max: u32,
    /// The test's deadline and the trail of its steps (faults and waits).
    pub watchdog: Watchdog,
}

/// Polls `probe` until it holds or `timeout` passes.
pub async fn wait_for<F: std::future::Future<Output = bool>>(timeout: Duration, mut probe: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if probe().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn docker(args: &[&str]) -> Result<String, String> {
    docker_within(args, DOCKER_CALL_LIMIT)
}

impl DockerCluster {
    /// Starts the S3 server and `size` members, and waits until every member is healthy.
    pub async fn start(size: usize) -> DockerCluster {
        DockerCluster::start_with_failures_max(size, 3).await
    }

    /// As `start`, with agents that replace a member after `failures_max` failed checks.
    pub async fn start_with_failures_max(size: usize, failures_max: u32) -> DockerCluster {
        let images = images().await.clone();
        let watchdog = Watchdog::arm();
        let id = format!("lbtc{}x{}", std::process::id(), CLUSTERS.fetch_add(1, Ordering::Relaxed));
        let network = format!("{id}-net");
        let directory = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&directory).expect("create the cluster's temp dir");
        let s3_host = format!("{id}-s3");
        watchdog.step(format!("start S3 {s3_host}"));
        watchdog.watch(&s3_host);
        let s3 = start_s3(&images, &network, &s3_host, &directory).await;
        let members = (0..size)
            .map(|index| Member {
                name: format!("m{index}"),
                host: format!("{id}-m{index}"),
                container: None,
                disk: directory.join(format!("m{index}")),
            })
            .collect();
        let mut cluster = DockerCluster { images, network, s3, s3_host, members, directory, failures_max, watchdog };
        cluster.create_bucket().await;
        for index in 0..size {
            cluster.start_member(index).await;
        }
        let all = cluster.wait_healthy(size, Duration::from_secs(90)).await;
        assert!(all, "the cluster did not become healthy:\n{}", cluster.logs().await);
        cluster
    }

    pub async fn s3_endpoint_on_host(&self) -> String {
        let port = self.s3.get_host_port_ipv4(S3_PORT.tcp()).await.expect("the S3 port is mapped");
        format!("http://127.0.0.1:{port}")
    }

    pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
        let credentials = aws_sdk_s3::config::Credentials::new(S3_ACCESS_KEY, S3_SECRET_KEY, None, None, "tc");
        // The SDK bounds only the connect by default: a server that accepts and
        // never answers (one still starting, one paused) would hold a call forever.
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(30))
            .build();
        let config = aws_sdk_s3::config::Builder::new()
            .timeout_config(timeouts)
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(credentials)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    async fn create_bucket(&self) {
        let client = DockerCluster::s3_client(&self.s3_endpoint_on_host().await);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let error = match client.create_bucket().bucket(BUCKET).send().await {
                Ok(_) => return,
                Err(error) => format!("{}", aws_sdk_s3::error::DisplayErrorContext(&error)),
            };
            if error.contains("BucketAlreadyOwnedByYou") || error.contains("BucketAlreadyExists") {
                return;
            }
            assert!(Instant::now() < deadline, "cannot create the bucket: {error}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|member| format!("{}=http://{}:2380", member.name, member.host))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn endpoints(&self) -> String {
        self.members.iter().map(|member| format!("http://{}:2379", member.host)).collect::<Vec<_>>().join(",")
    }

    /// Starts (or starts again) member `index`'s container: its agent starts etcd.
    pub async fn start_member(&mut self, index: usize) {
        let (initial_cluster, endpoints) = (self.initial_cluster(), self.endpoints());
        let member = &self.members[index];
        create_disk(&member.disk);
        let host = member.host.clone();
        self.watchdog.step(format!("start m{index} ({host})"));
        self.watchdog.watch(&host);
        let args: Vec<String> = vec![
            "agent".into(),
            "--member-control".into(),
            "child".into(),
            "--name".into(),
            member.name.clone(),
            "--data-dir".into(),
            "/data/etcd".into(),
            "--state-dir".into(),
            "/data/state".into(),
            "--client-url".into(),
            format!("http://{host}:2379"),
            "--peer-url".into(),
            format!("http://{host}:2380"),
            "--initial-cluster".into(),
            initial_cluster,
            "--endpoints".into(),
            endpoints,
            "--initial-cluster-token".into(),
            "tc".into(),
            "--store".into(),
            format!("s3://{BUCKET}/tc"),
            "--cluster".into(),
            CLUSTER.into(),
            "--check-interval-ms".into(),
            CHECK_INTERVAL_MS.to_string(),
            "--failures-max".into(),
            self.failures_max.to_string(),
            "--snapshot-interval-ms".into(),
            "2000".into(),
            "--timeout-ms".into(),
            "1000".into(),
            "--etcd".into(),
            "/usr/local/bin/etcd".into(),
            "--etcdutl".into(),
            "/usr/local/bin/etcdutl".into(),
            // etcd listens on every interface; it advertises the container's name.
            "--etcd-arg=--listen-client-urls=http://0.0.0.0:2379".into(),
            "--etcd-arg=--listen-peer-urls=http://0.0.0.0:2380".into(),
            "--etcd-arg=--heartbeat-interval=100".into(),
            "--etcd-arg=--election-timeout=1000".into(),
            "--etcd-arg=--log-level=warn".into(),
        ];
        let container = self
            .images
            .agent
            .generic()
            .with_exposed_port(2379.tcp())
            .with_wait_for(WaitFor::Nothing)
            .with_network(self.network.clone())
            .with_container_name(host)
            .with_mount(Mount::bind_mount(member.disk.display().to_string(), "/data"))
            .with_env_var("LIFEBOAT_LOG", "info")
            .with_env_var("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .with_env_var("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .with_env_var("AWS_EC2_METADATA_DISABLED", "true")
            .with_env_var("LIFEBOAT_S3_ENDPOINT", format!("http://{}:{S3_PORT}", self.s3_host))
            .with_env_var("LIFEBOAT_S3_REGION", "us-east-1")
            .with_cmd(args)
            .start()
            .await
            .expect("start a member container");
        self.members[index].container = Some(container);
    }

    fn container(&self, index: usize) -> &ContainerAsync<GenericImage> {
        self.members[index].container.as_ref().expect("the member's container runs")
    }

    /// `host:port` of member `index`'s client port on this machine.
    pub async fn client_address(&self, index: usize) -> Option<String> {
        let container = self.members[index].container.as_ref()?;
        let port = container.get_host_port_ipv4(2379.tcp()).await.ok()?;
        Some(format!("127.0.0.1:{port}"))
    }

    pub async fn healthy(&self, index: usize) -> bool {
        let Some(address) = self.client_address(index).await else { return false };
        tokio::task::spawn_blocking(move || {
            lifeboat_testkit::http_get(&address, "/health")
                .is_some_and(|(status, body)| status == 200 && body.contains("\"true\""))
        })
        .await
        .unwrap_or(false)
    }

    pub async fn healthy_count(&self) -> usize {
        let mut count = 0;
        for index in 0..self.members.len() {
            if self.healthy(index).await {
                count += 1;
            }
        }
        count
    }

    pub async fn wait_healthy(&self, count: usize, timeout: Duration) -> bool {
        self.watchdog.step(format!("wait up to {} s for {count} healthy", timeout.as_secs()));
        let healthy = wait_for(timeout, || async { self.healthy_count().await >= count }).await;
        self.watchdog.step(if healthy { "… healthy" } else { "… not healthy in time" });
        healthy
    }

    /// etcd clients on this machine: every member's mapped client port that answers.
    pub async fn client(&self) -> Option<etcd_client::Client> {
        let mut endpoints = Vec::new();
        for index in 0..self.members.len() {
            if self.healthy(index).await {
                if let Some(address) = self.client_address(index).await {
                    endpoints.push(format!("http://{address}"));
                }
            }
        }
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(3));
        etcd_client::Client::connect(endpoints, Some(options)).await.ok()
    }

    // ---- faults ------------------------------------------------------------

    /// `docker kill`: the machine stops at once (agent and etcd); its disk stays.
    pub async fn kill(&self, index: usize) {
        self.watchdog.step(format!("docker kill m{index}"));
        docker(&["kill", self.container(index).id()]).expect("docker kill");
    }

    /// Starts a stopped or killed member's container again, with its disk.
    pub async fn restart(&self, index: usize) {
        self.watchdog.step(format!("docker start m{index}"));
        self.container(index).start().await.expect("docker start");
    }

    pub async fn pause_s3(&self) {
        self.watchdog.step("pause s3");
        self.s3.pause().await.expect("docker pause");
    }

    pub async fn unpause_s3(&self) {
        self.watchdog.step("unpause s3");
        self.s3.unpause().await.expect("docker unpause");
    }

    /// Cuts the member off the network (peers, clients, store); `reconnect` heals it.
    pub fn disconnect(&self, index: usize) {
        self.watchdog.step(format!("disconnect m{index}"));
        docker(&["network", "disconnect", &self.network, self.container(index).id()]).expect("disconnect");
    }

    pub fn reconnect(&self, index: usize) {
        self.watchdog.step(format!("reconnect m{index}"));
        docker(&["network", "connect", &self.network, self.container(index).id()]).expect("connect");
    }

    fn store_network(&self) -> String {
        format!("{}-store", self.network)
    }

    /// Cuts the member off its peers and the clients but not the store: it moves to a
    /// network only the S3 server is also on. `rejoin` moves it back.
    pub fn isolate_keeping_store(&self, index: usize) {
        self.watchdog.step(format!("isolate (store kept) m{index}"));
        let store = self.store_network();
        if docker(&["network", "inspect", &store]).is_err() {
            docker(&["network", "create", &store]).expect("create the store-only network");
            docker(&["network", "connect", &store, self.s3.id()]).expect("connect S3 to it");
        }
        docker(&["network", "disconnect", &self.network, self.container(index).id()]).expect("disconnect");
        docker(&["network", "connect", &store, self.container(index).id()]).expect("connect to the store");
    }

    pub fn rejoin(&self, index: usize) {
        self.watchdog.step(format!("rejoin m{index}"));
        docker(&["network", "disconnect", &self.store_network(), self.container(index).id()]).expect("disconnect");
        self.reconnect(index);
    }

    /// `docker stop` (SIGTERM, then SIGKILL after `grace_seconds`): a clean shutdown.
    pub async fn stop(&self, index: usize, grace_seconds: i32) {
        self.watchdog.step(format!("docker stop m{index}"));
        self.container(index).stop_with_timeout(Some(grace_seconds)).await.expect("docker stop");
    }

    /// The member's volume is wiped while its container is down; the same container
    /// (same name, same agent settings) then starts on the empty disk.
    pub async fn wipe(&self, index: usize) {
        self.watchdog.step(format!("wipe m{index}"));
        self.kill(index).await;
        let disk = &self.members[index].disk;
        let _ = std::fs::remove_dir_all(disk);
        create_disk(disk);
        self.restart(index).await;
    }

    /// The machine is gone for good: its container and its disk. `start_member` then
    /// brings a fresh machine with an empty disk in its place.
    pub async fn lose(&mut self, index: usize) {
        self.watchdog.step(format!("lose m{index}"));
        if let Some(container) = self.members[index].container.take() {
            let _ = container.rm().await;
        }
        let _ = std::fs::remove_dir_all(&self.members[index].disk);
    }

    // ---- observation ------------------------------------------------------

    pub fn journal(&self, index: usize) -> String {
        std::fs::read_to_string(self.members[index].disk.join("state/journal.jsonl")).unwrap_or_default()
    }

    /// The agents' logs (stderr) and journal tails, for a failure message.
    pub async fn logs(&self) -> String {
        self.watchdog.step("collect the agents' logs");
        let mut out = String::new();
        for (index, member) in self.members.iter().enumerate() {
            out.push_str(&format!("--- {} ---\n", member.name));
            if let Some(container) = &member.container {
                if let Ok(bytes) = container.stderr_to_vec().await {
                    let text = String::from_utf8_lossy(&bytes);
                    let lines: Vec<&str> = text.lines().rev().take(15).collect();
                    out.push_str(&lines.into_iter().rev().collect::<Vec<_>>().join("\n"));
                    out.push('\n');
                }
            }
            let journal = self.journal(index);
            let tail: Vec<&str> =
                journal.lines().filter(|line| !line.contains("\"observation\"")).rev().take(10).collect();
            out.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            out.push('\n');
        }
        out
    }

    /// Keys under the store's prefix.
    pub async fn store_keys(&self, prefix: &str) -> Vec<String> {
        let client = DockerCluster::s3_client(&self.s3_endpoint_on_host().await);
        match client.list_objects_v2().bucket(BUCKET).prefix(prefix).send().await {
            Ok(listing) => listing.contents().iter().filter_map(|object| object.key().map(str::to_owned)).collect(),
            Err(_) => Vec::new(),
        }
    }

    pub async fn get_object(&self, key: &str) -> Option<Vec<u8>> {
        let client = DockerCluster::s3_client(&self.s3_endpoint_on_host().await);
        let object = client.get_object().bucket(BUCKET).key(key).send().await.ok()?;
        object.body.collect().await.ok().map(|bytes| bytes.into_bytes().to_vec())
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        self.watchdog.step("remove the cluster");
        // A store-only network of ours goes first (testcontainers knows only the main one).
        let store = self.store_network();
        if docker(&["network", "inspect", &store]).is_ok() {
            let ids =
                self.members.iter().filter_map(|member| member.container.as_ref()).map(|container| container.id());
            for id in ids.chain(std::iter::once(self.s3.id())) {
                let _ = docker(&["network", "disconnect", "-f", &store, id]);
            }
            let _ = docker(&["network", "rm", &store]);
        }
        // The containers go with their handles (testcontainers removes them); the
        // disks, written by root in the containers, go here.
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

async fn start_s3(
    images: &Images,
    network: &str,
    host: &str,
    directory: &std::path::Path,
) -> ContainerAsync<GenericImage> {
    let image = images.s3.generic().with_exposed_port(S3_PORT.tcp()).with_wait_for(WaitFor::Nothing);
    let request = match images.s3_flavour {
        S3Flavour::SeaweedFs => {
            let config = format!(
                "{{\"identities\":[{{\"name\":\"test\",\"credentials\":[{{\"accessKey\":\"{S3_ACCESS_KEY}\",\"secretKey\":\"{S3_SECRET_KEY}\"}}],\"actions\":[\"Admin\",\"Read\",\"List\",\"Tagging\",\"Write\"]}}]}}"
            );
            let config_dir = directory.join("s3-config");
            std::fs::create_dir_all(&config_dir).expect("create the S3 config dir");
            std::fs::write(config_dir.join("s3.json"), config).expect("write s3.json");
            image
                .with_network(network)
                .with_container_name(host)
                .with_mount(Mount::bind_mount(config_dir.display().to_string(), "/config"))
                .with_env_var("TMPDIR", "/tmp")
                .with_cmd([
                    "-logtostderr",
                    "mini",
                    "-dir=/data",
                    "-ip=127.0.0.1",
                    "-ip.bind=0.0.0.0",
                    "-s3.port=8333",
                    "-admin.ui=false",
                    "-webdav=false",
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                    "-master.telemetry=false",
                    "-s3.config=/config/s3.json",
                ])
        }
        S3Flavour::Minio => image
            .with_network(network)
            .with_container_name(host)
            .with_env_var("MINIO_ROOT_USER", S3_ACCESS_KEY)
            .with_env_var("MINIO_ROOT_PASSWORD", S3_SECRET_KEY)
            .with_cmd(["server", "/data", "--address", ":8333"]),
    };
    request.start().await.expect("start the S3 container")
}

/// A member's disk, bind-mounted at `/data`: writable by the image's unprivileged
/// user (65532), as a volume owned by that user would be in production.
fn create_disk(disk: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(disk).expect("create the member's disk");
    std::fs::set_permissions(disk, std::fs::Permissions::from_mode(0o777))
        .expect("open the member's disk to the image's user");
}
