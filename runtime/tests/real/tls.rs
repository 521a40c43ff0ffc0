//! A kubeadm-shaped etcd: three members serving clients and peers over mutual TLS
//! (`--client-cert-auth`, `--peer-client-cert-auth`) with certificates laid out as
//! kubeadm lays them out, and then with RBAC users on top.

use crate::support::{lifeboat_command, CLUSTER};
use lifeboat_testkit::{self as testkit, KubeadmPki, LocalEtcdCluster};
use std::process::Output;

struct TlsFixture {
    etcd: LocalEtcdCluster,
    scratch: tempfile::TempDir,
}

fn tls_fixture() -> Option<TlsFixture> {
    if !testkit::require(&["etcd", "etcdctl", "etcdutl"]) {
        return None;
    }
    let etcd = LocalEtcdCluster::start_tls(3);
    let scratch = tempfile::Builder::new().prefix("lifeboat-tls-").tempdir().expect("a temp dir");
    Some(TlsFixture { etcd, scratch })
}

impl TlsFixture {
    fn pki(&self) -> &KubeadmPki {
        self.etcd.pki.as_ref().expect("a TLS cluster has its PKI")
    }

    /// `lifeboat ARGS` with the cluster's https endpoints and a file store, and
    /// nothing else: TLS settings come from the arguments.
    fn lifeboat(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        lifeboat_command()
            .env("LIFEBOAT_ENDPOINTS", self.etcd.endpoints_joined())
            .env("LIFEBOAT_STORE", format!("file://{}", self.scratch.path().join("store").display()))
            .env("LIFEBOAT_CLUSTER", CLUSTER)
            .env("LIFEBOAT_TIMEOUT_MS", "5000")
            .envs(env.iter().copied())
            .args(args)
            .output()
            .expect("run lifeboat")
    }

    fn kubeadm_args(&self) -> Vec<String> {
        vec!["--kubeadm".into(), "--kubeadm-pki".into(), self.pki().dir.display().to_string()]
    }
}

fn text(output: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "lifeboat failed ({}):\n{}", output.status, text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_kubeadm_tls_cluster_is_saved_checked_and_verified_from_its_pki_layout() {
    let Some(fixture) = tls_fixture() else { return };
    fixture.etcd.put_many("tls/", 20, 64);
    let kubeadm = fixture.kubeadm_args();
    let with_kubeadm = |command: &[&str]| -> Output {
        let mut args: Vec<&str> = command.to_vec();
        args.extend(kubeadm.iter().map(String::as_str));
        fixture.lifeboat(&args, &[])
    };

    let check_text = ok(with_kubeadm(&["check"]));
    assert!(check_text.contains("3 of 3 voting members healthy"), "{check_text}");

    let save = ok(with_kubeadm(&["save", "--output", "json"]));
    let report: serde_json::Value = serde_json::from_str(&save).expect("save prints JSON");
    let revision = report["revision"].as_u64().expect("a revision");
    assert!(revision >= 21, "saved revision {revision} holds the 20 puts");
    assert!(report["source_endpoint"].as_str().is_some_and(|endpoint| endpoint.starts_with("https://")), "{report}");

    // The snapshot restores like any other: verify needs no etcd access at all.
    let verify = ok(fixture.lifeboat(&["snapshots", "verify", "--all"], &[]));
    assert!(verify.contains("ok") && !verify.contains("FAILED"), "{verify}");
    let restored = fixture.scratch.path().join("restored.etcd");
    let restored_text = restored.display().to_string();
    ok(fixture.lifeboat(
        &[
            "restore",
            "--data-dir",
            &restored_text,
            "--name",
            "etcd0",
            "--initial-cluster",
            "etcd0=https://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "https://127.0.0.1:2380",
            "--initial-cluster-token",
            "restored",
            "--etcdutl",
            &testkit::binary("etcdutl").display().to_string(),
        ],
        &[],
    ));
    assert!(restored.join("member").is_dir());
}

#[test]
fn tls_mistakes_are_named_before_or_at_connect() {
    let Some(fixture) = tls_fixture() else { return };
    let pki = fixture.pki();
    let file = |name: &str| pki.path(name).display().to_string();

    // https:// with no CA to trust: a usage error that names the fix, before any connect.
    let output = fixture.lifeboat(&["check", "--kubeadm-pki", "/nonexistent"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("--cacert"), "{}", text(&output));

    // A CA but no client certificate, while etcd requires one: refused at the TLS layer.
    let output = fixture.lifeboat(&["save", "--cacert", &file("ca.crt"), "--kubeadm-pki", "/nonexistent"], &[]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));

    // A CA that did not sign etcd's certificates: the message points at --cacert.
    let other = KubeadmPki::generate(&fixture.scratch.path().join("other-pki"));
    let output = fixture.lifeboat(
        &[
            "save",
            "--cacert",
            &other.path("ca.crt").display().to_string(),
            "--cert",
            &file("healthcheck-client.crt"),
            "--key",
            &file("healthcheck-client.key"),
            "--kubeadm-pki",
            "/nonexistent",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert!(text(&output).contains("--cacert"), "{}", text(&output));

    // A certificate without its key, and a key file that is not one: usage errors.
    let output = fixture.lifeboat(
        &["check", "--cacert", &file("ca.crt"), "--cert", &file("healthcheck-client.crt"), "--kubeadm-pki", "/x"],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let output = fixture.lifeboat(
        &[
            "check",
            "--cacert",
            &file("ca.crt"),
            "--cert",
            &file("healthcheck-client.crt"),
            "--key",
            &file("healthcheck-client.crt"),
            "--kubeadm-pki",
            "/x",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("--key") && text(&output).contains("PRIVATE KEY"), "{}", text(&output));

    // Nothing was written by any of the failed saves.
    assert!(!fixture.scratch.path().join("store").join(CLUSTER).join("exported/etcd-snapshots/snapshot.db").exists());
}

#[test]
fn an_rbac_user_saves_and_a_wrong_password_is_refused_without_showing_it() {
    let Some(fixture) = tls_fixture() else { return };
    fixture.etcd.put_many("rbac/", 5, 32);
    fixture.etcd.etcdctl(&["user", "add", "root", "--new-user-password=correct-horse"]);
    fixture.etcd.etcdctl(&["auth", "enable"]);
    let kubeadm = fixture.kubeadm_args();
    let mut args: Vec<&str> = vec!["save", "--output", "json", "--user", "root"];
    args.extend(kubeadm.iter().map(String::as_str));

    let output = fixture.lifeboat(&args, &[("LIFEBOAT_PASSWORD", "wrong-battery")]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert!(text(&output).contains("--user"), "{}", text(&output));
    assert!(!text(&output).contains("wrong-battery"), "the password leaked: {}", text(&output));

    let password_file = fixture.scratch.path().join("etcd-password");
    std::fs::write(&password_file, "correct-horse\n").expect("write the password file");
    let password_path = password_file.display().to_string();
    let mut with_file = args.clone();
    with_file.extend(["--password-file", password_path.as_str()]);
    let save = ok(fixture.lifeboat(&with_file, &[]));
    assert!(!save.contains("correct-horse"), "the password leaked: {save}");
    let report: serde_json::Value = serde_json::from_str(&save).expect("save prints JSON");
    assert!(report["revision"].as_u64().is_some_and(|revision| revision >= 6), "{report}");

    // A password on the command line is refused, and not echoed.
    let mut inline: Vec<&str> = vec!["check", "--user", "root:correct-horse"];
    inline.extend(kubeadm.iter().map(String::as_str));
    let output = fixture.lifeboat(&inline, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(!text(&output).contains("correct-horse"), "{}", text(&output));
}

#[test]
fn an_s3_endpoint_behind_a_private_ca_is_trusted_only_with_s3_ca_file() {
    if !testkit::require(&["etcd", "etcdctl", "etcdutl", "weed"]) {
        return;
    }
    let scratch = tempfile::Builder::new().prefix("lifeboat-s3-tls-").tempdir().expect("a temp dir");
    let pki = KubeadmPki::generate(&scratch.path().join("pki"));
    let s3 = testkit::S3Server::start_https(&pki);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(s3.create_bucket("lifeboat-tls"));
    let etcd = LocalEtcdCluster::start(1);
    etcd.put_many("s3tls/", 10, 64);
    let https = s3.https_endpoint().expect("an https endpoint");
    let run = |args: &[&str]| -> Output {
        lifeboat_command()
            .envs(s3.env())
            .env("LIFEBOAT_S3_ENDPOINT", &https)
            .env("LIFEBOAT_ENDPOINTS", etcd.endpoints_joined())
            .env("LIFEBOAT_STORE", "s3://lifeboat-tls/backups")
            .env("LIFEBOAT_CLUSTER", CLUSTER)
            .env("LIFEBOAT_TIMEOUT_MS", "5000")
            .env("LIFEBOAT_KUBEADM_PKI", "/nonexistent")
            .args(args)
            .output()
            .expect("run lifeboat")
    };

    // Without the CA the handshake fails (the system roots do not know it); nothing is written.
    let refused = run(&["save"]);
    assert_eq!(refused.status.code(), Some(5), "{}", text(&refused));
    assert!(text(&refused).contains("--s3-ca-file"), "{}", text(&refused));

    // A file that is not a certificate is a usage error naming the flag.
    let bogus = scratch.path().join("not-a-ca.pem");
    std::fs::write(&bogus, "hello").expect("write a bogus CA");
    let output = run(&["save", "--s3-ca-file", &bogus.display().to_string()]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("--s3-ca-file"), "{}", text(&output));

    // With it: a save over HTTPS (unsigned payload, CRC32C per part), listed and verified.
    let ca = pki.path("ca.crt").display().to_string();
    let save = ok(run(&["save", "--output", "json", "--s3-ca-file", &ca]));
    let report: serde_json::Value = serde_json::from_str(&save).expect("save prints JSON");
    assert!(report["location"].as_str().is_some_and(|location| location.contains("lifeboat-tls")), "{report}");
    let verify = ok(run(&["snapshots", "verify", "--all", "--s3-ca-file", &ca]));
    assert!(!verify.contains("FAILED") && verify.contains("ok"), "{verify}");
}
