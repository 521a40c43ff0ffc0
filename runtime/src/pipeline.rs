//! The streaming path from an etcd snapshot to one or more uploads: hash,
//! optionally compress, cut into parts, upload parts concurrently.
//!
//! Memory is bounded by `part_size_bytes × (upload_concurrency + 2)` per target,
//! whatever the database size: parts flow through a channel of capacity one, so a
//! slow store slows the snapshot stream down (backpressure) instead of buffering it.

use crate::ports::{BoxError, ByteSource, Part, StoreError, Upload};
use crate::verify::{Digest256, SnapshotDigest, Trailer};
use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt, TryStreamExt};
use lifeboat::Compression;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::time::{Duration, Instant};

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
    /// hand the uploader allocations twice the part size.
    async fn fill(&mut self, mut data: &[u8]) -> Result<(), PipelineError> {
        while !data.is_empty() {
            let take = (self.part_size_bytes - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == self.part_size_bytes {
                let full = std::mem::replace(&mut self.buffer, BytesMut::with_capacity(self.part_size_bytes));
                self.send(full.freeze()).await?;
            }
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<Digest256, PipelineError> {
        if let Some(encoder) = self.encoder.take() {
            let rest = encoder.finish().map_err(PipelineError::Compress)?;
            self.fill(&rest).await?;
        }
        // Always send a last part, even an empty one, so an empty object is still an object.
        if !self.buffer.is_empty() || self.next_number == 1 {
            let part = std::mem::take(&mut self.buffer).freeze();
            self.send(part).await?;
        }
        Ok(Digest256 {
            sha256: self.hasher.map(|hasher| hex::encode(hasher.finalize())).unwrap_or_default(),
            size_bytes: self.size_bytes,
        })
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), PipelineError> {
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&bytes);
        }
        self.size_bytes += bytes.len() as u64;
        let part = Part { number: self.next_number, offset: self.offset, bytes };
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
) -> Result<(), StoreError> {
    receiver
        .map(|part| upload.put_part(part))
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
    let started = Instant::now();
    let mut progress_next = started + settings.progress_interval;
    let mut bytes: u64 = 0;
    loop {
        let chunk = match source.next_chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => return Err(source_error(bytes, error)),
        };
        bytes += chunk.len() as u64;
        digest.update(&chunk);
        for writer in &mut writers {
            writer.write(&chunk).await?;
        }
        if Instant::now() >= progress_next {
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
    let started = Instant::now();
    let mut writers = Vec::new();
    let mut receivers = Vec::new();
    for target in targets {
        let (sender, receiver) = mpsc::channel::<Part>(0);
        let encoder = match target.compression {
            Compression::None => None,
            Compression::Zstd => Some(
                zstd::stream::write::Encoder::new(Vec::new(), settings.zstd_level).map_err(PipelineError::Compress)?,
            ),
        };
        writers.push(PartWriter {
            encoder,
            buffer: BytesMut::with_capacity(settings.part_size_bytes.max(1)),
            part_size_bytes: settings.part_size_bytes.max(1),
            next_number: 1,
            offset: 0,
            hasher: (target.compression != Compression::None).then(Sha256::new),
            size_bytes: 0,
            sender,
        });
        receivers.push(receiver);
    }
    let uploads = futures::future::join_all(
        targets
            .iter()
            .zip(receivers)
            .map(|(target, receiver)| upload_parts(&target.upload, receiver, settings.upload_concurrency)),
    );
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
