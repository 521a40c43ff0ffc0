//! The revision log in the simulator: a model of the writer beside the leader
//! (the production writer needs a real etcd watch), and the replay a disaster
//! recovery runs before it claims, over the production segment codec, listing,
//! reading and chain planning (`lifeboat::revlog`, `lifeboat_runtime::revlog`).
//!
//! The writer lives in the agent's node, so it dies with the agent; every
//! flush interval, while its member leads, it writes the revisions its member
//! holds beyond the log's end as one segment, through the agent's store port
//! (so store outages, cuts and flaky calls hit it as they hit saves). A put of
//! the model is one revision with one event: the key and, as the value, the
//! write's ID. The replay reads those segments back and applies them to the
//! snapshot's key-value state; the world then checks, at the restore, that the
//! result is exactly the source cluster's state at that revision.

use crate::model::{lock, Shared, SnapshotContent};
use crate::ports::{SimStore, EPOCH_MS};
use bytes::Bytes;
use lifeboat::revlog::{self as rules, Event, EventKind, RevisionEntry, Segment, SegmentHeader};
use lifeboat::{Compression, Manifest, Millis, Revision, SnapshotName, StoreLayout};
use lifeboat_runtime::backup::catalog;
use lifeboat_runtime::ports::{ExtendError, LogExtension, SnapshotStore};
use lifeboat_runtime::revlog;
use std::time::Duration;

/// The production default flush interval (`--log-flush-interval-ms`).
pub const FLUSH_MS: u64 = 1_000;

/// The writer beside the member on machine `me`.
pub struct SimLogWriter {
    pub world: Shared,
    pub me: usize,
    pub store: SimStore,
    pub layout: StoreLayout,
}

impl SimLogWriter {
    pub async fn run(self) {
        // Where the log of each cluster ends, as far as this writer knows (None: ask the store).
        let mut logged: Option<(u64, i64)> = None;
        loop {
            madsim::time::sleep(Duration::from_millis(FLUSH_MS)).await;
            // What this member holds, when it leads its cluster.
            let held = {
                let world = lock(&self.world);
                world.serving(self.me).and_then(|(cluster, _)| {
                    let state = world.clusters.get(&cluster)?;
                    (state.leader == Some(self.me)).then_some(())?;
                    let (revision, len) = world.revision_of(self.me)?;
                    Some((cluster, state.base_revision, revision, len))
                })
            };
            let Some((cluster, base_revision, revision, len)) = held else {
                logged = None;
                continue;
            };
            let cluster_id = format!("{cluster:x}");
            let end = match logged {
                Some((logged_cluster, end)) if logged_cluster == cluster => end,
                _ => match revlog::list(&self.store, &self.layout, &cluster_id).await {
                    Ok((segments, _)) => {
                        segments.iter().map(|listed| listed.name.last().0).max().unwrap_or(base_revision)
                    }
                    Err(_) => continue,
                },
            };
            if revision <= end {
                logged = Some((cluster, end));
                continue;
            }
            let entries: Vec<RevisionEntry> = {
                let world = lock(&self.world);
                let Some(state) = world.clusters.get(&cluster) else { continue };
                let from = usize::try_from(end - base_revision).unwrap_or(0);
                let seen = Millis(EPOCH_MS + world.now_ms());
                state
                    .log
                    .iter()
                    .enumerate()
                    .take(len)
                    .skip(from)
                    .map(|(index, (key, write))| RevisionEntry {
                        revision: Revision(state.revision(index + 1)),
                        seen,
                        events: vec![Event {
                            kind: EventKind::Put,
                            key: key.clone().into_bytes(),
                            value: write.to_string().into_bytes(),
                            create_revision: 0,
                            version: 0,
                            lease: 0,
                        }],
                    })
                    .collect()
            };
            let (Some(first), Some(last)) = (entries.first(), entries.last()) else { continue };
            let segment = Segment {
                header: SegmentHeader {
                    format: SegmentHeader::FORMAT,
                    cluster: "sim".into(),
                    cluster_id: cluster_id.clone(),
                    first: first.revision,
                    last: last.revision,
                    leases: Vec::new(),
                    writer: "lifeboat-sim".into(),
                },
                revisions: entries,
            };
            let Some(name) = segment.name(Compression::None) else { continue };
            let key = self.layout.segment_key(&cluster_id, &name);
            match self.store.put_small(&key, Bytes::from(segment.encode()), true).await {
                Ok(()) => {
                    let last = name.last().0;
                    lock(&self.world).log_flushed(cluster, last);
                    logged = Some((cluster, last));
                }
                // The store did not take it: the next flush writes the same revisions and more.
                Err(_) => logged = None,
            }
        }
    }
}

/// What a disaster recovery's claimer does with the log (see
/// `DataDirBuilder::extend_with_log`): the newest snapshot at or below the one
/// chosen that reads back whole, the log after it replayed onto its state, and
/// the result stored as a new versioned snapshot with its manifest.
pub async fn extend_with_log<S: SnapshotStore>(
    world: &Shared,
    store: &S,
    layout: &StoreLayout,
    snapshot: &SnapshotName,
) -> Result<Option<LogExtension>, ExtendError> {
    let catalog = catalog::load(store, layout).await.map_err(ExtendError::Store)?;
    let Some(chosen) = catalog.find(snapshot).and_then(|entry| entry.manifest.clone()) else { return Ok(None) };
    let candidates = catalog.snapshots.iter().filter(|entry| {
        entry.is_backup()
            && entry.name.revision() <= snapshot.revision()
            && entry.manifest.as_ref().is_some_and(|manifest| manifest.cluster_id == chosen.cluster_id)
    });
    // The production check picks the base (as the real replay's download does); what
    // passes it then goes through "etcdutl", which refuses a file whose own trailer
    // does not hold, failing the replay (the recovery then goes on without the log).
    let mut base = None;
    for entry in candidates {
        if catalog::verify_entry(store, entry).await.is_ok() {
            base = Some(entry.key.clone());
            break;
        }
    }
    let Some(key) = base else { return Ok(None) };
    let bytes = store.get_bounded(&key, revlog::SEGMENT_MAX_BYTES).await.map_err(ExtendError::Store)?;
    let Some(mut content) = SnapshotContent::from_file(&bytes) else {
        return Err(ExtendError::Replay("etcdutl snapshot restore: snapshot file integrity check failed".into()));
    };
    let (listed, _) = revlog::list(store, layout, &chosen.cluster_id).await.map_err(ExtendError::Store)?;
    let names: Vec<rules::SegmentName> = listed.iter().map(|listed| listed.name).collect();
    let chain = rules::chain(Revision(content.revision), &names, None);
    if chain.reaches.0 <= content.revision {
        return Ok(None);
    }
    if let Some(done) = revlog::reached_already(&catalog, &chosen.cluster_id, chain.reaches) {
        if let Some(entry) = catalog.find(&done.name) {
            if catalog::verify_entry(store, entry).await.is_ok() {
                return Ok(Some(done));
            }
        }
    }
    let start = content.revision;
    let mut applied = 0u64;
    let mut stopped_early = None;
    for name in &chain.segments {
        let segment = match revlog::read(store, layout, &chosen.cluster_id, name).await {
            Ok(segment) => segment,
            Err(revlog::LogError::Store(error)) => return Err(ExtendError::Store(error)),
            Err(error) => {
                stopped_early = Some(error.to_string());
                break;
            }
        };
        for entry in &segment.revisions {
            if entry.revision.0 <= content.revision {
                continue;
            }
            for event in &entry.events {
                let key = String::from_utf8_lossy(&event.key).into_owned();
                match event.kind {
                    EventKind::Put => {
                        let write = std::str::from_utf8(&event.value).ok().and_then(|text| text.parse().ok());
                        content.kv.insert(key, write.unwrap_or_default());
                    }
                    EventKind::Delete => {
                        content.kv.remove(&key);
                    }
                }
            }
            content.revision = entry.revision.0;
            applied += 1;
        }
    }
    if content.revision <= start {
        return Ok(None);
    }
    lock(world).stats.log_replays.push((snapshot.revision().0, content.revision));
    let now = Millis(EPOCH_MS + lock(world).now_ms());
    let name = SnapshotName::new(now, Revision(content.revision), Compression::None);
    let bytes = content.to_file();
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let manifest = Manifest {
        format: Manifest::FORMAT,
        name: name.clone(),
        sha256: sha256.clone(),
        size_bytes: bytes.len() as u64,
        stored_sha256: sha256,
        stored_size_bytes: bytes.len() as u64,
        compression: Compression::None,
        revision: Revision(content.revision),
        cluster_id: chosen.cluster_id.clone(),
        cluster: chosen.cluster.clone(),
        members: chosen.members.clone(),
        source_member: "lifeboat-replay".into(),
        etcd_version: chosen.etcd_version.clone(),
        created_at: now.to_rfc3339(),
        created_ms: now,
        writer: "lifeboat-sim replay".into(),
        kv_hash: None,
        key_id: None,
    };
    store.put_small(&layout.snapshot_key(&name), bytes, true).await.map_err(ExtendError::Store)?;
    let body = serde_json::to_vec(&manifest).map_err(|error| ExtendError::Replay(Box::new(error)))?;
    store.put_small(&layout.manifest_key(&name), Bytes::from(body), true).await.map_err(ExtendError::Store)?;
    Ok(Some(LogExtension { name, revisions_applied: applied, reached: content.revision, stopped_early }))
}
