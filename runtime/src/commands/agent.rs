//! `lifeboat agent` (the loop beside each member) and `lifeboat reconfigure`
//! (its one-shot form, systemd's `ExecStartPre` before etcd starts).

use super::{local_member, open_store};
use crate::agent::{Driver, SystemClock};
use crate::backup::prover;
use crate::backup::trial::TrialSettings;
use crate::cli::args::{AgentArgs, MemberArgs};
use crate::cli::config::{self, ConfigError, Resolved};
use crate::etcd::leader::Local;
use crate::exit::Exit;
use crate::member::{AnyMember, EnvironmentFileMember};
use crate::revlog::replay::{LogBuilder, ReplaySettings};
use crate::revlog::writer::{self, WriterSettings};
use crate::store::settings::StoreUrl;
use anyhow::Context;
use lifeboat::reconfigure::StartPlan;

pub async fn run(resolved: &Resolved, args: &AgentArgs) -> anyhow::Result<Exit> {
    // First: a stop that arrives while the agent starts is then a clean stop.
    let shutdown = super::shutdown_signal();
    let mut settings = config::agent_settings(resolved, &args.member)?;
    if let Some(interval) = args.check_interval_ms {
        settings.policy.check_interval_ms = interval.max(100);
    }
    if let Some(failures) = args.failures_max {
        settings.policy.failures_max = failures.max(1);
    }
    if let Some(grace) = args.failure_grace_ms {
        settings.policy.failure_grace_ms = grace;
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
    // Proven before the agent starts: it restores only in a recovery, too late to learn
    // that its etcdutl is missing.
    let etcdutl = config::runnable_etcdutl(resolved, args.member.etcdutl.as_ref())?;
    let supervise = settings.supervise;
    let etcd = resolved.etcd()?;
    let (store, layout) = open_store(resolved).await?;
    let local = local_member(&args.member);
    let check_interval_ms = settings.policy.check_interval_ms;
    let builder = LogBuilder {
        etcdutl,
        replay: ReplaySettings {
            etcd: args.member.etcd.clone(),
            scratch_parent: settings.state_dir.clone(),
            start_timeout: std::time::Duration::from_secs(60),
        },
    };
    let state_dir = settings.state_dir.clone();
    let trial = TrialSettings {
        etcd: args.member.etcd.clone(),
        etcdutl: builder.etcdutl.0.clone(),
        scratch_parent: state_dir.clone(),
        start_timeout: std::time::Duration::from_secs(60),
        cluster: settings.cluster.clone(),
    };
    let writer = WriterSettings {
        cluster: settings.cluster.clone(),
        flush_interval: std::time::Duration::from_millis(args.log_flush_interval_ms),
        segment_target_bytes: 4 << 20,
        zstd_level: 1,
        save: settings.save_settings(),
    };
    let for_writer = (etcd.clone(), store.clone(), layout.clone());
    let for_prover = (etcd.clone(), store.clone(), layout.clone());
    let mut driver = Driver::new(settings, etcd, store, layout, local, SystemClock, builder)
        .context("cannot open the agent's state dir")?;
    // The revision log, written by the agent beside the leader (as it saves).
    let (stop_log, log_stopped) = tokio::sync::watch::channel(false);
    let log_writer = (!args.no_revision_log).then(|| {
        let (etcd, store, layout) = for_writer;
        let local = Local {
            client_url: args.member.client_url.clone(),
            check: std::time::Duration::from_millis(check_interval_ms),
        };
        let metrics = driver.metrics();
        tokio::spawn(async move {
            writer::while_leading(&etcd, &store, &layout, &writer, &local, log_stopped, |stats| {
                metrics.on_log_flush(crate::host::clock::wall_clock_now().0, stats.last_revision, stats.gaps)
            })
            .await;
        })
    });
    // Trial restores of new snapshots, by the agent beside the leader (as it saves).
    let prover = (args.trial_interval_ms > 0).then(|| {
        let (etcd, store, layout) = for_prover;
        let local = Local {
            client_url: args.member.client_url.clone(),
            check: std::time::Duration::from_millis(check_interval_ms),
        };
        let settings =
            prover::ProverSettings { trial, interval: std::time::Duration::from_millis(args.trial_interval_ms) };
        let (metrics, journal) = (driver.metrics(), crate::agent::journal::Journal::open(&state_dir));
        let stopped = stop_log.subscribe();
        tokio::spawn(async move {
            let Ok(journal) = journal else { return };
            prover::prove_while_leading(&etcd, &store, &layout, &settings, &local, stopped, |event, details| {
                let now = crate::host::clock::wall_clock_now();
                metrics.on_event(now.0, event, &details);
                journal.record(&now.to_rfc3339(), event, details);
            })
            .await;
        })
    });
    if let Some(address) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|error| ConfigError::Invalid {
            what: "--metrics-listen",
            value: address.to_string(),
            hint: format!("cannot listen there ({error}): choose a free port on an address of this host"),
        })?;
        let bounds = crate::agent::http::HealthBounds::for_check_interval(check_interval_ms);
        tracing::info!(%address, "serving /metrics, /healthz and /readyz");
        tokio::spawn(crate::agent::http::serve(listener, driver.metrics(), SystemClock, bounds));
    }
    if supervise {
        // Journaled either way; the agent's first check tries again.
        let _ = driver.reconfigure_and_start().await;
    }
    driver.run(shutdown).await;
    let _ = stop_log.send(true);
    if let Some(log_writer) = log_writer {
        // The writer flushes what it holds before it stops.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), log_writer).await;
    }
    if let Some(prover) = prover {
        // A trial in progress is abandoned with its scratch dir (its member is killed).
        prover.abort();
    }
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

pub async fn reconfigure(resolved: &Resolved, args: &MemberArgs) -> anyhow::Result<Exit> {
    let mut settings = config::agent_settings(resolved, args)?;
    settings.prepare_only = true;
    let etcd = resolved.etcd()?;
    let (store, layout) = open_store(resolved).await?;
    let local = AnyMember::EnvironmentFile(EnvironmentFileMember::new(
        config::member_spec(args),
        args.environment_file.clone(),
    ));
    // Not proven to run here, unlike the agent's: as ExecStartPre, a missing etcdutl must not
    // keep a healthy member's etcd from starting; a restore that needs it names it.
    let etcdutl = config::etcdutl(resolved, args.etcdutl.as_ref());
    let mut driver = Driver::new(settings, etcd, store, layout, local, SystemClock, etcdutl)
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
        Ok(StartPlan::AwaitLockHolder) => {
            eprintln!(
                "lifeboat: etcd must not start yet: another lifeboat process holds this member's lock ({}) and is \
                 in the middle of replacing or restoring it; it starts etcd itself when it is done. Nothing to do: \
                 `lifeboat status --journal` shows its progress",
                crate::host::files::member_lock_path(&config::member_spec(args)).display()
            );
            Ok(Exit::Refused)
        }
        Ok(_) => Ok(Exit::Success),
        Err(error) => Err(anyhow::Error::new(error).context(format!("reconfigure could not prepare {}", args.name))),
    }
}
