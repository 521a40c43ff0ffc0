//! The save pipeline without disk or network: hash, optional zstd, cut into
//! parts, hand to an upload that keeps nothing. Throughput in MiB/s of snapshot.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lifeboat::Compression;
use lifeboat_benches::{synthetic_snapshot, CountingUpload, MemorySource};
use lifeboat_runtime::pipeline::{self, PipelineSettings, Target};

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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
