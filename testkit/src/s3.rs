//! A real S3 server (SeaweedFS `weed mini`) on loopback, with credentials enforced.

use super::{binary, free_port, http_get, terminate, wait_until};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct S3Server {
    /// The address it listens on and advertises (loopback unless a test needs otherwise).
    pub host: String,
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
    /// An HTTPS port besides the plain one, with its certificate and key.
    pub https: Option<(u16, std::path::PathBuf, std::path::PathBuf)>,
    child: Option<Child>,
    ports: [u16; 3],
    directory: tempfile::TempDir,
}

impl S3Server {
    /// Starts SeaweedFS on loopback and waits (at most 30 s) for its S3 API.
    pub fn start() -> S3Server {
        S3Server::start_on("127.0.0.1")
    }

    /// Starts SeaweedFS on `host` (an address of this machine).
    pub fn start_on(host: &str) -> S3Server {
        S3Server::start_with(host, None)
    }

    /// Starts SeaweedFS on loopback serving S3 over HTTPS too, with the server
    /// certificate of `pki` (a private CA: clients must be told to trust it).
    pub fn start_https(pki: &super::KubeadmPki) -> S3Server {
        S3Server::start_with("127.0.0.1", Some((pki.path("server.crt"), pki.path("server.key"))))
    }

    fn start_with(host: &str, tls: Option<(std::path::PathBuf, std::path::PathBuf)>) -> S3Server {
        let directory = tempfile::Builder::new().prefix("lifeboat-s3-").tempdir().expect("create a temp dir");
        let mut server = S3Server {
            host: host.to_owned(),
            port: free_port(&[10000]),
            access_key: "lifeboat-test".into(),
            secret_key: "lifeboat-test-secret".into(),
            https: tls.map(|(cert, key)| (free_port(&[]), cert, key)),
            child: None,
            ports: [free_port(&[10000]), free_port(&[10000]), free_port(&[10000])],
            directory,
        };
        let config = format!(
            "{{\"identities\":[{{\"name\":\"test\",\"credentials\":[{{\"accessKey\":\"{}\",\"secretKey\":\"{}\"}}],\"actions\":[\"Admin\",\"Read\",\"List\",\"Tagging\",\"Write\"]}}]}}",
            server.access_key, server.secret_key
        );
        std::fs::write(server.directory.path().join("s3.json"), config).expect("write s3.json");
        std::fs::create_dir_all(server.directory.path().join("data")).expect("create the data dir");
        server.spawn();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The HTTPS endpoint, when started with [`S3Server::start_https`].
    pub fn https_endpoint(&self) -> Option<String> {
        self.https.as_ref().map(|(port, _, _)| format!("https://{}:{port}", self.host))
    }

    fn spawn(&mut self) {
        let path = self.directory.path();
        let log = std::fs::File::create(path.join("weed.log")).expect("create the log");
        let [master, volume, filer] = self.ports;
        let child = Command::new(binary("weed"))
            .arg("-logtostderr")
            .arg("mini")
            .arg(format!("-dir={}", path.join("data").display()))
            .arg(format!("-ip={}", self.host))
            .arg(format!("-ip.bind={}", self.host))
            .arg(format!("-s3.port={}", self.port))
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .args([
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
            ])
            .arg(format!("-s3.config={}", path.join("s3.json").display()))
            .args(self.https.iter().flat_map(|(port, cert, key)| {
                [
                    format!("-s3.port.https={port}"),
                    format!("-s3.cert.file={}", cert.display()),
                    format!("-s3.key.file={}", key.display()),
                ]
            }))
            .env("TMPDIR", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone a log handle"))
            .stderr(log)
            .spawn()
            .expect("start weed (run scripts/install-deps)");
        self.child = Some(child);
        let address = format!("{}:{}", self.host, self.port);
        let up = wait_until(Duration::from_secs(30), || http_get(&address, "/").is_some());
        assert!(up, "S3 server did not answer within 30 s: {}", self.log_tail());
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.directory.path().join("weed.log")).unwrap_or_default();
        log.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Stops the server (an outage); `resume` brings it back with its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
    }

    pub fn resume(&mut self) {
        self.spawn();
        self.wait_serving(Duration::from_secs(60));
    }

    /// Waits until an object can be written and read back. After a restart the S3
    /// API answers before the volume server has registered again, and reads of
    /// existing objects fail with InternalError until it has. The probe lives in a
    /// bucket of its own, so tests listing theirs never see it.
    fn wait_serving(&self, timeout: Duration) {
        const PROBE_BUCKET: &str = "lifeboat-testkit-probe";
        let client = self.client();
        let probe = || async {
            let _ = client.create_bucket().bucket(PROBE_BUCKET).send().await;
            let body = aws_sdk_s3::primitives::ByteStream::from_static(b"probe");
            client.put_object().bucket(PROBE_BUCKET).key("probe").body(body).send().await.ok()?;
            let read = client.get_object().bucket(PROBE_BUCKET).key("probe").send().await.ok()?;
            read.body.collect().await.ok().map(|bytes| bytes.into_bytes() == b"probe"[..])
        };
        // A thread of its own: callers may already be inside a runtime.
        let serving = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime =
                        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                    runtime.block_on(async {
                        let deadline = std::time::Instant::now() + timeout;
                        loop {
                            if probe().await == Some(true) {
                                return true;
                            }
                            if std::time::Instant::now() >= deadline {
                                return false;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    })
                })
                .join()
                .expect("the probe thread does not panic")
        });
        assert!(serving, "S3 server did not serve objects within {timeout:?} of a restart: {}", self.log_tail());
    }

    /// Environment for a `lifeboat` process talking to this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("LIFEBOAT_S3_ENDPOINT".into(), self.endpoint()),
            ("LIFEBOAT_S3_REGION".into(), "us-east-1".into()),
        ]
    }

    /// An S3 client with this server's endpoint and credentials.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let credentials =
            aws_sdk_s3::config::Credentials::new(&self.access_key, &self.secret_key, None, None, "lifeboat-testkit");
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(credentials)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates a bucket (idempotent), retrying while the server finishes starting.
    pub async fn create_bucket(&self, bucket: &str) {
        let client = self.client();
        let mut last_error = String::new();
        // A loaded machine can take a while between the port answering and the S3 API being ready.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            match client.create_bucket().bucket(bucket).send().await {
                Ok(_) => return,
                Err(error) => {
                    let text = format!("{}", aws_sdk_s3::error::DisplayErrorContext(&error));
                    if text.contains("BucketAlreadyOwnedByYou") || text.contains("BucketAlreadyExists") {
                        return;
                    }
                    last_error = text;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("cannot create bucket {bucket} within 60 s: {last_error}\n{}", self.log_tail());
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
