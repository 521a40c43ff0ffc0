//! `lifeboat replace`: this member out and back in, learner first, one change at a time.

use super::local_member;
use crate::agent::replace::{self, ReplaceSettings};
use crate::backup::save::wall_clock_now;
use crate::cli::args::{MemberArgs, MemberControl};
use crate::cli::config::Resolved;
use crate::cli::output::{self, Format};
use crate::exit::Exit;
use anyhow::Context;
use std::time::Duration;

pub async fn run(resolved: &Resolved, args: &MemberArgs, format: Format) -> anyhow::Result<Exit> {
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
