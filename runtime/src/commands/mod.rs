//! One module per command: each turns validated settings into calls to the
//! library and renders the result as a table or JSON. `anyhow` lives here and in
//! `main`, at the edge; the library below returns typed errors, and [`classify`]
//! maps them to the exit codes scripts test.

mod agent;
mod check;
mod log;
mod replace;
mod restore;
mod save;
mod sim;
mod snapshots;
mod status;

use crate::agent::replace::ReplaceError;
use crate::backup::restore::RestoreError;
use crate::backup::save::SaveError;
use crate::backup::verify::VerifyError;
use crate::cli::args::{Cli, Command, LogCommand, MemberArgs, MemberControl, SnapshotsCommand};
use crate::cli::config::{self, ConfigError, Resolved};
use crate::exit::{Classify, Exit};
use crate::member::{AnyMember, ChildMember, SystemdMember, UnmanagedMember};
use crate::ports::{EtcdError, SnapshotStore, StoreError};
use crate::store::AnyStore;
use lifeboat::StoreLayout;

pub async fn run(cli: Cli) -> anyhow::Result<Exit> {
    if let Command::Sim { args } = &cli.command {
        return sim::run(args);
    }
    let resolved = config::resolve(&cli.common)?;
    let format = cli.common.output;
    match cli.command {
        Command::Save(args) => save::run(&resolved, &args, format).await,
        Command::Check => check::run(&resolved, format).await,
        Command::Restore(args) => restore::run(&resolved, &args, format).await,
        Command::Snapshots(SnapshotsCommand::List) => snapshots::list(&resolved, format).await,
        Command::Snapshots(SnapshotsCommand::Verify { names, all, restore, etcd, etcdutl, scratch_dir }) => {
            let trial = match restore {
                false => None,
                true => Some(crate::backup::trial::TrialSettings {
                    etcd,
                    etcdutl: config::runnable_etcdutl(&resolved, etcdutl.as_ref())?.0,
                    scratch_parent: scratch_dir.unwrap_or_else(std::env::temp_dir),
                    start_timeout: std::time::Duration::from_secs(60),
                    cluster: resolved.store_settings()?.cluster.clone(),
                }),
            };
            snapshots::verify(&resolved, &names, all, trial.as_ref(), format).await
        }
        Command::Snapshots(SnapshotsCommand::Prune { keep_last, keep_hourly, keep_daily, dry_run }) => {
            let mut retention = config::retention(&resolved.file);
            retention.keep_last = keep_last.unwrap_or(retention.keep_last);
            retention.keep_hourly = keep_hourly.unwrap_or(retention.keep_hourly);
            retention.keep_daily = keep_daily.unwrap_or(retention.keep_daily);
            snapshots::prune(&resolved, &retention, dry_run, format).await
        }
        Command::Log(LogCommand::Stream(args)) => log::stream(&resolved, &args, format).await,
        Command::Log(LogCommand::Status { max_lag_seconds }) => log::status(&resolved, max_lag_seconds, format).await,
        Command::Agent(args) => agent::run(&resolved, &args).await,
        Command::Replace(args) => replace::run(&resolved, &args.member, format).await,
        Command::Reconfigure(args) => agent::reconfigure(&resolved, &args).await,
        Command::Status(args) => status::run(&args, format),
        Command::Sim { args } => sim::run(&args),
    }
}

/// The exit code of the first error in the chain that knows its own.
pub fn classify(error: &anyhow::Error) -> Exit {
    fn exit_of<T: Classify + std::error::Error + Send + Sync + 'static>(
        cause: &(dyn std::error::Error + 'static),
    ) -> Option<Exit> {
        cause.downcast_ref::<T>().map(Classify::exit)
    }
    error
        .chain()
        .find_map(|cause| {
            exit_of::<ConfigError>(cause)
                .or_else(|| exit_of::<SaveError>(cause))
                .or_else(|| exit_of::<RestoreError>(cause))
                .or_else(|| exit_of::<VerifyError>(cause))
                .or_else(|| exit_of::<StoreError>(cause))
                .or_else(|| exit_of::<EtcdError>(cause))
                .or_else(|| exit_of::<ReplaceError>(cause))
                .or_else(|| exit_of::<crate::agent::AgentError>(cause))
                .or_else(|| exit_of::<crate::revlog::replay::ReplayError>(cause))
                .or_else(|| exit_of::<crate::revlog::LogError>(cause))
        })
        .unwrap_or(Exit::Failure)
}

/// Resolves on SIGTERM (systemd's stop) or SIGINT (Ctrl-C).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    // Both handlers are installed here, not at the first poll: a loop that first
    // polls its shutdown future after its first round (seconds, on a slow store)
    // would otherwise leave SIGTERM's default action in place that long, and a
    // supervisor's stop in that window killed the agent outright. Its etcd, told by
    // PR_SET_PDEATHSIG, was still shutting down when the next agent started one over
    // the same ports and data dir; the restarts failed, three checks counted the
    // member failed, and the agent replaced a member that had lost nothing (real
    // chaos tests under CI load).
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            (Ok(mut only), Err(_)) | (Err(_), Ok(mut only)) => {
                only.recv().await;
            }
            // No handler could be installed: the default actions stand, nothing to wait for.
            (Err(_), Err(_)) => std::future::pending().await,
        }
    }
}

/// The store the settings name, opened, with its layout.
pub async fn open_store(resolved: &Resolved) -> anyhow::Result<(AnyStore, StoreLayout)> {
    let settings = resolved.store_settings()?;
    let store = AnyStore::open(settings).await?;
    Ok((store, settings.layout()))
}

pub fn local_member(args: &MemberArgs) -> AnyMember {
    let spec = config::member_spec(args);
    match args.member_control {
        MemberControl::Child => {
            let log = args.state_dir.clone().unwrap_or_else(|| config::default_state_dir(args)).join("etcd.log");
            AnyMember::Child(Box::new(ChildMember::new(spec, args.etcd.clone(), Some(log))))
        }
        MemberControl::Systemd => {
            AnyMember::Systemd(SystemdMember::new(spec, args.unit.clone(), args.environment_file.clone()))
        }
        MemberControl::None => AnyMember::Unmanaged(UnmanagedMember::new(spec)),
    }
}

pub fn store_location(store: &AnyStore, key: &str) -> String {
    store.location(key)
}
