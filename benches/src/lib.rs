//! In-memory fixtures for the benches: a synthetic etcd snapshot stream and a
//! store that keeps nothing, so a bench measures lifeboat's own work (hashing,
//! compression, part cutting) rather than a disk or a network.

use bytes::Bytes;
use lifeboat_runtime::ports::{BoxError, ByteSource, ObjectInfo, Part, StoreError, Upload};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot as etcd streams it: a bolt header, `size_bytes` of data that
/// compresses like a real key space (repetitive keys, varied values), and the
/// trailing sha256.
pub fn synthetic_snapshot(size_bytes: usize) -> Bytes {
    let mut body = Vec::with_capacity(size_bytes + 32);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut index = 0u64;
    while body.len() < size_bytes {
        body.extend_from_slice(format!("/registry/pods/default/pod-{index:08}").as_bytes());
        for _ in 0..16 {
            // xorshift: cheap, deterministic, not compressible to nothing.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            body.extend_from_slice(&state.to_le_bytes()[..4]);
        }
        body.extend_from_slice(b"{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"status\":\"Running\"}");
        index += 1;
    }
    body.truncate(size_bytes - size_bytes % 512);
    body[16..20].copy_from_slice(&[0xED, 0xDA, 0x0C, 0xED]);
    let trailer = Sha256::digest(&body);
    body.extend_from_slice(&trailer);
    Bytes::from(body)
}

/// Streams a snapshot in etcd's chunk size, without copying.
pub struct MemorySource {
    snapshot: Bytes,
    offset: usize,
    chunk_bytes: usize,
}

impl MemorySource {
    pub fn new(snapshot: Bytes, chunk_bytes: usize) -> MemorySource {
        MemorySource { snapshot, offset: 0, chunk_bytes }
    }
}

impl ByteSource for MemorySource {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BoxError> {
        if self.offset >= self.snapshot.len() {
            return Ok(None);
        }
        let end = (self.offset + self.chunk_bytes).min(self.snapshot.len());
        let chunk = self.snapshot.slice(self.offset..end);
        self.offset = end;
        Ok(Some(chunk))
    }
}

/// An upload that counts bytes and keeps none.
#[derive(Default)]
pub struct CountingUpload {
    pub bytes: AtomicU64,
}

impl Upload for CountingUpload {
    async fn put_part(&self, part: Part) -> Result<(), StoreError> {
        self.bytes.fetch_add(part.bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    async fn complete(self) -> Result<ObjectInfo, StoreError> {
        Ok(ObjectInfo { key: String::new(), size_bytes: self.bytes.load(Ordering::Relaxed), modified_ms: None })
    }
    async fn abort(self) {}
}
