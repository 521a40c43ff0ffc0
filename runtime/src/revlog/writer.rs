//! The log writer: watches every key from where the log (or the newest
//! snapshot) ends and writes one segment per flush interval, or sooner once a
//! segment reaches its target size.
//!
//! - **Never a hole inside a chain.** Revisions are appended only in order, each
//!   exactly one after the previous; anything else ends the stream and the writer
//!   starts over from what the store holds.
//! - **Compaction.** When etcd has compacted the revision the log must continue
//!   from, the history in between is gone: the writer takes a full snapshot at
//!   once and starts a new chain after it. The hole stays visible in the listing.
//! - **Bounded memory.** One watch message and one segment are held at a time.
//!   While a flush waits for the store, the watch is not read, so etcd holds the
//!   backlog, not this process.
//! - **Idempotent writes.** Segments are written create-if-absent; a segment
//!   another writer already wrote under the same name holds the same revisions.

use super::{encode, list};
use crate::backup::catalog;
use crate::backup::save::{self, SaveSettings};
use crate::etcd::leader::Local;
use crate::etcd::log::Delivery;
use crate::etcd::EtcdClient;
use crate::exit::{Classify, Exit};
use crate::host::clock::wall_clock_now;
use crate::ports::{EtcdError, SnapshotStore, StoreError};
use bytes::Bytes;
use lifeboat::revlog::{LeaseRecord, RevisionEntry, Segment, SegmentHeader};
use lifeboat::{Revision, StoreLayout};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct WriterSettings {
    pub cluster: String,
    /// A segment is written at most this long after its first revision arrived.
    pub flush_interval: Duration,
    /// A segment is written as soon as its events reach this many bytes.
    pub segment_target_bytes: usize,
    pub zstd_level: i32,
    /// How a new chain's snapshot is saved.
    pub save: SaveSettings,
}

/// What the writer has done so far.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WriterStats {
    pub cluster_id: String,
    pub segments: u64,
    pub revisions: u64,
    /// The last revision written to the store (0: none yet).
    pub last_revision: i64,
    /// Times the watch start had been compacted away and a new chain began.
    pub gaps: u64,
    /// Snapshots saved to start a chain.
    pub snapshots: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start a chain: {0}")]
    Save(#[from] save::SaveError),
    #[error("the watch delivered revision {got} where {expected} was due")]
    OutOfOrder { expected: i64, got: i64 },
    #[error("the watch ended")]
    Ended,
    #[error("cannot encode a segment: {0}")]
    Encode(std::io::Error),
    #[error("stopped before revisions {first}..={last} reached the store; the next writer resumes from the store")]
    StoppedUnflushed { first: i64, last: i64 },
}

impl Classify for WriterError {
    fn exit(&self) -> Exit {
        match self {
            WriterError::Etcd(error) => error.exit(),
            WriterError::Store(error) => error.exit(),
            WriterError::Save(error) => error.exit(),
            _ => Exit::Failure,
        }
    }
}

/// How one watch ended.
enum StreamEnd {
    Stopped,
    Compacted(Revision),
}

/// Leases seen, with their granted TTL (-1: gone before the writer asked).
/// Bounded: cleared when full, so a cluster churning leases cannot grow it.
struct LeaseCache {
    ttls: HashMap<i64, i64>,
}

const LEASE_CACHE_MAX: usize = 100_000;
/// The retry delay of a failed flush doubles up to this.
const FLUSH_RETRY_MAX: Duration = Duration::from_secs(10);

/// Runs until `stop` turns true. Errors of the cluster or the store are logged
/// and retried; only a stop ends it.
pub async fn run<S: SnapshotStore>(
    etcd: &EtcdClient,
    store: &S,
    layout: &StoreLayout,
    settings: &WriterSettings,
    mut stop: watch::Receiver<bool>,
    on_flush: impl Fn(&WriterStats),
) -> WriterStats {
    let mut stats = WriterStats::default();
    let mut leases = LeaseCache { ttls: HashMap::new() };
    // The log cannot continue from at or below this revision (etcd compacted it).
    let mut compacted: Option<Revision> = None;
    let mut retry = Duration::from_millis(500);
    loop {
        // Told to stop, or nobody left to tell (the sender is gone).
        if *stop.borrow() || stop.has_changed().is_err() {
            return stats;
        }
        let attempt =
            run_once(etcd, store, layout, settings, &mut stop, &mut stats, &mut leases, compacted, &on_flush).await;
        match attempt {
            Ok(StreamEnd::Stopped) => return stats,
            Ok(StreamEnd::Compacted(revision)) => {
                stats.gaps += 1;
                tracing::warn!(
                    compacted = revision.0,
                    logged = stats.last_revision,
                    "etcd compacted the history the log continues from: starting a new chain from a fresh snapshot"
                );
                compacted = Some(revision);
                retry = Duration::from_millis(500);
            }
            Err(WriterError::StoppedUnflushed { first, last }) => {
                tracing::warn!(first, last, "stopped with revisions not yet in the store");
                return stats;
            }
            Err(error) => {
                tracing::warn!(error = %error, retry_ms = retry.as_millis() as u64, "log writer interrupted; resuming from the store");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = stop.changed() => {}
                }
                retry = (retry * 2).min(FLUSH_RETRY_MAX);
            }
        }
    }
}

/// Where the log of `cluster_id` goes on: one after its last segment, else one
/// after the newest snapshot of that cluster; `None` when neither can serve
/// (nothing yet, or compacted away) and a chain must start from a new snapshot.
async fn resume_point<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    cluster_id: &str,
    compacted: Option<Revision>,
) -> Result<Option<Revision>, StoreError> {
    let usable = |revision: Revision| compacted.is_none_or(|compacted| revision.0 > compacted.0);
    let (segments, _) = list(store, layout, cluster_id).await?;
    if let Some(last) = segments.iter().map(|listed| listed.name.last()).max() {
        let next = Revision(last.0.saturating_add(1));
        if usable(next) {
            return Ok(Some(next));
        }
    }
    // No log yet, or its end was compacted away: a snapshot newer than the compaction
    // starts the chain (a chain started a moment ago by another writer's fresh snapshot).
    let catalog = catalog::load(store, layout).await?;
    let newest = catalog
        .snapshots
        .iter()
        .filter(|entry| entry.is_backup())
        .filter_map(|entry| entry.manifest.as_ref())
        .filter(|manifest| manifest.cluster_id == cluster_id)
        .map(|manifest| manifest.revision)
        .max();
    Ok(newest.map(|revision| Revision(revision.0.saturating_add(1))).filter(|next| usable(*next)))
}

#[allow(clippy::too_many_arguments)]
async fn run_once<S: SnapshotStore>(
    etcd: &EtcdClient,
    store: &S,
    layout: &StoreLayout,
    settings: &WriterSettings,
    stop: &mut watch::Receiver<bool>,
    stats: &mut WriterStats,
    leases: &mut LeaseCache,
    compacted: Option<Revision>,
    on_flush: &impl Fn(&WriterStats),
) -> Result<StreamEnd, WriterError> {
    let source = save::choose_source(etcd).await?;
    let cluster_id = format!("{:x}", source.cluster_id);
    stats.cluster_id = cluster_id.clone();
    let start = match resume_point(store, layout, &cluster_id, compacted).await? {
        Some(start) => {
            tracing::info!(cluster_id = %cluster_id, from = start.0, endpoint = %source.endpoint, "log writer resuming");
            start
        }
        None => {
            let report = save::save_from(etcd, store, layout, &settings.save, wall_clock_now(), &source).await?;
            stats.snapshots += 1;
            tracing::info!(cluster_id = %cluster_id, snapshot = %report.name, "log writer starting a chain from a new snapshot");
            Revision(report.revision.saturating_add(1))
        }
    };
    let mut watch = etcd.watch_everything(&source.endpoint, start).await?;
    let mut pending = Pending::new(start);
    loop {
        let flush_due = pending.first_arrival.map(|arrival| arrival + settings.flush_interval);
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    flush(store, layout, settings, &cluster_id, &mut pending, stats, stop, on_flush).await?;
                    return Ok(StreamEnd::Stopped);
                }
            }
            _ = sleep_until(flush_due), if flush_due.is_some() => {
                flush(store, layout, settings, &cluster_id, &mut pending, stats, stop, on_flush).await?;
            }
            delivery = watch.next() => {
                match delivery {
                    Ok(Some(Delivery::Revisions(entries))) => {
                        for entry in entries {
                            pending.push(entry, etcd, &source.endpoint, leases).await?;
                        }
                        if pending.bytes >= settings.segment_target_bytes {
                            flush(store, layout, settings, &cluster_id, &mut pending, stats, stop, on_flush).await?;
                        }
                    }
                    Ok(Some(Delivery::Quiet)) => {}
                    Ok(Some(Delivery::Compacted { compact_revision })) => {
                        flush(store, layout, settings, &cluster_id, &mut pending, stats, stop, on_flush).await?;
                        return Ok(StreamEnd::Compacted(compact_revision));
                    }
                    Ok(None) => {
                        flush(store, layout, settings, &cluster_id, &mut pending, stats, stop, on_flush).await?;
                        return Err(WriterError::Ended);
                    }
                    Err(error) => {
                        flush(store, layout, settings, &cluster_id, &mut pending, stats, stop, on_flush).await?;
                        return Err(error.into());
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Revisions received and not yet in the store.
struct Pending {
    entries: Vec<RevisionEntry>,
    leases: BTreeMap<i64, i64>,
    bytes: usize,
    first_arrival: Option<tokio::time::Instant>,
    /// The revision due next.
    expected: Revision,
}

impl Pending {
    fn new(start: Revision) -> Pending {
        Pending { entries: Vec::new(), leases: BTreeMap::new(), bytes: 0, first_arrival: None, expected: start }
    }

    async fn push(
        &mut self,
        mut entry: RevisionEntry,
        etcd: &EtcdClient,
        endpoint: &str,
        cache: &mut LeaseCache,
    ) -> Result<(), WriterError> {
        // The tail of a revision split across two deliveries joins it while it is still
        // pending; anything else out of order ends the stream (the writer resumes from the
        // store), never a silent drop.
        let joins = entry.revision.0.saturating_add(1) == self.expected.0
            && self.entries.last().is_some_and(|last| last.revision == entry.revision);
        if entry.revision != self.expected && !joins {
            return Err(WriterError::OutOfOrder { expected: self.expected.0, got: entry.revision.0 });
        }
        for event in &entry.events {
            if event.lease == 0 || self.leases.contains_key(&event.lease) {
                continue;
            }
            let ttl = match cache.ttls.get(&event.lease) {
                Some(ttl) => *ttl,
                None => {
                    let ttl = etcd.lease_granted_ttl(endpoint, event.lease).await?.unwrap_or(-1);
                    if cache.ttls.len() >= LEASE_CACHE_MAX {
                        cache.ttls.clear();
                    }
                    cache.ttls.insert(event.lease, ttl);
                    ttl
                }
            };
            self.leases.insert(event.lease, ttl);
        }
        entry.seen = wall_clock_now();
        self.bytes += entry.events.iter().map(|event| event.key.len() + event.value.len() + 40).sum::<usize>() + 20;
        self.first_arrival.get_or_insert_with(tokio::time::Instant::now);
        match self.entries.last_mut() {
            Some(last) if joins => last.events.append(&mut entry.events),
            _ => {
                self.expected = Revision(entry.revision.0.saturating_add(1));
                self.entries.push(entry);
            }
        }
        Ok(())
    }
}

/// Writes what is pending as one segment, retrying the store until it takes it
/// or the writer is told to stop.
#[allow(clippy::too_many_arguments)]
async fn flush<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    settings: &WriterSettings,
    cluster_id: &str,
    pending: &mut Pending,
    stats: &mut WriterStats,
    stop: &mut watch::Receiver<bool>,
    on_flush: &impl Fn(&WriterStats),
) -> Result<(), WriterError> {
    let (Some(first), Some(last)) = (pending.entries.first(), pending.entries.last()) else {
        return Ok(());
    };
    let (first, last) = (first.revision, last.revision);
    let segment = Segment {
        header: SegmentHeader {
            format: SegmentHeader::FORMAT,
            cluster: settings.cluster.clone(),
            cluster_id: cluster_id.to_owned(),
            first,
            last,
            leases: pending.leases.iter().map(|(id, ttl)| LeaseRecord { id: *id, ttl_seconds: *ttl }).collect(),
            writer: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
        },
        revisions: std::mem::take(&mut pending.entries),
    };
    let count = segment.revisions.len() as u64;
    let (name, bytes) = encode(&segment, settings.zstd_level).map_err(WriterError::Encode)?;
    drop(segment);
    let key = layout.segment_key(cluster_id, &name);
    let body = Bytes::from(bytes);
    let mut retry = Duration::from_millis(200);
    loop {
        match store.put_small(&key, body.clone(), true).await {
            // Told to stop while the store refuses: give up (the next writer resumes from the store).
            Err(_) if *stop.borrow() => {
                return Err(WriterError::StoppedUnflushed { first: first.0, last: last.0 });
            }
            // Already there: written by this writer before a lost answer, or by another
            // writer during a hand-over; a name holds one range of one history.
            Ok(()) | Err(StoreError::AlreadyExists { .. }) => break,
            Err(error) => {
                tracing::warn!(segment = %name, error = %error, retry_ms = retry.as_millis() as u64, "log segment not written yet");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    changed = stop.changed() => {
                        if changed.is_err() || *stop.borrow() {
                            return Err(WriterError::StoppedUnflushed { first: first.0, last: last.0 });
                        }
                    }
                }
                retry = (retry * 2).min(FLUSH_RETRY_MAX);
            }
        }
    }
    pending.leases.clear();
    pending.bytes = 0;
    pending.first_arrival = None;
    stats.segments += 1;
    stats.revisions += count;
    stats.last_revision = last.0;
    tracing::debug!(segment = %name, revisions = count, "log segment written");
    on_flush(stats);
    Ok(())
}

/// Runs the writer while the member at `local.client_url` leads the cluster,
/// so the agent beside the leader writes the log as it saves the snapshots.
/// Leadership is checked every `check`: when it moves, this writer flushes and
/// stops, and the new leader's agent resumes from the store. For up to one check
/// both may write; their segments hold the same revisions of the same history,
/// and a name is written create-if-absent, so a reader sees one log.
pub async fn while_leading<S: SnapshotStore>(
    etcd: &EtcdClient,
    store: &S,
    layout: &StoreLayout,
    settings: &WriterSettings,
    local: &Local,
    mut stop: watch::Receiver<bool>,
    on_flush: impl Fn(&WriterStats),
) {
    let check = local.check;
    let leading = async |etcd: &EtcdClient| local.leads(etcd).await;
    loop {
        if *stop.borrow() || stop.has_changed().is_err() {
            return;
        }
        if !leading(etcd).await {
            tokio::select! {
                _ = tokio::time::sleep(check) => {}
                changed = stop.changed() => if changed.is_err() { return },
            }
            continue;
        }
        tracing::info!("this member leads: writing the revision log");
        let (inner, inner_stopped) = watch::channel(false);
        let watchdog = async {
            loop {
                let gone = tokio::select! {
                    _ = tokio::time::sleep(check) => false,
                    changed = stop.changed() => changed.is_err(),
                };
                if gone || *stop.borrow() || !leading(etcd).await {
                    let _ = inner.send(true);
                    return;
                }
            }
        };
        let (stats, ()) = tokio::join!(run(etcd, store, layout, settings, inner_stopped, &on_flush), watchdog);
        tracing::info!(revision = stats.last_revision, "no longer writing the revision log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat::revlog::{Event, EventKind};
    use lifeboat::Millis;

    fn entry(revision: i64, key: &str) -> RevisionEntry {
        RevisionEntry {
            revision: Revision(revision),
            seen: Millis(0),
            events: vec![Event {
                kind: EventKind::Put,
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                create_revision: revision,
                version: 1,
                lease: 0,
            }],
        }
    }

    #[tokio::test]
    async fn revisions_are_taken_only_in_order_and_a_split_one_is_joined() {
        // No lease in these events, so the client is never asked anything.
        let etcd = EtcdClient::new(Vec::new(), Duration::from_secs(1));
        let mut cache = LeaseCache { ttls: HashMap::new() };
        let mut pending = Pending::new(Revision(5));
        pending.push(entry(5, "a"), &etcd, "", &mut cache).await.unwrap();
        // The tail of revision 5 in a second delivery joins it.
        pending.push(entry(5, "b"), &etcd, "", &mut cache).await.unwrap();
        assert_eq!(pending.entries.len(), 1);
        assert_eq!(pending.entries[0].events.len(), 2);
        assert_eq!(pending.expected, Revision(6));
        // A hole, or a revision from before, ends the stream instead of being dropped.
        assert!(matches!(
            pending.push(entry(7, "c"), &etcd, "", &mut cache).await,
            Err(WriterError::OutOfOrder { expected: 6, got: 7 })
        ));
        assert!(matches!(
            pending.push(entry(4, "d"), &etcd, "", &mut cache).await,
            Err(WriterError::OutOfOrder { expected: 6, got: 4 })
        ));
        pending.push(entry(6, "e"), &etcd, "", &mut cache).await.unwrap();
        assert_eq!(pending.entries.len(), 2);
    }
}
