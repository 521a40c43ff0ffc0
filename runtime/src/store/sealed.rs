//! Client-side encryption of everything lifeboat writes to the store
//! (`--encryption-key-file` or `LIFEBOAT_ENCRYPTION_KEY`): snapshots, the
//! `snapshot.db` alias, manifests, trial records, revision-log segments,
//! heartbeats and recovery-epoch records. [`SealedStore`] wraps any store, so no
//! read path can forget to decrypt and no write path can forget to encrypt.
//!
//! Why every object and not only snapshots: with a key, write access to the
//! bucket alone must not be able to slip in a snapshot or steer a recovery. A
//! record that does not open under the key is malformed data to its reader
//! (skipped, journaled), a snapshot that does not open fails verification (exit
//! 6) before a byte reaches etcdutl.
//!
//! The format of a sealed object (stable: objects outlive releases):
//!
//! ```text
//! header, 32 bytes:  "LBSEAL1" | flags (1: bound to its key) | key ID (8) | salt (16)
//! chunks:            AES-256-GCM of 64 KiB of plaintext each (the last one shorter), 16-byte tag
//! ```
//!
//! - Each object has its own AES key, HKDF-SHA256 of the configured key with the
//!   object's random salt: nonces never repeat across objects, whatever their number.
//! - A chunk's nonce is its index and whether it is the last (the STREAM
//!   construction of age and Tink): chunks cannot be reordered, dropped or
//!   cut off at a chunk boundary. Memory stays one chunk, whatever the object's size.
//! - Every chunk authenticates the header. Small records (written whole by
//!   `put_small`) also authenticate their own object key ("bound"), so a valid
//!   record cannot be replayed under another name (a claim of epoch 3 as epoch 9).
//!   Bulk uploads are not bound, so the store can copy them server-side to
//!   `snapshot.db`; what a bulk object holds is pinned by its manifest's sha256,
//!   which is bound.
//! - The key ID (the first 8 bytes of HMAC-SHA256(key, "lifeboat key id")) names
//!   the key without revealing it: in the header, in each manifest, and in the
//!   error when an object was written with another key.
//!
//! What it does not hide: object names (snapshot times and revisions, member
//! names), sizes and times. What it cannot prevent: deletion, and replaying an
//! object's own older body under its own name (a heartbeat that makes a dead
//! member look alive delays a recovery; it cannot cause one).

pub use super::settings::KeySource;
use crate::ports::{BoxError, ByteSource, ObjectInfo, Part, SnapshotStore, StoreError, Upload};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::{hkdf, hmac};
use bytes::{Buf, Bytes, BytesMut};
use std::sync::Arc;

const MAGIC: &[u8; 7] = b"LBSEAL1";
const HEADER_LEN: usize = 32;
/// Plaintext bytes per chunk. Upload parts (whole MiB) are multiples of it.
pub const CHUNK: usize = 64 << 10;
const TAG: usize = 16;
const SEALED_CHUNK: usize = CHUNK + TAG;
const FLAG_BOUND: u8 = 1;

/// The configured key: 256 bits, never printed (its [`SealKey::id`] is).
pub struct SealKey {
    key: [u8; 32],
    id: [u8; 8],
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "SealKey({})", self.id())
    }
}

impl Drop for SealKey {
    fn drop(&mut self) {
        self.key = [0; 32];
    }
}

impl SealKey {
    /// From a key file's bytes or the variable's text: 32 raw bytes, or 32 bytes as
    /// base64 or hex text (surrounding whitespace ignored).
    pub fn parse(bytes: &[u8]) -> Option<SealKey> {
        let raw = if bytes.len() == 32 {
            bytes.to_vec()
        } else {
            let text = std::str::from_utf8(bytes).ok()?.trim();
            match hex::decode(text) {
                Ok(decoded) => decoded,
                Err(_) => aws_smithy_types::base64::decode(text).ok()?,
            }
        };
        let key: [u8; 32] = raw.try_into().ok()?;
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), b"lifeboat key id");
        let mut id = [0u8; 8];
        id.copy_from_slice(tag.as_ref().get(..8)?);
        Some(SealKey { key, id })
    }

    /// 16 hex digits that name the key.
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }

    fn cipher(&self, salt: &[u8; 16]) -> Result<LessSafeKey, SealError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&self.key);
        let info: [&[u8]; 1] = [b"lifeboat object key v1"];
        let okm = prk.expand(&info, &AES_256_GCM).map_err(|_| SealError::Crypto)?;
        Ok(LessSafeKey::new(UnboundKey::from(okm)))
    }
}

/// Why a sealed object was refused. Each message names what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("not encrypted, but a client-side key is configured: with --encryption-key-file or LIFEBOAT_ENCRYPTION_KEY, lifeboat uses only objects written with that key (read plain backups without the key)")]
    NotSealed,
    #[error("encrypted client-side with key {key_id}: pass that key with --encryption-key-file FILE or LIFEBOAT_ENCRYPTION_KEY")]
    NeedsKey { key_id: String },
    #[error("encrypted with key {found}, not with the configured key {configured}: pass the key it was written with (--encryption-key-file or LIFEBOAT_ENCRYPTION_KEY)")]
    OtherKey { found: String, configured: String },
    #[error("chunk {chunk} fails authentication: the object was altered after it was written, or moved from another name; it is not used")]
    Tampered { chunk: u64 },
    #[error("the object ends before its last chunk: it was cut short after it was written; it is not used")]
    Truncated,
    #[error("a bulk upload stands under a record's name: not a record lifeboat wrote; it is not used")]
    NotARecord,
    #[error("upload part {number} starts at byte {offset}, not at a multiple of {CHUNK}: the part size must be whole MiB with client-side encryption")]
    Unaligned { number: i32, offset: u64 },
    #[error("the system's cryptography failed (random source or key derivation)")]
    Crypto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    bound: bool,
    key_id: [u8; 8],
    salt: [u8; 16],
}

impl Header {
    fn fresh(key: &SealKey, bound: bool) -> Result<Header, SealError> {
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| SealError::Crypto)?;
        Ok(Header { bound, key_id: key.id, salt })
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        let (magic, rest) = bytes.split_at_mut(MAGIC.len());
        magic.copy_from_slice(MAGIC);
        let (flags, rest) = rest.split_at_mut(1);
        flags.fill(if self.bound { FLAG_BOUND } else { 0 });
        let (key_id, salt) = rest.split_at_mut(8);
        key_id.copy_from_slice(&self.key_id);
        salt.copy_from_slice(&self.salt);
        bytes
    }

    /// `Ok(None)`: the bytes are not a sealed object's start.
    fn decode(bytes: &[u8]) -> Option<Header> {
        let bytes: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        let (magic, rest) = bytes.split_at(MAGIC.len());
        let (flags, rest) = rest.split_first()?;
        let (key_id, salt) = rest.split_at(8);
        if magic != MAGIC || *flags & !FLAG_BOUND != 0 {
            return None;
        }
        Some(Header { bound: *flags & FLAG_BOUND != 0, key_id: key_id.try_into().ok()?, salt: salt.try_into().ok()? })
    }

    /// What each chunk authenticates: the header, and a record's own key.
    fn aad(&self, object_key: &str) -> Vec<u8> {
        let mut aad = self.encode().to_vec();
        if self.bound {
            aad.extend_from_slice(object_key.as_bytes());
        }
        aad
    }
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut bytes = [0u8; 12];
    let (counter, flag) = bytes.split_at_mut(8);
    counter.copy_from_slice(&index.to_be_bytes());
    flag.fill(0);
    if last {
        if let Some(byte) = flag.last_mut() {
            *byte = 1;
        }
    }
    Nonce::assume_unique_for_key(bytes)
}

/// Seals `plain` into chunks numbered from `first_index`, the last one final when `last`.
fn seal_chunks(
    cipher: &LessSafeKey,
    aad: &[u8],
    first_index: u64,
    plain: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> Result<(), SealError> {
    let mut chunks: Vec<&[u8]> = plain.chunks(CHUNK).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let count = chunks.len();
    for (position, chunk) in chunks.into_iter().enumerate() {
        let mut sealed = chunk.to_vec();
        let index = first_index + position as u64;
        let final_chunk = last && position + 1 == count;
        cipher
            .seal_in_place_append_tag(nonce(index, final_chunk), Aad::from(aad), &mut sealed)
            .map_err(|_| SealError::Crypto)?;
        out.extend_from_slice(&sealed);
    }
    Ok(())
}

/// The plaintext size of a sealed object of `sealed` bytes (exact for every
/// object this module wrote; what `list` and `head` report, so sizes in
/// manifests keep meaning the bytes lifeboat streamed).
pub fn plain_size(sealed: u64) -> u64 {
    let body = sealed.saturating_sub(HEADER_LEN as u64);
    let chunks = body.div_ceil(SEALED_CHUNK as u64).max(1);
    body.saturating_sub(chunks * TAG as u64)
}

/// The sealed size of `plain` bytes.
pub fn sealed_size(plain: u64) -> u64 {
    HEADER_LEN as u64 + plain + plain.div_ceil(CHUNK as u64).max(1) * TAG as u64
}

/// Seals a whole record, bound to `object_key`.
pub fn seal_record(key: &SealKey, object_key: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
    let header = Header::fresh(key, true)?;
    let mut out = Vec::with_capacity(sealed_size(plain.len() as u64) as usize);
    out.extend_from_slice(&header.encode());
    seal_chunks(&key.cipher(&header.salt)?, &header.aad(object_key), 0, plain, true, &mut out)?;
    Ok(out)
}

/// Opens a whole record written by [`seal_record`] under `object_key`.
pub fn open_record(key: &Arc<SealKey>, object_key: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut opener = Opener::new(key.clone(), object_key);
    let mut plain = opener.push(sealed)?.to_vec();
    plain.extend_from_slice(&opener.finish()?);
    match opener.header.map(|header| header.bound) {
        Some(true) => Ok(plain),
        _ => Err(SealError::NotARecord),
    }
}

/// Decrypts a sealed object as its bytes arrive, in any cuts: holds at most one
/// sealed chunk, and releases a chunk's plaintext only once its tag checked.
pub struct Opener {
    key: Arc<SealKey>,
    object_key: String,
    header: Option<Header>,
    cipher: Option<(LessSafeKey, Vec<u8>)>,
    buffer: BytesMut,
    index: u64,
    finished: bool,
}

impl Opener {
    pub fn new(key: Arc<SealKey>, object_key: &str) -> Opener {
        Opener {
            key,
            object_key: object_key.to_owned(),
            header: None,
            cipher: None,
            buffer: BytesMut::new(),
            index: 0,
            finished: false,
        }
    }

    /// Takes the next bytes of the object; returns the plaintext they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Bytes, SealError> {
        self.buffer.extend_from_slice(bytes);
        if self.cipher.is_none() {
            if self.buffer.len() < HEADER_LEN {
                return match MAGIC
                    .starts_with(self.buffer.get(..self.buffer.len().min(MAGIC.len())).unwrap_or_default())
                {
                    true => Ok(Bytes::new()),
                    false => Err(SealError::NotSealed),
                };
            }
            let header = Header::decode(&self.buffer).ok_or(SealError::NotSealed)?;
            if header.key_id != self.key.id {
                return Err(SealError::OtherKey { found: hex::encode(header.key_id), configured: self.key.id() });
            }
            self.cipher = Some((self.key.cipher(&header.salt)?, header.aad(&self.object_key)));
            self.header = Some(header);
            self.buffer.advance(HEADER_LEN);
        }
        let mut plain = BytesMut::new();
        // A full chunk is known not to be the last only once a byte follows it.
        while self.buffer.len() > SEALED_CHUNK {
            let chunk = self.buffer.split_to(SEALED_CHUNK);
            plain.extend_from_slice(&self.open(chunk, false)?);
        }
        Ok(plain.freeze())
    }

    /// The end of the object: the rest must be its final chunk.
    pub fn finish(&mut self) -> Result<Bytes, SealError> {
        if self.finished {
            return Ok(Bytes::new());
        }
        if self.cipher.is_none() {
            return Err(match self.buffer.is_empty() {
                true => SealError::NotSealed,
                false
                    if MAGIC.starts_with(self.buffer.get(..self.buffer.len().min(MAGIC.len())).unwrap_or_default()) =>
                {
                    SealError::Truncated
                }
                false => SealError::NotSealed,
            });
        }
        if self.buffer.len() < TAG {
            return Err(SealError::Truncated);
        }
        let chunk = std::mem::take(&mut self.buffer);
        let plain = self.open(chunk, true)?;
        self.finished = true;
        Ok(plain)
    }

    fn open(&mut self, mut chunk: BytesMut, last: bool) -> Result<Bytes, SealError> {
        let index = self.index;
        let Some((cipher, aad)) = self.cipher.as_ref() else { return Err(SealError::NotSealed) };
        // A failed open leaves its buffer unspecified: the final chunk is kept to
        // tell a cut-off object (its last chunk opens as a middle one) from an altered one.
        let original = last.then(|| chunk.clone());
        match cipher.open_in_place(nonce(index, last), Aad::from(aad.as_slice()), &mut chunk) {
            Ok(plain) => {
                let length = plain.len();
                chunk.truncate(length);
                self.index += 1;
                Ok(chunk.freeze())
            }
            Err(_) => {
                let opens_as_middle = original.is_some_and(|mut original| {
                    cipher.open_in_place(nonce(index, false), Aad::from(aad.as_slice()), &mut original).is_ok()
                });
                Err(match opens_as_middle {
                    true => SealError::Truncated,
                    false => SealError::Tampered { chunk: index },
                })
            }
        }
    }
}

fn refusal(location: String, error: SealError) -> StoreError {
    let other_key = matches!(error, SealError::NeedsKey { .. } | SealError::OtherKey { .. });
    StoreError::Sealed { location, detail: error.to_string(), other_key }
}

/// Whether plain bytes read without a key are in fact a sealed object's start:
/// then the reader is told which key it needs instead of failing on ciphertext.
fn needs_key(bytes: &[u8]) -> Option<SealError> {
    Header::decode(bytes).map(|header| SealError::NeedsKey { key_id: hex::encode(header.key_id) })
}

/// Any store, with client-side encryption when a key is configured, and without
/// one a guard that names the key an encrypted object needs.
#[derive(Clone)]
pub struct SealedStore<S> {
    inner: S,
    key: Option<Arc<SealKey>>,
}

impl<S: SnapshotStore> SealedStore<S> {
    pub fn new(inner: S, key: Option<SealKey>) -> SealedStore<S> {
        SealedStore { inner, key: key.map(Arc::new) }
    }

    fn refused(&self, key: &str, error: SealError) -> StoreError {
        refusal(self.inner.location(key), error)
    }

    fn plain_info(&self, mut info: ObjectInfo) -> ObjectInfo {
        if self.key.is_some() {
            info.size_bytes = plain_size(info.size_bytes);
        }
        info
    }
}

pub struct SealedUpload<U> {
    inner: U,
    /// With a key: the object's header, cipher and what each chunk authenticates.
    sealing: Option<(Header, LessSafeKey, Vec<u8>)>,
}

impl<U> SealedUpload<U> {
    /// `inner`, sealed with `key` (a bulk object: not bound to its name).
    pub fn new(inner: U, key: &SealKey) -> Result<SealedUpload<U>, SealError> {
        let header = Header::fresh(key, false)?;
        let cipher = key.cipher(&header.salt)?;
        Ok(SealedUpload { inner, sealing: Some((header, cipher, header.aad(""))) })
    }
}

impl<U: Upload> Upload for SealedUpload<U> {
    async fn put_part(&self, part: Part) -> Result<(), StoreError> {
        let Some((header, cipher, aad)) = &self.sealing else { return self.inner.put_part(part).await };
        let unaligned = || StoreError::Request {
            operation: "upload",
            location: String::new(),
            detail: SealError::Unaligned { number: part.number, offset: part.offset }.to_string(),
        };
        let chunk = CHUNK as u64;
        if !part.offset.is_multiple_of(chunk) || (!part.last && !part.bytes.len().is_multiple_of(CHUNK)) {
            return Err(unaligned());
        }
        let first_index = part.offset / chunk;
        let mut out = Vec::with_capacity(sealed_size(part.bytes.len() as u64) as usize);
        let offset = match part.offset {
            0 => {
                out.extend_from_slice(&header.encode());
                0
            }
            offset => HEADER_LEN as u64 + offset + first_index * TAG as u64,
        };
        seal_chunks(cipher, aad, first_index, &part.bytes, part.last, &mut out).map_err(|error| {
            StoreError::Request { operation: "upload", location: String::new(), detail: error.to_string() }
        })?;
        self.inner.put_part(Part { number: part.number, offset, bytes: Bytes::from(out), last: part.last }).await
    }

    async fn complete(self) -> Result<ObjectInfo, StoreError> {
        let sealed = self.sealing.is_some();
        let mut info = self.inner.complete().await?;
        if sealed {
            info.size_bytes = plain_size(info.size_bytes);
        }
        Ok(info)
    }

    async fn abort(self) {
        self.inner.abort().await
    }
}

pub struct SealedReader<R> {
    inner: R,
    location: String,
    state: ReadState,
}

enum ReadState {
    Sealed(Box<Opener>),
    /// No key: the first bytes are held until they show whether the object is sealed.
    Plain {
        head: Option<BytesMut>,
    },
    Done,
}

fn refused(location: &str, error: SealError) -> BoxError {
    Box::new(refusal(location.to_owned(), error))
}

impl<R: ByteSource> ByteSource for SealedReader<R> {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BoxError> {
        loop {
            if matches!(self.state, ReadState::Done) {
                return Ok(None);
            }
            let chunk = self.inner.next_chunk().await?;
            match (&mut self.state, chunk) {
                (ReadState::Done, _) => return Ok(None),
                (ReadState::Sealed(opener), Some(chunk)) => match opener.push(&chunk) {
                    Ok(plain) if plain.is_empty() => continue,
                    Ok(plain) => return Ok(Some(plain)),
                    Err(error) => return Err(refused(&self.location, error)),
                },
                (ReadState::Sealed(opener), None) => {
                    let rest = opener.finish();
                    self.state = ReadState::Done;
                    return match rest {
                        Ok(plain) if plain.is_empty() => Ok(None),
                        Ok(plain) => Ok(Some(plain)),
                        Err(error) => Err(refused(&self.location, error)),
                    };
                }
                (ReadState::Plain { head: None }, chunk) => return Ok(chunk),
                (ReadState::Plain { head: Some(head) }, Some(chunk)) => {
                    head.extend_from_slice(&chunk);
                    if head.len() < HEADER_LEN {
                        continue;
                    }
                    if let Some(error) = needs_key(head) {
                        return Err(refused(&self.location, error));
                    }
                    let head = std::mem::take(head).freeze();
                    self.state = ReadState::Plain { head: None };
                    return Ok(Some(head));
                }
                (ReadState::Plain { head: Some(head) }, None) => {
                    let head = std::mem::take(head).freeze();
                    self.state = ReadState::Done;
                    return Ok((!head.is_empty()).then_some(head));
                }
            }
        }
    }
}

impl<S: SnapshotStore> SnapshotStore for SealedStore<S> {
    type Upload = SealedUpload<S::Upload>;
    type Reader = SealedReader<S::Reader>;

    fn location(&self, key: &str) -> String {
        self.inner.location(key)
    }

    async fn begin_upload(&self, key: &str) -> Result<Self::Upload, StoreError> {
        match &self.key {
            None => Ok(SealedUpload { inner: self.inner.begin_upload(key).await?, sealing: None }),
            Some(seal) => {
                let inner = self.inner.begin_upload(key).await?;
                SealedUpload::new(inner, seal).map_err(|error| self.refused(key, error))
            }
        }
    }

    async fn put_small(&self, key: &str, body: Bytes, if_absent: bool) -> Result<(), StoreError> {
        let body = match &self.key {
            None => body,
            Some(seal) => Bytes::from(seal_record(seal, key, &body).map_err(|error| self.refused(key, error))?),
        };
        self.inner.put_small(key, body, if_absent).await
    }

    async fn get(&self, key: &str) -> Result<Self::Reader, StoreError> {
        let state = match &self.key {
            Some(seal) => ReadState::Sealed(Box::new(Opener::new(seal.clone(), key))),
            None => ReadState::Plain { head: Some(BytesMut::new()) },
        };
        Ok(SealedReader { inner: self.inner.get(key).await?, location: self.inner.location(key), state })
    }

    async fn get_bounded(&self, key: &str, limit: usize) -> Result<Bytes, StoreError> {
        match &self.key {
            None => {
                let body = self.inner.get_bounded(key, limit).await?;
                match needs_key(&body) {
                    Some(error) => Err(self.refused(key, error)),
                    None => Ok(body),
                }
            }
            Some(seal) => {
                let sealed = self.inner.get_bounded(key, sealed_size(limit as u64) as usize).await?;
                let plain = open_record(seal, key, &sealed).map_err(|error| self.refused(key, error))?;
                match plain.len() > limit {
                    true => Err(StoreError::TooLarge { location: self.inner.location(key), limit }),
                    false => Ok(Bytes::from(plain)),
                }
            }
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        Ok(self.inner.head(key).await?.map(|info| self.plain_info(info)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        Ok(self.inner.list(prefix).await?.into_iter().map(|info| self.plain_info(info)).collect())
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        self.inner.copy(from, to).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }

    fn key_id(&self) -> Option<String> {
        self.key.as_ref().map(|key| key.id())
    }
}

/// Reads the configured key: `--encryption-key-file` / `encryption_key_file`, or
/// `LIFEBOAT_ENCRYPTION_KEY` (never a flag: a flag's value shows in `ps`).
pub fn read_key(source: &KeySource) -> Result<SealKey, StoreError> {
    let (what, bytes) = match source {
        KeySource::File(path) => (
            path.display().to_string(),
            std::fs::read(path)
                .map_err(|error| StoreError::KeyFile { what: path.display().to_string(), detail: error.to_string() })?,
        ),
        KeySource::Environment => (
            "LIFEBOAT_ENCRYPTION_KEY".to_owned(),
            std::env::var("LIFEBOAT_ENCRYPTION_KEY").unwrap_or_default().into_bytes(),
        ),
    };
    let length = bytes.len();
    SealKey::parse(&bytes)
        .ok_or_else(|| StoreError::KeyFile { what, detail: format!("{length} bytes, not a 256-bit key") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(byte: u8) -> Arc<SealKey> {
        Arc::new(SealKey::parse(&[byte; 32]).expect("32 bytes"))
    }

    /// Seals `plain` as the pipeline uploads it: parts of `part` bytes, the last marked.
    fn seal_bulk(key: &SealKey, plain: &[u8], part: usize) -> Vec<u8> {
        let header = Header::fresh(key, false).expect("random");
        let cipher = key.cipher(&header.salt).expect("derived");
        let aad = header.aad("ignored: bulk objects are not bound");
        let mut out = header.encode().to_vec();
        let parts: Vec<&[u8]> = if plain.is_empty() { vec![&[]] } else { plain.chunks(part).collect() };
        for (index, bytes) in parts.iter().enumerate() {
            let first = (index * part / CHUNK) as u64;
            seal_chunks(&cipher, &aad, first, bytes, index + 1 == parts.len(), &mut out).expect("sealed");
        }
        out
    }

    fn open_cut(key: &Arc<SealKey>, object_key: &str, sealed: &[u8], cuts: &[usize]) -> Result<Vec<u8>, SealError> {
        let mut opener = Opener::new(key.clone(), object_key);
        let mut plain = Vec::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (sealed.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([sealed.len()]) {
            plain.extend_from_slice(&opener.push(&sealed[start..cut])?);
            start = cut;
        }
        plain.extend_from_slice(&opener.finish()?);
        Ok(plain)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the size, the part size and how the bytes arrive, what is sealed
        /// opens to itself, and the sizes map both ways exactly.
        #[test]
        fn sealed_objects_open_to_what_was_sealed(
            size in 0usize..(3 * CHUNK + 100),
            chunks_per_part in 1usize..3,
            cuts in proptest::collection::vec(0usize..(4 * CHUNK), 0..6),
            seed in any::<u8>(),
        ) {
            let plain: Vec<u8> = (0..size).map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let key = key(seed);
            let sealed = seal_bulk(&key, &plain, chunks_per_part * CHUNK);
            prop_assert_eq!(sealed.len() as u64, sealed_size(size as u64));
            prop_assert_eq!(plain_size(sealed.len() as u64), size as u64);
            prop_assert_eq!(open_cut(&key, "any", &sealed, &cuts)?, plain);
        }

        /// Any changed byte, any cut, any other key: refused, never plaintext.
        #[test]
        fn altered_or_cut_objects_are_refused(
            size in 0usize..(2 * CHUNK + 10),
            flip in any::<usize>(),
            bit in 0u8..8,
            cut in any::<usize>(),
        ) {
            let plain = vec![0x5a; size];
            let key = key(1);
            let sealed = seal_bulk(&key, &plain, CHUNK);
            let mut flipped = sealed.clone();
            let position = flip % flipped.len();
            flipped[position] ^= 1 << bit;
            prop_assert!(open_cut(&key, "any", &flipped, &[]).is_err());
            let cut = cut % sealed.len();
            prop_assert!(open_cut(&key, "any", &sealed[..cut], &[]).is_err(), "cut at {}", cut);
            let other = self::key(2);
            let wrong = open_cut(&other, "any", &sealed, &[]);
            prop_assert!(matches!(wrong, Err(SealError::OtherKey { .. })), "{:?}", wrong);
        }

        /// Arbitrary bytes from the store never panic the opener.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), with_header in any::<bool>()) {
            let key = key(3);
            let mut input = Vec::new();
            if with_header {
                input.extend_from_slice(&Header { bound: true, key_id: key.id, salt: [7; 16] }.encode());
            }
            input.extend_from_slice(&bytes);
            prop_assert!(open_cut(&key, "k", &input, &[5, 40]).is_err());
            prop_assert!(open_record(&key, "k", &input).is_err());
            let _ = plain_size(input.len() as u64);
        }
    }

    /// Through the store port, as the pipeline uploads: parts of two chunks put out
    /// of order, the last one short and marked; the object reads back whole, `head`
    /// and `complete` report the plaintext size, and without the key it is refused.
    #[test]
    fn multipart_uploads_seal_and_open_through_a_real_directory_store() {
        let directory = tempfile::tempdir().expect("a temp dir");
        let store = SealedStore::new(
            crate::store::FileStore::open(directory.path()).expect("a store"),
            SealKey::parse(&[8u8; 32]),
        );
        let part = 2 * CHUNK;
        let plain: Vec<u8> = (0..(3 * part + 1234)).map(|index| (index % 251) as u8).collect();
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        runtime.block_on(async {
            let upload = store.begin_upload("snapshots/a.db").await.expect("begin");
            let parts: Vec<&[u8]> = plain.chunks(part).collect();
            for index in [2usize, 0, 3, 1] {
                let bytes = Bytes::copy_from_slice(parts[index]);
                let part = Part { number: index as i32 + 1, offset: (index * part) as u64, bytes, last: index == 3 };
                upload.put_part(part).await.expect("a part");
            }
            let info = upload.complete().await.expect("complete");
            assert_eq!(info.size_bytes, plain.len() as u64);
            assert_eq!(
                store.head("snapshots/a.db").await.expect("head").map(|info| info.size_bytes),
                Some(plain.len() as u64)
            );
            let mut reader = store.get("snapshots/a.db").await.expect("get");
            let mut read = Vec::new();
            while let Some(chunk) = reader.next_chunk().await.expect("opens") {
                read.extend_from_slice(&chunk);
            }
            assert_eq!(read, plain);
            let keyless = SealedStore::new(crate::store::FileStore::open(directory.path()).expect("a store"), None);
            let mut reader = keyless.get("snapshots/a.db").await.expect("get");
            let refused = reader.next_chunk().await.expect_err("refused without the key").to_string();
            assert!(refused.contains("LIFEBOAT_ENCRYPTION_KEY"), "{refused}");
        });
    }

    #[test]
    fn records_are_bound_to_their_key() {
        let key = key(4);
        let sealed = seal_record(&key, "coordination/epochs/0000000003.json", b"{\"epoch\":3}").expect("sealed");
        assert_eq!(open_record(&key, "coordination/epochs/0000000003.json", &sealed).expect("opens"), b"{\"epoch\":3}");
        assert_eq!(
            open_record(&key, "coordination/epochs/0000000009.json", &sealed),
            Err(SealError::Tampered { chunk: 0 }),
            "a claim replayed under another epoch's name"
        );
        let bulk = seal_bulk(&key, b"{\"epoch\":9}", CHUNK);
        assert_eq!(open_record(&key, "x", &bulk), Err(SealError::NotARecord), "a bulk object is not a record");
    }

    #[test]
    fn truncation_at_a_chunk_boundary_is_named() {
        let key = key(5);
        let sealed = seal_bulk(&key, &vec![1; 3 * CHUNK], CHUNK);
        let cut = HEADER_LEN + 2 * SEALED_CHUNK;
        assert_eq!(open_cut(&key, "any", &sealed[..cut], &[]), Err(SealError::Truncated));
    }

    #[test]
    fn keys_parse_from_raw_hex_or_base64_and_print_only_their_id() {
        let raw = [9u8; 32];
        let from_raw = SealKey::parse(&raw).expect("raw");
        let from_hex = SealKey::parse(format!("{}\n", hex::encode(raw)).as_bytes()).expect("hex");
        let from_base64 = SealKey::parse(aws_smithy_types::base64::encode(raw).as_bytes()).expect("base64");
        assert_eq!(from_raw.id(), from_hex.id());
        assert_eq!(from_raw.id(), from_base64.id());
        assert_eq!(from_raw.id().len(), 16);
        assert!(!format!("{from_raw:?}").contains(&hex::encode(raw)));
        for bad in [&b""[..], b"short", &[0u8; 31], &[0u8; 33]] {
            assert!(SealKey::parse(bad).is_none());
        }
    }

    #[test]
    fn plain_objects_are_refused_under_a_key_and_sealed_ones_name_their_key_without() {
        let key = key(6);
        assert_eq!(open_cut(&key, "k", b"{\"plain\": true}", &[]), Err(SealError::NotSealed));
        let sealed = seal_record(&key, "k", b"x").expect("sealed");
        assert_eq!(needs_key(&sealed), Some(SealError::NeedsKey { key_id: key.id() }));
        assert_eq!(needs_key(b"{\"plain\": true, \"padding to the header's length\": 1}"), None);
    }
}
