//! The revision log in the store: list the segments of one etcd cluster, read
//! and check one, and encode one for upload. The pure rules (names, codec,
//! chains, pruning) are in `lifeboat::revlog`; the writer (`writer`, a watch
//! beside the leader) and the replay into a scratch member (`replay`) need a
//! real etcd, so they exist only in the real build.

#[cfg(feature = "real")]
pub mod replay;
#[cfg(feature = "real")]
pub mod writer;

use crate::backup::catalog::Catalog;
use crate::exit::{Classify, Exit};
use crate::ports::{LogExtension, ObjectInfo, SnapshotStore, StoreError};
use lifeboat::revlog::{Segment, SegmentError, SegmentName};
use lifeboat::{Compression, StoreLayout};
use std::io::Read;

/// The largest segment object read (stored bytes), and the largest it may
/// decompress to. The writer aims at a few MiB; only a revision that deletes a
/// huge range makes one larger, since a revision is never split.
pub const SEGMENT_MAX_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("log segment {location} is damaged: {source}; `lifeboat log status` shows the chain, and a restore stops before it")]
    Damaged { location: String, source: SegmentError },
    #[error("log segment {location} cannot be decompressed: {detail}")]
    Unreadable { location: String, detail: String },
    #[error("log segment {location} holds revisions {first}..={last} of cluster {cluster_id}, not what its name and place say")]
    Misplaced { location: String, cluster_id: String, first: i64, last: i64 },
}

impl Classify for LogError {
    fn exit(&self) -> Exit {
        match self {
            LogError::Store(error) => error.exit(),
            LogError::Damaged { .. } | LogError::Unreadable { .. } | LogError::Misplaced { .. } => Exit::Corrupt,
        }
    }
}

/// One segment as the store lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Listed {
    #[serde(serialize_with = "as_text")]
    pub name: SegmentName,
    pub object: ObjectInfo,
}

fn as_text<S: serde::Serializer>(name: &SegmentName, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(name)
}

/// The segments of one etcd cluster's log, sorted by range, and every key under
/// its directory that is not a segment name (reported, never read).
pub async fn list<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    cluster_id: &str,
) -> Result<(Vec<Listed>, Vec<String>), StoreError> {
    let prefix = layout.log_prefix(cluster_id);
    let mut segments = Vec::new();
    let mut unknown = Vec::new();
    for object in store.list(&prefix).await? {
        match object.key.strip_prefix(&prefix).and_then(|name| name.parse::<SegmentName>().ok()) {
            Some(name) => segments.push(Listed { name, object }),
            None => unknown.push(object.key),
        }
    }
    segments.sort_by_key(|listed| (listed.name.first(), listed.name.last()));
    Ok((segments, unknown))
}

/// What one cluster ID's log covers, as `log status` and `snapshots list` report it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Extent {
    pub cluster_id: String,
    pub segments: usize,
    pub first_revision: Option<i64>,
    pub last_revision: Option<i64>,
    /// Holes as (last revision held before, first revision after).
    pub gaps: Vec<(i64, i64)>,
}

impl Extent {
    /// From a listing sorted by range (what [`list`] returns).
    pub fn of(cluster_id: &str, segments: &[Listed]) -> Extent {
        let names: Vec<SegmentName> = segments.iter().map(|listed| listed.name).collect();
        Extent {
            cluster_id: cluster_id.to_owned(),
            segments: names.len(),
            first_revision: names.first().map(|name| name.first().0),
            last_revision: names.iter().map(|name| name.last().0).max(),
            gaps: lifeboat::revlog::gaps(&names).into_iter().map(|(after, next)| (after.0, next.0)).collect(),
        }
    }
}

/// The etcd cluster IDs that have a log in the store.
pub async fn cluster_ids<S: SnapshotStore>(store: &S, layout: &StoreLayout) -> Result<Vec<String>, StoreError> {
    let root = layout.log_root();
    let mut ids: Vec<String> = store
        .list(&root)
        .await?
        .into_iter()
        .filter_map(|object| {
            object.key.strip_prefix(&root).and_then(|rest| rest.split_once('/')).map(|(id, _)| id.to_owned())
        })
        .filter(|id| !id.is_empty() && id.bytes().all(|byte| byte.is_ascii_hexdigit()))
        .collect();
    ids.dedup();
    Ok(ids)
}

/// Reads one segment and checks it: checksum, every revision of its range
/// present, and the cluster and range its key names.
pub async fn read<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    cluster_id: &str,
    name: &SegmentName,
) -> Result<Segment, LogError> {
    let key = layout.segment_key(cluster_id, name);
    let location = store.location(&key);
    let stored = store.get_bounded(&key, SEGMENT_MAX_BYTES).await?;
    let plain = match name.compression() {
        Compression::None => stored.to_vec(),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(&stored[..])
                .map_err(|error| LogError::Unreadable { location: location.clone(), detail: error.to_string() })?;
            let mut plain = Vec::new();
            decoder
                .take(SEGMENT_MAX_BYTES as u64 + 1)
                .read_to_end(&mut plain)
                .map_err(|error| LogError::Unreadable { location: location.clone(), detail: error.to_string() })?;
            if plain.len() > SEGMENT_MAX_BYTES {
                return Err(LogError::Unreadable {
                    location,
                    detail: format!("it decompresses to more than {SEGMENT_MAX_BYTES} bytes"),
                });
            }
            plain
        }
    };
    let segment = Segment::decode(&plain).map_err(|source| LogError::Damaged { location: location.clone(), source })?;
    if segment.header.cluster_id != cluster_id
        || segment.header.first != name.first()
        || segment.header.last != name.last()
    {
        return Err(LogError::Misplaced {
            location,
            cluster_id: segment.header.cluster_id,
            first: segment.header.first.0,
            last: segment.header.last.0,
        });
    }
    Ok(segment)
}

/// A segment as stored: zstd at `level` (level 1 compresses a busy second of
/// Kubernetes objects several-fold in a few milliseconds).
pub fn encode(segment: &Segment, level: i32) -> Result<(SegmentName, Vec<u8>), std::io::Error> {
    let name = segment
        .name(Compression::Zstd)
        .ok_or_else(|| std::io::Error::other("a segment with an empty revision range"))?;
    let bytes = zstd::bulk::compress(&segment.encode(), level)?;
    Ok((name, bytes))
}

/// A verified snapshot of `cluster_id` that already holds the log up to
/// `reaches` (another claimer's replay, a moment earlier): a recovery takes it
/// instead of replaying the same log again.
pub fn reached_already(catalog: &Catalog, cluster_id: &str, reaches: lifeboat::Revision) -> Option<LogExtension> {
    catalog
        .snapshots
        .iter()
        .filter(|entry| entry.is_backup())
        .filter(|entry| entry.manifest.as_ref().is_some_and(|manifest| manifest.cluster_id == cluster_id))
        .find(|entry| entry.name.revision() >= reaches)
        .map(|entry| LogExtension {
            name: entry.name.clone(),
            revisions_applied: 0,
            reached: entry.name.revision().0,
            stopped_early: None,
        })
}
