//! `lifeboat snapshots list|verify|prune`: what the store holds, whether it
//! restores, and what retention keeps.

use super::{open_store, store_location};
use crate::backup::catalog::{self, Catalog};
use crate::backup::proof;
use crate::backup::save::wall_clock_now;
use crate::backup::trial::{trial_restore, TrialOutcome, TrialSettings};
use crate::cli::config::{ConfigError, Resolved};
use crate::cli::output::{self, Format};
use crate::exit::Exit;
use crate::revlog;
use crate::store::AnyStore;
use lifeboat::{Millis, StoreLayout};

fn catalog_rows(catalog: &Catalog) -> Vec<Vec<String>> {
    catalog
        .snapshots
        .iter()
        .map(|entry| {
            let manifest = entry.manifest.as_ref();
            vec![
                entry.name.to_string(),
                entry.name.revision().to_string(),
                manifest.map(|manifest| output::bytes(manifest.size_bytes)).unwrap_or_else(|| "-".into()),
                entry.object.as_ref().map(|object| output::bytes(object.size_bytes)).unwrap_or_else(|| "-".into()),
                format!("{:?}", entry.name.compression()).to_lowercase(),
                manifest.map(|manifest| output::short_hash(&manifest.sha256)).unwrap_or_else(|| "-".into()),
                if entry.is_backup() { "ok".into() } else { entry.problem.clone().unwrap_or_default() },
                if entry.proven { "proven".into() } else { "-".into() },
            ]
        })
        .collect()
}

#[derive(serde::Serialize)]
struct Listing<'a> {
    #[serde(flatten)]
    catalog: &'a Catalog,
    logs: Vec<revlog::Extent>,
}

pub async fn list(resolved: &Resolved, format: Format) -> anyhow::Result<Exit> {
    let (store, layout) = open_store(resolved).await?;
    let catalog = catalog::load(&store, &layout).await?;
    let mut logs = Vec::new();
    for cluster_id in revlog::cluster_ids(&store, &layout).await? {
        let (segments, _) = revlog::list(&store, &layout, &cluster_id).await?;
        logs.push(revlog::Extent::of(&cluster_id, &segments));
    }
    match format {
        Format::Json => println!("{}", output::json(&Listing { catalog: &catalog, logs })),
        Format::Table => {
            print!(
                "{}",
                output::table(
                    &["name", "revision", "size", "stored", "compression", "sha256", "status", "trial"],
                    &catalog_rows(&catalog)
                )
            );
            match &catalog.latest {
                Some(latest) => println!(
                    "latest: {} ({})",
                    store_location(&store, &layout.latest_key()),
                    output::bytes(latest.size_bytes)
                ),
                None => println!("latest: none ({} does not exist)", store_location(&store, &layout.latest_key())),
            }
            if let Some(key_id) = crate::ports::SnapshotStore::key_id(&store) {
                println!("client-side encryption: key {key_id}; objects written with another key or none are not used");
            }
            for log in &logs {
                println!(
                    "revision log of etcd cluster {}: {} segment(s), revisions {}..={}, {}",
                    log.cluster_id,
                    log.segments,
                    log.first_revision.unwrap_or(0),
                    log.last_revision.unwrap_or(0),
                    if log.gaps.is_empty() {
                        "no holes".to_owned()
                    } else {
                        format!(
                            "holes after revision(s) {}",
                            log.gaps.iter().map(|(after, _)| after.to_string()).collect::<Vec<_>>().join(", ")
                        )
                    }
                );
            }
            if !catalog.unknown.is_empty() {
                // Foreign objects are data, not errors: named so an operator can clean them up.
                const SHOWN: usize = 5;
                let shown: Vec<&str> = catalog.unknown.iter().take(SHOWN).map(String::as_str).collect();
                let more = catalog.unknown.len().saturating_sub(SHOWN);
                println!(
                    "ignored {} object(s) that are not lifeboat snapshots: {}{}",
                    catalog.unknown.len(),
                    shown.join(", "),
                    if more > 0 { format!(" and {more} more") } else { String::new() }
                );
            }
        }
    }
    Ok(Exit::Success)
}

#[derive(serde::Serialize)]
struct VerifyRow {
    snapshot: String,
    ok: bool,
    /// Not a backup, so not checked: an object whose save has not written its manifest (yet).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    skipped: bool,
    sha256: Option<String>,
    size_bytes: Option<u64>,
    detail: String,
    /// What a trial restore showed (`--restore`).
    #[serde(skip_serializing_if = "Option::is_none")]
    trial: Option<TrialOutcome>,
}

pub async fn verify(
    resolved: &Resolved,
    names: &[String],
    all: bool,
    trial: Option<&TrialSettings>,
    format: Format,
) -> anyhow::Result<Exit> {
    let (store, layout) = open_store(resolved).await?;
    let catalog = catalog::load(&store, &layout).await?;
    let now: Millis = wall_clock_now();
    let mut wanted: Vec<String> = if all {
        catalog.snapshots.iter().map(|entry| entry.name.to_string()).collect()
    } else if names.is_empty() {
        vec!["latest".into(), StoreLayout::LATEST.into()]
    } else {
        names.to_vec()
    };
    if all && catalog.latest.is_some() {
        wanted.push(StoreLayout::LATEST.into());
    }
    let mut rows = Vec::new();
    let bar = crate::cli::progress::bar("verifying", format);
    for wanted_name in wanted {
        crate::progress::phase(&format!("verifying {wanted_name}"));
        let row = if wanted_name == StoreLayout::LATEST {
            if catalog.latest.is_none() {
                VerifyRow {
                    snapshot: wanted_name,
                    ok: false,
                    skipped: false,
                    sha256: None,
                    size_bytes: None,
                    detail: "missing".into(),
                    trial: None,
                }
            } else {
                match catalog::verify_latest(&store, &layout, &catalog).await {
                    Ok((fetched, matching)) => VerifyRow {
                        snapshot: wanted_name,
                        ok: true,
                        skipped: false,
                        sha256: Some(fetched.plain.sha256),
                        size_bytes: Some(fetched.plain.size_bytes),
                        detail: match matching {
                            Some(name) => format!("etcd hash ok, same bytes as {name}"),
                            None => "etcd hash ok (no manifest names these bytes)".into(),
                        },
                        trial: None,
                    },
                    Err(error) => VerifyRow {
                        snapshot: wanted_name,
                        ok: false,
                        skipped: false,
                        sha256: None,
                        size_bytes: None,
                        detail: error.to_string(),
                        trial: None,
                    },
                }
            }
        } else {
            let entry = if wanted_name == "latest" {
                catalog.snapshots.iter().find(|entry| entry.manifest.is_some())
            } else {
                let name = wanted_name.parse().map_err(|hint| ConfigError::Invalid {
                    what: "snapshot name",
                    value: wanted_name.clone(),
                    hint,
                })?;
                catalog.find(&name)
            };
            match entry {
                // With --all, an object without a manifest is listed but not judged:
                // a save writes its manifest last, so this is a save in progress or
                // one that was interrupted (prune removes those after an hour).
                Some(entry) if all && !entry.manifest_listed && entry.object.is_some() => {
                    let age_ms = entry
                        .object
                        .as_ref()
                        .and_then(|object| object.modified_ms)
                        .map(|modified| now.0.saturating_sub(modified));
                    VerifyRow {
                        snapshot: entry.name.to_string(),
                        ok: true,
                        skipped: true,
                        sha256: None,
                        size_bytes: entry.object.as_ref().map(|object| object.size_bytes),
                        detail: match age_ms {
                            Some(age) if age > catalog::ORPHAN_GRACE_MS => {
                                "not a backup: an interrupted save without a manifest; `snapshots prune` removes it"
                                    .into()
                            }
                            _ => "not a backup yet: no manifest, a save in progress or just interrupted".into(),
                        },
                        trial: None,
                    }
                }
                None => VerifyRow {
                    snapshot: wanted_name,
                    ok: false,
                    skipped: false,
                    sha256: None,
                    size_bytes: None,
                    detail: "not found".into(),
                    trial: None,
                },
                Some(entry) => match catalog::verify_entry(&store, entry).await {
                    Ok(fetched) => {
                        let mut row = VerifyRow {
                            snapshot: entry.name.to_string(),
                            ok: true,
                            skipped: false,
                            sha256: Some(fetched.plain.sha256),
                            size_bytes: Some(fetched.plain.size_bytes),
                            detail: "sha256 and etcd hash match the manifest".into(),
                            trial: None,
                        };
                        if let (Some(settings), Some(manifest)) = (trial, entry.manifest.as_ref()) {
                            tracing::info!(snapshot = %entry.name, "trial restore");
                            match trial_restore(&store, &layout, manifest, settings).await {
                                Ok(outcome) => {
                                    row.ok = !matches!(outcome, TrialOutcome::Mismatch { .. });
                                    // A match is recorded beside the manifest: the snapshot is proven.
                                    if let Err(error) = proof::record(&store, &layout, &entry.name, &outcome, now).await
                                    {
                                        row.ok = false;
                                        row.detail = format!("{}; the proof was not stored: {error}", row.detail);
                                    }
                                    row.detail = format!("{}; {}", row.detail, outcome.describe());
                                    row.trial = Some(outcome);
                                }
                                Err(error) => {
                                    row.ok = false;
                                    row.detail = format!("{}; trial restore failed: {error}", row.detail);
                                }
                            }
                        }
                        row
                    }
                    Err(error) => VerifyRow {
                        snapshot: entry.name.to_string(),
                        ok: false,
                        skipped: false,
                        sha256: None,
                        size_bytes: None,
                        detail: error.to_string(),
                        trial: None,
                    },
                },
            }
        };
        rows.push(row);
    }
    if all {
        crate::progress::phase("verifying the revision log");
        rows.extend(verify_log(&store, &layout).await?);
    }
    drop(bar);
    match format {
        Format::Json => println!("{}", output::json(&rows)),
        Format::Table => {
            let table_rows: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    vec![
                        row.snapshot.clone(),
                        match (row.ok, row.skipped) {
                            (_, true) => "skipped".into(),
                            (true, false) => "ok".into(),
                            (false, false) => "FAILED".into(),
                        },
                        row.size_bytes.map(output::bytes).unwrap_or_else(|| "-".into()),
                        row.detail.clone(),
                    ]
                })
                .collect();
            print!("{}", output::table(&["snapshot", "result", "size", "detail"], &table_rows));
        }
    }
    if rows.is_empty() {
        return Ok(Exit::NotFound);
    }
    Ok(if rows.iter().all(|row| row.ok) {
        Exit::Success
    } else if rows.iter().all(|row| row.detail == "not found" || row.detail == "missing") {
        Exit::NotFound
    } else {
        Exit::Corrupt
    })
}

/// Every revision-log segment, read and checked (checksum, every revision of
/// its range, the cluster and range its key names): `verify --all`.
async fn verify_log(store: &AnyStore, layout: &StoreLayout) -> anyhow::Result<Vec<VerifyRow>> {
    let mut rows = Vec::new();
    for cluster_id in revlog::cluster_ids(store, layout).await? {
        let (segments, _) = revlog::list(store, layout, &cluster_id).await?;
        for segment in segments {
            let result = revlog::read(store, layout, &cluster_id, &segment.name).await;
            rows.push(VerifyRow {
                snapshot: format!("log/{cluster_id}/{}", segment.name),
                ok: result.is_ok(),
                skipped: false,
                sha256: None,
                size_bytes: Some(segment.object.size_bytes),
                detail: match result {
                    Ok(read) => format!("revisions {}..={} whole", read.header.first.0, read.header.last.0),
                    Err(error) => error.to_string(),
                },
                trial: None,
            });
        }
    }
    Ok(rows)
}

pub async fn prune(
    resolved: &Resolved,
    retention: &lifeboat::Retention,
    dry_run: bool,
    format: Format,
) -> anyhow::Result<Exit> {
    let (store, layout) = open_store(resolved).await?;
    let catalog = catalog::load(&store, &layout).await?;
    let now: Millis = wall_clock_now();
    let report = catalog::prune(&store, &layout, &catalog, retention, now.0, dry_run).await?;
    match format {
        Format::Json => println!("{}", output::json(&report)),
        Format::Table => {
            let verb = if dry_run { "would delete" } else { "deleted" };
            for name in &report.deleted {
                println!("{verb} {name}");
            }
            for key in &report.orphans_deleted {
                println!("{verb} orphan {key}");
            }
            println!(
                "kept {} snapshots, {verb} {} (+{} orphans, +{} revision-log segments)",
                report.kept.len(),
                report.deleted.len(),
                report.orphans_deleted.len(),
                report.segments_deleted.len()
            );
        }
    }
    Ok(Exit::Success)
}
