//! The shipped Prometheus rules (runtime/prometheus/) are valid and fire when they
//! should, and what lifeboat exports passes Prometheus' own metrics lint: checked
//! with promtool from Debian's `prometheus` package.

use crate::support::*;
use lifeboat_testkit as testkit;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus");
    let mut child = Command::new(testkit::binary("promtool"))
        .args(args)
        .current_dir(rules)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("feed promtool");
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().expect("promtool finishes");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn alert_rules_are_valid_and_fire_when_they_should() {
    if !testkit::require(&["promtool"]) {
        return;
    }
    let (ok, text) = promtool(&["check", "rules", "lifeboat.rules.yml"], None);
    // Every alert in the file is one promtool loaded.
    let rules = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/lifeboat.rules.yml"))
        .expect("the rules file");
    let alerts = rules.lines().filter(|line| line.trim_start().starts_with("- alert:")).count();
    assert!(alerts >= 9, "the shipped alerts: {alerts}");
    assert!(ok && text.contains(&format!("SUCCESS: {alerts} rules found")), "{text}");
    let (ok, text) = promtool(&["test", "rules", "lifeboat.rules.test.yml"], None);
    assert!(ok, "{text}");
}

#[test]
fn exported_metrics_pass_the_prometheus_lint() {
    if !testkit::require(&["promtool"]) {
        return;
    }
    let Some(fixture) = fixture(StoreKind::File, 1) else { return };
    fixture.etcd.put_many("lint/", 10, 32);
    let textfile = fixture.path("lifeboat.prom");
    fixture.save_json(&["--metrics-file", textfile.to_str().expect("a UTF-8 path")]);
    let figures = std::fs::read_to_string(&textfile).expect("--metrics-file written");
    let (ok, text) = promtool(&["check", "metrics"], Some(&figures));
    assert!(ok && text.trim().is_empty(), "promtool check metrics:\n{text}\non:\n{figures}");
}
