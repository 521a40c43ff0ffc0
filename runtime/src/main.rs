//! The `lifeboat` binary: parse, validate, run one command, exit with a code
//! scripts can test. `anyhow` lives only here, at the edge.
// Store listings and network input are untrusted: no slicing or indexing that can
// panic outside tests (`.get()`, `strip_prefix`, iterators instead).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use anyhow::Context;
use clap::Parser;
use lifeboat::reconfigure::StartPlan;
use lifeboat::{Compression, Millis, StoreLayout};
use lifeboat_runtime::agent::{self, AgentSettings, ConfiguredMember, Driver, SystemClock};
use lifeboat_runtime::catalog::{self, Catalog};
use lifeboat_runtime::check;
use lifeboat_runtime::cli::{
    AgentArgs, Cli, Command, Common, MemberArgs, MemberControl, RestoreArgs, SaveArgs, SnapshotsCommand, StatusArgs,
};
use lifeboat_runtime::config::{self, ConfigError, FileConfig, S3Settings, StoreSettings, StoreUrl};
use lifeboat_runtime::etcd::EtcdClient;
use lifeboat_runtime::exit::{Classify, Exit};
use lifeboat_runtime::journal::Journal;
use lifeboat_runtime::member::{
    AnyMember, ChildMember, EnvironmentFileMember, MemberSpec, SystemdMember, UnmanagedMember,
};
use lifeboat_runtime::output::{self, Format};
use lifeboat_runtime::pipeline::PipelineSettings;
use lifeboat_runtime::ports::{EtcdError, StoreError};
use lifeboat_runtime::replace::{self, ReplaceError, ReplaceSettings};
use lifeboat_runtime::restore::{self, Etcdutl, RestoreError, RestoreSettings, SnapshotChoice};
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
        if let Some(error) = cause.downcast_ref::<ReplaceError>() {
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
    if let Command::Sim { args } = &cli.command {
        return run_sim(args);
    }
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
        Command::Agent(args) => run_agent(&resolved, &args).await,
        Command::Replace(args) => run_replace(&resolved, &args.member, format).await,
        Command::Reconfigure(args) => run_reconfigure(&resolved, &args).await,
        Command::Status(args) => run_status(&args, format),
        Command::Sim { args } => run_sim(&args),
    }
}

fn member_spec(args: &MemberArgs) -> MemberSpec {
    MemberSpec {
        name: args.name.clone(),
        data_dir: args.data_dir.clone(),
        client_url: args.client_url.trim_end_matches('/').to_owned(),
        peer_url: args.peer_url.trim_end_matches('/').to_owned(),
        extra_args: args.etcd_args.clone(),
    }
}

fn local_member(args: &MemberArgs) -> AnyMember {
    let spec = member_spec(args);
    match args.member_control {
        MemberControl::Child => {
            let log = args.state_dir.clone().unwrap_or_else(|| default_state_dir(args)).join("etcd.log");
            AnyMember::Child(Box::new(ChildMember::new(spec, args.etcd.clone(), Some(log))))
        }
        MemberControl::Systemd => {
            AnyMember::Systemd(SystemdMember::new(spec, args.unit.clone(), args.environment_file.clone()))
        }
        MemberControl::None => AnyMember::Unmanaged(UnmanagedMember::new(spec)),
    }
}

fn default_state_dir(args: &MemberArgs) -> std::path::PathBuf {
    let mut path = args.data_dir.as_os_str().to_owned();
    path.push(".lifeboat");
    path.into()
}

/// `--initial-cluster` paired with `--endpoints`, member by member.
fn configured_members(resolved: &Resolved, args: &MemberArgs) -> Result<Vec<ConfiguredMember>, ConfigError> {
    let Some(initial_cluster) = &args.initial_cluster else {
        return Err(ConfigError::Missing {
            what: "the member list",
            flag: "--initial-cluster NAME=PEER_URL,…",
            env: "LIFEBOAT_INITIAL_CLUSTER",
            key: "initial-cluster",
        });
    };
    let pairs: Vec<(String, String)> = initial_cluster
        .split(',')
        .map(|entry| entry.trim())
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry.split_once('=').map(|(name, url)| (name.to_owned(), url.trim_end_matches('/').to_owned())).ok_or_else(
                || ConfigError::Invalid {
                    what: "--initial-cluster entry",
                    value: entry.to_owned(),
                    hint: "expected NAME=PEER_URL".into(),
                },
            )
        })
        .collect::<Result<_, _>>()?;
    for (name, _) in &pairs {
        config::validate_member_name(name)?;
    }
    if pairs.len() != resolved.endpoints.len() {
        return Err(ConfigError::Invalid {
            what: "--endpoints",
            value: resolved.endpoints.join(","),
            hint: format!(
                "give one client URL per --initial-cluster member, in the same order ({} members)",
                pairs.len()
            ),
        });
    }
    Ok(pairs
        .into_iter()
        .zip(&resolved.endpoints)
        .map(|((name, peer_url), client_url)| ConfiguredMember { name, peer_url, client_url: client_url.clone() })
        .collect())
}

fn agent_settings(resolved: &Resolved, args: &MemberArgs) -> anyhow::Result<AgentSettings> {
    let store = resolved.store_settings()?;
    Ok(AgentSettings {
        cluster: store.cluster.clone(),
        policy: resolved.file.policy.clone().unwrap_or_default(),
        compression: resolved.file.compression.unwrap_or(Compression::None),
        pipeline: PipelineSettings::default(),
        members: configured_members(resolved, args)?,
        initial_cluster_token: args.initial_cluster_token.clone(),
        state_dir: args.state_dir.clone().unwrap_or_else(|| default_state_dir(args)),
        supervise: args.member_control == MemberControl::Child,
        prepare_only: false,
        dry_run: args.dry_run,
    })
}

fn etcdutl(resolved: &Resolved, args: &MemberArgs) -> Etcdutl {
    Etcdutl(args.etcdutl.clone().or_else(|| resolved.file.etcdutl.clone()).unwrap_or_else(|| "etcdutl".into()))
}

async fn run_agent(resolved: &Resolved, args: &AgentArgs) -> anyhow::Result<Exit> {
    let mut settings = agent_settings(resolved, &args.member)?;
    if let Some(interval) = args.check_interval_ms {
        settings.policy.check_interval_ms = interval.max(100);
    }
    if let Some(failures) = args.failures_max {
        settings.policy.failures_max = failures.max(1);
    }
    if let Some(interval) = args.snapshot_interval_ms {
        settings.policy.snapshot_interval_ms = interval.max(1000);
    }
    if let Some(compression) = args.compression {
        settings.compression = compression;
    }
    if let StoreUrl::File { root } = &resolved.store_settings()?.url {
        if args.shared_file_store {
            tracing::info!(root = %root.display(), "file:// store shared by every member's agent (--shared-file-store)");
        } else {
            return Err(shared_file_store_refused(root).into());
        }
    }
    let supervise = settings.supervise;
    let etcd = resolved.etcd()?;
    let (store, layout) = resolved.store().await?;
    let local = local_member(&args.member);
    let mut driver = Driver::new(settings, etcd, store, layout, local, SystemClock, etcdutl(resolved, &args.member))
        .context("cannot open the agent's state dir")?;
    if supervise {
        // Journaled either way; the agent's first check tries again.
        let _ = driver.reconfigure_and_start().await;
    }
    let shutdown = async {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    driver.run(shutdown).await;
    driver.shutdown().await;
    Ok(Exit::Success)
}

fn shared_file_store_refused(root: &std::path::Path) -> ConfigError {
    ConfigError::Invalid {
        what: "--store",
        value: format!("file://{}", root.display()),
        hint: "the agents of a cluster coordinate recoveries through the store, so a file:// store must be one \
            directory they all see: pass --shared-file-store if it is (all members on one host, or a shared mount), \
            else use an S3 store"
            .into(),
    }
}

async fn run_replace(resolved: &Resolved, args: &MemberArgs, format: Format) -> anyhow::Result<Exit> {
    let etcd = resolved.etcd()?;
    let cluster = resolved.store.as_ref().map(|store| store.cluster.clone()).unwrap_or_else(|| "default".into());
    let managed = args.member_control != MemberControl::None;
    let settings = ReplaceSettings {
        cluster,
        lock_ttl_seconds: 120,
        catch_up_timeout: Duration::from_secs(120),
        learner: managed,
        start: managed,
        dry_run: args.dry_run,
    };
    let local = local_member(args);
    let report = replace::replace(&etcd, &local, &settings, wall_clock_now().0)
        .await
        .context(format!("replace of {} failed; run it again to resume", args.name))?;
    match format {
        Format::Json => println!("{}", output::json(&report)),
        Format::Table => {
            for step in &report.steps {
                println!("{step}");
            }
            if let Some(launch) = &report.launch {
                if !managed {
                    println!(
                        "now start etcd with: --initial-cluster {} --initial-cluster-state existing",
                        launch.initial_cluster
                    );
                }
            }
        }
    }
    Ok(Exit::Success)
}

async fn run_reconfigure(resolved: &Resolved, args: &MemberArgs) -> anyhow::Result<Exit> {
    let mut settings = agent_settings(resolved, args)?;
    settings.prepare_only = true;
    let etcd = resolved.etcd()?;
    let (store, layout) = resolved.store().await?;
    let local =
        AnyMember::EnvironmentFile(EnvironmentFileMember::new(member_spec(args), args.environment_file.clone()));
    let mut driver = Driver::new(settings, etcd, store, layout, local, SystemClock, etcdutl(resolved, args))
        .context("cannot open the agent's state dir")?;
    // As ExecStartPre: a non-zero exit keeps etcd from starting; systemd's Restart=
    // tries again later.
    match driver.reconfigure_and_start().await {
        Ok(StartPlan::AwaitRecovery) => {
            eprintln!(
                "lifeboat: etcd must not start yet: this member waits for a disaster recovery (its disk is empty \
                 and the cluster has no quorum) or holds for an undecided recovery claim; `lifeboat status \
                 --journal` shows why"
            );
            Ok(Exit::Refused)
        }
        Ok(_) => Ok(Exit::Success),
        Err(error) => Err(anyhow::anyhow!("reconfigure could not prepare {}: {error}", args.name)),
    }
}

fn run_status(args: &StatusArgs, format: Format) -> anyhow::Result<Exit> {
    let path = args.state_dir.join("journal.jsonl");
    let entries = Journal::tail(&path, if args.journal { args.lines } else { 2000 })
        .with_context(|| format!("cannot read the journal {}", path.display()))?;
    let epoch = agent::read_epoch(&args.state_dir);
    if args.journal {
        for entry in &entries {
            match format {
                Format::Json => println!("{entry}"),
                Format::Table => println!(
                    "{} {:<16} {}",
                    entry["at"].as_str().unwrap_or(""),
                    entry["event"].as_str().unwrap_or(""),
                    serde_json::Value::Object(
                        entry
                            .as_object()
                            .map(|object| object
                                .iter()
                                .filter(|(key, _)| *key != "at" && *key != "event")
                                .map(|(key, value)| (key.clone(), value.clone()))
                                .collect())
                            .unwrap_or_default()
                    )
                ),
            }
        }
        return Ok(Exit::Success);
    }
    let last = |event: &str| entries.iter().rev().find(|entry| entry["event"] == event).cloned();
    let summary = serde_json::json!({
        "epoch": epoch,
        "last_observation": last("observation"),
        "last_decision": last("decision"),
        "last_save": last("saved"),
        "last_warning": last("warning"),
    });
    match format {
        Format::Json => println!("{}", output::json(&summary)),
        Format::Table => {
            println!("recovery epoch: {epoch}");
            for (label, key) in [
                ("last observation", "last_observation"),
                ("last decision", "last_decision"),
                ("last save", "last_save"),
                ("last warning", "last_warning"),
            ] {
                match summary.get(key) {
                    None | Some(serde_json::Value::Null) => println!("{label}: none"),
                    Some(value) => println!("{label}: {value}"),
                }
            }
        }
    }
    Ok(Exit::Success)
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
            &output::short_hash(&report.sha256),
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
        cluster: resolved.store_settings()?.cluster.clone(),
    };
    let etcdutl =
        Etcdutl(args.etcdutl.clone().or_else(|| resolved.file.etcdutl.clone()).unwrap_or_else(|| "etcdutl".into()));
    let report = restore::restore(&store, &layout, &settings, &etcdutl)
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
                &output::short_hash(&report.sha256),
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
                manifest.map(|manifest| output::short_hash(&manifest.sha256)).unwrap_or_else(|| "-".into()),
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
}

async fn run_verify(resolved: &Resolved, names: &[String], all: bool, format: Format) -> anyhow::Result<Exit> {
    let (store, layout) = resolved.store().await?;
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
    for wanted_name in wanted {
        let row = if wanted_name == StoreLayout::LATEST {
            if catalog.latest.is_none() {
                VerifyRow {
                    snapshot: wanted_name,
                    ok: false,
                    skipped: false,
                    sha256: None,
                    size_bytes: None,
                    detail: "missing".into(),
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
                    },
                    Err(error) => VerifyRow {
                        snapshot: wanted_name,
                        ok: false,
                        skipped: false,
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
                // With --all, an object without a manifest is listed but not judged:
                // a save writes its manifest last, so this is a save in progress or
                // one that was interrupted (prune removes those after an hour).
                Some(entry) if all && entry.manifest.is_none() && entry.object.is_some() => {
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
                    }
                }
                None => VerifyRow {
                    snapshot: wanted_name,
                    ok: false,
                    skipped: false,
                    sha256: None,
                    size_bytes: None,
                    detail: "not found".into(),
                },
                Some(entry) => match catalog::verify_entry(&store, entry).await {
                    Ok(fetched) => VerifyRow {
                        snapshot: entry.name.to_string(),
                        ok: true,
                        skipped: false,
                        sha256: Some(fetched.plain.sha256),
                        size_bytes: Some(fetched.plain.size_bytes),
                        detail: "sha256 and etcd hash match the manifest".into(),
                    },
                    Err(error) => VerifyRow {
                        snapshot: entry.name.to_string(),
                        ok: false,
                        skipped: false,
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

/// Where `lifeboat-sim` may be: beside this binary, in $PATH, or where scripts/sim builds it.
fn find_simulator() -> Option<std::path::PathBuf> {
    let name = "lifeboat-sim";
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join(name)));
    let in_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sim/release").join(name);
    beside.into_iter().chain(in_path).chain(std::iter::once(built)).find(|path| path.is_file())
}

fn run_sim(args: &[String]) -> anyhow::Result<Exit> {
    let Some(simulator) = find_simulator() else {
        eprintln!(
            "error: lifeboat-sim not found (beside this binary, in $PATH, or in target/sim/release).\n\
             It is built separately with --cfg madsim: run scripts/sim from a lifeboat checkout."
        );
        return Ok(Exit::Usage);
    };
    let status = std::process::Command::new(&simulator)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {}", simulator.display()))?;
    Ok(match status.code() {
        Some(0) => Exit::Success,
        Some(2) => Exit::Usage,
        _ => Exit::Failure,
    })
}
