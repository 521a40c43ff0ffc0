//! What the agent exports for Prometheus, derived from the events it journals:
//! every figure on `/metrics` is one the journal also holds, so the two never
//! disagree, except the revision log's progress, which moves every second (its
//! writer logs when it starts, stops and meets a hole). Also the liveness and
//! readiness the health endpoints answer with.
//!
//! Names follow Prometheus conventions (`lifeboat_…`, base units, `_total` for
//! counters); the text is OpenMetrics, as `prometheus-client` writes it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

/// The agent's metrics and health, shared between the driver (which records) and
/// the HTTP endpoint (which reads).
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Mutex<Registry>,
    last_save_timestamp: Gauge<f64, AtomicU64>,
    last_save_revision: Gauge,
    save_duration: Histogram,
    save_size: Histogram,
    failures: Family<Kind, Counter>,
    replacements: Family<Outcome, Counter>,
    recoveries: Family<Outcome, Counter>,
    members: Gauge,
    members_healthy: Gauge,
    store_reachable: Gauge,
    etcd_alarms: Gauge,
    snapshots: Gauge,
    epoch: Gauge,
    last_observation_timestamp: Gauge<f64, AtomicU64>,
    last_proven_timestamp: Gauge<f64, AtomicU64>,
    last_proven_revision: Gauge,
    log_last_flush_timestamp: Gauge<f64, AtomicU64>,
    log_last_revision: Gauge,
    log_gaps: Gauge,
    /// Milliseconds (monotonic) of the loop's last turn and of the last full
    /// observation: liveness and readiness (with `store_reachable`).
    loop_turned_ms: AtomicI64,
    observed_ms: AtomicI64,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics::new()
    }
}

impl AgentMetrics {
    pub fn new() -> AgentMetrics {
        let metrics = AgentMetrics {
            registry: Mutex::new(Registry::with_prefix("lifeboat")),
            last_save_timestamp: Gauge::default(),
            last_save_revision: Gauge::default(),
            // 0.5 s to about 17 min: a small cluster to a multi-GiB database over a slow link.
            save_duration: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.5, 2.0, 12)),
            // 64 KiB to 32 GiB.
            save_size: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(65536.0, 4.0, 10)),
            failures: Family::default(),
            replacements: Family::default(),
            recoveries: Family::default(),
            members: Gauge::default(),
            members_healthy: Gauge::default(),
            store_reachable: Gauge::default(),
            etcd_alarms: Gauge::default(),
            snapshots: Gauge::default(),
            epoch: Gauge::default(),
            last_observation_timestamp: Gauge::default(),
            last_proven_timestamp: Gauge::default(),
            last_proven_revision: Gauge::default(),
            log_last_flush_timestamp: Gauge::default(),
            log_last_revision: Gauge::default(),
            log_gaps: Gauge::default(),
            loop_turned_ms: AtomicI64::new(-1),
            observed_ms: AtomicI64::new(-1),
        };
        if let Ok(mut registry) = metrics.registry.lock() {
            registry.register_with_unit(
                "last_save_timestamp",
                "When the last snapshot was saved and verified (etcd's hash, then the manifest), Unix time",
                Unit::Seconds,
                metrics.last_save_timestamp.clone(),
            );
            registry.register(
                "last_save_revision",
                "The etcd revision the last saved snapshot holds",
                metrics.last_save_revision.clone(),
            );
            registry.register_with_unit(
                "save_duration",
                "How long saves took",
                Unit::Seconds,
                metrics.save_duration.clone(),
            );
            registry.register_with_unit("save_size", "Size of saved snapshots", Unit::Bytes, metrics.save_size.clone());
            registry.register(
                "failures",
                "Failed steps by kind: save, prune, replace, recovery, reconfigure, trial",
                metrics.failures.clone(),
            );
            registry.register("replacements", "Replacements of this member, by outcome", metrics.replacements.clone());
            registry.register(
                "recoveries",
                "Disaster recoveries this member was restored by, by outcome",
                metrics.recoveries.clone(),
            );
            registry.register("members", "Members in the cluster, as this agent last saw it", metrics.members.clone());
            registry.register(
                "members_healthy",
                "Members that answered their health check in the last observation",
                metrics.members_healthy.clone(),
            );
            registry.register(
                "store_reachable",
                "1 when the last observation reached the store",
                metrics.store_reachable.clone(),
            );
            registry.register(
                "etcd_alarms",
                "Alarms active in the cluster (NOSPACE, CORRUPT) at the last observation: each needs a human",
                metrics.etcd_alarms.clone(),
            );
            registry.register("snapshots", "Versioned snapshots in the store", metrics.snapshots.clone());
            registry.register(
                "recovery_epoch",
                "The recovery epoch this member's data belongs to",
                metrics.epoch.clone(),
            );
            registry.register_with_unit(
                "last_observation_timestamp",
                "When the agent last looked at the cluster and the store, Unix time",
                Unit::Seconds,
                metrics.last_observation_timestamp.clone(),
            );
            registry.register_with_unit(
                "last_proven_timestamp",
                "When a trial restore last proved a snapshot (its HashKV matched the source's), Unix time",
                Unit::Seconds,
                metrics.last_proven_timestamp.clone(),
            );
            registry.register(
                "last_proven_revision",
                "The etcd revision of the last snapshot a trial restore proved",
                metrics.last_proven_revision.clone(),
            );
            registry.register_with_unit(
                "log_last_flush_timestamp",
                "When this agent last wrote a revision-log segment, Unix time (only the agent beside the leader writes)",
                Unit::Seconds,
                metrics.log_last_flush_timestamp.clone(),
            );
            registry.register(
                "log_last_revision",
                "The last etcd revision this agent's revision-log writer stored",
                metrics.log_last_revision.clone(),
            );
            registry.register(
                "log_gaps",
                "Holes this agent's writer met since it started: etcd compacted history the log had not stored",
                metrics.log_gaps.clone(),
            );
        }
        metrics
    }

    /// The revision-log writer stored a segment up to `revision` at `unix_ms`.
    pub fn on_log_flush(&self, unix_ms: u64, revision: i64, gaps: u64) {
        self.log_last_flush_timestamp.set(unix_ms as f64 / 1000.0);
        self.log_last_revision.set(revision);
        self.log_gaps.set(i64::try_from(gaps).unwrap_or(i64::MAX));
    }

    /// Updates the figures from one journaled event; `unix_ms` is when it happened.
    pub fn on_event(&self, unix_ms: u64, event: &str, details: &serde_json::Value) {
        let number = |key: &str| details.get(key).and_then(serde_json::Value::as_i64);
        let unix_seconds = unix_ms as f64 / 1000.0;
        let fail = |kind: &str| {
            self.failures.get_or_create(&Kind { kind: kind.to_owned() }).inc();
        };
        match event {
            "saved" => {
                self.last_save_timestamp.set(unix_seconds);
                if let Some(revision) = number("revision") {
                    self.last_save_revision.set(revision);
                }
                if let Some(elapsed) = number("elapsed_ms") {
                    self.save_duration.observe(elapsed as f64 / 1000.0);
                }
                if let Some(size) = number("size_bytes") {
                    self.save_size.observe(size as f64);
                }
            }
            "save-failed" | "save-survivor-failed" => fail("save"),
            "trial-proven" => {
                self.last_proven_timestamp.set(unix_seconds);
                if let Some(revision) = number("revision") {
                    self.last_proven_revision.set(revision);
                }
            }
            "trial-failed" => fail("trial"),
            "prune-failed" => fail("prune"),
            "replace-failed" => {
                fail("replace");
                self.replacements.get_or_create(&Outcome { outcome: "failed".into() }).inc();
            }
            "replaced" => {
                self.replacements.get_or_create(&Outcome { outcome: "replaced".into() }).inc();
            }
            "recovery-failed" => {
                fail("recovery");
                self.recoveries.get_or_create(&Outcome { outcome: "failed".into() }).inc();
            }
            "restored" => {
                self.recoveries.get_or_create(&Outcome { outcome: "restored".into() }).inc();
                if let Some(epoch) = number("epoch") {
                    self.epoch.set(epoch);
                }
            }
            "reconfigure-failed" => fail("reconfigure"),
            "observation" => {
                self.last_observation_timestamp.set(unix_seconds);
                if let Some(members) = number("members") {
                    self.members.set(members);
                }
                if let Some(healthy) = number("healthy") {
                    self.members_healthy.set(healthy);
                }
                if let Some(snapshots) = number("snapshots") {
                    self.snapshots.set(snapshots);
                }
                self.etcd_alarms.set(number("alarms").unwrap_or(0));
                if let Some(epoch) = number("epoch") {
                    self.epoch.set(epoch);
                }
                let reachable = details.get("store_reachable").and_then(serde_json::Value::as_bool) == Some(true);
                self.store_reachable.set(i64::from(reachable));
            }
            _ => {}
        }
    }

    /// The loop turned (liveness), at monotonic `now_ms`.
    pub fn loop_turned(&self, now_ms: u64) {
        self.loop_turned_ms.store(now_ms as i64, Ordering::Relaxed);
    }

    /// A full observation finished at monotonic `now_ms` (readiness); whether it
    /// reached the store comes with its journaled event (`lifeboat_store_reachable`).
    pub fn observed(&self, now_ms: u64) {
        self.observed_ms.store(now_ms as i64, Ordering::Relaxed);
    }

    /// `/healthz`: the loop turned within `max_age_ms` of monotonic `now_ms`.
    pub fn live(&self, now_ms: u64, max_age_ms: u64) -> Result<(), String> {
        match self.loop_turned_ms.load(Ordering::Relaxed) {
            -1 => Err("the agent loop has not started".into()),
            at => {
                let age = now_ms.saturating_sub(at as u64);
                if age <= max_age_ms {
                    Ok(())
                } else {
                    Err(format!("the agent loop last turned {} s ago", age / 1000))
                }
            }
        }
    }

    /// `/readyz`: a fresh view of the cluster and the store.
    pub fn ready(&self, now_ms: u64, max_age_ms: u64) -> Result<(), String> {
        match self.observed_ms.load(Ordering::Relaxed) {
            -1 => Err("no observation of the cluster yet".into()),
            at if now_ms.saturating_sub(at as u64) > max_age_ms => {
                Err(format!("the last observation is {} s old", now_ms.saturating_sub(at as u64) / 1000))
            }
            _ if self.store_reachable.get() == 0 => Err("the store was unreachable".into()),
            _ => Ok(()),
        }
    }

    /// The OpenMetrics text for `/metrics` (or a node-exporter textfile).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Ok(registry) = self.registry.lock() {
            if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
                text.clear();
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_become_figures() {
        let metrics = AgentMetrics::new();
        metrics.on_event(
            1_700_000_000_000,
            "saved",
            &json!({ "revision": 42, "size_bytes": 1_048_576, "elapsed_ms": 1500 }),
        );
        metrics.on_event(1_700_000_001_000, "save-failed", &json!({ "error": "x" }));
        metrics.on_event(
            1_700_000_002_000,
            "observation",
            &json!({ "members": 3, "healthy": 2, "snapshots": 7, "epoch": 1, "store_reachable": true }),
        );
        let text = metrics.encode();
        for line in [
            "lifeboat_last_save_timestamp_seconds 1700000000.0",
            "lifeboat_last_save_revision 42",
            "lifeboat_save_duration_seconds_count 1",
            "lifeboat_save_size_bytes_sum 1048576.0",
            "lifeboat_failures_total{kind=\"save\"} 1",
            "lifeboat_members 3",
            "lifeboat_members_healthy 2",
            "lifeboat_store_reachable 1",
            "lifeboat_snapshots 7",
            "lifeboat_recovery_epoch 1",
        ] {
            assert!(text.lines().any(|candidate| candidate == line), "missing {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn liveness_and_readiness_age_out() {
        let metrics = AgentMetrics::new();
        assert!(metrics.live(1000, 500).is_err() && metrics.ready(1000, 500).is_err());
        metrics.loop_turned(1000);
        metrics.observed(1000);
        metrics.on_event(0, "observation", &json!({ "store_reachable": true }));
        assert!(metrics.live(1400, 500).is_ok() && metrics.ready(1400, 500).is_ok());
        assert!(metrics.live(2000, 500).is_err() && metrics.ready(2000, 500).is_err());
        metrics.observed(2000);
        metrics.on_event(0, "observation", &json!({ "store_reachable": false }));
        assert_eq!(metrics.ready(2000, 500), Err("the store was unreachable".into()));
    }
}

#[cfg(test)]
mod shipped {
    use super::*;
    use serde_json::json;

    /// The metric names a PromQL text uses (`lifeboat_…`), without histogram suffixes.
    fn names_in(text: &str) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(start) = rest.find("lifeboat_") {
            let tail = rest.get(start..).unwrap_or_default();
            let name: String =
                tail.chars().take_while(|character| character.is_ascii_alphanumeric() || *character == '_').collect();
            rest = tail.get(name.len()..).unwrap_or_default();
            names.insert(name);
        }
        names
    }

    /// The shipped alert rules and dashboard only use metrics the agent exports:
    /// a renamed metric would otherwise leave an alert that can never fire.
    #[test]
    fn every_metric_the_rules_and_the_dashboard_use_is_exported() {
        let metrics = AgentMetrics::new();
        metrics.on_event(1, "saved", &json!({ "revision": 1, "size_bytes": 1, "elapsed_ms": 1 }));
        metrics.on_event(1, "save-failed", &json!({}));
        metrics.on_event(1, "replaced", &json!({}));
        metrics.on_event(1, "restored", &json!({ "epoch": 1 }));
        metrics.on_event(1, "observation", &json!({ "members": 1, "healthy": 1, "store_reachable": true }));
        let exported: std::collections::BTreeSet<String> = metrics
            .encode()
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .map(str::to_owned)
            .collect();
        let rules = include_str!("../../prometheus/lifeboat.rules.yml");
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../prometheus/lifeboat-dashboard.json")).unwrap();
        let exprs: Vec<String> = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|panel| panel["targets"].as_array().unwrap().iter())
            .map(|target| target["expr"].as_str().unwrap().to_owned())
            .collect();
        assert!(exprs.len() >= 10, "the dashboard has its panels");
        let used = names_in(&(exprs.join("\n") + rules));
        assert!(used.len() >= 10, "{used:?}");
        for name in used {
            assert!(exported.contains(&name), "{name} is used but not exported; exported: {exported:?}");
        }
    }
}
