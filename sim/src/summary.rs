//! Many seeds of one scenario, summed up: violations, recoveries by kind, RTO,
//! data lost to disaster recoveries, and how fast the seeds ran.

use crate::run::{run, RunConfig, RunReport};
use lifeboat::Sabotage;
use lifeboat_scenarios::Scenario;
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct ScenarioSummary {
    pub scenario: String,
    pub seeds: u64,
    pub failed_seeds: Vec<u64>,
    pub violations: usize,
    pub replacements: usize,
    pub disaster_recoveries: usize,
    pub mean_rto_ms: Option<u64>,
    pub worst_rto_ms: Option<u64>,
    /// Acknowledged revisions left behind by disaster recoveries, over all seeds.
    pub lost_revisions: u64,
    pub writes_acked: u64,
    pub wall_ms: u64,
    pub seeds_per_wall_minute: f64,
    /// The first failing seed's report, for the replay hint.
    #[serde(skip)]
    pub first_failure: Option<RunReport>,
}

/// Runs `seeds` seeds starting at `first_seed`, calling `progress` after each.
pub fn sweep(
    scenario: &Scenario,
    first_seed: u64,
    seeds: u64,
    random_faults: bool,
    sabotage: Sabotage,
    mut progress: impl FnMut(&RunReport),
) -> ScenarioSummary {
    let started = Instant::now();
    let mut summary = ScenarioSummary {
        scenario: scenario.name.to_owned(),
        seeds,
        failed_seeds: Vec::new(),
        violations: 0,
        replacements: 0,
        disaster_recoveries: 0,
        mean_rto_ms: None,
        worst_rto_ms: None,
        lost_revisions: 0,
        writes_acked: 0,
        wall_ms: 0,
        seeds_per_wall_minute: 0.0,
        first_failure: None,
    };
    let mut rtos = Vec::new();
    for seed in first_seed..first_seed + seeds {
        let config = RunConfig { scenario: scenario.clone(), seed, random_faults, sabotage, keep_trace: false };
        let report = run(&config);
        progress(&report);
        summary.violations += report.violations.len();
        summary.replacements += report.stats.removals.len();
        summary.disaster_recoveries += report.stats.epochs.len();
        summary.lost_revisions += report.stats.lost_by_recovery;
        summary.writes_acked += report.stats.writes_acked;
        if let Some(rto) = report.rto_ms {
            rtos.push(rto);
        }
        if !report.violations.is_empty() {
            summary.failed_seeds.push(seed);
            if summary.first_failure.is_none() {
                summary.first_failure = Some(report);
            }
        }
    }
    if !rtos.is_empty() {
        summary.mean_rto_ms = Some(rtos.iter().sum::<u64>() / rtos.len() as u64);
        summary.worst_rto_ms = rtos.iter().max().copied();
    }
    summary.wall_ms = started.elapsed().as_millis() as u64;
    summary.seeds_per_wall_minute = seeds as f64 * 60_000.0 / summary.wall_ms.max(1) as f64;
    summary
}

fn seconds(ms: Option<u64>) -> String {
    ms.map(|ms| format!("{:.1}", ms as f64 / 1000.0)).unwrap_or_else(|| "-".into())
}

pub fn table(summaries: &[ScenarioSummary]) -> String {
    let mut out = format!(
        "{:<28} {:>6} {:>10} {:>8} {:>4} {:>9} {:>9} {:>10} {:>10}\n",
        "scenario", "seeds", "violations", "replaced", "DR", "mean RTO", "worst RTO", "lost revs", "seeds/min"
    );
    for summary in summaries {
        out.push_str(&format!(
            "{:<28} {:>6} {:>10} {:>8} {:>4} {:>8}s {:>8}s {:>10} {:>10.0}\n",
            summary.scenario,
            summary.seeds,
            summary.violations,
            summary.replacements,
            summary.disaster_recoveries,
            seconds(summary.mean_rto_ms),
            seconds(summary.worst_rto_ms),
            summary.lost_revisions,
            summary.seeds_per_wall_minute
        ));
    }
    out
}
