//! Integrity of etcd snapshots, checked while bytes stream by.
//!
//! A snapshot streamed by etcd (and saved as is by `etcdctl snapshot save`) is a
//! bbolt database followed by the sha256 of that database; `etcdutl snapshot
//! restore` checks that trailer. We check it too, on every save and every fetch,
//! and additionally compare against the sha256 recorded in our manifest.

use crate::exit::{Classify, Exit};
use crate::ports::{ByteSource, SnapshotStore, StoreError};
use lifeboat::{Compression, Manifest};
use sha2::{Digest, Sha256};
use std::io::Write;

const TRAILER_BYTES: usize = 32;
/// bbolt's meta page magic (0xED0CDAED, little-endian) at offset 16 of the file.
const BOLT_MAGIC: [u8; 4] = [0xED, 0xDA, 0x0C, 0xED];
const BOLT_MAGIC_OFFSET: usize = 16;

/// What a full pass over a snapshot's bytes found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Digest256 {
    pub sha256: String,
    pub size_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trailer {
    /// The trailing sha256 matches the database before it.
    Valid,
    /// The size is not that of a database plus trailer (etcd's own test: size % 512 == 32).
    Missing,
    /// A trailer is there but does not match: the bytes were damaged.
    Mismatch,
}

/// Hashes a plain etcd snapshot as it streams: the body without its last 32 bytes
/// (for the trailer), the whole (for the manifest: the body's hasher state plus
/// those 32 bytes, so the data is hashed once), and the bolt magic.
pub struct SnapshotDigest {
    body: Sha256,
    tail: Vec<u8>,
    head: Vec<u8>,
    size_bytes: u64,
}

impl Default for SnapshotDigest {
    fn default() -> Self {
        SnapshotDigest {
            body: Sha256::new(),
            tail: Vec::with_capacity(2 * TRAILER_BYTES),
            head: Vec::with_capacity(BOLT_MAGIC_OFFSET + BOLT_MAGIC.len()),
            size_bytes: 0,
        }
    }
}

impl SnapshotDigest {
    pub fn update(&mut self, chunk: &[u8]) {
        self.size_bytes += chunk.len() as u64;
        let head_missing = (BOLT_MAGIC_OFFSET + BOLT_MAGIC.len()).saturating_sub(self.head.len());
        let (head, _) = chunk.split_at(head_missing.min(chunk.len()));
        self.head.extend_from_slice(head);
        if let Some(body_len) = chunk.len().checked_sub(TRAILER_BYTES) {
            let (body, tail) = chunk.split_at(body_len);
            self.body.update(&self.tail);
            self.body.update(body);
            self.tail.clear();
            self.tail.extend_from_slice(tail);
        } else {
            self.tail.extend_from_slice(chunk);
            if let Some(spill) = self.tail.len().checked_sub(TRAILER_BYTES).filter(|spill| *spill > 0) {
                self.body.update(self.tail.drain(..spill).as_slice());
            }
        }
    }

    pub fn finish(self) -> (Digest256, Trailer, bool) {
        let is_bolt = self.head.get(BOLT_MAGIC_OFFSET..BOLT_MAGIC_OFFSET + BOLT_MAGIC.len()) == Some(&BOLT_MAGIC[..]);
        let mut whole = self.body.clone();
        whole.update(&self.tail);
        let trailer = if self.size_bytes < (TRAILER_BYTES as u64) || self.size_bytes % 512 != TRAILER_BYTES as u64 {
            Trailer::Missing
        } else if self.body.finalize().as_slice() == self.tail.as_slice() {
            Trailer::Valid
        } else {
            Trailer::Mismatch
        };
        let digest = Digest256 { sha256: hex::encode(whole.finalize()), size_bytes: self.size_bytes };
        (digest, trailer, is_bolt)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading {location} failed after {bytes} bytes: {detail}")]
    Read { location: String, bytes: u64, detail: String },
    #[error("{location} is not valid zstd ({detail}): the object is corrupt or truncated")]
    Decompress { location: String, detail: String },
    #[error("{location} is corrupt: {what} sha256 is {actual}, the manifest says {expected}")]
    HashMismatch { location: String, what: &'static str, expected: String, actual: String },
    #[error("{location} is truncated or padded: {what} size is {actual} bytes, the manifest says {expected}")]
    SizeMismatch { location: String, what: &'static str, expected: u64, actual: u64 },
    #[error("{location} is not an etcd snapshot (no bbolt header): refusing it")]
    NotEtcd { location: String },
    #[error("{location} fails etcd's own integrity check (trailing sha256 {trailer:?}): corrupt or truncated")]
    Trailer { location: String, trailer: Trailer },
    #[error("{location}: manifest is inconsistent ({detail})")]
    BadManifest { location: String, detail: String },
    #[error("writing {path} failed: {source}")]
    Write { path: String, source: std::io::Error },
}

impl Classify for VerifyError {
    fn exit(&self) -> Exit {
        match self {
            VerifyError::Store(error) => error.exit(),
            VerifyError::Write { .. } => Exit::Failure,
            _ => Exit::Corrupt,
        }
    }
}

/// The result of reading one stored snapshot through.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Fetched {
    pub plain: Digest256,
    pub stored: Digest256,
    pub trailer: Trailer,
    pub is_bolt: bool,
}

impl Fetched {
    /// Checks the bytes against `manifest` (when there is one) and against etcd's
    /// own trailer and header. Without a manifest the trailer must be valid: it is
    /// then the only evidence that the bytes are whole.
    pub fn check(&self, location: &str, manifest: Option<&Manifest>) -> Result<(), VerifyError> {
        if let Some(manifest) = manifest {
            let pairs = [
                ("stored", &manifest.stored_sha256, manifest.stored_size_bytes, &self.stored),
                ("snapshot", &manifest.sha256, manifest.size_bytes, &self.plain),
            ];
            for (what, sha256, size_bytes, actual) in pairs {
                if actual.size_bytes != size_bytes {
                    return Err(VerifyError::SizeMismatch {
                        location: location.to_owned(),
                        what,
                        expected: size_bytes,
                        actual: actual.size_bytes,
                    });
                }
                if &actual.sha256 != sha256 {
                    return Err(VerifyError::HashMismatch {
                        location: location.to_owned(),
                        what,
                        expected: sha256.clone(),
                        actual: actual.sha256.clone(),
                    });
                }
            }
        }
        if !self.is_bolt {
            return Err(VerifyError::NotEtcd { location: location.to_owned() });
        }
        if self.trailer == Trailer::Mismatch || (manifest.is_none() && self.trailer != Trailer::Valid) {
            return Err(VerifyError::Trailer { location: location.to_owned(), trailer: self.trailer });
        }
        Ok(())
    }
}

/// Reads `key` through, decompressing when needed, hashing both forms, and
/// writing the plain snapshot to `out` when given. Memory stays bounded by one chunk.
pub async fn fetch<S: SnapshotStore, W: std::io::Write>(
    store: &S,
    key: &str,
    compression: Compression,
    mut out: Option<(&mut W, &str)>,
) -> Result<Fetched, VerifyError> {
    let location = store.location(key);
    let mut reader = store.get(key).await?;
    let mut stored = SnapshotDigest::default();
    let mut plain = SnapshotDigest::default();
    let mut decoder = match compression {
        Compression::None => None,
        Compression::Zstd => Some(
            zstd::stream::write::Decoder::new(Vec::new())
                .map_err(|error| VerifyError::Decompress { location: location.clone(), detail: error.to_string() })?,
        ),
    };
    let mut emit = |bytes: &[u8], plain: &mut SnapshotDigest| -> Result<(), VerifyError> {
        plain.update(bytes);
        if let Some((file, path)) = out.as_mut() {
            file.write_all(bytes).map_err(|source| VerifyError::Write { path: (*path).to_owned(), source })?;
        }
        Ok(())
    };
    loop {
        let chunk = match reader.next_chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => {
                return Err(match error.downcast::<StoreError>() {
                    // Client-side encryption refused it (another key, altered bytes): exit 6.
                    Ok(refused) => VerifyError::Store(*refused),
                    Err(error) => VerifyError::Read { location, bytes: stored.size_bytes, detail: error.to_string() },
                });
            }
        };
        stored.update(&chunk);
        crate::progress::advance(chunk.len() as u64);
        match decoder.as_mut() {
            None => emit(&chunk, &mut plain)?,
            Some(decoder) => {
                decoder.write_all(&chunk).map_err(|error| VerifyError::Decompress {
                    location: location.clone(),
                    detail: error.to_string(),
                })?;
                let decoded = std::mem::take(decoder.get_mut());
                emit(&decoded, &mut plain)?;
            }
        }
    }
    if let Some(mut decoder) = decoder {
        decoder
            .flush()
            .map_err(|error| VerifyError::Decompress { location: location.clone(), detail: error.to_string() })?;
        let decoded = std::mem::take(decoder.get_mut());
        emit(&decoded, &mut plain)?;
    }
    let (stored, _, _) = stored.finish();
    let (plain, trailer, is_bolt) = plain.finish();
    Ok(Fetched { plain, stored, trailer, is_bolt })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fake_snapshot(body_pages: usize) -> Vec<u8> {
        let mut body = vec![7u8; body_pages * 512];
        if body.len() >= 20 {
            body[BOLT_MAGIC_OFFSET..BOLT_MAGIC_OFFSET + 4].copy_from_slice(&BOLT_MAGIC);
        }
        let trailer = Sha256::digest(&body);
        body.extend_from_slice(&trailer);
        body
    }

    proptest! {
        /// However the stream is cut into chunks, the trailer check gives the same answer.
        #[test]
        fn trailer_check_ignores_chunking(pages in 1usize..20, cuts in proptest::collection::vec(0usize..12_000, 0..10), flip in proptest::option::of(0usize..12_000)) {
            let mut bytes = fake_snapshot(pages);
            if let Some(position) = flip {
                let position = position % bytes.len();
                bytes[position] ^= 0x55;
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut % (bytes.len() + 1)).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort();
            let mut digest = SnapshotDigest::default();
            for window in cuts.windows(2) {
                digest.update(&bytes[window[0]..window[1]]);
            }
            let (whole, trailer, _) = digest.finish();
            prop_assert_eq!(whole.sha256, hex::encode(Sha256::digest(&bytes)));
            prop_assert_eq!(trailer == Trailer::Valid, flip.is_none());
        }
    }

    #[test]
    fn truncation_is_detected() {
        let bytes = fake_snapshot(8);
        let mut digest = SnapshotDigest::default();
        digest.update(&bytes[..bytes.len() - 100]);
        assert_eq!(digest.finish().1, Trailer::Missing);
        let mut digest = SnapshotDigest::default();
        digest.update(b"definitely not a bolt database");
        let (_, _, is_bolt) = digest.finish();
        assert!(!is_bolt);
    }
}
