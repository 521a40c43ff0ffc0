//! The streaming path from an etcd snapshot to one or more uploads: hash,
//! optionally compress, cut into parts, upload parts concurrently.
//!
//! Memory is bounded by `part_size_bytes × (upload_concurrency + 2)` per target,
//! whatever the database size: parts flow through a channel of capacity one, so a
//! slow store slows the snapshot stream down (backpressure) instead of buffering it.
//! Part buffers are recycled once their upload is done: fresh ones would fault in
//! and zero new pages for every part, and freed ones fragment the heap.

use crate::backup::verify::{Digest256, SnapshotDigest, Trailer};
use crate::host::clock::Stopwatch;
use crate::ports::{BoxError, ByteSource, Part, StoreError, Upload};
use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt, TryStreamExt};
use lifeboat::Compression;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct PipelineSettings {
    /// S3 needs at least 5 MiB for every part but the last, and at most 10,000 parts.
    pub part_size_bytes: usize,
    pub upload_concurrency: usize,
    pub zstd_level: i32,
    /// A progress line this often.
    pub progress_interval: Duration,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            part_size_bytes: 8 << 20,
            upload_concurrency: 2,
            // Level 1 keeps up with etcd's stream on one core (benches/: ~230 MiB/s vs ~100 at level 3).
            zstd_level: 1,
            progress_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("reading the snapshot stream failed after {bytes} bytes: {detail}")]
    Source { bytes: u64, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("zstd compression failed: {0}")]
    Compress(std::io::Error),
}

/// One destination of the stream.
pub struct Target<U> {
    pub upload: U,
    pub compression: Compression,
}

/// What went through the pipeline.
#[derive(Clone, Debug)]
pub struct PipelineReport {
    /// The plain snapshot, as etcd sent it.
    pub plain: Digest256,
    pub trailer: Trailer,
    pub is_bolt: bool,
    /// Each target's bytes as stored, in target order.
    pub stored: Vec<Digest256>,
    pub elapsed: Duration,
}

/// Cuts one target's byte stream into parts and hands them to its uploader.
struct PartWriter {
    encoder: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    buffer: BytesMut,
    part_size_bytes: usize,
    next_number: i32,
    offset: u64,
    /// Hashes the stored bytes; `None` when they are the plain snapshot, whose
    /// hash the snapshot digest computes anyway.
    hasher: Option<Sha256>,
    size_bytes: u64,
    sender: mpsc::Sender<Part>,
    pool: Pool,
}

/// Part buffers of one size whose upload finished, ready to be filled again.
#[derive(Clone)]
struct Pool {
    buffers: Arc<Mutex<Vec<BytesMut>>>,
    capacity: usize,
}

impl Pool {
    fn new(capacity: usize) -> Pool {
        Pool { buffers: Arc::default(), capacity }
    }

    fn take(&self) -> BytesMut {
        let recycled = self.buffers.lock().ok().and_then(|mut buffers| buffers.pop());
        recycled.unwrap_or_else(|| BytesMut::with_capacity(self.capacity))
    }

    /// Keeps `bytes`' buffer if nothing else holds it any more (the upload dropped its copy).
    fn recycle(&self, bytes: Bytes) {
        if let Ok(mut buffer) = bytes.try_into_mut() {
            if buffer.capacity() >= self.capacity {
                buffer.clear();
                if let Ok(mut buffers) = self.buffers.lock() {
                    buffers.push(buffer);
                }
            }
        }
    }
}

impl PartWriter {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), PipelineError> {
        match self.encoder.as_mut() {
            None => self.fill(chunk).await,
            Some(encoder) => {
                encoder.write_all(chunk).map_err(PipelineError::Compress)?;
                let compressed = std::mem::take(encoder.get_mut());
                self.fill(&compressed).await
            }
        }
    }

    /// Copies into the part being filled, which is allocated at its final size:
    /// a growing buffer would reallocate (and copy) each part several times and
    /// hand the uploader allocations twice the part size. A full part is sent
    /// only once more data follows it, so the last part is always known as last.
    async fn fill(&mut self, mut data: &[u8]) -> Result<(), PipelineError> {
        while !data.is_empty() {
            if self.buffer.len() == self.part_size_bytes {
                let next = self.pool.take();
                let full = std::mem::replace(&mut self.buffer, next);
                self.send(full.freeze(), false).await?;
            }
            let take = self.part_size_bytes.saturating_sub(self.buffer.len()).min(data.len());
            let (now, rest) = data.split_at(take);
            self.buffer.extend_from_slice(now);
            data = rest;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<Digest256, PipelineError> {
        if let Some(encoder) = self.encoder.take() {
            let rest = encoder.finish().map_err(PipelineError::Compress)?;
            self.fill(&rest).await?;
        }
        // Always send a last part, even an empty one, so an empty object is still an
        // object. `fill` never leaves the buffer empty once anything was written.
        let part = std::mem::take(&mut self.buffer).freeze();
        self.send(part, true).await?;
        Ok(Digest256 {
            sha256: self.hasher.map(|hasher| hex::encode(hasher.finalize())).unwrap_or_default(),
            size_bytes: self.size_bytes,
        })
    }

    async fn send(&mut self, bytes: Bytes, last: bool) -> Result<(), PipelineError> {
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&bytes);
        }
        self.size_bytes += bytes.len() as u64;
        let part = Part { number: self.next_number, offset: self.offset, bytes, last };
        self.next_number += 1;
        self.offset += part.bytes.len() as u64;
        // A closed channel means the uploader stopped on an error; it reports that error.
        self.sender.send(part).await.map_err(|_| StoreError::Request {
            operation: "upload",
            location: String::new(),
            detail: "uploader stopped".into(),
        })?;
        Ok(())
    }
}

async fn upload_parts<U: Upload>(
    upload: &U,
    receiver: mpsc::Receiver<Part>,
    concurrency: usize,
    pool: Pool,
) -> Result<(), StoreError> {
    receiver
        .map(|part| {
            let (pool, kept) = (pool.clone(), part.bytes.clone());
            async move {
                upload.put_part(part).await?;
                pool.recycle(kept);
                Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_for_each(|()| async { Ok(()) })
        .await
}

async fn produce<S: ByteSource>(
    source: &mut S,
    mut writers: Vec<PartWriter>,
    settings: &PipelineSettings,
) -> Result<(SnapshotDigest, Vec<Digest256>), PipelineError> {
    let mut digest = SnapshotDigest::default();
    let started = Stopwatch::start();
    let mut progress_next = settings.progress_interval;
    let mut bytes: u64 = 0;
    loop {
        let chunk = match source.next_chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => return Err(source_error(bytes, error)),
        };
        bytes += chunk.len() as u64;
        crate::progress::advance(chunk.len() as u64);
        digest.update(&chunk);
        for writer in &mut writers {
            writer.write(&chunk).await?;
        }
        if started.elapsed() >= progress_next {
            progress_next += settings.progress_interval;
            let seconds = started.elapsed().as_secs_f64().max(0.001);
            tracing::info!(
                streamed_mib = bytes >> 20,
                mib_per_second = format!("{:.1}", bytes as f64 / (1 << 20) as f64 / seconds),
                "saving"
            );
        }
    }
    let mut stored = Vec::new();
    for writer in writers {
        stored.push(writer.finish().await?);
    }
    Ok((digest, stored))
}

fn source_error(bytes: u64, error: BoxError) -> PipelineError {
    PipelineError::Source { bytes, detail: error.to_string() }
}

/// Streams `source` into every target's upload. Does not complete or abort the
/// uploads: the caller decides, after checking the report, whether the data may
/// appear under its final names.
pub async fn run<S: ByteSource, U: Upload>(
    source: &mut S,
    targets: &[Target<U>],
    settings: &PipelineSettings,
) -> Result<PipelineReport, PipelineError> {
    let started = Stopwatch::start();
    let mut writers = Vec::new();
    let mut receivers = Vec::new();
    let part_size_bytes = settings.part_size_bytes.max(1);
    for target in targets {
        let (sender, receiver) = mpsc::channel::<Part>(0);
        let pool = Pool::new(part_size_bytes);
        let encoder = match target.compression {
            Compression::None => None,
            Compression::Zstd => Some(
                zstd::stream::write::Encoder::new(Vec::new(), settings.zstd_level).map_err(PipelineError::Compress)?,
            ),
        };
        writers.push(PartWriter {
            encoder,
            buffer: pool.take(),
            part_size_bytes,
            next_number: 1,
            offset: 0,
            hasher: (target.compression != Compression::None).then(Sha256::new),
            size_bytes: 0,
            sender,
            pool: pool.clone(),
        });
        receivers.push((receiver, pool));
    }
    let uploads =
        futures::future::join_all(targets.iter().zip(receivers).map(|(target, (receiver, pool))| {
            upload_parts(&target.upload, receiver, settings.upload_concurrency, pool)
        }));
    let (produced, uploaded) = futures::join!(produce(source, writers, settings), uploads);
    // An upload error explains a producer that stopped because its channel closed.
    for result in uploaded {
        result?;
    }
    let (digest, mut stored) = produced?;
    let (plain, trailer, is_bolt) = digest.finish();
    for (target, stored) in targets.iter().zip(stored.iter_mut()) {
        if target.compression == Compression::None {
            stored.sha256.clone_from(&plain.sha256);
        }
    }
    Ok(PipelineReport { plain, trailer, is_bolt, stored, elapsed: started.elapsed() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::ObjectInfo;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    struct Chunks(VecDeque<Bytes>);

    impl ByteSource for Chunks {
        async fn next_chunk(&mut self) -> Result<Option<Bytes>, BoxError> {
            Ok(self.0.pop_front())
        }
    }

    /// Keeps a copy of each part's bytes and drops the part, as the S3 and file
    /// uploads do, so the pipeline may recycle the buffer at once.
    #[derive(Default)]
    struct Copying(Mutex<Vec<SentPart>>);

    /// A part as the pipeline sent it: number, offset, bytes, and whether it was the last.
    type SentPart = (i32, u64, Vec<u8>, bool);

    impl Upload for Copying {
        async fn put_part(&self, part: Part) -> Result<(), StoreError> {
            self.0.lock().expect("not poisoned").push((part.number, part.offset, part.bytes.to_vec(), part.last));
            Ok(())
        }
        async fn complete(self) -> Result<ObjectInfo, StoreError> {
            unreachable!("the pipeline never completes")
        }
        async fn abort(self) {}
    }

    fn run_blocking(data: &[u8], cuts: &[usize], part_size_bytes: usize, compression: Compression) -> Vec<SentPart> {
        let mut chunks = VecDeque::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (data.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([data.len()]) {
            chunks.push_back(Bytes::copy_from_slice(&data[start..cut]));
            start = cut;
        }
        let settings = PipelineSettings { part_size_bytes, upload_concurrency: 2, ..PipelineSettings::default() };
        let targets = [Target { upload: Copying::default(), compression }];
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        let report = runtime.block_on(run(&mut Chunks(chunks), &targets, &settings)).expect("the pipeline runs");
        let [target] = targets;
        let mut parts = target.upload.0.into_inner().expect("not poisoned");
        parts.sort_by_key(|(number, _, _, _)| *number);
        assert_eq!(report.stored[0].size_bytes, parts.iter().map(|(_, _, bytes, _)| bytes.len() as u64).sum::<u64>());
        parts
    }

    proptest! {
        /// However etcd chunks the stream, the parts are numbered from 1, each starts
        /// where the previous ended, all but the last are exactly the part size, and
        /// together they are the input: recycled buffers never leak into sent parts.
        /// Exactly the last part is marked last (client-side encryption seals it as
        /// the end), even when the stream is an exact multiple of the part size.
        #[test]
        fn parts_reassemble_the_stream(
            size in 0usize..40_000,
            cuts in proptest::collection::vec(0usize..40_000, 0..12),
            part_size_bytes in 1usize..9_000,
            seed in any::<u64>(),
        ) {
            let mut state = seed | 1;
            let data: Vec<u8> = (0..size).map(|_| { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state as u8 }).collect();
            let parts = run_blocking(&data, &cuts, part_size_bytes, Compression::None);
            let mut offset = 0u64;
            for (index, (number, part_offset, bytes, last)) in parts.iter().enumerate() {
                prop_assert_eq!(*number as usize, index + 1);
                prop_assert_eq!(*part_offset, offset);
                prop_assert_eq!(*last, index + 1 == parts.len());
                if index + 1 < parts.len() {
                    prop_assert_eq!(bytes.len(), part_size_bytes);
                }
                offset += bytes.len() as u64;
            }
            prop_assert!(!parts.is_empty(), "an empty stream still makes one (empty) part");
            prop_assert!(parts.len() == 1 || parts.iter().all(|(_, _, bytes, _)| !bytes.is_empty()), "no empty trailing part");
            let joined: Vec<u8> = parts.into_iter().flat_map(|(_, _, bytes, _)| bytes).collect();
            prop_assert_eq!(joined, data);
        }
    }

    /// A buffer comes back only when nothing else (a retrying request, a test
    /// upload keeping parts) still holds it.
    #[test]
    fn pool_reuses_only_buffers_nothing_else_holds() {
        let pool = Pool::new(64);
        let mut buffer = pool.take();
        buffer.extend_from_slice(&[1; 64]);
        let bytes = buffer.freeze();
        let pointer = bytes.as_ptr();
        let held = bytes.clone();
        pool.recycle(bytes);
        assert!(pool.buffers.lock().expect("not poisoned").is_empty(), "still held: not recycled");
        pool.recycle(held);
        let again = pool.take();
        assert_eq!(again.as_ptr(), pointer, "the same allocation");
        assert!(again.is_empty() && again.capacity() >= 64);
    }

    #[test]
    fn zstd_parts_decode_to_the_stream() {
        let data: Vec<u8> =
            (0..200_000u32).flat_map(|index| format!("/registry/pods/{index}\n").into_bytes()).collect();
        let parts = run_blocking(&data, &[1, 4_096, 70_000, 1_000_000], 5_000, Compression::Zstd);
        assert!(parts.len() > 2, "compressed output spans several parts");
        let joined: Vec<u8> = parts.into_iter().flat_map(|(_, _, bytes, _)| bytes).collect();
        assert_eq!(zstd::decode_all(&joined[..]).expect("valid zstd"), data);
    }
}
