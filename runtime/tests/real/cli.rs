//! The command-line contract: configuration sources, errors, check's exit codes.

use crate::support::*;
use std::process::Command;

/// `lifeboat ARGS`, killed and failed if it has not exited in 60 s: a check that regresses
/// (an agent that starts instead of refusing) fails the test instead of hanging it.
fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command: Command = lifeboat_command();
    command.args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().unwrap();
    let pid = child.id().to_string();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(child.wait_with_output()));
    match receiver.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid]).status();
            panic!("lifeboat {args:?} did not exit within 60 s");
        }
    }
}

#[test]
fn bad_configuration_is_a_usage_error() {
    let output = run(&["snapshots", "list"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--store"), "{}", stderr(&output));

    let output = run(&["snapshots", "list", "--store", "gs://bucket", "--cluster", "c"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("expected s3://BUCKET/PREFIX or file:///DIR"), "{}", stderr(&output));

    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("lifeboat.toml");
    std::fs::write(&config, "store = \"file:///tmp/x\"\nclustr = \"typo\"\n").unwrap();
    let output = run(&["snapshots", "list", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("unknown field `clustr`"), "{}", stderr(&output));

    let output = run(&["save", "--compression", "lz4"], &[]);
    assert_eq!(output.status.code(), Some(2));
}

/// Objects nobody should have put in the bucket are listed as foreign, never a crash:
/// a multi-byte name once made every `snapshots list` (and every agent) panic.
#[test]
fn foreign_objects_in_the_store_are_ignored_by_name() {
    let directory = tempfile::tempdir().unwrap();
    let snapshots = directory.path().join("c/exported/etcd-snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let foreign = ["000é000T000000.000Z-r1.db", "20261125T233200.123Z-r007.db", "notes.txt", "é.manifest.json"];
    for name in foreign {
        std::fs::write(snapshots.join(name), b"not a snapshot").unwrap();
    }
    // A parseable manifest whose hash is not hex (a table once sliced it by bytes).
    let name = "20261125T233200.123Z-r5.db";
    std::fs::write(snapshots.join(name), b"junk").unwrap();
    let manifest = serde_json::json!({
        "format": 1, "name": name, "sha256": "ééé", "size_bytes": 4, "stored_sha256": "ééé",
        "stored_size_bytes": 4, "compression": "none", "revision": 5, "cluster_id": "1", "cluster": "c",
        "members": [], "source_member": "x", "etcd_version": "3.5.1", "created_at": "x",
        "created_ms": 1_795_649_520_123u64, "writer": "x",
    });
    std::fs::write(snapshots.join(format!("{name}.manifest.json")), manifest.to_string()).unwrap();
    let store = format!("file://{}", directory.path().display());
    let output = run(&["snapshots", "list", "--store", &store, "--cluster", "c"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ignored 4 object(s) that are not lifeboat snapshots"), "{stdout}");
    assert!(stdout.contains("manifest does not match"), "{stdout}");
    assert!(stdout.contains("000é000T000000.000Z-r1.db"), "{stdout}");
    let output = run(&["snapshots", "verify", "--all", "--store", &store, "--cluster", "c"], &[]);
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    assert_ne!(output.status.code(), Some(101));
}

/// Member names reach store keys, paths and environment files: held to hostname rules.
#[test]
fn member_names_are_validated_before_use() {
    for bad in ["../etc", "a b", "m\nETCD_DATA_DIR=/"] {
        let output = run(
            &[
                "replace",
                "--dry-run",
                "--name",
                bad,
                "--data-dir",
                "/nonexistent",
                "--client-url",
                "http://127.0.0.1:1",
                "--peer-url",
                "http://127.0.0.1:2",
                "--endpoints",
                "http://127.0.0.1:1",
            ],
            &[],
        );
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {}", stderr(&output));
        assert!(stderr(&output).contains("member name"), "{bad:?}: {}", stderr(&output));
    }
}

/// A restore without a runnable etcdutl says so first, once, as a usage error: not "cannot
/// bump revisions", and not after reading the store; the data dir is left alone.
#[test]
fn restore_without_etcdutl_names_the_fix() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().join("data");
    let missing = directory.path().join("no-etcdutl-here");
    let store = format!("file://{}", directory.path().join("store").display());
    let output = run(
        &[
            "restore",
            "--store",
            &store,
            "--cluster",
            "c",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--name",
            "m0",
            "--initial-cluster",
            "m0=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster-token",
            "t",
            "--etcdutl",
            missing.to_str().unwrap(),
        ],
        &[],
    );
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("--etcdutl PATH") && text.contains("no-etcdutl-here"), "{text}");
    assert!(!text.contains("bump"), "a missing etcdutl read as an old one: {text}");
    assert_eq!(text.matches("No such file").count(), 1, "the cause is printed once: {text}");
    assert!(!data_dir.exists(), "the data dir was created");
    assert!(!directory.path().join("store").exists(), "the store was touched");
}

/// Every command that restores proves its etcdutl runs before it reads the store: the agent
/// (which restores only in a recovery, too late to learn it is missing) and a trial restore.
/// The path comes from the flag, else `LIFEBOAT_ETCDUTL`, else the config file.
#[test]
fn commands_that_restore_refuse_a_missing_etcdutl_first() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    let path = |name: &str| root.join(name).display().to_string();
    let store = format!("file://{}", path("store"));
    let missing = path("no-etcdutl-here");
    let config = root.join("lifeboat.toml");
    std::fs::write(&config, format!("etcdutl = {missing:?}\n")).unwrap();
    let agent: Vec<String> = ["agent", "--member-control", "child", "--shared-file-store", "--name", "m0"]
        .map(String::from)
        .into_iter()
        .chain([
            "--data-dir".into(),
            path("data"),
            "--state-dir".into(),
            path("state"),
            "--client-url".into(),
            "http://127.0.0.1:1".into(),
            "--peer-url".into(),
            "http://127.0.0.1:2".into(),
            "--initial-cluster".into(),
            "m0=http://127.0.0.1:2".into(),
            "--endpoints".into(),
            "http://127.0.0.1:1".into(),
        ])
        .collect();
    let verify: Vec<String> = ["snapshots", "verify", "--all", "--restore", "--scratch-dir"]
        .map(String::from)
        .into_iter()
        .chain([path("scratch")])
        .collect();
    let common = ["--store".to_owned(), store, "--cluster".into(), "c".into()];
    for command in [&agent, &verify] {
        let given = [
            (vec!["--etcdutl".into(), missing.clone()], vec![]),
            (vec![], vec![("LIFEBOAT_ETCDUTL", missing.as_str())]),
            (vec!["--config".into(), config.display().to_string()], vec![]),
        ];
        for (extra, env) in given {
            let args: Vec<&str> = command.iter().chain(common.iter()).chain(extra.iter()).map(String::as_str).collect();
            let output = run(&args, &env);
            let text = stderr(&output);
            assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {text}");
            assert!(text.contains("invalid etcdutl") && text.contains("no-etcdutl-here"), "{args:?}: {text}");
            assert!(text.contains("--etcdutl PATH"), "{args:?}: {text}");
            for name in ["data", "state", "store", "scratch"] {
                assert!(!root.join(name).exists(), "{args:?} created {name}");
            }
        }
    }
}

/// Agents coordinate recoveries through the store: a file:// store must be declared
/// shared by every member's agent, or the agent refuses to start (nothing touched).
#[test]
fn agent_refuses_an_unshared_file_store() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().join("data");
    let store = format!("file://{}", directory.path().join("store").display());
    let output = run(
        &[
            "agent",
            "--member-control",
            "child",
            "--name",
            "m0",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--state-dir",
            directory.path().join("state").to_str().unwrap(),
            "--client-url",
            "http://127.0.0.1:1",
            "--peer-url",
            "http://127.0.0.1:2",
            "--initial-cluster",
            "m0=http://127.0.0.1:2",
            "--endpoints",
            "http://127.0.0.1:1",
            "--store",
            &store,
            "--cluster",
            "c",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--shared-file-store"), "{}", stderr(&output));
    assert!(!data_dir.exists() && !directory.path().join("store").exists(), "nothing touched");
}

/// `lifeboat reconfigure` for member m0 of cluster `c`, everything under `root`
/// (data, state, a file store, the environment file `etcd.env`), no etcd reachable.
fn reconfigure_args(root: &std::path::Path) -> Vec<String> {
    let path = |name: &str| root.join(name).display().to_string();
    let mut args: Vec<String> = ["reconfigure", "--name", "m0", "--data-dir"].map(String::from).into();
    args.extend([path("data"), "--state-dir".into(), path("state")]);
    args.extend(["--client-url", "http://127.0.0.1:1", "--peer-url", "http://127.0.0.1:2"].map(String::from));
    args.extend(["--initial-cluster", "m0=http://127.0.0.1:2", "--endpoints", "http://127.0.0.1:1"].map(String::from));
    args.extend(["--environment-file".into(), path("etcd.env"), "--store".into(), format!("file://{}", path("store"))]);
    args.extend(["--cluster", "c", "--timeout-ms", "300"].map(String::from));
    args
}

/// `reconfigure` as etcd's ExecStartPre: a member that stopped its etcd for a recovery
/// claim nobody has decided yet must not start as it was, so the unit's start fails
/// (exit 8) and no launch settings are written; once the claim is abandoned it starts.
#[test]
fn reconfigure_keeps_etcd_stopped_while_holding_for_a_claim() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    let epochs = root.join("store/c/coordination/epochs");
    std::fs::create_dir_all(&epochs).unwrap();
    let claim = serde_json::json!({
        "epoch": 1, "snapshot": "20261125T233200.123Z-r100.db", "sha256": "0".repeat(64),
        "initial_cluster": "m0=http://127.0.0.1:2", "token": "c-epoch-1", "claimed_by": "m1",
        "claimed_at": "2026-11-25T23:32:00Z", "protocol": 2,
    });
    std::fs::write(epochs.join("0000000001.json"), claim.to_string()).unwrap();
    std::fs::create_dir_all(root.join("data/member")).unwrap();
    std::fs::create_dir_all(root.join("state")).unwrap();
    std::fs::write(root.join("state/holding-epoch"), "1 90").unwrap();
    let env_file = root.join("etcd.env");
    let owned = reconfigure_args(root);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let output = run(&args, &[]);
    assert_eq!(output.status.code(), Some(8), "{}", stderr(&output));
    assert!(stderr(&output).contains("holds for an undecided recovery claim"), "{}", stderr(&output));
    assert!(!env_file.exists(), "no launch settings while holding");
    assert!(root.join("data/member").is_dir(), "data untouched");

    std::fs::write(
        epochs.join("0000000001.outcome.json"),
        r#"{"outcome":"abandoned","by":"m1","reason":{"kind":"cluster-alive"}}"#,
    )
    .unwrap();
    let output = run(&args, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let launch = std::fs::read_to_string(&env_file).unwrap();
    assert!(launch.contains("ETCD_INITIAL_CLUSTER_STATE=existing"), "{launch}");
}

/// `reconfigure` as etcd's ExecStartPre while another process (the agent) holds the
/// member's lock to restore or replace it: a start the holder did not prepare
/// (`Restart=` after a crash, an operator) is refused and writes nothing, so etcd
/// never runs on a data dir in the middle of a change with the old cluster's launch;
/// the holder's own start goes ahead with the launch it wrote (nemesis seed
/// 100000141928).
#[test]
fn reconfigure_lets_only_the_lock_holder_start_etcd() {
    use lifeboat_runtime::host::files;
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    std::fs::create_dir_all(root.join("store/c")).unwrap();
    let env_file = root.join("etcd.env");
    let owned = reconfigure_args(root);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let spec = lifeboat_runtime::member::MemberSpec {
        name: "m0".into(),
        data_dir: root.join("data"),
        client_url: "http://127.0.0.1:1".into(),
        peer_url: "http://127.0.0.1:2".into(),
        extra_args: Vec::new(),
    };
    let holder = files::lock_member(&spec).unwrap().expect("the test holds the member lock");

    let output = run(&args, &[]);
    assert_eq!(output.status.code(), Some(8), "a stray start is refused: {}", stderr(&output));
    assert!(stderr(&output).contains("another lifeboat process holds this member's lock"), "{}", stderr(&output));
    assert!(!env_file.exists(), "a refused start writes no launch");
    assert!(!root.join("data").exists(), "nor touches the data dir");

    let prepared = "ETCD_NAME=m0\nETCD_INITIAL_CLUSTER_STATE=existing\n";
    std::fs::write(&env_file, prepared).unwrap();
    let starting = holder.prepare_start().unwrap();
    let output = run(&args, &[]);
    assert_eq!(output.status.code(), Some(0), "the holder's own start goes ahead: {}", stderr(&output));
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), prepared, "with the launch the holder wrote");

    drop(starting);
    let output = run(&args, &[]);
    assert_eq!(output.status.code(), Some(8), "once started, another start waits again: {}", stderr(&output));
    drop(holder);
    // Without a holder, reconfigure decides again: nothing anywhere, a first start.
    let output = run(&args, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let launch = std::fs::read_to_string(&env_file).unwrap();
    assert!(launch.contains("ETCD_INITIAL_CLUSTER_STATE=new"), "{launch}");
}

/// Config file, environment and flags layer in that order.
#[test]
fn config_file_environment_and_flags_layer() {
    let directory = tempfile::tempdir().unwrap();
    let store = directory.path().join("store");
    let config = directory.path().join("lifeboat.toml");
    std::fs::write(&config, format!("store = \"file://{}\"\ncluster = \"from-file\"\n", store.display())).unwrap();
    let listing = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["snapshots", "list", "--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        let output = run(&args, env);
        assert!(output.status.success(), "{}", stderr(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(listing(&[], &[]).contains("from-file/exported/etcd-snapshots/snapshot.db"));
    assert!(listing(&[("LIFEBOAT_CLUSTER", "from-env")], &[]).contains("from-env/exported"));
    assert!(listing(&[("LIFEBOAT_CLUSTER", "from-env")], &["--cluster", "from-flag"]).contains("from-flag/exported"));
}

#[test]
fn help_teaches_every_subcommand() {
    for args in [
        vec!["--help"],
        vec!["save", "--help"],
        vec!["check", "--help"],
        vec!["restore", "--help"],
        vec!["snapshots", "list", "--help"],
        vec!["snapshots", "verify", "--help"],
        vec!["snapshots", "prune", "--help"],
    ] {
        let output = run(&args, &[]);
        assert!(output.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("Usage: lifeboat"), "{args:?}: {text}");
    }
    let text = String::from_utf8_lossy(&run(&["--help"], &[]).stdout).into_owned();
    assert!(text.contains("Exit codes"), "{text}");
    let text = String::from_utf8_lossy(&run(&["restore", "--help"], &[]).stdout).into_owned();
    for flag in [
        "--data-dir",
        "--name",
        "--initial-cluster",
        "--initial-advertise-peer-urls",
        "--initial-cluster-token",
        "--snapshot",
    ] {
        assert!(text.contains(flag), "restore --help lacks {flag}");
    }
}

/// `check`: 0 on a healthy cluster; 3 with a dead member; 4 when nothing answers.
#[test]
fn check_reports_health_with_exit_codes() {
    let Some(mut fixture) = fixture(StoreKind::File, 3) else {
        return;
    };
    let output = fixture.lifeboat(&["check", "--output", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["healthy_members"], 3);
    assert_eq!(report["quorum"], true);
    assert!(report["members"].as_array().unwrap().iter().filter(|member| member["is_leader"] == true).count() == 1);

    fixture.etcd.kill(2);
    // If the dead member led, the others need an election first; wait for them.
    let survivors_healthy = lifeboat_testkit::wait_until(std::time::Duration::from_secs(15), || {
        fixture.etcd.members[..2].iter().all(|member| member.is_healthy())
    });
    assert!(survivors_healthy, "two of three members keep quorum");
    let output = fixture.lifeboat(&["check", "--output", "json", "--timeout-ms", "1500"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["healthy_members"], 2);
    assert_eq!(report["quorum"], true);
    let dead = &report["members"][2];
    assert_eq!(dead["healthy"], false);
    assert!(dead["error"].as_str().is_some_and(|error| !error.is_empty()));

    let output = run(&["check", "--endpoints", "http://127.0.0.1:1", "--timeout-ms", "500"], &[]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let output = run(
        &[
            "save",
            "--endpoints",
            "http://127.0.0.1:1",
            "--store",
            "file:///tmp/lifeboat-never",
            "--cluster",
            "c",
            "--timeout-ms",
            "500",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(stderr(&output).contains("no etcd endpoint answered"), "{}", stderr(&output));
}

/// Every `lifeboat` command line in the shipped systemd units parses.
#[test]
fn systemd_units_call_real_subcommands() {
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let mut checked = 0;
    let mut files = vec![];
    for entry in std::fs::read_dir(&units).unwrap().flatten() {
        if entry.path().is_dir() {
            files.extend(std::fs::read_dir(entry.path()).unwrap().flatten().map(|entry| entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let Some((_, command)) = line.split_once("=/opt/bin/lifeboat ") else { continue };
            let mut args: Vec<&str> = command.split_whitespace().collect();
            args.push("--help");
            let output = run(&args, &[]);
            assert!(
                output.status.success(),
                "{}: `lifeboat {command}` does not parse: {}",
                file.display(),
                stderr(&output)
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "found only {checked} lifeboat command lines in the units");
}

/// `replace --dry-run` says what it would do and changes nothing.
#[test]
fn replace_dry_run_changes_nothing() {
    let Some(fixture) = fixture(StoreKind::File, 3) else { return };
    let before = etcdctl(&fixture.etcd.members[0].client_url, &["member", "list"]);
    let member = &fixture.etcd.members[2];
    let data_dir = member.data_dir.to_str().unwrap().to_owned();
    let output = fixture.lifeboat(&[
        "replace",
        "--dry-run",
        "--member-control",
        "none",
        "--name",
        &member.name,
        "--data-dir",
        &data_dir,
        "--client-url",
        &member.client_url,
        "--peer-url",
        &member.peer_url,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("would stop etcd2 and remove member"), "{text}");
    assert!(text.contains("would add etcd2"), "{text}");
    assert_eq!(etcdctl(&fixture.etcd.members[0].client_url, &["member", "list"]), before);
    assert!(member.data_dir.join("member").is_dir(), "data dir untouched");
}
