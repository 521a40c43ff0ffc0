//! The Kubernetes manifests (`runtime/kubernetes/`) run as written. Kubernetes is not
//! here, so [`Pod`] does what the kubelet would: the downward API, the ConfigMap and
//! the Secret, `$(VAR)` in arguments, host paths and empty dirs as directories of the
//! test, and the image's own environment (`runtime/container/Dockerfile`). Everything
//! else (the arguments, the probes, the ports, the example config file) is the
//! manifest's, run against a real etcd in kubeadm's PKI layout with mutual TLS and a
//! real S3 server: the agent must pass both probes and save a snapshot.

use crate::support::{lifeboat_command, BUCKET};
use lifeboat_testkit::{self as testkit, free_port, http_get, wait_until, LocalEtcdCluster, S3Server};
use serde::Deserialize;
use serde_norway::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/kubernetes");

fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(MANIFESTS).join(file)).expect("read the manifest");
    serde_norway::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap_or_else(|error| panic!("{file} is not YAML: {error}")))
        .collect()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_else(|| panic!("expected a string, found {value:?}"))
}

fn list(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

/// One manifest's lifeboat container, laid out on this machine as the kubelet would.
struct Pod {
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// What the probes ask for: (path, port).
    probes: Vec<(String, u16)>,
    /// `--metrics-listen`, remapped to a free loopback port.
    metrics: String,
    /// Where the manifest's `/var/lib/lifeboat` is here.
    state_dir: PathBuf,
}

struct Host<'a> {
    etcd: &'a LocalEtcdCluster,
    s3: &'a S3Server,
    dir: &'a Path,
    /// The store prefix this manifest's agent writes under.
    store: String,
}

impl Host<'_> {
    /// This site's value of a setting the manifests leave to the operator (named as
    /// the flag and the config key are), or `None` to keep the manifest's.
    fn site_value(&self, setting: &str) -> Option<String> {
        let member = &self.etcd.members[0];
        match setting {
            "store" => Some(self.store.clone()),
            "s3-region" => Some("us-east-1".into()),
            "endpoints" => Some(member.client_url.clone()),
            "initial-cluster" => Some(format!("{}={}", member.name, member.peer_url)),
            _ => None,
        }
    }
}

impl Pod {
    fn from_manifest(file: &str, host: &Host) -> Pod {
        let documents = documents(file);
        let spec = documents
            .iter()
            .find_map(|document| match document["kind"].as_str() {
                Some("Pod") => Some(&document["spec"]),
                Some("DaemonSet") => Some(&document["spec"]["template"]["spec"]),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{file} holds no Pod and no DaemonSet"));
        assert_eq!(spec["hostNetwork"].as_bool(), Some(true), "{file}: etcd listens on the host's network");
        let container = list(&spec["containers"])
            .iter()
            .find(|container| container["name"].as_str() == Some("lifeboat"))
            .unwrap_or_else(|| panic!("{file} has no container named lifeboat"));
        assert!(text(&container["image"]).starts_with("lifeboat:"), "{file}: the image scripts/build-image tags");
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true), "{file}: read-only root filesystem");
        assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false), "{file}: no privilege escalation");

        // Volumes: kubeadm's PKI and etcd's data dir are the test cluster's; other host
        // paths and empty dirs are directories of the test.
        let member = &host.etcd.members[0];
        let pki = host.etcd.pki.as_ref().expect("a TLS cluster");
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for mount in list(&container["volumeMounts"]) {
            let name = text(&mount["name"]);
            let volume = list(&spec["volumes"])
                .iter()
                .find(|volume| volume["name"].as_str() == Some(name))
                .unwrap_or_else(|| panic!("{file}: volume {name} is mounted but not declared"));
            let target = match volume["hostPath"]["path"].as_str() {
                Some("/etc/kubernetes/pki/etcd") => pki.dir.clone(),
                Some("/var/lib/etcd") => member.data_dir.clone(),
                Some(path) => host.dir.join(path.trim_start_matches('/').replace('/', "_")),
                None => host.dir.join(format!("emptydir-{name}")),
            };
            std::fs::create_dir_all(&target).unwrap();
            mounts.push((text(&mount["mountPath"]).to_owned(), target));
        }
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let map_path = |value: &str| -> String {
            for (mount, target) in &mounts {
                if let Some(rest) = value.strip_prefix(mount.as_str()) {
                    if rest.is_empty() || rest.starts_with('/') {
                        return format!("{}{rest}", target.display());
                    }
                }
            }
            value.to_owned()
        };

        // The image's ENV (runtime/container/Dockerfile), with its paths on this machine.
        let mut env: Vec<(String, String)> = vec![
            ("LIFEBOAT_ETCD".into(), testkit::binary("etcd").display().to_string()),
            ("LIFEBOAT_ETCDUTL".into(), testkit::binary("etcdutl").display().to_string()),
            ("TMPDIR".into(), map_path("/tmp")),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ];
        // The ConfigMap, with the store pointed at the test's S3 server.
        for source in list(&container["envFrom"]) {
            let name = text(&source["configMapRef"]["name"]);
            let config_map = documents
                .iter()
                .find(|document| {
                    document["kind"].as_str() == Some("ConfigMap")
                        && document["metadata"]["name"].as_str() == Some(name)
                })
                .unwrap_or_else(|| panic!("{file}: ConfigMap {name} is referenced but not in the file"));
            for (key, value) in config_map["data"].as_mapping().into_iter().flatten() {
                let (key, value) = (text(key).to_owned(), text(value).to_owned());
                let setting = key.strip_prefix("LIFEBOAT_").unwrap_or_default().to_lowercase().replace('_', "-");
                env.push((key, host.site_value(&setting).unwrap_or(value)));
            }
            env.push(("LIFEBOAT_S3_ENDPOINT".into(), host.s3.endpoint()));
        }
        let s3_env = host.s3.env();
        for variable in list(&container["env"]) {
            let name = text(&variable["name"]).to_owned();
            let from = &variable["valueFrom"];
            let value = if let Some(value) = variable["value"].as_str() {
                map_path(value)
            } else if let Some(field) = from["fieldRef"]["fieldPath"].as_str() {
                match field {
                    "spec.nodeName" => member.name.clone(),
                    "status.hostIP" => "127.0.0.1".into(),
                    other => panic!("{file}: the downward API field {other} is not mapped here"),
                }
            } else if let Some(key) = from["secretKeyRef"]["key"].as_str() {
                let secret = s3_env.iter().find(|(name, _)| name == key);
                secret.unwrap_or_else(|| panic!("{file}: secret key {key} is not an S3 credential")).1.clone()
            } else {
                panic!("{file}: env {name} has no value this test can give")
            };
            env.push((name, value));
        }

        // Arguments: `$(VAR)` from the environment, mount paths, and etcd's and the metrics'
        // ports (kubeadm's 2379 and 2380, the manifest's 9479) moved to free ones.
        let client = member.client_url.trim_start_matches("https://").to_owned();
        let peer = member.peer_url.trim_start_matches("https://").to_owned();
        let metrics = format!("127.0.0.1:{}", free_port(&[]));
        let args: Vec<String> = list(&container["args"])
            .iter()
            .map(|arg| {
                let mut arg = text(arg).to_owned();
                for (name, value) in &env {
                    arg = arg.replace(&format!("$({name})"), value);
                }
                arg = arg.replace("127.0.0.1:2379", &client).replace("127.0.0.1:2380", &peer);
                arg = arg.replace("0.0.0.0:9479", &metrics);
                match arg.split_once('=') {
                    Some((flag, value)) if flag.starts_with("--") => format!("{flag}={}", map_path(value)),
                    _ => arg,
                }
            })
            .collect();
        let listen = args.iter().find_map(|arg| arg.strip_prefix("--metrics-listen=")).unwrap_or_default();
        assert_eq!(listen, metrics, "{file}: the agent serves its probes (--metrics-listen=0.0.0.0:9479)");
        let probes: Vec<(String, u16)> = ["livenessProbe", "readinessProbe"]
            .iter()
            .map(|probe| {
                let get = &container[*probe]["httpGet"];
                let port = get["port"].as_u64().and_then(|port| u16::try_from(port).ok());
                (text(&get["path"]).to_owned(), port.unwrap_or_else(|| panic!("{file}: {probe} has no port")))
            })
            .collect();
        for (path, port) in &probes {
            assert_eq!(*port, 9479, "{file}: the probe of {path} asks the port the agent listens on");
        }
        assert_eq!(probes.iter().map(|(path, _)| path.as_str()).collect::<Vec<_>>(), ["/healthz", "/readyz"]);
        Pod { args, env, probes, metrics, state_dir: PathBuf::from(map_path("/var/lib/lifeboat")) }
    }

    fn start(&self) -> Running {
        let log = std::fs::File::create(self.state_dir.join("agent.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(key, value)| (key.as_str(), value.as_str())))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the manifest's lifeboat");
        Running { child }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("agent.log")).unwrap_or_default()
    }
}

struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        testkit::terminate(&mut self.child, Duration::from_secs(10));
    }
}

fn run(file: &str, host_files: impl Fn(&Host, &Path)) {
    if !testkit::require(&["etcd", "etcdctl", "etcdutl", "weed"]) {
        return;
    }
    let etcd = LocalEtcdCluster::start_tls(1);
    let s3 = S3Server::start();
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(s3.create_bucket(BUCKET));
    let dir = tempfile::Builder::new().prefix("lifeboat-k8s-").tempdir().unwrap();
    let host = Host { etcd: &etcd, s3: &s3, dir: dir.path(), store: format!("s3://{BUCKET}/{file}") };
    let pod = Pod::from_manifest(file, &host);
    host_files(&host, &dir.path().join("etc_lifeboat"));
    let _running = pod.start();
    for (path, _) in &pod.probes {
        let answered = wait_until(Duration::from_secs(60), || {
            http_get(&pod.metrics, path).is_some_and(|(status, _)| status == 200)
        });
        assert!(answered, "{file}: {path} did not answer 200 within 60 s:\n{}", pod.log());
    }
    let store = host.store.clone();
    let saved = wait_until(Duration::from_secs(120), || {
        let listing = lifeboat_command()
            .envs(s3.env())
            .args(["snapshots", "list", "--output", "json", "--store", &store, "--cluster", "kube"])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&listing.stdout)
            .ok()
            .and_then(|listing| listing["snapshots"].as_array().map(|snapshots| !snapshots.is_empty()))
            .unwrap_or(false)
    });
    assert!(saved, "{file}: no snapshot saved within 120 s:\n{}", pod.log());
}

/// `lifeboat-static-pod.yaml`, with `/etc/lifeboat/lifeboat.toml` made from the
/// example beside it (store and region pointed at the test's S3, endpoints and
/// member list at the test's etcd) and the AWS shared-credentials file it names.
#[test]
fn the_static_pod_manifest_backs_up_a_kubeadm_etcd() {
    run("lifeboat-static-pod.yaml", |host, config_dir| {
        let example = std::fs::read_to_string(Path::new(MANIFESTS).join("lifeboat.toml.example")).unwrap();
        let mut config: Vec<String> = example
            .lines()
            .map(|line| {
                let key = line.split_once(" = ").map(|(key, _)| key).unwrap_or_default();
                match (key, host.site_value(key)) {
                    ("endpoints", Some(value)) => format!("endpoints = [\"{value}\"]"),
                    (_, Some(value)) => format!("{key} = \"{value}\""),
                    (_, None) => line.to_owned(),
                }
            })
            .collect();
        config.push(format!("s3-endpoint = \"{}\"", host.s3.endpoint()));
        std::fs::write(config_dir.join("lifeboat.toml"), config.join("\n")).unwrap();
        let key = |name: &str| host.s3.env().into_iter().find(|(key, _)| key == name).map(|(_, value)| value).unwrap();
        let credentials = format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            key("AWS_ACCESS_KEY_ID"),
            key("AWS_SECRET_ACCESS_KEY")
        );
        std::fs::write(config_dir.join("aws-credentials"), credentials).unwrap();
    });
}

/// `lifeboat-daemonset.yaml`: settings from its ConfigMap (store and region pointed
/// at the test's S3, endpoints and member list at the test's etcd), credentials
/// from the Secret's keys.
#[test]
fn the_daemonset_manifest_backs_up_a_kubeadm_etcd() {
    run("lifeboat-daemonset.yaml", |_, _| {});
}
