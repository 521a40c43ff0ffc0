//! The agent's prover: beside the leader (which saves), every interval it takes
//! the newest backup that has no proof yet and trial-restores it (`trial`); a
//! HashKV that matches the source's writes the snapshot's proof (`proof`). A
//! trial runs in its own task, so a large one never holds up the agent's checks.

use crate::backup::catalog;
use crate::backup::proof;
use crate::backup::trial::{trial_restore, TrialOutcome, TrialSettings};
use crate::etcd::leader::Local;
use crate::etcd::EtcdClient;
use crate::host::clock::{wall_clock_now, Stopwatch};
use crate::ports::SnapshotStore;
use lifeboat::StoreLayout;
use serde_json::json;
use std::time::Duration;
use tokio::sync::watch;

/// How the agent proves snapshots: with what, and how often.
#[derive(Clone, Debug)]
pub struct ProverSettings {
    pub trial: TrialSettings,
    pub interval: Duration,
}

/// Runs until `stop` turns true; `on_event` gets what each trial showed
/// (`trial-proven`, `trial-failed`, `trial-inconclusive`), for the journal and
/// the metrics.
pub async fn prove_while_leading<S: SnapshotStore>(
    etcd: &EtcdClient,
    store: &S,
    layout: &StoreLayout,
    prover: &ProverSettings,
    local: &Local,
    mut stop: watch::Receiver<bool>,
    on_event: impl Fn(&str, serde_json::Value),
) {
    let trial = &prover.trial;
    loop {
        let gone = tokio::select! {
            _ = tokio::time::sleep(prover.interval) => false,
            changed = stop.changed() => changed.is_err(),
        };
        if gone || *stop.borrow() {
            return;
        }
        if !local.leads(etcd).await {
            continue;
        }
        let catalog = match catalog::load(store, layout).await {
            Ok(catalog) => catalog,
            Err(error) => {
                tracing::debug!(error = %error, "no trial this round: the store did not list");
                continue;
            }
        };
        // The newest backup; once it is proven there is nothing to do until the next save.
        let Some(entry) = catalog.snapshots.iter().find(|entry| entry.is_backup()) else { continue };
        let Some(manifest) = entry.manifest.as_ref().filter(|_| !entry.proven) else { continue };
        let started = Stopwatch::start();
        let snapshot = entry.name.to_string();
        match trial_restore(store, layout, manifest, trial).await {
            Ok(outcome @ TrialOutcome::Proven { hash, revision }) => {
                match proof::record(store, layout, &entry.name, &outcome, wall_clock_now()).await {
                    Ok(_) => on_event(
                        "trial-proven",
                        json!({ "snapshot": snapshot, "revision": revision, "hash": hash,
                                "elapsed_ms": started.elapsed_ms() }),
                    ),
                    Err(error) => on_event(
                        "trial-failed",
                        json!({ "snapshot": snapshot, "error": format!("proven, but the proof was not stored: {error}") }),
                    ),
                }
            }
            Ok(outcome @ TrialOutcome::Mismatch { .. }) => {
                on_event("trial-failed", json!({ "snapshot": snapshot, "error": outcome.describe() }))
            }
            Ok(outcome) => {
                on_event("trial-inconclusive", json!({ "snapshot": snapshot, "detail": outcome.describe() }))
            }
            Err(error) => on_event("trial-failed", json!({ "snapshot": snapshot, "error": error.to_string() })),
        }
    }
}
