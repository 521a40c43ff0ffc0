//! The `lifeboat` binary: parse, validate, run one command, exit with a code
//! scripts can test. `anyhow` lives only here, at the edge.

use anyhow::Context;
use clap::Parser;
use lifeboat::{Compression, Millis, StoreLayout};
use lifeboat_runtime::catalog::{self, Catalog};
use lifeboat_runtime::check;
use lifeboat_runtime::cli::{Cli, Command, Common, RestoreArgs, SaveArgs, SnapshotsCommand};
use lifeboat_runtime::config::{self, ConfigError, FileConfig, S3Settings, StoreSettings, StoreUrl};
use lifeboat_runtime::etcd::EtcdClient;
use lifeboat_runtime::exit::{Classify, Exit};
use lifeboat_runtime::output::{self, Format};
use lifeboat_runtime::pipeline::PipelineSettings;
use lifeboat_runtime::ports::{EtcdError, StoreError};
use lifeboat_runtime::restore::{self, RestoreError, RestoreSettings, SnapshotChoice};
use lifeboat_runtime::save::{self, wall_clock_now, SaveError, SaveSettings};
use lifeboat_runtime::store::AnyStore;
use lifeboat_runtime::verify::VerifyError;
use std::process::ExitCode;
use std::time::Duration;

const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const SAVE_FAILED: &str = "save failed; snapshot.db and earlier snapshots are unchanged";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { Exit::Usage.into() } else { Exit::Success.into() };
        }
    };
    init_logging(&cli.common.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return Exit::Failure.into();
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            classify(&error).into()
        }
    }
}

fn init_logging(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}

/// The exit code of the first error in the chain that knows its own.
fn classify(error: &anyhow::Error) -> Exit {
    for cause in error.chain() {
        if let Some(error) = cause.downcast_ref::<ConfigError>() {
            return error.exit();
        }
        if let Some(error) = cause.downcast_ref::<SaveError>() {
            return error.exit();
        }
        if let Some(error) = cause.downcast_ref::<RestoreError>() {
            return error.exit();
        }
        if let Some(error) = cause.downcast_ref::<VerifyError>() {
            return error.exit();
        }
        if let Some(error) = cause.downcast_ref::<StoreError>() {
            return error.exit();
        }
        if let Some(error) = cause.downcast_ref::<EtcdError>() {
            return error.exit();
        }
    }
    Exit::Failure
}

/// Common settings, validated, with the config file underneath.
struct Resolved {
    file: FileConfig,
    endpoints: Vec<String>,
    store: Option<StoreSettings>,
    timeout: Duration,
}

fn resolve(common: &Common) -> Result<Resolved, ConfigError> {
    let file = match &common.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let endpoints = if common.endpoints.is_empty() {
        config::parse_endpoints(file.endpoints.as_deref().unwrap_or(&[]))?
    } else {
        config::parse_endpoints(&common.endpoints)?
    };
    let timeout = Duration::from_millis(common.timeout_ms.or(file.timeout_ms).unwrap_or(DEFAULT_TIMEOUT_MS).max(100));
    let store = match common.store.clone().or_else(|| file.store.clone()) {
        None => None,
        Some(url) => {
            let cluster = common.cluster.clone().or_else(|| file.cluster.clone()).ok_or(ConfigError::Missing {
                what: "the cluster name",
                flag: "--cluster NAME",
                env: "LIFEBOAT_CLUSTER",
                key: "cluster",
            })?;
            Some(StoreSettings {
                url: StoreUrl::parse(&url)?,
                s3: S3Settings {
                    endpoint: common.s3_endpoint.clone().or_else(|| file.s3_endpoint.clone()),
                    region: common.s3_region.clone().or_else(|| file.s3_region.clone()),
                },
                cluster: config::validate_cluster_name(&cluster)?,
                timeout,
            })
        }
    };
    Ok(Resolved { file, endpoints, store, timeout })
}

impl Resolved {
    fn etcd(&self) -> Result<EtcdClient, ConfigError> {
        if self.endpoints.is_empty() {
            return Err(ConfigError::Missing {
                what: "etcd endpoints",
                flag: "--endpoints URL,URL…",
                env: "LIFEBOAT_ENDPOINTS",
                key: "endpoints",
            });
        }
        Ok(EtcdClient::new(self.endpoints.clone(), self.timeout))
    }

    fn store_settings(&self) -> Result<&StoreSettings, ConfigError> {
        self.store.as_ref().ok_or(ConfigError::Missing {
            what: "the store",
            flag: "--store s3://BUCKET/PREFIX|file:///DIR",
            env: "LIFEBOAT_STORE",
            key: "store",
        })
    }

    async fn store(&self) -> anyhow::Result<(AnyStore, StoreLayout)> {
        let settings = self.store_settings()?;
        let store = AnyStore::open(settings).await?;
        Ok((store, settings.layout()))
    }
}

async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let resolved = resolve(&cli.common)?;
    let format = cli.common.output;
    match cli.command {
        Command::Save(args) => run_save(&resolved, &args, format).await,
        Command::Check => run_check(&resolved, format).await,
        Command::Restore(args) => run_restore(&resolved, &args, format).await,
        Command::Snapshots(SnapshotsCommand::List) => run_list(&resolved, format).await,
        Command::Snapshots(SnapshotsCommand::Verify { names, all }) => run_verify(&resolved, &names, all, format).await,
        Command::Snapshots(SnapshotsCommand::Prune { keep_last, keep_hourly, keep_daily, dry_run }) => {
            let mut retention = config::retention(&resolved.file);
            retention.keep_last = keep_last.unwrap_or(retention.keep_last);
            retention.keep_hourly = keep_hourly.unwrap_or(retention.keep_hourly);
            retention.keep_daily = keep_daily.unwrap_or(retention.keep_daily);
            run_prune(&resolved, &retention, dry_run, format).await
        }
    }
}

async fn run_save(resolved: &Resolved, args: &SaveArgs, format: Format) -> anyhow::Result<Exit> {
    let etcd = resolved.etcd()?;
    let (store, layout) = resolved.store().await.context(SAVE_FAILED)?;
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
    let report = save::save(&etcd, &store, &layout, &settings, wall_clock_now()).await.context(SAVE_FAILED)?;
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
            &report.sha256[..16],
            report.source_endpoint,
            report.elapsed_ms as f64 / 1000.0,
            report.mib_per_second,
            store_location(&store, &report.latest_key),
        ),
    }
    Ok(Exit::Success)
}

fn store_location(store: &AnyStore, key: &str) -> String {
    use lifeboat_runtime::ports::SnapshotStore;
    store.location(key)
}

async fn run_check(resolved: &Resolved, format: Format) -> anyhow::Result<Exit> {
    let etcd = resolved.etcd()?;
    let report = check::check(&etcd).await;
    match format {
        Format::Json => println!("{}", output::json(&report)),
        Format::Table => {
            let rows: Vec<Vec<String>> = report
                .members
                .iter()
                .map(|member| {
                    vec![
                        member.endpoint.clone(),
                        if member.healthy { "healthy".into() } else { "UNHEALTHY".into() },
                        format!("{} ms", member.took_ms),
                        member.member_id.clone().unwrap_or_else(|| "-".into()),
                        member.name.clone().unwrap_or_else(|| "-".into()),
                        if member.is_leader {
                            "leader".into()
                        } else if member.is_learner {
                            "learner".into()
                        } else {
                            "".into()
                        },
                        member.revision.map(|revision| revision.to_string()).unwrap_or_else(|| "-".into()),
                        member
                            .db_size_bytes
                            .map(|size| output::bytes(size.max(0) as u64))
                            .unwrap_or_else(|| "-".into()),
                        member.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(
                    &["endpoint", "health", "took", "member", "name", "role", "revision", "db size", "error"],
                    &rows
                )
            );
            println!(
                "cluster {}: {} of {} voting members healthy, quorum {}, leader {}",
                report.cluster_id.as_deref().unwrap_or("?"),
                report.healthy_members,
                report.voting_members,
                if report.quorum { "holds" } else { "LOST" },
                report.leader.as_deref().unwrap_or("none"),
            );
            for member in &report.unchecked_members {
                println!("note: member {} ({}) is not among --endpoints and was not checked", member.id, member.name);
            }
        }
    }
    Ok(if report.healthy {
        Exit::Success
    } else if report.members.iter().all(|member| member.member_id.is_none()) {
        Exit::Etcd
    } else {
        Exit::Unhealthy
    })
}

async fn run_restore(resolved: &Resolved, args: &RestoreArgs, format: Format) -> anyhow::Result<Exit> {
    let snapshot: SnapshotChoice = args.snapshot.parse().map_err(|hint| ConfigError::Invalid {
        what: "--snapshot",
        value: args.snapshot.clone(),
        hint,
    })?;
    let (store, layout) = resolved.store().await?;
    let settings = RestoreSettings {
        data_dir: args.data_dir.clone(),
        name: args.name.clone(),
        initial_cluster: args.initial_cluster.clone(),
        initial_advertise_peer_urls: args.initial_advertise_peer_urls.clone(),
        initial_cluster_token: args.initial_cluster_token.clone(),
        snapshot,
        etcdutl: args.etcdutl.clone().or_else(|| resolved.file.etcdutl.clone()).unwrap_or_else(|| "etcdutl".into()),
        cluster: resolved.store_settings()?.cluster.clone(),
    };
    let report = restore::restore(&store, &layout, &settings)
        .await
        .context(format!("restore into {} failed; the data dir was not touched", args.data_dir.display()))?;
    match format {
        Format::Json => println!("{}", output::json(&report)),
        Format::Table => {
            for (name, reason) in &report.skipped {
                println!("skipped {name}: {reason}");
            }
            println!(
                "restored {} ({}, sha256 {}{}) into {} in {:.1} s",
                report.snapshot,
                output::bytes(report.size_bytes),
                &report.sha256[..16],
                report.revision.map(|revision| format!(", revision {revision}")).unwrap_or_default(),
                report.data_dir.display(),
                report.elapsed_ms as f64 / 1000.0
            );
        }
    }
    Ok(Exit::Success)
}

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
                manifest.map(|manifest| manifest.sha256[..16].to_owned()).unwrap_or_else(|| "-".into()),
                if entry.is_backup() { "ok".into() } else { entry.problem.clone().unwrap_or_default() },
            ]
        })
        .collect()
}

async fn run_list(resolved: &Resolved, format: Format) -> anyhow::Result<Exit> {
    let (store, layout) = resolved.store().await?;
    let catalog = catalog::load(&store, &layout).await?;
    match format {
        Format::Json => println!("{}", output::json(&catalog)),
        Format::Table => {
            print!(
                "{}",
                output::table(
                    &["name", "revision", "size", "stored", "compression", "sha256", "status"],
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
        }
    }
    Ok(Exit::Success)
}

#[derive(serde::Serialize)]
struct VerifyRow {
    snapshot: String,
    ok: bool,
    sha256: Option<String>,
    size_bytes: Option<u64>,
    detail: String,
}

async fn run_verify(resolved: &Resolved, names: &[String], all: bool, format: Format) -> anyhow::Result<Exit> {
    let (store, layout) = resolved.store().await?;
    let catalog = catalog::load(&store, &layout).await?;
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
    for wanted_name in wanted {
        let row = if wanted_name == StoreLayout::LATEST {
            if catalog.latest.is_none() {
                VerifyRow { snapshot: wanted_name, ok: false, sha256: None, size_bytes: None, detail: "missing".into() }
            } else {
                match catalog::verify_latest(&store, &layout, &catalog).await {
                    Ok((fetched, matching)) => VerifyRow {
                        snapshot: wanted_name,
                        ok: true,
                        sha256: Some(fetched.plain.sha256),
                        size_bytes: Some(fetched.plain.size_bytes),
                        detail: match matching {
                            Some(name) => format!("etcd hash ok, same bytes as {name}"),
                            None => "etcd hash ok (no manifest names these bytes)".into(),
                        },
                    },
                    Err(error) => VerifyRow {
                        snapshot: wanted_name,
                        ok: false,
                        sha256: None,
                        size_bytes: None,
                        detail: error.to_string(),
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
                None => VerifyRow {
                    snapshot: wanted_name,
                    ok: false,
                    sha256: None,
                    size_bytes: None,
                    detail: "not found".into(),
                },
                Some(entry) => match catalog::verify_entry(&store, entry).await {
                    Ok(fetched) => VerifyRow {
                        snapshot: entry.name.to_string(),
                        ok: true,
                        sha256: Some(fetched.plain.sha256),
                        size_bytes: Some(fetched.plain.size_bytes),
                        detail: "sha256 and etcd hash match the manifest".into(),
                    },
                    Err(error) => VerifyRow {
                        snapshot: entry.name.to_string(),
                        ok: false,
                        sha256: None,
                        size_bytes: None,
                        detail: error.to_string(),
                    },
                },
            }
        };
        rows.push(row);
    }
    match format {
        Format::Json => println!("{}", output::json(&rows)),
        Format::Table => {
            let table_rows: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    vec![
                        row.snapshot.clone(),
                        if row.ok { "ok".into() } else { "FAILED".into() },
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

async fn run_prune(
    resolved: &Resolved,
    retention: &lifeboat::Retention,
    dry_run: bool,
    format: Format,
) -> anyhow::Result<Exit> {
    let (store, layout) = resolved.store().await?;
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
                "kept {} snapshots, {verb} {} (+{} orphans)",
                report.kept.len(),
                report.deleted.len(),
                report.orphans_deleted.len()
            );
        }
    }
    Ok(Exit::Success)
}
