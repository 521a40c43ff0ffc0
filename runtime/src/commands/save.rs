//! `lifeboat save`: one snapshot streamed from the healthiest member to the store.

use super::{open_store, store_location};
use crate::backup::save::{self, wall_clock_now, SaveSettings};
use crate::cli::args::SaveArgs;
use crate::cli::config::Resolved;
use crate::cli::output::{self, Format};
use crate::exit::Exit;
use crate::pipeline::PipelineSettings;
use anyhow::Context;
use lifeboat::Compression;

const SAVE_FAILED: &str = "save failed; snapshot.db and earlier snapshots are unchanged";

pub async fn run(resolved: &Resolved, args: &SaveArgs, format: Format) -> anyhow::Result<Exit> {
    let etcd = resolved.etcd()?;
    let (store, layout) = open_store(resolved).await.context(SAVE_FAILED)?;
    let settings = SaveSettings {
        cluster: resolved.store_settings()?.cluster.clone(),
        compression: args.compression.or(resolved.file.compression).unwrap_or(Compression::None),
        pipeline: PipelineSettings {
            part_size_bytes: (args.part_size_mib as usize) << 20,
            upload_concurrency: args.upload_concurrency as usize,
            zstd_level: args.zstd_level,
            ..PipelineSettings::default()
        },
    };
    let bar = crate::cli::progress::bar("saving", format);
    let report = save::save(&etcd, &store, &layout, &settings, wall_clock_now()).await.context(SAVE_FAILED)?;
    drop(bar);
    if let Some(path) = &args.metrics_file {
        let metrics = crate::agent::metrics::AgentMetrics::new();
        let details = serde_json::json!({ "revision": report.revision, "size_bytes": report.size_bytes,
                                          "elapsed_ms": report.elapsed_ms });
        metrics.on_event(wall_clock_now().0, "saved", &details);
        crate::member::write_atomically(path, metrics.encode().as_bytes())
            .with_context(|| format!("saved, but cannot write --metrics-file {}", path.display()))?;
    }
    match format {
        Format::Json => println!("{}", output::json(&report)),
        Format::Table => println!(
            "saved {} (revision {}, {}{}, sha256 {}) from {} in {:.1} s ({} MiB/s)\nlatest: {}",
            report.location,
            report.revision,
            output::bytes(report.size_bytes),
            if report.compression == Compression::None {
                String::new()
            } else {
                format!(", stored {}", output::bytes(report.stored_size_bytes))
            },
            &output::short_hash(&report.sha256),
            report.source_endpoint,
            report.elapsed_ms as f64 / 1000.0,
            report.mib_per_second,
            store_location(&store, &report.latest_key),
        ),
    }
    Ok(Exit::Success)
}
