//! Snapshot names and manifests: what a versioned snapshot is called in the store
//! and the record that proves it whole.

use crate::time::Millis;
use crate::types::{Member, Revision};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How a versioned snapshot object is encoded. `snapshot.db` is always `None`,
/// so kube-aws tooling can restore it as is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Zstd,
}

impl Compression {
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => ".db",
            Compression::Zstd => ".db.zst",
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!("unknown compression {other:?}: use none or zstd")),
        }
    }
}

/// `<UTC time>-r<revision>.db[.zst]`, e.g. `20261125T233200.123Z-r4711.db.zst`.
/// As text, names sort by time (the time part has a fixed width), which is what a
/// listing shows. As values they order by revision first: the time is the saving
/// agent's clock, and when leadership moves between agents whose clocks disagree,
/// a newer snapshot can carry an earlier time. "Newest" (what a recovery restores,
/// what retention always keeps) means the highest revision.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotName {
    created: Millis,
    revision: Revision,
    compression: Compression,
}

impl Ord for SnapshotName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.revision, self.created, self.compression).cmp(&(other.revision, other.created, other.compression))
    }
}

impl PartialOrd for SnapshotName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl SnapshotName {
    pub fn new(created: Millis, revision: Revision, compression: Compression) -> SnapshotName {
        SnapshotName { created, revision, compression }
    }
    pub fn created(&self) -> Millis {
        self.created
    }
    pub fn revision(&self) -> Revision {
        self.revision
    }
    pub fn compression(&self) -> Compression {
        self.compression
    }
    /// The manifest object that sits beside the snapshot object.
    pub fn manifest_name(&self) -> String {
        format!("{self}.manifest.json")
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day, hour, minute, second, millisecond) = self.created.to_utc();
        write!(
            formatter,
            "{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}.{millisecond:03}Z-r{}{}",
            self.revision.0,
            self.compression.extension()
        )
    }
}

impl FromStr for SnapshotName {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("{text:?} is not a snapshot name (expected like 20261125T233200.123Z-r4711.db[.zst])");
        let (stem, compression) = if let Some(stem) = text.strip_suffix(".db.zst") {
            (stem, Compression::Zstd)
        } else if let Some(stem) = text.strip_suffix(".db") {
            (stem, Compression::None)
        } else {
            return Err(invalid());
        };
        let (time, revision) = stem.split_once("Z-r").ok_or_else(invalid)?;
        // Store listings are untrusted: walk bytes, never slice a `str` at an offset
        // that could fall inside a multi-byte character.
        let bytes = time.as_bytes();
        if bytes.len() != 19 || bytes.get(8) != Some(&b'T') || bytes.get(15) != Some(&b'.') {
            return Err(invalid());
        }
        let field = |range: std::ops::Range<usize>| -> Result<u32, String> {
            let digits = bytes.get(range).ok_or_else(invalid)?;
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(invalid());
            }
            Ok(digits.iter().fold(0u32, |value, digit| value * 10 + u32::from(digit - b'0')))
        };
        let created = Millis::from_utc(
            i64::from(field(0..4)?),
            field(4..6)?,
            field(6..8)?,
            field(9..11)?,
            field(11..13)?,
            field(13..15)?,
            field(16..19)?,
        )
        .ok_or_else(invalid)?;
        if revision.is_empty() || !revision.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(invalid());
        }
        let revision = Revision(revision.parse::<i64>().map_err(|_| invalid())?);
        let name = SnapshotName::new(created, revision, compression);
        // Only the canonical spelling counts (no `r007`): the manifest's key is derived
        // from the name, so a second spelling would be a snapshot without a manifest.
        if name.to_string() != text {
            return Err(invalid());
        }
        Ok(name)
    }
}

impl TryFrom<String> for SnapshotName {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<SnapshotName> for String {
    fn from(name: SnapshotName) -> String {
        name.to_string()
    }
}

/// The JSON record written beside each versioned snapshot, only after the
/// snapshot object is complete. A snapshot without a manifest is not a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of this record.
    pub format: u32,
    pub name: SnapshotName,
    /// sha256 (hex) of the plain etcd snapshot, as `etcdctl snapshot save` would write it.
    pub sha256: String,
    pub size_bytes: u64,
    /// sha256 (hex) and size of the object as stored (differs from the above when compressed).
    pub stored_sha256: String,
    pub stored_size_bytes: u64,
    pub compression: Compression,
    pub revision: Revision,
    /// etcd's cluster ID, in hex; a restore refuses a snapshot of another cluster when asked to check.
    pub cluster_id: String,
    /// The logical cluster name the store layout uses.
    pub cluster: String,
    pub members: Vec<Member>,
    /// The member the snapshot was streamed from.
    pub source_member: String,
    pub etcd_version: String,
    pub created_at: String,
    pub created_ms: Millis,
    /// The lifeboat version that wrote it.
    pub writer: String,
    /// etcd's `HashKV` of the source member at `revision`, taken right after the
    /// snapshot streamed: what a trial restore of this snapshot must reproduce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_hash: Option<KvHash>,
    /// The ID of the client-side key the snapshot (and this manifest) is encrypted
    /// with; absent for plain backups. It names the key, it does not reveal it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// etcd's `HashKV` at a revision: a hash over every key revision from the
/// compaction point up to it. Two members agree on it exactly when they hold the
/// same history; the compaction point is part of what is hashed, so hashes are
/// compared only at equal compaction points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvHash {
    pub hash: u32,
    pub compact_revision: i64,
}

impl Manifest {
    pub const FORMAT: u32 = 1;

    /// Whether the fields agree with each other and with the name; a manifest
    /// that does not is treated like a missing one.
    pub fn is_consistent(&self) -> bool {
        let is_sha256 = |text: &str| text.len() == 64 && text.bytes().all(|byte| byte.is_ascii_hexdigit());
        self.format == Self::FORMAT
            && is_sha256(&self.sha256)
            && is_sha256(&self.stored_sha256)
            && self.name.revision() == self.revision
            && self.name.compression() == self.compression
            && self.name.created() == self.created_ms
            && (self.compression != Compression::None
                || (self.sha256 == self.stored_sha256 && self.size_bytes == self.stored_size_bytes))
    }
}

/// What the core knows of one versioned snapshot from the store listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub name: SnapshotName,
    /// A consistent manifest exists and no download has contradicted it.
    pub verified: bool,
}

/// The newest verified snapshot: the one a disaster recovery restores.
pub fn newest_verified(snapshots: &[SnapshotMeta]) -> Option<&SnapshotMeta> {
    snapshots.iter().filter(|snapshot| snapshot.verified).max_by(|left, right| left.name.cmp(&right.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_like_the_design() {
        let name = SnapshotName::new(Millis(1_795_649_520_123), Revision(4711), Compression::Zstd);
        assert_eq!(name.to_string(), "20261125T233200.123Z-r4711.db.zst");
        assert_eq!(name.manifest_name(), "20261125T233200.123Z-r4711.db.zst.manifest.json");
    }

    #[test]
    fn rejects_foreign_names() {
        for text in [
            "snapshot.db",
            "20261125T233200.123Z-r.db",
            "20261125T233200.123Z-r12x.db",
            "20261325T233200.123Z-r1.db",
            "20261125T233200Z-r1.db",
            "x0261125T233200.123Z-r1.db",
            "20261125T233200.123Z-r1.db.manifest.json",
            "20261125T233200.123Z-r007.db",
            "20261125T233200.123Z-r+7.db",
        ] {
            assert!(text.parse::<SnapshotName>().is_err(), "{text} parsed");
        }
    }

    fn manifest() -> Manifest {
        let name = SnapshotName::new(Millis(1_795_649_520_123), Revision(4711), Compression::Zstd);
        Manifest {
            format: Manifest::FORMAT,
            name: name.clone(),
            sha256: "a".repeat(64),
            size_bytes: 100,
            stored_sha256: "b".repeat(64),
            stored_size_bytes: 40,
            compression: Compression::Zstd,
            revision: Revision(4711),
            cluster_id: "1".into(),
            cluster: "c".into(),
            members: vec![],
            source_member: "m0".into(),
            etcd_version: "3.5.16".into(),
            created_at: "2026-11-25T23:32:00.123Z".into(),
            created_ms: name.created(),
            writer: "lifeboat".into(),
            kv_hash: None,
            key_id: None,
        }
    }

    /// Every field that must agree with the others is checked on its own.
    #[test]
    fn a_manifest_is_consistent_only_when_every_field_agrees() {
        assert!(manifest().is_consistent());
        let plain = Manifest {
            name: SnapshotName::new(Millis(1_795_649_520_123), Revision(4711), Compression::None),
            compression: Compression::None,
            stored_sha256: "a".repeat(64),
            stored_size_bytes: 100,
            ..manifest()
        };
        assert!(plain.is_consistent());
        let broken: [(&str, Manifest); 10] = [
            ("format", Manifest { format: 2, ..manifest() }),
            ("sha256 length", Manifest { sha256: "a".repeat(63), ..manifest() }),
            ("sha256 digits", Manifest { sha256: "g".repeat(64), ..manifest() }),
            ("stored sha256", Manifest { stored_sha256: "é".repeat(32), ..manifest() }),
            ("revision", Manifest { revision: Revision(1), ..manifest() }),
            ("compression", Manifest { compression: Compression::None, ..manifest() }),
            ("created", Manifest { created_ms: Millis(1), ..manifest() }),
            ("plain hash", Manifest { stored_sha256: "b".repeat(64), ..plain.clone() }),
            ("plain size", Manifest { stored_size_bytes: 99, ..plain.clone() }),
            ("plain both", Manifest { stored_sha256: "c".repeat(64), stored_size_bytes: 1, ..plain.clone() }),
        ];
        for (what, manifest) in broken {
            assert!(!manifest.is_consistent(), "{what}");
        }
        // As JSON the name is its text form, and reads back the same.
        let json = serde_json::to_value(manifest()).unwrap();
        assert_eq!(json["name"], "20261125T233200.123Z-r4711.db.zst");
        assert_eq!(serde_json::from_value::<Manifest>(json).unwrap(), manifest());
    }

    #[test]
    fn compressions_parse_by_name() {
        assert_eq!("zstd".parse::<Compression>(), Ok(Compression::Zstd));
        assert_eq!("none".parse::<Compression>(), Ok(Compression::None));
        assert!("lz4".parse::<Compression>().is_err());
        let name = SnapshotName::new(Millis(0), Revision(9), Compression::Zstd);
        assert_eq!((name.revision(), name.compression()), (Revision(9), Compression::Zstd));
    }

    /// A name a user crafted in the bucket once panicked every agent (a byte slice
    /// inside a two-byte character).
    #[test]
    fn rejects_multibyte_names_without_panicking() {
        for text in
            ["000é000T000000.000Z-r1.db", "2026112ééT233200.123Z-r1.db", "20261125T23320é.12Z-r1.db", "éZ-r1.db"]
        {
            assert!(text.parse::<SnapshotName>().is_err(), "{text} parsed");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        /// Store listings are untrusted: any string parses to a name or an error, never a panic,
        /// and whatever parses prints back as the same text.
        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,40}", stem in "[0-9T.Zé-]{15,24}", suffix in "(\\.db|\\.db\\.zst|r1\\.db|)") {
            for candidate in [text.clone(), format!("{stem}{suffix}"), format!("{stem}Z-r7{suffix}")] {
                if let Ok(name) = candidate.parse::<SnapshotName>() {
                    prop_assert_eq!(name.to_string(), candidate);
                }
            }
        }

        #[test]
        fn any_bytes_as_a_manifest_are_data(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = serde_json::from_slice::<Manifest>(&bytes);
        }
    }

    /// Skewed clocks: a later save from a clock that is behind carries an earlier time.
    #[test]
    fn newest_means_highest_revision_whatever_the_clocks_said() {
        let older = SnapshotName::new(Millis(1_795_649_520_000), Revision(100), Compression::None);
        let newer_but_behind = SnapshotName::new(Millis(1_795_649_400_000), Revision(200), Compression::None);
        assert!(newer_but_behind > older);
        assert!(newer_but_behind.to_string() < older.to_string(), "as text, the listing still sorts by time");
        let metas = [
            SnapshotMeta { name: older.clone(), verified: true },
            SnapshotMeta { name: newer_but_behind.clone(), verified: true },
        ];
        assert_eq!(newest_verified(&metas).map(|meta| &meta.name), Some(&newer_but_behind));
    }

    proptest! {
        #[test]
        fn names_round_trip_and_sort_by_time(
            first in 0u64..253_402_300_799_999, second in 0u64..253_402_300_799_999,
            revision in 0i64..i64::MAX, zstd in any::<bool>(),
        ) {
            let compression = if zstd { Compression::Zstd } else { Compression::None };
            let name = SnapshotName::new(Millis(first), Revision(revision), compression);
            prop_assert_eq!(name.to_string().parse::<SnapshotName>(), Ok(name.clone()));
            let other = SnapshotName::new(Millis(second), Revision(revision), compression);
            prop_assert_eq!(name.to_string().cmp(&other.to_string()), first.cmp(&second));
        }
    }
}
