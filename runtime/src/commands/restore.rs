//! `lifeboat restore`: a verified snapshot into a new member data dir.

use super::open_store;
use crate::backup::restore::{self, RestoreSettings, SnapshotChoice};
use crate::cli::args::RestoreArgs;
use crate::cli::config::{self, ConfigError, Resolved};
use crate::cli::output::{self, Format};
use crate::exit::Exit;
use crate::ports::DataDirBuilder;
use crate::revlog;
use crate::revlog::replay::{self, LogRestoreReport, ReplaySettings, Target};
use anyhow::Context;

pub async fn run(resolved: &Resolved, args: &RestoreArgs, format: Format) -> anyhow::Result<Exit> {
    let snapshot: SnapshotChoice = args.snapshot.parse().map_err(|hint| ConfigError::Invalid {
        what: "--snapshot",
        value: args.snapshot.clone(),
        hint,
    })?;
    // Before anything else asks it what it can do: a missing etcdutl would otherwise first
    // read as "cannot bump revisions" and fail only after the store has been read.
    let etcdutl = config::runnable_etcdutl(resolved, args.etcdutl.as_ref())?;
    let (store, layout) = open_store(resolved).await?;
    let bump_revision = match args.bump_revision {
        Some(0) => None,
        Some(bump) if etcdutl.supports_bump().await => Some(bump),
        Some(bump) => {
            return Err(ConfigError::Invalid {
                what: "--bump-revision",
                value: bump.to_string(),
                hint: format!(
                    "{} has no --bump-revision (etcdutl 3.5.10 or later has it): install a current etcdutl, or pass --bump-revision 0 to restore without",
                    etcdutl.0.display()
                ),
            }
            .into())
        }
        None if etcdutl.supports_bump().await => Some(restore::DEFAULT_BUMP_REVISION),
        None => {
            eprintln!(
                "lifeboat: {} cannot bump revisions (etcdutl 3.5.10 or later can): the restored member's revisions continue from the snapshot's, and Kubernetes watchers may see them go back",
                etcdutl.0.display()
            );
            None
        }
    };
    let target = match (args.to_revision, &args.to_time) {
        (Some(revision), _) => Some(Target::Revision(lifeboat::Revision(revision))),
        (None, Some(text)) => Some(Target::Time(lifeboat::Millis::parse_rfc3339(text).ok_or_else(|| {
            ConfigError::Invalid {
                what: "--to-time",
                value: text.clone(),
                hint: "give an RFC 3339 time with its offset, e.g. 2026-11-29T04:00:00Z or 2026-11-29T05:00:00+01:00"
                    .into(),
            }
        })?)),
        // `latest` replays the log when the store holds one; a named snapshot never does.
        (None, None) if !args.no_log && snapshot == SnapshotChoice::Latest => {
            (!revlog::cluster_ids(&store, &layout).await?.is_empty()).then_some(Target::Latest)
        }
        (None, None) => None,
    };
    let settings = RestoreSettings {
        data_dir: args.data_dir.clone(),
        name: args.name.clone(),
        initial_cluster: args.initial_cluster.clone(),
        initial_advertise_peer_urls: args.initial_advertise_peer_urls.clone(),
        initial_cluster_token: args.initial_cluster_token.clone(),
        snapshot,
        cluster: resolved.store_settings()?.cluster.clone(),
        bump_revision,
    };
    let failed = format!("restore into {} failed; the data dir was not touched", args.data_dir.display());
    let bar = crate::cli::progress::bar("restoring", format);
    let (report, log) = match target {
        Some(target) => {
            let replay = ReplaySettings {
                etcd: args.etcd.clone(),
                scratch_parent: args.scratch_dir.clone().unwrap_or_else(std::env::temp_dir),
                start_timeout: std::time::Duration::from_secs(60),
            };
            let report =
                replay::restore_to(&store, &layout, &settings, &etcdutl, target, &replay).await.context(failed)?;
            (report.restore, Some(report.log))
        }
        None => (restore::restore(&store, &layout, &settings, &etcdutl).await.context(failed)?, None),
    };
    drop(bar);
    match format {
        Format::Json => match &log {
            Some(log) => println!("{}", output::json(&LogRestoreReport { restore: report.clone(), log: log.clone() })),
            None => println!("{}", output::json(&report)),
        },
        Format::Table => {
            for (name, reason) in &report.skipped {
                println!("skipped {name}: {reason}");
            }
            println!(
                "restored {} ({}, sha256 {}{}) into {} in {:.1} s",
                report.snapshot,
                output::bytes(report.size_bytes),
                &output::short_hash(&report.sha256),
                match (report.revision, report.bump_revision) {
                    (Some(revision), Some(bump)) => format!(", revision {revision}, bumped by {bump}"),
                    (Some(revision), None) => format!(", revision {revision}"),
                    _ => String::new(),
                },
                report.data_dir.display(),
                report.elapsed_ms as f64 / 1000.0
            );
            if let Some(log) = &log {
                println!(
                    "revision log of cluster {}: snapshot held revision {}, replayed {} revision(s) from {} segment(s) to revision {}{} in {:.1} s",
                    log.cluster_id,
                    log.snapshot_revision,
                    log.revisions_applied,
                    log.segments_read,
                    log.reached,
                    log.reached_seen.as_ref().map(|seen| format!(" (seen {seen})")).unwrap_or_default(),
                    log.replay_ms as f64 / 1000.0
                );
                if let Some(reason) = &log.stopped_early {
                    println!("the log stops early: {reason}");
                }
            }
        }
    }
    Ok(Exit::Success)
}
