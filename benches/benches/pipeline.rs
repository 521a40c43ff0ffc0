//! The save pipeline without disk or network: hash, optional zstd, cut into
//! parts, hand to an upload that keeps nothing. Throughput in MiB/s of snapshot,
//! plain and with client-side encryption (`store::sealed`) on the way out, and
//! the way back: opening a sealed object as it streams in.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lifeboat::Compression;
use lifeboat_benches::{synthetic_snapshot, CountingUpload, MemorySource};
use lifeboat_runtime::pipeline::{self, PipelineSettings, Target};
use lifeboat_runtime::store::sealed::{self, Opener, SealKey, SealedUpload};
use std::sync::Arc;

const SNAPSHOT_BYTES: usize = 32 << 20;
/// etcd streams snapshots in 32 KiB messages.
const ETCD_CHUNK_BYTES: usize = 32 << 10;

fn bench(criterion: &mut Criterion) {
    let snapshot = synthetic_snapshot(SNAPSHOT_BYTES);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    let mut group = criterion.benchmark_group("save pipeline (32 MiB, in memory)");
    group.throughput(Throughput::Bytes(snapshot.len() as u64));
    group.sample_size(10);
    for (label, compression, zstd_level) in
        [("plain", Compression::None, 3), ("zstd-1", Compression::Zstd, 1), ("zstd-3", Compression::Zstd, 3)]
    {
        let settings = PipelineSettings { zstd_level, ..PipelineSettings::default() };
        if compression == Compression::Zstd {
            let stored = runtime.block_on(async {
                let mut source = MemorySource::new(snapshot.clone(), ETCD_CHUNK_BYTES);
                let targets = [Target { upload: CountingUpload::default(), compression }];
                pipeline::run(&mut source, &targets, &settings).await.expect("the pipeline runs").stored[0].size_bytes
            });
            println!("{label}: stored {:.1}% of the snapshot", stored as f64 * 100.0 / snapshot.len() as f64);
        }
        group.bench_function(label, |bencher| {
            bencher.iter(|| {
                runtime.block_on(async {
                    let mut source = MemorySource::new(snapshot.clone(), ETCD_CHUNK_BYTES);
                    let targets = [Target { upload: CountingUpload::default(), compression }];
                    let report = pipeline::run(&mut source, &targets, &settings).await.expect("the pipeline runs");
                    assert_eq!(report.plain.size_bytes, snapshot.len() as u64);
                    assert_eq!(report.trailer, lifeboat_runtime::backup::verify::Trailer::Valid);
                    report.stored[0].size_bytes
                })
            })
        });
    }
    let key = SealKey::parse(&[7u8; 32]).expect("a key");
    for (label, compression) in [("plain, sealed", Compression::None), ("zstd-1, sealed", Compression::Zstd)] {
        let settings = PipelineSettings { zstd_level: 1, ..PipelineSettings::default() };
        group.bench_function(label, |bencher| {
            bencher.iter(|| {
                runtime.block_on(async {
                    let mut source = MemorySource::new(snapshot.clone(), ETCD_CHUNK_BYTES);
                    let upload = SealedUpload::new(CountingUpload::default(), &key).expect("sealing");
                    let targets = [Target { upload, compression }];
                    let report = pipeline::run(&mut source, &targets, &settings).await.expect("the pipeline runs");
                    assert_eq!(report.plain.size_bytes, snapshot.len() as u64);
                    report.stored[0].size_bytes
                })
            })
        });
    }
    group.finish();

    let key = Arc::new(key);
    let sealed = sealed::seal_record(&key, "bench", &snapshot).expect("sealed");
    let mut group = criterion.benchmark_group("open a sealed object (32 MiB, in memory)");
    group.throughput(Throughput::Bytes(snapshot.len() as u64));
    group.sample_size(10);
    group.bench_function("open", |bencher| {
        bencher.iter(|| {
            let mut opener = Opener::new(key.clone(), "bench");
            let mut opened = 0;
            for chunk in sealed.chunks(ETCD_CHUNK_BYTES) {
                opened += opener.push(chunk).expect("opens").len();
            }
            opened += opener.finish().expect("the last chunk").len();
            assert_eq!(opened, snapshot.len());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
