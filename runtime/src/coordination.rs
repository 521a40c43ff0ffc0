//! Coordination through the store: member heartbeats and recovery epochs.
//!
//! ```text
//! <prefix>/<cluster>/coordination/heartbeats/<member>.json   one per agent, rewritten every check
//! <prefix>/<cluster>/coordination/epochs/<epoch>.json        one per disaster recovery, created once
//! ```
//!
//! Freshness is judged by the store's own modification times, compared with the
//! agent's own latest heartbeat, so skewed agent clocks do not matter. An epoch is
//! claimed with a create-if-absent put: exactly one claimer wins, everyone applies
//! the winner's record.

use crate::ports::{SnapshotStore, StoreError};
use bytes::Bytes;
use lifeboat::{SnapshotName, StoreLayout};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub member: String,
    pub member_id: Option<String>,
    /// The recovery epoch this member's data belongs to.
    pub epoch: u64,
    /// The member is healthy as part of a cluster with quorum.
    pub healthy: bool,
    /// The local member's revision, when it answers (even without quorum).
    pub revision: Option<i64>,
    /// The agent's own clock, for humans only; freshness uses the store's clock.
    pub written_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    /// The snapshot every member restores.
    pub snapshot: SnapshotName,
    pub sha256: String,
    /// `name=peer-url,…` of the restored cluster.
    pub initial_cluster: String,
    /// A token no earlier incarnation used, so old members cannot rejoin.
    pub token: String,
    pub claimed_by: String,
    pub claimed_at: String,
}

fn heartbeats_prefix(layout: &StoreLayout) -> String {
    format!("{}heartbeats/", layout.coordination_prefix())
}

fn epochs_prefix(layout: &StoreLayout) -> String {
    format!("{}epochs/", layout.coordination_prefix())
}

pub fn epoch_key(layout: &StoreLayout, epoch: u64) -> String {
    format!("{}{epoch:010}.json", epochs_prefix(layout))
}

pub async fn write_heartbeat<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    heartbeat: &Heartbeat,
) -> Result<(), StoreError> {
    let key = format!("{}{}.json", heartbeats_prefix(layout), heartbeat.member);
    let body = serde_json::to_vec(heartbeat).expect("a heartbeat serialises");
    store.put_small(&key, Bytes::from(body), false).await
}

/// Peers whose heartbeat is at most `freshness_ms` older than ours (store clock).
/// Call right after writing our own heartbeat.
pub async fn fresh_peer_heartbeats<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    member: &str,
    freshness_ms: u64,
) -> Result<Vec<Heartbeat>, StoreError> {
    let prefix = heartbeats_prefix(layout);
    let objects = store.list(&prefix).await?;
    let own_key = format!("{prefix}{member}.json");
    let Some(reference) = objects.iter().find(|object| object.key == own_key).and_then(|object| object.modified_ms)
    else {
        return Ok(Vec::new());
    };
    let mut fresh = Vec::new();
    for object in objects.iter().filter(|object| object.key != own_key) {
        let Some(modified) = object.modified_ms else { continue };
        if modified + freshness_ms < reference {
            continue;
        }
        match store.get_small(&object.key).await {
            Ok(body) => {
                if let Ok(heartbeat) = serde_json::from_slice::<Heartbeat>(&body) {
                    fresh.push(heartbeat);
                }
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(fresh)
}

/// The newest claimed epoch, if any.
pub async fn latest_epoch<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
) -> Result<Option<EpochRecord>, StoreError> {
    let objects = store.list(&epochs_prefix(layout)).await?;
    let Some(newest) = objects.iter().filter(|object| object.key.ends_with(".json")).max_by(|a, b| a.key.cmp(&b.key))
    else {
        return Ok(None);
    };
    let body = store.get_small(&newest.key).await?;
    serde_json::from_slice(&body).map(Some).map_err(|error| StoreError::Request {
        operation: "parse",
        location: store.location(&newest.key),
        detail: error.to_string(),
    })
}

/// Claims `record.epoch`; returns the record that won (ours, or a concurrent claimer's).
pub async fn claim_epoch<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    record: &EpochRecord,
) -> Result<(EpochRecord, bool), StoreError> {
    let key = epoch_key(layout, record.epoch);
    let body = serde_json::to_vec_pretty(record).expect("an epoch record serialises");
    match store.put_small(&key, Bytes::from(body), true).await {
        Ok(()) => Ok((record.clone(), true)),
        Err(StoreError::AlreadyExists { .. }) => {
            let body = store.get_small(&key).await?;
            let winner = serde_json::from_slice(&body).map_err(|error| StoreError::Request {
                operation: "parse",
                location: store.location(&key),
                detail: error.to_string(),
            })?;
            Ok((winner, false))
        }
        Err(error) => Err(error),
    }
}
