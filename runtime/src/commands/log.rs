//! `lifeboat log stream|status`: write the revision log, and show what it holds.

use super::open_store;
use crate::backup::save::{self, SaveSettings};
use crate::cli::args::LogStreamArgs;
use crate::cli::config::Resolved;
use crate::cli::output::{self, Format};
use crate::exit::Exit;
use crate::host::clock::wall_clock_now;
use crate::pipeline::PipelineSettings;
use crate::revlog::writer::{self, WriterSettings};
use crate::revlog::{self, Listed};
use lifeboat::Compression;
use std::time::Duration;

pub async fn stream(resolved: &Resolved, args: &LogStreamArgs, format: Format) -> anyhow::Result<Exit> {
    let shutdown = super::shutdown_signal();
    let etcd = resolved.etcd()?;
    let (store, layout) = open_store(resolved).await?;
    let settings = WriterSettings {
        cluster: resolved.store_settings()?.cluster.clone(),
        flush_interval: Duration::from_millis(args.flush_interval_ms),
        segment_target_bytes: (args.segment_target_mib as usize) << 20,
        zstd_level: args.zstd_level,
        save: SaveSettings {
            cluster: resolved.store_settings()?.cluster.clone(),
            compression: args.compression.or(resolved.file.compression).unwrap_or(Compression::None),
            pipeline: PipelineSettings::default(),
        },
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    // One line per minute at most: the log's progress, without a line per segment.
    let last_report = std::sync::Mutex::new(0u64);
    let stats = writer::run(&etcd, &store, &layout, &settings, stopped, |stats| {
        let now = wall_clock_now().0;
        if let Ok(mut last) = last_report.lock() {
            if now.saturating_sub(*last) >= 60_000 {
                *last = now;
                tracing::info!(
                    revision = stats.last_revision,
                    segments = stats.segments,
                    revisions = stats.revisions,
                    gaps = stats.gaps,
                    "revision log"
                );
            }
        }
    })
    .await;
    match format {
        Format::Json => println!("{}", output::json(&stats)),
        Format::Table => println!(
            "log writer stopped: {} segment(s), {} revision(s) written, last revision {}, {} gap(s)",
            stats.segments, stats.revisions, stats.last_revision, stats.gaps
        ),
    }
    Ok(Exit::Success)
}

/// One etcd cluster's log, as `log status` reports it.
#[derive(serde::Serialize)]
struct LogView {
    #[serde(flatten)]
    extent: revlog::Extent,
    stored_bytes: u64,
    /// When the newest segment was written (store time).
    newest_written: Option<String>,
    /// Objects in the log's directory that are not segments.
    unknown: Vec<String>,
    /// Only for the cluster the endpoints reach.
    #[serde(skip_serializing_if = "Option::is_none")]
    lag: Option<Lag>,
}

#[derive(serde::Serialize)]
struct Lag {
    cluster_revision: i64,
    revisions: i64,
    /// How long the cluster has held revisions the log does not (0 when caught up).
    seconds: u64,
}

pub async fn status(resolved: &Resolved, max_lag_seconds: Option<u64>, format: Format) -> anyhow::Result<Exit> {
    let (store, layout) = open_store(resolved).await?;
    // The cluster the endpoints reach, if any: its log gets a lag.
    let have_endpoints = !resolved.etcd_access.endpoints.is_empty();
    let current = match resolved.etcd() {
        Ok(etcd) => save::choose_source(&etcd).await.ok(),
        Err(_) => None,
    };
    let mut views = Vec::new();
    for cluster_id in revlog::cluster_ids(&store, &layout).await? {
        let (segments, unknown) = revlog::list(&store, &layout, &cluster_id).await?;
        views.push(view(&cluster_id, &segments, unknown, current.as_ref()));
    }
    if let Some(current) = &current {
        let cluster_id = format!("{:x}", current.cluster_id);
        if !views.iter().any(|view| view.extent.cluster_id == cluster_id) {
            views.push(view(&cluster_id, &[], Vec::new(), Some(current)));
        }
    }
    let lagging = max_lag_seconds.is_some_and(|limit| {
        views.iter().filter_map(|view| view.lag.as_ref()).any(|lag| lag.seconds > limit)
            || (current.is_none() && have_endpoints)
    });
    match format {
        Format::Json => println!("{}", output::json(&views)),
        Format::Table => {
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|view| {
                    vec![
                        view.extent.cluster_id.clone(),
                        view.extent.segments.to_string(),
                        match (view.extent.first_revision, view.extent.last_revision) {
                            (Some(first), Some(last)) => format!("{first}..={last}"),
                            _ => "-".into(),
                        },
                        if view.extent.gaps.is_empty() {
                            "none".into()
                        } else {
                            view.extent
                                .gaps
                                .iter()
                                .map(|(after, next)| format!("{after}→{next}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        },
                        output::bytes(view.stored_bytes),
                        view.newest_written.clone().unwrap_or_else(|| "-".into()),
                        view.lag
                            .as_ref()
                            .map(|lag| format!("{} rev, {} s", lag.revisions, lag.seconds))
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            if rows.is_empty() {
                println!(
                    "no revision log in {}: run `lifeboat log stream` beside the cluster",
                    super::store_location(&store, &layout.log_root())
                );
            } else {
                print!(
                    "{}",
                    output::table(&["cluster id", "segments", "revisions", "holes", "stored", "newest", "lag"], &rows)
                );
            }
            for view in &views {
                if !view.unknown.is_empty() {
                    println!(
                        "ignored {} object(s) in the log of {} that are not segments",
                        view.unknown.len(),
                        view.extent.cluster_id
                    );
                }
            }
        }
    }
    Ok(if lagging { Exit::Unhealthy } else { Exit::Success })
}

fn view(
    cluster_id: &str,
    segments: &[Listed],
    unknown: Vec<String>,
    current: Option<&crate::ports::EndpointStatus>,
) -> LogView {
    let extent = revlog::Extent::of(cluster_id, segments);
    let newest = segments.iter().filter_map(|listed| listed.object.modified_ms).max();
    let lag = current.filter(|current| format!("{:x}", current.cluster_id) == cluster_id).map(|current| {
        let revisions = current.revision.0.saturating_sub(extent.last_revision.unwrap_or(0)).max(0);
        let seconds = match (revisions, newest) {
            (0, _) => 0,
            (_, Some(newest)) => wall_clock_now().0.saturating_sub(newest) / 1000,
            (_, None) => u64::MAX,
        };
        Lag { cluster_revision: current.revision.0, revisions, seconds }
    });
    LogView {
        extent,
        stored_bytes: segments.iter().map(|listed| listed.object.size_bytes).sum(),
        newest_written: newest.map(|millis| lifeboat::Millis(millis).to_rfc3339()),
        unknown,
        lag,
    }
}
