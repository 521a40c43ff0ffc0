//! The revision log: every change the cluster made after a snapshot, in the
//! store, so a restore can reach any revision and a disaster recovery loses
//! about one flush interval of writes instead of one snapshot interval.
//!
//! The writer (beside the leader) watches the whole key space and writes one
//! *segment* per flush: the events of a contiguous range of revisions, never
//! splitting one revision (one etcd transaction). Every etcd revision carries at
//! least one event, so "contiguous" is checkable: a segment holds every revision
//! from its first to its last, and the next one starts one revision later.
//!
//! Segments of one etcd cluster (its cluster ID) live in one directory, so a
//! restored cluster, whose revisions may repeat the old ones, never mixes its
//! history with its predecessor's:
//!
//! ```text
//! <prefix>/<cluster>/exported/etcd-log/<cluster id>/<first>-<last>.log.zst
//! ```
//!
//! This module is pure: names, the segment codec (bytes in, bytes out, every
//! byte from the store treated as untrusted), which segments a restore to a
//! revision replays, and which ones a prune may delete.

use crate::snapshot::Compression;
use crate::time::Millis;
use crate::types::Revision;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Revisions are printed with this many digits so a listing sorts by revision.
const DIGITS: usize = 19;

/// `<first>-<last>.log[.zst]`, both zero-padded to 19 digits, e.g.
/// `0000000000000004712-0000000000000004790.log.zst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    first: Revision,
    last: Revision,
    compression: Compression,
}

impl SegmentName {
    /// `None` unless `1 <= first <= last`.
    pub fn new(first: Revision, last: Revision, compression: Compression) -> Option<SegmentName> {
        (first.0 >= 1 && first <= last).then_some(SegmentName { first, last, compression })
    }
    pub fn first(&self) -> Revision {
        self.first
    }
    pub fn last(&self) -> Revision {
        self.last
    }
    pub fn compression(&self) -> Compression {
        self.compression
    }
    pub fn contains(&self, revision: Revision) -> bool {
        self.first <= revision && revision <= self.last
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extension = match self.compression {
            Compression::None => ".log",
            Compression::Zstd => ".log.zst",
        };
        write!(formatter, "{:0DIGITS$}-{:0DIGITS$}{extension}", self.first.0, self.last.0)
    }
}

impl FromStr for SegmentName {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            format!(
                "{text:?} is not a log segment name (expected like 0000000000000004712-0000000000000004790.log.zst)"
            )
        };
        let (stem, compression) = if let Some(stem) = text.strip_suffix(".log.zst") {
            (stem, Compression::Zstd)
        } else if let Some(stem) = text.strip_suffix(".log") {
            (stem, Compression::None)
        } else {
            return Err(invalid());
        };
        let (first, last) = stem.split_once('-').ok_or_else(invalid)?;
        let number = |digits: &str| -> Result<Revision, String> {
            if digits.len() != DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(invalid());
            }
            digits.parse::<i64>().map(Revision).map_err(|_| invalid())
        };
        SegmentName::new(number(first)?, number(last)?, compression).ok_or_else(invalid)
    }
}

/// What one event did to one key, as the watch reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Put,
    Delete,
}

/// One key changed at one revision: what a faithful replay needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: Vec<u8>,
    /// Empty for a delete.
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub version: i64,
    /// 0: no lease.
    pub lease: i64,
}

/// Every event of one revision (one transaction), and when the writer saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionEntry {
    pub revision: Revision,
    /// The writer's wall clock when the watch delivered it: what `--to-time` compares.
    pub seen: Millis,
    pub events: Vec<Event>,
}

/// A lease some event of the segment was attached to, with the TTL it was granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: i64,
    pub ttl_seconds: i64,
}

/// The segment's header, JSON so it stays readable and extensible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHeader {
    pub format: u32,
    /// The logical cluster name of the store layout.
    pub cluster: String,
    /// etcd's cluster ID, in hex (the directory the segment lives in).
    pub cluster_id: String,
    pub first: Revision,
    pub last: Revision,
    /// Leases the segment's puts refer to.
    #[serde(default)]
    pub leases: Vec<LeaseRecord>,
    /// The lifeboat version that wrote it.
    pub writer: String,
}

impl SegmentHeader {
    pub const FORMAT: u32 = 1;
}

/// A decoded segment: a header and every revision from `first` to `last`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub header: SegmentHeader,
    pub revisions: Vec<RevisionEntry>,
}

const MAGIC: &[u8] = b"LBLOG\x01";
/// A header is a few hundred bytes; more is not one lifeboat wrote.
const HEADER_MAX: usize = 1 << 20;
const SHA256_LEN: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("not a lifeboat log segment (bad magic)")]
    Magic,
    #[error("the segment's checksum does not match its content: it is damaged")]
    Checksum,
    #[error("the segment ends early, inside {0}")]
    Truncated(&'static str),
    #[error("unreadable segment header: {0}")]
    Header(String),
    #[error("segment format {0} is newer than this lifeboat understands; upgrade lifeboat")]
    Format(u32),
    #[error("the segment says it holds revisions {first}..={last} but {detail}")]
    Inconsistent { first: i64, last: i64, detail: String },
}

impl Segment {
    /// The segment as bytes: magic, header, revisions, then the sha256 of all of it.
    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).unwrap_or_default();
        let mut out = Vec::with_capacity(64 + header.len() + self.payload_hint());
        out.extend_from_slice(MAGIC);
        put_bytes(&mut out, &header);
        for entry in &self.revisions {
            out.extend_from_slice(&entry.revision.0.to_be_bytes());
            out.extend_from_slice(&entry.seen.0.to_be_bytes());
            out.extend_from_slice(&(entry.events.len() as u32).to_be_bytes());
            for event in &entry.events {
                out.push(match event.kind {
                    EventKind::Put => 0,
                    EventKind::Delete => 1,
                });
                put_bytes(&mut out, &event.key);
                put_bytes(&mut out, &event.value);
                out.extend_from_slice(&event.create_revision.to_be_bytes());
                out.extend_from_slice(&event.version.to_be_bytes());
                out.extend_from_slice(&event.lease.to_be_bytes());
            }
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    fn payload_hint(&self) -> usize {
        self.revisions
            .iter()
            .flat_map(|entry| &entry.events)
            .map(|event| event.key.len() + event.value.len() + 40)
            .sum::<usize>()
            + self.revisions.len() * 20
    }

    /// Parses bytes from the store. Never panics, never allocates more than the
    /// input's size: every length is checked against what is left.
    pub fn decode(bytes: &[u8]) -> Result<Segment, SegmentError> {
        let body_len = bytes.len().checked_sub(SHA256_LEN).ok_or(SegmentError::Truncated("the checksum"))?;
        let (body, digest) = bytes.split_at(body_len);
        let mut reader = Reader { rest: body };
        if reader.take(MAGIC.len(), "the magic")? != MAGIC {
            return Err(SegmentError::Magic);
        }
        if Sha256::digest(body).as_slice() != digest {
            return Err(SegmentError::Checksum);
        }
        let header_len = reader.u32("the header length")? as usize;
        if header_len > HEADER_MAX {
            return Err(SegmentError::Header(format!("{header_len} bytes long")));
        }
        let header: SegmentHeader = serde_json::from_slice(reader.take(header_len, "the header")?)
            .map_err(|error| SegmentError::Header(error.to_string()))?;
        if header.format > SegmentHeader::FORMAT {
            return Err(SegmentError::Format(header.format));
        }
        let inconsistent =
            |detail: String| SegmentError::Inconsistent { first: header.first.0, last: header.last.0, detail };
        if header.first.0 < 1 || header.first > header.last {
            return Err(inconsistent("that range is empty".into()));
        }
        let mut revisions = Vec::new();
        let mut expected = header.first;
        while !reader.rest.is_empty() {
            let revision = Revision(reader.i64("a revision")?);
            if revision != expected {
                return Err(inconsistent(format!("revision {} follows where {} was due", revision.0, expected.0)));
            }
            let seen = Millis(reader.u64("a revision's time")?);
            let count = reader.u32("an event count")? as usize;
            if count == 0 {
                return Err(inconsistent(format!("revision {} has no event", revision.0)));
            }
            // Each event takes at least 33 bytes: the count cannot exceed what is left.
            let mut events = Vec::with_capacity(count.min(reader.rest.len() / 33));
            for _ in 0..count {
                let kind = match reader.take(1, "an event kind")? {
                    [0] => EventKind::Put,
                    [1] => EventKind::Delete,
                    other => return Err(inconsistent(format!("an event has unknown kind {other:?}"))),
                };
                let key = reader.bytes("a key")?.to_vec();
                let value = reader.bytes("a value")?.to_vec();
                let create_revision = reader.i64("a create revision")?;
                let version = reader.i64("a version")?;
                let lease = reader.i64("a lease")?;
                events.push(Event { kind, key, value, create_revision, version, lease });
            }
            revisions.push(RevisionEntry { revision, seen, events });
            expected = Revision(revision.0.saturating_add(1));
        }
        if revisions.last().map(|entry| entry.revision) != Some(header.last) {
            return Err(inconsistent(format!("it ends at revision {}", expected.0.saturating_sub(1))));
        }
        Ok(Segment { header, revisions })
    }

    /// The segment's name in the store.
    pub fn name(&self, compression: Compression) -> Option<SegmentName> {
        SegmentName::new(self.header.first, self.header.last, compression)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize, what: &'static str) -> Result<&'a [u8], SegmentError> {
        if count > self.rest.len() {
            return Err(SegmentError::Truncated(what));
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Ok(taken)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], SegmentError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N, what)?);
        Ok(array)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, SegmentError> {
        self.array(what).map(u32::from_be_bytes)
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, SegmentError> {
        self.array(what).map(u64::from_be_bytes)
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, SegmentError> {
        self.array(what).map(i64::from_be_bytes)
    }
    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], SegmentError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }
}

/// The segments that carry the log on from a snapshot at `base` without a
/// hole, and how far they reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub base: Revision,
    pub segments: Vec<SegmentName>,
    /// The last revision the chain holds (`base` when it holds none).
    pub reaches: Revision,
}

/// Follows the log from `base` (a snapshot's revision) as far as the segments
/// go without a hole, stopping once `until` is covered. Overlapping segments
/// (two writers during a leadership hand-over) are fine: at each step the one
/// reaching furthest is taken; a replay skips revisions it already applied.
pub fn chain(base: Revision, segments: &[SegmentName], until: Option<Revision>) -> Chain {
    let mut chain = Chain { base, segments: Vec::new(), reaches: base };
    loop {
        if until.is_some_and(|until| chain.reaches >= until) {
            return chain;
        }
        let next = Revision(chain.reaches.0.saturating_add(1));
        let Some(segment) = segments.iter().filter(|segment| segment.contains(next)).max_by_key(|segment| segment.last)
        else {
            return chain;
        };
        chain.segments.push(*segment);
        chain.reaches = segment.last;
    }
}

/// Holes in the log of one cluster ID: `(after, next)` where revision `after`
/// is the last one held before the hole and `next` the first one after it.
pub fn gaps(segments: &[SegmentName]) -> Vec<(Revision, Revision)> {
    let mut sorted: Vec<&SegmentName> = segments.iter().collect();
    sorted.sort_by_key(|segment| (segment.first, segment.last));
    let mut gaps = Vec::new();
    let mut reaches: Option<Revision> = None;
    for segment in sorted {
        match reaches {
            Some(end) if segment.first.0 > end.0.saturating_add(1) => {
                gaps.push((end, segment.first));
                reaches = Some(segment.last);
            }
            Some(end) => reaches = Some(end.max(segment.last)),
            None => reaches = Some(segment.last),
        }
    }
    gaps
}

/// A snapshot a restore may start from, as the plan sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    /// The etcd cluster ID whose log extends it. A restored cluster starts a new
    /// history whose revisions may repeat its predecessor's.
    pub history: String,
    pub revision: Revision,
    /// When it was saved.
    pub saved: Millis,
}

/// What a restore aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aim {
    /// As far as the log goes.
    Latest,
    /// Exactly this revision.
    Revision(Revision),
    /// The last revision seen by then: no base saved after it may serve.
    Time(Millis),
}

/// Every base that can serve `aim`, best first, each with its chain through the
/// segments of its history (`segments_of(history)`), as indices into `bases`.
///
/// The newest history first (the one with the newest save among the bases that
/// serve the aim): a restore must not go back to a cluster that was itself
/// replaced. Within it, for a revision the
/// newest base at or below it whose chain reaches it (the shortest replay); for
/// latest or a time, the furthest reach, then the newest base. A revision
/// target leaves out bases above it and chains that stop short of it; a time
/// target leaves out bases saved after it (their data may hold later writes).
pub fn candidates<'a>(
    bases: &[Base],
    segments_of: impl Fn(&str) -> &'a [SegmentName],
    aim: Aim,
) -> Vec<(usize, Chain)> {
    let mut found: Vec<(usize, Chain)> = bases
        .iter()
        .enumerate()
        .filter_map(|(index, base)| {
            let segments = segments_of(&base.history);
            let chain = match aim {
                Aim::Revision(target) if base.revision > target => return None,
                Aim::Revision(target) => chain(base.revision, segments, Some(target)),
                Aim::Time(time) if base.saved > time => return None,
                Aim::Time(_) | Aim::Latest => chain(base.revision, segments, None),
            };
            match aim {
                Aim::Revision(target) if chain.reaches < target => None,
                _ => Some((index, chain)),
            }
        })
        .collect();
    // Among the bases that serve the aim: at a time, the history live then.
    let mut newest_save: std::collections::BTreeMap<&str, Millis> = std::collections::BTreeMap::new();
    for base in found.iter().filter_map(|(index, _)| bases.get(*index)) {
        let newest = newest_save.entry(base.history.as_str()).or_insert(base.saved);
        *newest = (*newest).max(base.saved);
    }
    let reach = |chain: &Chain| match aim {
        Aim::Revision(_) => Revision(0),
        Aim::Latest | Aim::Time(_) => chain.reaches,
    };
    found.sort_by_key(|(index, chain)| {
        let history = bases.get(*index).map(|base| base.history.as_str()).unwrap_or_default();
        std::cmp::Reverse((newest_save.get(history).copied(), reach(chain), chain.base))
    });
    found
}

/// Which restore of one history reaches `target` ([`candidates`]' first): the
/// newest base (snapshot revision) at or below it whose chain reaches it, or
/// `None`. `target: None` means "latest": the chain that reaches furthest, from
/// the newest base that does.
pub fn plan(bases: &[Revision], segments: &[SegmentName], target: Option<Revision>) -> Option<Chain> {
    let bases: Vec<Base> =
        bases.iter().map(|revision| Base { history: String::new(), revision: *revision, saved: Millis(0) }).collect();
    let aim = target.map_or(Aim::Latest, Aim::Revision);
    candidates(&bases, |_| segments, aim).into_iter().next().map(|(_, chain)| chain)
}

/// The segments a prune may delete, given the revisions of the snapshots it
/// keeps (of this cluster ID): those no kept snapshot's chain can use, i.e.
/// every segment that ends at or below the oldest kept snapshot, or all of
/// them when no snapshot of this cluster ID is kept. A chain is never cut in
/// the middle: what stays starts at or before the oldest kept base.
pub fn prunable(kept_bases: &[Revision], segments: &[SegmentName]) -> Vec<SegmentName> {
    match kept_bases.iter().min() {
        None => segments.to_vec(),
        Some(oldest) => segments.iter().filter(|segment| segment.last <= *oldest).copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(first: i64, last: i64) -> SegmentName {
        SegmentName::new(Revision(first), Revision(last), Compression::Zstd).unwrap()
    }

    fn segment(first: i64, last: i64) -> Segment {
        Segment {
            header: SegmentHeader {
                format: SegmentHeader::FORMAT,
                cluster: "kube".into(),
                cluster_id: "cdf818194e3a8c32".into(),
                first: Revision(first),
                last: Revision(last),
                leases: vec![LeaseRecord { id: 7, ttl_seconds: 30 }],
                writer: "test".into(),
            },
            revisions: (first..=last)
                .map(|revision| RevisionEntry {
                    revision: Revision(revision),
                    seen: Millis(1_000 + revision as u64),
                    events: vec![
                        Event {
                            kind: EventKind::Put,
                            key: format!("k{revision}").into_bytes(),
                            value: vec![0, 1, 2],
                            create_revision: revision,
                            version: 1,
                            lease: 7,
                        },
                        Event {
                            kind: EventKind::Delete,
                            key: b"gone".to_vec(),
                            value: Vec::new(),
                            create_revision: 0,
                            version: 0,
                            lease: 0,
                        },
                    ],
                })
                .collect(),
        }
    }

    #[test]
    fn names_sort_by_revision_and_refuse_foreign_text() {
        assert_eq!(name(4712, 4790).to_string(), "0000000000000004712-0000000000000004790.log.zst");
        assert_eq!(
            "0000000000000004712-0000000000000004790.log".parse(),
            Ok(SegmentName { first: Revision(4712), last: Revision(4790), compression: Compression::None })
        );
        for text in [
            "4712-4790.log.zst",
            "0000000000000004790-0000000000000004712.log.zst",
            "0000000000000000000-0000000000000000001.log.zst",
            "0000000000000004712-0000000000000004790.db",
            "000000000000000471é-0000000000000004790.log",
            "+000000000000004712-0000000000000004790.log",
            "9999999999999999999-9999999999999999999.log",
        ] {
            assert!(text.parse::<SegmentName>().is_err(), "{text} parsed");
        }
    }

    #[test]
    fn a_segment_round_trips_and_any_damage_is_caught() {
        let original = segment(10, 14);
        let bytes = original.encode();
        assert_eq!(Segment::decode(&bytes), Ok(original));
        for index in [0, 7, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x40;
            assert!(Segment::decode(&damaged).is_err(), "flipping byte {index} went unnoticed");
        }
        assert_eq!(Segment::decode(&bytes[..bytes.len() - 1]).err(), Some(SegmentError::Checksum));
    }

    #[test]
    fn a_segment_must_hold_every_revision_of_its_range() {
        let mut missing = segment(10, 14);
        missing.revisions.remove(2);
        assert!(matches!(Segment::decode(&missing.encode()), Err(SegmentError::Inconsistent { .. })));
        let mut short = segment(10, 14);
        short.header.last = Revision(15);
        assert!(matches!(Segment::decode(&short.encode()), Err(SegmentError::Inconsistent { .. })));
        let mut empty = segment(10, 10);
        empty.revisions[0].events.clear();
        assert!(matches!(Segment::decode(&empty.encode()), Err(SegmentError::Inconsistent { .. })));
    }

    #[test]
    fn a_chain_follows_overlaps_and_stops_at_a_hole() {
        let segments = [name(11, 20), name(11, 15), name(16, 30), name(21, 25), name(32, 40)];
        let chain = chain(Revision(10), &segments, None);
        assert_eq!(chain.segments, vec![name(11, 20), name(16, 30)]);
        assert_eq!(chain.reaches, Revision(30));
        assert_eq!(gaps(&segments), vec![(Revision(30), Revision(32))]);
        // A base inside a segment starts from that segment.
        assert_eq!(super::chain(Revision(18), &segments, Some(Revision(19))).segments, vec![name(16, 30)]);
    }

    #[test]
    fn a_plan_takes_the_newest_base_that_reaches_the_target() {
        let segments = [name(11, 20), name(21, 30), name(41, 50)];
        let bases = [Revision(10), Revision(25), Revision(40), Revision(60)];
        let to = |target| plan(&bases, &segments, Some(Revision(target))).map(|chain| (chain.base.0, chain.reaches.0));
        // `reaches` is where the chain's last segment ends; a replay stops at the target.
        assert_eq!(to(29), Some((25, 30)));
        assert_eq!(to(22), Some((10, 30)));
        assert_eq!(to(25), Some((25, 25)));
        assert_eq!(to(35), None, "the hole 31..40 cannot be crossed");
        assert_eq!(to(45), Some((40, 50)));
        assert_eq!(to(60), Some((60, 60)));
        assert_eq!(to(5), None);
        let latest = plan(&bases, &segments, None).map(|chain| (chain.base.0, chain.reaches.0));
        assert_eq!(latest, Some((60, 60)));
        let latest = plan(&bases[..3], &segments, None).map(|chain| (chain.base.0, chain.reaches.0));
        assert_eq!(latest, Some((40, 50)));
    }

    #[test]
    fn candidates_prefer_the_newest_history_then_the_aim() {
        // History "old" (a cluster later restored) reaches revision 90; "new" restarted
        // its revisions at 50 (a restore's bump) and was saved later.
        let old = [name(11, 90)];
        let new = [name(51, 60)];
        let base = |history: &str, revision: i64, saved: u64| Base {
            history: history.into(),
            revision: Revision(revision),
            saved: Millis(saved),
        };
        let bases = [base("old", 10, 1_000), base("old", 40, 2_000), base("new", 50, 3_000), base("new", 55, 4_000)];
        let segments = |history: &str| -> &[SegmentName] {
            match history {
                "old" => &old,
                _ => &new,
            }
        };
        let order = |aim| candidates(&bases, segments, aim).into_iter().map(|(index, _)| index).collect::<Vec<_>>();
        // Latest: the new history first, though the old one reaches further.
        assert_eq!(order(Aim::Latest), [3, 2, 1, 0]);
        // A revision: every history that reaches it, the newest base first within one.
        assert_eq!(order(Aim::Revision(Revision(58))), [3, 2, 1, 0]);
        assert_eq!(order(Aim::Revision(Revision(70))), [1, 0]);
        assert_eq!(order(Aim::Revision(Revision(45))), [1, 0]);
        // A time: no base saved after it.
        assert_eq!(order(Aim::Time(Millis(2_500))), [1, 0]);
        assert_eq!(order(Aim::Time(Millis(500))), Vec::<usize>::new());
    }

    #[test]
    fn a_prune_never_cuts_a_kept_chain() {
        let segments = [name(11, 20), name(21, 30), name(31, 40)];
        assert_eq!(prunable(&[Revision(25), Revision(35)], &segments), vec![name(11, 20)]);
        assert_eq!(prunable(&[Revision(30)], &segments), vec![name(11, 20), name(21, 30)]);
        assert_eq!(prunable(&[], &segments).len(), 3);
    }

    fn segment_names() -> impl Strategy<Value = Vec<SegmentName>> {
        proptest::collection::vec((1i64..200, 0i64..30), 0..25)
            .prop_map(|pairs| pairs.into_iter().map(|(first, length)| name(first, first + length)).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn any_bytes_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Segment::decode(&bytes);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            let digest = Sha256::digest(&framed);
            framed.extend_from_slice(&digest);
            // Checksummed garbage reaches the field parsers: they refuse it as data.
            let _ = Segment::decode(&framed);
        }

        #[test]
        fn any_text_parses_as_a_name_or_is_refused(text in ".{0,48}", digits in "[0-9]{19}-[0-9]{19}\\.log(\\.zst)?") {
            let _ = text.parse::<SegmentName>();
            if let Ok(name) = digits.parse::<SegmentName>() {
                prop_assert_eq!(name.to_string(), digits);
            }
        }

        #[test]
        fn a_plan_replays_every_revision_once_and_in_order(
            segments in segment_names(),
            bases in proptest::collection::vec(0i64..220, 1..5),
            target in proptest::option::of(0i64..240),
        ) {
            let bases: Vec<Revision> = bases.into_iter().map(Revision).collect();
            let target = target.map(Revision);
            if let Some(chain) = plan(&bases, &segments, target) {
                prop_assert!(bases.contains(&chain.base));
                if let Some(target) = target {
                    prop_assert!(chain.base <= target && chain.reaches >= target);
                }
                // Walking the chain from the base covers every revision up to where it reaches.
                let mut applied = chain.base;
                for segment in &chain.segments {
                    prop_assert!(segment.first <= Revision(applied.0 + 1) && segment.last > applied);
                    applied = segment.last;
                }
                prop_assert_eq!(applied, chain.reaches);
            } else if let Some(target) = target {
                // No plan: then no base at or below the target has a hole-free way there.
                for base in bases.iter().filter(|base| **base <= target) {
                    prop_assert!(chain(*base, &segments, Some(target)).reaches < target);
                }
            }
        }

        #[test]
        fn what_a_prune_keeps_still_reaches_as_far(
            segments in segment_names(),
            kept in proptest::collection::vec(0i64..220, 0..4),
        ) {
            let kept: Vec<Revision> = kept.into_iter().map(Revision).collect();
            let deleted = prunable(&kept, &segments);
            let left: Vec<SegmentName> = segments.iter().filter(|segment| !deleted.contains(segment)).copied().collect();
            for base in &kept {
                prop_assert_eq!(chain(*base, &left, None).reaches, chain(*base, &segments, None).reaches);
            }
        }
    }
}
