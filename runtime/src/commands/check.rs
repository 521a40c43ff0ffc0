//! `lifeboat check`: every member's health, role and revision, and whether quorum holds.

use crate::cli::config::Resolved;
use crate::cli::output::{self, Format};
use crate::etcd::health;
use crate::exit::Exit;

pub async fn run(resolved: &Resolved, format: Format) -> anyhow::Result<Exit> {
    let etcd = resolved.etcd()?;
    let report = health::check(&etcd).await;
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
            for alarm in &report.alarms {
                println!("ALARM: {alarm}: etcd needs a human (NOSPACE: compact, defragment each member, then `etcdctl alarm disarm`)");
            }
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
