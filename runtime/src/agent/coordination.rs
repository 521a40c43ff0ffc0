//! Coordination through the store: member heartbeats and recovery epochs.
//!
//! ```text
//! <prefix>/<cluster>/coordination/heartbeats/<member>.json   one per agent, rewritten every check
//! <prefix>/<cluster>/coordination/epochs/<epoch>.json                 a claim (intent), created once
//! <prefix>/<cluster>/coordination/epochs/<epoch>.joined/<member>.json  a member that stopped for it
//! <prefix>/<cluster>/coordination/epochs/<epoch>.outcome.json         committed or abandoned, created once
//! <prefix>/<cluster>/coordination/epochs/<epoch>.started/<member>.json a member may have run in it, created once
//! ```
//!
//! Freshness is judged by the store's own modification times, compared with the
//! agent's own latest heartbeat, so skewed agent clocks do not matter. A claim and
//! its outcome are each written with a create-if-absent put, so one writer wins;
//! the protocol (who joins, who commits, who abandons) is decided by the pure
//! [`lifeboat::recovery`]. Everything read here is untrusted: a record that does
//! not parse is reported as malformed and skipped, never an error for the round.

use crate::ports::{SnapshotStore, StoreError};
use bytes::Bytes;
use lifeboat::recovery::{AbandonReason, EpochOutcome, EpochView, Joined};
use lifeboat::{Revision, SnapshotName, StoreLayout};
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
    /// 0 (absent) for claims of the first protocol, which took effect at once and
    /// so count as committed; [`EpochRecord::PROTOCOL`] for intent-then-commit.
    #[serde(default)]
    pub protocol: u32,
    /// The revision bump every member's restore applies (`--bump-revision`, with
    /// `--mark-compacted`), chosen by the claimer; all members restore alike, so a
    /// member whose etcdutl cannot bump does not restore at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bump_revision: Option<u64>,
}

impl EpochRecord {
    pub const PROTOCOL: u32 = 2;
}

/// A member's vote for a claim, at `epochs/<epoch>.joined/<member>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRecord {
    pub member: String,
    pub revision: Option<i64>,
    pub joined_at: String,
}

/// Records bigger than this are not ours: refused unread.
const MAX_RECORD_BYTES: usize = 64 * 1024;

fn heartbeats_prefix(layout: &StoreLayout) -> String {
    format!("{}heartbeats/", layout.coordination_prefix())
}

fn epochs_prefix(layout: &StoreLayout) -> String {
    format!("{}epochs/", layout.coordination_prefix())
}

pub fn epoch_key(layout: &StoreLayout, epoch: u64) -> String {
    format!("{}{epoch:010}.json", epochs_prefix(layout))
}

fn outcome_key(layout: &StoreLayout, epoch: u64) -> String {
    format!("{}{epoch:010}.outcome.json", epochs_prefix(layout))
}

fn join_key(layout: &StoreLayout, epoch: u64, member: &str) -> String {
    format!("{}{epoch:010}.joined/{member}.json", epochs_prefix(layout))
}

fn started_key(layout: &StoreLayout, epoch: u64, member: &str) -> String {
    format!("{}{epoch:010}.started/{member}.json", epochs_prefix(layout))
}

/// Records, before a member restored into `epoch` first starts, that it may have
/// run in it. Written once (create-if-absent; an existing marker is fine).
pub async fn mark_started<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    epoch: u64,
    member: &str,
    at: &str,
) -> Result<(), StoreError> {
    let key = started_key(layout, epoch, member);
    let body = serde_json::to_vec(&serde_json::json!({ "member": member, "restored_at": at }))
        .map_err(|error| unserialisable(store, &key, error))?;
    match store.put_small(&key, Bytes::from(body), true).await {
        Ok(()) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Whether `member` (some incarnation of it) may have run in `epoch` already.
pub async fn started_in<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    epoch: u64,
    member: &str,
) -> Result<bool, StoreError> {
    Ok(store.head(&started_key(layout, epoch, member)).await?.is_some())
}

/// What one key under `epochs/` is, from its name alone.
#[derive(Clone, Debug, PartialEq, Eq)]
enum EpochKey {
    Claim(u64),
    Outcome(u64),
    Joined(u64, String),
    Started,
}

fn parse_epoch_key(relative: &str) -> Option<EpochKey> {
    let number = |text: &str| -> Option<u64> {
        (text.len() == 10 && text.bytes().all(|byte| byte.is_ascii_digit())).then(|| text.parse().ok()).flatten()
    };
    if let Some((epoch, member)) = relative.split_once(".started/") {
        let member = member.strip_suffix(".json")?;
        return (number(epoch).is_some() && !member.is_empty() && !member.contains('/')).then_some(EpochKey::Started);
    }
    if let Some((epoch, member)) = relative.split_once(".joined/") {
        let member = member.strip_suffix(".json")?;
        if member.is_empty() || member.contains('/') {
            return None;
        }
        return Some(EpochKey::Joined(number(epoch)?, member.into()));
    }
    if let Some(epoch) = relative.strip_suffix(".outcome.json") {
        return Some(EpochKey::Outcome(number(epoch)?));
    }
    Some(EpochKey::Claim(number(relative.strip_suffix(".json")?)?))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.len() > MAX_RECORD_BYTES {
        return Err(format!("{} bytes, more than a record of ours ({MAX_RECORD_BYTES})", body.len()));
    }
    serde_json::from_slice(body).map_err(|error| error.to_string())
}

pub async fn write_heartbeat<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    heartbeat: &Heartbeat,
) -> Result<(), StoreError> {
    let key = format!("{}{}.json", heartbeats_prefix(layout), heartbeat.member);
    let body = serde_json::to_vec(heartbeat).map_err(|error| unserialisable(store, &key, error))?;
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
                if let Ok(heartbeat) = parse::<Heartbeat>(&body) {
                    fresh.push(heartbeat);
                }
            }
            // Gone since the listing, or not ours: no heartbeat.
            Err(StoreError::NotFound { .. }) => {}
            Err(error) if error.is_bad_content() => {}
            Err(error) => return Err(error),
        }
    }
    Ok(fresh)
}

/// What the store shows of recovery epochs, as one agent needs it each round.
#[derive(Clone, Debug, Default)]
pub struct EpochListing {
    /// The highest epoch number claimed, readable or not: the next claim is above it.
    pub newest_number: u64,
    /// The newest readable claim, with its votes and outcome.
    pub newest: Option<(EpochRecord, EpochView)>,
    /// The newest committed claim above the local epoch, when there is one.
    pub newest_committed: Option<EpochRecord>,
    /// Keys that did not parse (journaled, then ignored).
    pub malformed: Vec<String>,
}

/// How many claims above the local epoch one round reads at most.
const MAX_CLAIMS_READ: usize = 16;

/// Reads the epochs above `local_epoch`: the newest claim with its joins (from
/// `members` only) and outcome, and the newest committed claim.
pub async fn load_epochs<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    local_epoch: u64,
    members: &[String],
) -> Result<EpochListing, StoreError> {
    let prefix = epochs_prefix(layout);
    let objects = store.list(&prefix).await?;
    let mut claims = std::collections::BTreeSet::new();
    let mut outcomes = std::collections::BTreeSet::new();
    let mut joins: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    let mut listing = EpochListing::default();
    for object in &objects {
        match object.key.strip_prefix(prefix.as_str()).and_then(parse_epoch_key) {
            Some(EpochKey::Claim(epoch)) => {
                claims.insert(epoch);
            }
            Some(EpochKey::Outcome(epoch)) => {
                outcomes.insert(epoch);
            }
            Some(EpochKey::Joined(epoch, member)) => joins.entry(epoch).or_default().push(member),
            Some(EpochKey::Started) => {}
            None => listing.malformed.push(object.key.clone()),
        }
    }
    listing.newest_number = claims.iter().next_back().copied().unwrap_or(0);
    for epoch in claims.iter().rev().filter(|epoch| **epoch > local_epoch).take(MAX_CLAIMS_READ) {
        let record = match read::<EpochRecord, _>(store, &epoch_key(layout, *epoch)).await? {
            Some(Ok(record)) if record.epoch == *epoch => record,
            Some(Ok(_)) => {
                listing.malformed.push(epoch_key(layout, *epoch));
                continue;
            }
            Some(Err(key)) => {
                listing.malformed.push(key);
                continue;
            }
            None => continue,
        };
        let outcome = if record.protocol == 0 {
            Some(EpochOutcome::Committed { joined: Vec::new() })
        } else if outcomes.contains(epoch) {
            match read::<EpochOutcome, _>(store, &outcome_key(layout, *epoch)).await? {
                Some(Ok(outcome)) => Some(outcome),
                // Unreadable: taken as abandoned, so nothing is destroyed on its word.
                Some(Err(key)) => {
                    listing.malformed.push(key);
                    Some(EpochOutcome::Abandoned { by: String::new(), reason: AbandonReason::Unreadable })
                }
                None => None,
            }
        } else {
            None
        };
        let committed = matches!(outcome, Some(EpochOutcome::Committed { .. }));
        if listing.newest.is_none() {
            let mut joined = Vec::new();
            if outcome.is_none() {
                for member in joins.get(epoch).into_iter().flatten().filter(|member| members.contains(member)) {
                    match read::<JoinRecord, _>(store, &join_key(layout, *epoch, member)).await? {
                        Some(Ok(record)) if record.member == *member => {
                            joined.push(Joined { member: member.clone(), revision: record.revision.map(Revision) })
                        }
                        Some(_) => listing.malformed.push(join_key(layout, *epoch, member)),
                        None => {}
                    }
                }
            }
            let view = EpochView { epoch: *epoch, snapshot_revision: record.snapshot.revision(), joined, outcome };
            listing.newest = Some((record.clone(), view));
        }
        if committed {
            listing.newest_committed = Some(record);
            break;
        }
    }
    Ok(listing)
}

/// Reads and parses one small record: `None` when it is gone, `Some(Err(key))`
/// when it does not parse.
async fn read<T: serde::de::DeserializeOwned, S: SnapshotStore>(
    store: &S,
    key: &str,
) -> Result<Option<Result<T, String>>, StoreError> {
    match store.get_small(key).await {
        Ok(body) => Ok(Some(parse(&body).map_err(|_| key.to_owned()))),
        Err(error) if error.is_bad_content() => Ok(Some(Err(key.to_owned()))),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Claims `record.epoch`; returns the record that won (ours, or a concurrent claimer's).
pub async fn claim_epoch<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    record: &EpochRecord,
) -> Result<(EpochRecord, bool), StoreError> {
    let key = epoch_key(layout, record.epoch);
    let body = serde_json::to_vec_pretty(record).map_err(|error| unserialisable(store, &key, error))?;
    match store.put_small(&key, Bytes::from(body), true).await {
        Ok(()) => Ok((record.clone(), true)),
        Err(StoreError::AlreadyExists { .. }) => match read::<EpochRecord, _>(store, &key).await? {
            Some(Ok(winner)) => Ok((winner, false)),
            _ => Err(StoreError::Request {
                operation: "parse",
                location: store.location(&key),
                detail: "another claim of this epoch exists but cannot be read; the next round claims above it".into(),
            }),
        },
        Err(error) => Err(error),
    }
}

/// Records that `member` stopped for `epoch` (overwrites its own earlier vote).
pub async fn write_join<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    epoch: u64,
    record: &JoinRecord,
) -> Result<(), StoreError> {
    let key = join_key(layout, epoch, &record.member);
    let body = serde_json::to_vec(record).map_err(|error| unserialisable(store, &key, error))?;
    store.put_small(&key, Bytes::from(body), false).await
}

/// Decides `epoch` once: returns the outcome that stands (ours, or the one
/// written first).
pub async fn decide<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    epoch: u64,
    outcome: &EpochOutcome,
) -> Result<EpochOutcome, StoreError> {
    let key = outcome_key(layout, epoch);
    let body = serde_json::to_vec_pretty(outcome).map_err(|error| unserialisable(store, &key, error))?;
    match store.put_small(&key, Bytes::from(body), true).await {
        Ok(()) => Ok(outcome.clone()),
        Err(StoreError::AlreadyExists { .. }) => match read::<EpochOutcome, _>(store, &key).await? {
            Some(Ok(winner)) => Ok(winner),
            _ => Ok(EpochOutcome::Abandoned { by: String::new(), reason: AbandonReason::Unreadable }),
        },
        Err(error) => Err(error),
    }
}

/// Whether the store honours create-if-absent (S3 `If-None-Match: *`), which every
/// claim and outcome relies on for "one writer wins": a probe object is created
/// twice, the second must be refused, then it is deleted. A store that ignores the
/// condition (older S3-compatible servers) would let two claimers both win.
pub async fn honours_create_if_absent<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    member: &str,
) -> Result<bool, StoreError> {
    let key = format!("{}probes/{member}.json", layout.coordination_prefix());
    store.delete(&key).await?;
    let body = Bytes::from_static(b"{\"probe\":\"create-if-absent\"}");
    let first = store.put_small(&key, body.clone(), true).await;
    let second = match first {
        Ok(()) => store.put_small(&key, body, true).await,
        Err(error) => return Err(error),
    };
    let honoured = match second {
        Err(StoreError::AlreadyExists { .. }) => true,
        Ok(()) => false,
        Err(error) => return Err(error),
    };
    store.delete(&key).await?;
    Ok(honoured)
}

fn unserialisable<S: SnapshotStore>(store: &S, key: &str, error: serde_json::Error) -> StoreError {
    StoreError::Request { operation: "serialise", location: store.location(key), detail: error.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn epoch_keys() {
        assert_eq!(parse_epoch_key("0000000003.json"), Some(EpochKey::Claim(3)));
        assert_eq!(parse_epoch_key("0000000003.outcome.json"), Some(EpochKey::Outcome(3)));
        assert_eq!(parse_epoch_key("0000000003.joined/m1.json"), Some(EpochKey::Joined(3, "m1".into())));
        assert_eq!(parse_epoch_key("0000000003.started/m1.json"), Some(EpochKey::Started));
        assert_eq!(parse_epoch_key("3.started/m1.json"), None);
        for foreign in ["3.json", "000000000é.json", "0000000003.joined/.json", "0000000003.joined/a/b.json", "x", ""]
        {
            assert_eq!(parse_epoch_key(foreign), None, "{foreign}");
        }
    }

    /// A store that ignores create-if-absent (an old S3-compatible server): every
    /// conditional put overwrites.
    #[cfg(feature = "real")]
    struct Unconditional(crate::store::file::FileStore);

    #[cfg(feature = "real")]
    impl SnapshotStore for Unconditional {
        type Upload = <crate::store::file::FileStore as SnapshotStore>::Upload;
        type Reader = <crate::store::file::FileStore as SnapshotStore>::Reader;
        fn location(&self, key: &str) -> String {
            self.0.location(key)
        }
        async fn begin_upload(&self, key: &str) -> Result<Self::Upload, StoreError> {
            self.0.begin_upload(key).await
        }
        async fn put_small(&self, key: &str, body: Bytes, _if_absent: bool) -> Result<(), StoreError> {
            self.0.put_small(key, body, false).await
        }
        async fn get(&self, key: &str) -> Result<Self::Reader, StoreError> {
            self.0.get(key).await
        }
        async fn head(&self, key: &str) -> Result<Option<crate::ports::ObjectInfo>, StoreError> {
            self.0.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<crate::ports::ObjectInfo>, StoreError> {
            self.0.list(prefix).await
        }
        async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
            self.0.copy(from, to).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.0.delete(key).await
        }
    }

    /// The probe tells a store that honours create-if-absent from one that does not,
    /// and leaves nothing behind.
    #[cfg(feature = "real")]
    #[test]
    fn the_probe_detects_a_store_that_ignores_create_if_absent() {
        let directory = tempfile::tempdir().expect("a temp dir");
        let layout = StoreLayout::new("p", "c");
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        runtime.block_on(async {
            let honest = crate::store::file::FileStore::open(&directory.path().join("a")).expect("a store");
            assert!(honours_create_if_absent(&honest, &layout, "m0").await.expect("probed"));
            assert!(honest.list("p/").await.expect("listed").is_empty(), "the probe object is deleted");
            let ignoring =
                Unconditional(crate::store::file::FileStore::open(&directory.path().join("b")).expect("a store"));
            assert!(!honours_create_if_absent(&ignoring, &layout, "m0").await.expect("probed"));
            assert!(ignoring.list("p/").await.expect("listed").is_empty(), "the probe object is deleted");
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        /// Keys and records from the store are untrusted: anything parses or is refused.
        #[test]
        fn any_key_or_record_is_data(key in ".{0,40}", bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_epoch_key(&key);
            let _ = parse::<EpochRecord>(&bytes);
            let _ = parse::<EpochOutcome>(&bytes);
            let _ = parse::<JoinRecord>(&bytes);
            let _ = parse::<Heartbeat>(&bytes);
        }
    }
}
