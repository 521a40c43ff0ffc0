//! Many seeds of one scenario, summed up: violations, recoveries by kind, RTO,
//! data lost to disaster recoveries, and how fast the seeds ran.

use crate::flaws::Flaw;
use crate::run::{run, RunConfig, RunReport};
use crate::systemd::MemberControl;
use lifeboat_scenarios::Scenario;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    /// What the same recoveries would have left behind from the snapshot alone,
    /// without the revision log replayed onto it (the baseline, same runs).
    pub lost_without_log: u64,
    pub writes_acked: u64,
    pub wall_ms: u64,
    pub seeds_per_wall_minute: f64,
    /// The first failing seed's report, for the replay hint.
    #[serde(skip)]
    pub first_failure: Option<RunReport>,
}

impl ScenarioSummary {
    fn new(scenario: &str) -> ScenarioSummary {
        ScenarioSummary {
            scenario: scenario.to_owned(),
            seeds: 0,
            failed_seeds: Vec::new(),
            violations: 0,
            replacements: 0,
            disaster_recoveries: 0,
            mean_rto_ms: None,
            worst_rto_ms: None,
            lost_revisions: 0,
            lost_without_log: 0,
            writes_acked: 0,
            wall_ms: 0,
            seeds_per_wall_minute: 0.0,
            first_failure: None,
        }
    }

    /// Adds one seed's report; `rtos` collects the RTOs for [`ScenarioSummary::finish`].
    fn add(&mut self, report: RunReport, rtos: &mut Vec<u64>) {
        self.seeds += 1;
        self.violations += report.violations.len();
        self.replacements += report.stats.removals.len();
        self.disaster_recoveries += report.stats.epochs.len();
        self.lost_revisions += report.stats.lost_by_recovery;
        self.lost_without_log += report.stats.lost_without_log;
        self.writes_acked += report.stats.writes_acked;
        if let Some(rto) = report.rto_ms {
            rtos.push(rto);
        }
        if !report.violations.is_empty() {
            self.failed_seeds.push(report.seed);
            if self.first_failure.is_none() {
                self.first_failure = Some(report);
            }
        }
    }

    fn finish(&mut self, rtos: &[u64], wall_ms: u64) {
        if !rtos.is_empty() {
            self.mean_rto_ms = Some(rtos.iter().sum::<u64>() / rtos.len() as u64);
            self.worst_rto_ms = rtos.iter().max().copied();
        }
        self.wall_ms = wall_ms;
        self.seeds_per_wall_minute = self.seeds as f64 * 60_000.0 / wall_ms.max(1) as f64;
    }
}

/// Runs `seeds` seeds starting at `first_seed`, calling `progress` after each.
pub fn sweep(
    scenario: &Scenario,
    first_seed: u64,
    seeds: u64,
    random_faults: bool,
    flaw: Option<Flaw>,
    member_control: MemberControl,
    mut progress: impl FnMut(&RunReport),
) -> ScenarioSummary {
    let started = Instant::now();
    let mut summary = ScenarioSummary::new(scenario.name);
    let mut rtos = Vec::new();
    for seed in first_seed..first_seed + seeds {
        let config = RunConfig {
            scenario: scenario.clone(),
            seed,
            random_faults,
            flaw,
            keep_trace: false,
            etcdadm: false,
            member_control,
        };
        let report = run(&config);
        progress(&report);
        summary.add(report, &mut rtos);
    }
    summary.finish(&rtos, started.elapsed().as_millis() as u64);
    summary
}

/// The nemesis sweep: one drawn schedule per seed, summed up per cluster size,
/// with how often each fault kind was drawn.
#[derive(Clone, Debug, Serialize)]
pub struct RandomSummary {
    pub first_seed: u64,
    pub by_size: Vec<ScenarioSummary>,
    pub kinds: BTreeMap<&'static str, u64>,
    /// Schedules run with etcd as the agent's child, and as a systemd unit.
    pub child_schedules: u64,
    pub systemd_schedules: u64,
    /// Faults per schedule, summed, and virtual time simulated.
    pub faults: u64,
    pub virtual_ms: u64,
    pub wall_ms: u64,
    pub schedules_per_wall_minute: f64,
}

/// Runs drawn schedules from `first_seed` until `seeds` ran or `budget` is spent.
pub fn random_sweep(
    first_seed: u64,
    seeds: u64,
    budget: Option<Duration>,
    flaw: Option<Flaw>,
    etcdadm: bool,
    member_control: Option<MemberControl>,
    mut progress: impl FnMut(u64, &RunReport),
) -> RandomSummary {
    let started = Instant::now();
    let mut by_size = [ScenarioSummary::new("random-3"), ScenarioSummary::new("random-5")];
    let mut rtos = [Vec::new(), Vec::new()];
    let mut kinds = crate::nemesis::count_kinds(std::iter::empty());
    let (mut faults, mut virtual_ms, mut systemd_schedules) = (0, 0, 0);
    for seed in first_seed..first_seed.saturating_add(seeds) {
        if budget.is_some_and(|budget| started.elapsed() >= budget) {
            break;
        }
        let scenario = crate::nemesis::draw(seed);
        for (kind, count) in crate::nemesis::count_kinds(std::iter::once(&scenario)) {
            *kinds.entry(kind).or_default() += count;
        }
        faults += scenario.faults.len() as u64;
        virtual_ms += scenario.duration_ms;
        let size = usize::from(scenario.members != 3);
        let member_control = member_control.unwrap_or_else(|| crate::nemesis::member_control(seed));
        systemd_schedules += u64::from(member_control == MemberControl::Systemd);
        let config =
            RunConfig { scenario, seed, random_faults: false, flaw, keep_trace: false, etcdadm, member_control };
        let report = run(&config);
        progress(seed, &report);
        by_size[size].add(report, &mut rtos[size]);
    }
    let wall_ms = started.elapsed().as_millis() as u64;
    for (summary, rtos) in by_size.iter_mut().zip(&rtos) {
        summary.finish(rtos, wall_ms);
    }
    let ran: u64 = by_size.iter().map(|summary| summary.seeds).sum();
    RandomSummary {
        first_seed,
        by_size: by_size.into_iter().filter(|summary| summary.seeds > 0).collect(),
        kinds,
        child_schedules: ran - systemd_schedules,
        systemd_schedules,
        faults,
        virtual_ms,
        wall_ms,
        schedules_per_wall_minute: ran as f64 * 60_000.0 / wall_ms.max(1) as f64,
    }
}

/// Shrinks a failing schedule: leaves faults out one at a time while the seed
/// still fails, until no single fault can go. Returns the indexes left out.
pub fn shrink(seed: u64, flaw: Option<Flaw>, member_control: MemberControl) -> Vec<usize> {
    let drawn = crate::nemesis::draw(seed);
    let fails = |dropped: &[usize]| {
        let scenario = crate::nemesis::drop_faults(drawn.clone(), dropped);
        let config =
            RunConfig { scenario, seed, random_faults: false, flaw, keep_trace: false, etcdadm: false, member_control };
        !run(&config).violations.is_empty()
    };
    let mut dropped: Vec<usize> = Vec::new();
    loop {
        let candidate = (0..drawn.faults.len()).filter(|index| !dropped.contains(index)).find(|index| {
            let mut trial = dropped.clone();
            trial.push(*index);
            fails(&trial)
        });
        match candidate {
            Some(index) => dropped.push(index),
            None => {
                dropped.sort_unstable();
                return dropped;
            }
        }
    }
}

fn seconds(ms: Option<u64>) -> String {
    ms.map(|ms| format!("{:.1}", ms as f64 / 1000.0)).unwrap_or_else(|| "-".into())
}

/// How often each fault kind was drawn, one line.
pub fn kinds_line(summary: &RandomSummary) -> String {
    let counts: Vec<String> = summary.kinds.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
    format!(
        "faults drawn: {} ({})\netcd as the agent's child in {} schedules, as a systemd unit in {}\nvirtual time: {:.1} h in {:.1} s of wall time\n",
        summary.faults,
        counts.join(", "),
        summary.child_schedules,
        summary.systemd_schedules,
        summary.virtual_ms as f64 / 3_600_000.0,
        summary.wall_ms as f64 / 1000.0
    )
}

pub fn table(summaries: &[ScenarioSummary]) -> String {
    let mut out = format!(
        "{:<28} {:>6} {:>10} {:>8} {:>4} {:>9} {:>9} {:>10} {:>10} {:>10}\n",
        "scenario",
        "seeds",
        "violations",
        "replaced",
        "DR",
        "mean RTO",
        "worst RTO",
        "lost revs",
        "w/o log",
        "seeds/min"
    );
    for summary in summaries {
        out.push_str(&format!(
            "{:<28} {:>6} {:>10} {:>8} {:>4} {:>8}s {:>8}s {:>10} {:>10} {:>10.0}\n",
            summary.scenario,
            summary.seeds,
            summary.violations,
            summary.replacements,
            summary.disaster_recoveries,
            seconds(summary.mean_rto_ms),
            seconds(summary.worst_rto_ms),
            summary.lost_revisions,
            summary.lost_without_log,
            summary.seeds_per_wall_minute
        ));
    }
    out
}
