//! Broken components the simulator can plant in a world, to prove its checkers
//! have teeth: with a flaw planted, some seed must break an invariant; without
//! it, the same seeds pass (sim/tests/teeth.rs).
//!
//! Each flaw lives here, in the simulated ports, and never in the product: the
//! production driver runs unchanged, and what is broken is a fact it is given (a
//! health probe that lies, a lock that grants everyone, a store that forges
//! records). Each one defeats one safety rule of the driver the way a broken
//! dependency would, so a checker that misses it would also miss that rule
//! being switched off.

use crate::model::{lock, Shared};
use bytes::Bytes;
use lifeboat::recovery::EpochOutcome;
use lifeboat::Manifest;
use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Flaw {
    /// Every agent's health probe reports its peers healthy: an agent replaces its
    /// member in a cluster that has lost quorum (the quorum check sees a lie).
    PeersAlwaysHealthy,
    /// The membership-change lock grants every request: several changes run at once.
    LockAlwaysFree,
    /// Manifests read back with the hash and size of whatever bytes are stored:
    /// the hash check passes a corrupt snapshot.
    ManifestsMatchAnyBytes,
    /// The store commits every recovery claim the moment it is written: a claim
    /// takes effect without the join quorum.
    ClaimsCommitAtOnce,
    /// A stopped data dir reads as holding revision 1: a survivor's vote cannot
    /// tell that its data is newer than the claimed snapshot.
    DataDirsReadStale,
    /// Listings of the revision log leave out its newest segment, as a store that
    /// lists stale would: a recovery replays less of the log than the store holds.
    LogListsStale,
    /// A store that ignores create-if-absent honours it for the probe's own keys
    /// (a cache in front of it might): the agents' probe passes, and they recover
    /// on a store that cannot arbitrate claims.
    ProbeHonouredOnly,
}

impl Flaw {
    pub const ALL: [Flaw; 7] = [
        Flaw::PeersAlwaysHealthy,
        Flaw::LockAlwaysFree,
        Flaw::ManifestsMatchAnyBytes,
        Flaw::ClaimsCommitAtOnce,
        Flaw::DataDirsReadStale,
        Flaw::LogListsStale,
        Flaw::ProbeHonouredOnly,
    ];
}

/// `ManifestsMatchAnyBytes`: the manifest at `key` as the flawed store returns it,
/// or `None` when `key` is not a readable manifest (then it is served as stored).
pub fn forged_manifest(world: &Shared, key: &str, stored: &Bytes) -> Option<Bytes> {
    let snapshot_key = key.strip_suffix(".manifest.json")?;
    let mut manifest: Manifest = serde_json::from_slice(stored).ok()?;
    let world = lock(world);
    let bytes = &world.objects.get(snapshot_key)?.bytes;
    let sha256 = hex::encode(Sha256::digest(bytes));
    let size = bytes.len() as u64;
    manifest.sha256.clone_from(&sha256);
    manifest.stored_sha256 = sha256;
    manifest.size_bytes = size;
    manifest.stored_size_bytes = size;
    serde_json::to_vec_pretty(&manifest).ok().map(Bytes::from)
}

/// `ClaimsCommitAtOnce`: after a claim at `key` is written, the outcome the flawed
/// store writes beside it (key and body), or `None` for any other key.
pub fn forged_outcome(key: &str, claim: &Bytes) -> Option<(String, Bytes)> {
    let (prefix, file) = key.rsplit_once("/epochs/")?;
    let epoch = file.strip_suffix(".json")?;
    if epoch.is_empty() || !epoch.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let record: serde_json::Value = serde_json::from_slice(claim).ok()?;
    let claimer = record.get("claimed_by")?.as_str()?.to_owned();
    let outcome = EpochOutcome::Committed { joined: vec![claimer] };
    let body = serde_json::to_vec_pretty(&outcome).ok()?;
    Some((format!("{prefix}/epochs/{epoch}.outcome.json"), Bytes::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_forged_for_claims_only() {
        let claim = Bytes::from_static(br#"{"epoch": 3, "claimed_by": "m1"}"#);
        let (key, body) = forged_outcome("backups/sim/coordination/epochs/0000000003.json", &claim).unwrap();
        assert_eq!(key, "backups/sim/coordination/epochs/0000000003.outcome.json");
        let outcome: EpochOutcome = serde_json::from_slice(&body).unwrap();
        assert_eq!(outcome, EpochOutcome::Committed { joined: vec!["m1".into()] });
        assert!(forged_outcome("backups/sim/coordination/epochs/0000000003.outcome.json", &claim).is_none());
        assert!(forged_outcome("backups/sim/coordination/epochs/0000000003.joined/m1.json", &claim).is_none());
    }
}
