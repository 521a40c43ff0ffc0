//! `lifeboat-sim`: runs the scenario catalogue over many seeds in the
//! deterministic simulator. Build and run it through `scripts/sim`, which
//! compiles it with `--cfg madsim`.

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    eprintln!("lifeboat-sim must be built with RUSTFLAGS=\"--cfg madsim\": run it through scripts/sim");
    std::process::ExitCode::from(2)
}

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(madsim)]
mod cli {
    use clap::Parser;
    use lifeboat_scenarios::{Harness, Scenario};
    use lifeboat_sim::flaws::Flaw;
    use lifeboat_sim::nemesis::{draw, drop_faults, member_control};
    use lifeboat_sim::run::{run, violations_text, RunConfig, RunReport};
    use lifeboat_sim::summary::{kinds_line, random_sweep, shrink, sweep, table};
    use lifeboat_sim::systemd::MemberControl;
    use std::io::Write;
    use std::process::ExitCode;
    use std::time::Duration;

    /// Runs lifeboat's recovery logic (the production agent driver and core) over
    /// simulated etcd clusters and S3, on virtual time, with injected faults, and
    /// checks DESIGN.md's invariants on every seed.
    ///
    /// Exit codes: 0 no violation, 1 a seed violated an invariant, 2 usage error.
    ///
    /// Examples:
    ///   scripts/sim --scenario all --seeds 200
    ///   scripts/sim --scenario two-of-three-lost --seed 17 --trace
    #[derive(Parser, Debug)]
    #[command(name = "lifeboat-sim", version, verbatim_doc_comment)]
    struct Args {
        /// A scenario name from the catalogue (`--list` shows them), or `all`.
        #[arg(long, default_value = "all")]
        scenario: String,
        /// How many seeds per scenario.
        #[arg(long, default_value_t = 200)]
        seeds: u64,
        /// The first seed; with `--seeds 1`, exactly this seed (a replay).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print the readable event trace of each run (use with one seed).
        #[arg(long)]
        trace: bool,
        /// Only the scenario's own fault schedule, no seeded random faults on top.
        #[arg(long)]
        no_random_faults: bool,
        /// `table` (default) or `json` (one summary object per scenario, one per line).
        #[arg(long, default_value = "table")]
        output: String,
        /// List the catalogue and exit.
        #[arg(long)]
        list: bool,
        /// The nemesis: instead of the catalogue, one randomly drawn, overlapping fault
        /// schedule per seed (3 or 5 members, every fault kind), a safety phase then a
        /// liveness phase; a failing schedule is shrunk to the fewest faults that fail.
        #[arg(long)]
        random: bool,
        /// With --random: stop starting new schedules after this many wall seconds.
        #[arg(long, value_name = "SECONDS")]
        budget_seconds: Option<u64>,
        /// With --random: leave out these faults (indexes, as a shrunk failure prints).
        #[arg(long, value_delimiter = ',', value_name = "I,J,…")]
        drop_faults: Vec<usize>,
        /// With --random: run kube-aws etcdadm's rules instead of lifeboat (the baseline
        /// the summary compares against); its violations are reported, exit 0.
        #[arg(long)]
        etcdadm: bool,
        /// Plant a broken component in every agent's simulated ports (what the teeth
        /// tests do), to replay how a checker catches it; the run should then fail.
        #[arg(long, value_enum, value_name = "FLAW")]
        flaw: Option<Flaw>,
        /// Run etcd as each agent's child, or as a systemd unit beside it whose
        /// ExecStartPre is `lifeboat reconfigure` (the production default). The
        /// catalogue runs `child` unless told; --random draws it from each seed.
        #[arg(long, value_enum, value_name = "MODE")]
        member_control: Option<MemberControl>,
    }

    /// The `--member-control` a replay command needs.
    fn control_flag(control: MemberControl) -> String {
        use clap::ValueEnum;
        control.to_possible_value().map(|value| format!(" --member-control {}", value.get_name())).unwrap_or_default()
    }

    /// The `--flaw` a replay command needs to fail the same way.
    fn flaw_flag(flaw: Option<Flaw>) -> String {
        use clap::ValueEnum;
        flaw.and_then(|flaw| flaw.to_possible_value())
            .map(|value| format!(" --flaw {}", value.get_name()))
            .unwrap_or_default()
    }

    /// Prints one run's faults, event trace and violations; true when it failed.
    fn print_trace(report: &RunReport) -> bool {
        println!("== {} seed {} (trace hash {})", report.scenario, report.seed, report.trace_hash);
        for fault in &report.faults {
            println!("   fault {fault}");
        }
        for line in &report.trace {
            println!("{line}");
        }
        if !report.violations.is_empty() {
            println!("{}", violations_text(report));
        }
        !report.violations.is_empty()
    }

    /// `--random`: drawn schedules, traced one by one or swept with a summary.
    fn random(args: &Args) -> ExitCode {
        if args.trace {
            let mut failed = false;
            for seed in args.seed..args.seed.saturating_add(args.seeds) {
                let scenario = drop_faults(draw(seed), &args.drop_faults);
                let config = RunConfig {
                    scenario,
                    seed,
                    random_faults: false,
                    flaw: args.flaw,
                    keep_trace: true,
                    etcdadm: args.etcdadm,
                    member_control: args.member_control.unwrap_or_else(|| member_control(seed)),
                };
                failed |= print_trace(&run(&config));
            }
            return if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
        let budget = args.budget_seconds.map(Duration::from_secs);
        let mut done = 0u64;
        let mut broken: std::collections::BTreeMap<&'static str, u64> = Default::default();
        let summary = random_sweep(
            args.seed,
            args.seeds,
            budget,
            args.flaw,
            args.etcdadm,
            args.member_control,
            |seed, report| {
                done += 1;
                let invariants: std::collections::BTreeSet<&'static str> =
                    report.violations.iter().map(|violation| violation.invariant.label()).collect();
                for label in invariants {
                    *broken.entry(label).or_default() += 1;
                }
                if args.output == "table" && (done.is_multiple_of(100) || !report.violations.is_empty()) {
                    eprint!("\rrandom schedules from seed {}: {done} run (at seed {seed})", args.seed);
                    let _ = std::io::stderr().flush();
                }
            },
        );
        if args.output == "table" {
            eprintln!();
            print!("{}", table(&summary.by_size));
            print!("{}", kinds_line(&summary));
            println!("schedules per wall minute: {:.0}", summary.schedules_per_wall_minute);
        } else if let Ok(line) = serde_json::to_string(&summary) {
            println!("{line}");
        }
        let ran: u64 = summary.by_size.iter().map(|size| size.seeds).sum();
        let counts: Vec<String> = broken.iter().map(|(label, count)| format!("{label}: {count}")).collect();
        println!(
            "{} broke an invariant in {} of {ran} schedules ({})",
            if args.etcdadm { "etcdadm's rules" } else { "lifeboat" },
            summary.by_size.iter().map(|size| size.failed_seeds.len()).sum::<usize>(),
            if counts.is_empty() { "none".to_owned() } else { counts.join(", ") }
        );
        if args.etcdadm {
            // The baseline is expected to fail: its failures are the figure, not an error.
            return ExitCode::SUCCESS;
        }
        let mut failed = false;
        for size in &summary.by_size {
            let Some(report) = &size.first_failure else { continue };
            failed = true;
            eprintln!("\nFAILED {}: seeds {:?}\n{}", size.scenario, size.failed_seeds, violations_text(report));
            let control = args.member_control.unwrap_or_else(|| member_control(report.seed));
            eprintln!("schedule of seed {} (etcd run as {control:?}):", report.seed);
            for (index, fault) in draw(report.seed).faults.iter().enumerate() {
                eprintln!("  [{index}] {}ms {:?}", fault.at_ms, fault.fault);
            }
            let dropped = shrink(report.seed, args.flaw, control);
            let kept = drop_faults(draw(report.seed), &dropped);
            eprintln!("shrunk to {} fault(s):", kept.faults.len());
            for fault in &kept.faults {
                eprintln!("  {}ms {:?}", fault.at_ms, fault.fault);
            }
            let drop = if dropped.is_empty() {
                String::new()
            } else {
                format!(" --drop-faults {}", dropped.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
            };
            eprintln!(
                "replay with its event trace:\n  scripts/sim --random --seeds 1 --seed {}{drop}{}{} --trace   (commit {})",
                report.seed,
                flaw_flag(args.flaw),
                control_flag(control),
                std::env::var("LIFEBOAT_COMMIT").unwrap_or_else(|_| "see git log".into())
            );
        }
        if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }

    pub fn main() -> ExitCode {
        let args = Args::parse();
        let catalogue = lifeboat_scenarios::catalogue();
        if args.list {
            for scenario in &catalogue {
                println!("{:<28} {}", scenario.name, scenario.title);
            }
            return ExitCode::SUCCESS;
        }
        if args.output != "table" && args.output != "json" {
            eprintln!("--output must be `table` or `json`, not {:?}", args.output);
            return ExitCode::from(2);
        }
        if args.random {
            return random(&args);
        }
        let simulated = |scenario: &Scenario| scenario.harnesses.contains(&Harness::Simulator);
        let scenarios: Vec<_> = if args.scenario == "all" {
            catalogue.into_iter().filter(simulated).collect()
        } else {
            match lifeboat_scenarios::find(&args.scenario) {
                Some(scenario) if simulated(&scenario) => vec![scenario],
                Some(scenario) => {
                    eprintln!(
                        "{:?} needs real processes ({:?}): the simulator cannot express it",
                        scenario.name, scenario.harnesses
                    );
                    return ExitCode::from(2);
                }
                None => {
                    eprintln!("no scenario named {:?}; `lifeboat-sim --list` shows the catalogue", args.scenario);
                    return ExitCode::from(2);
                }
            }
        };
        if args.trace {
            let mut failed = false;
            for scenario in &scenarios {
                for seed in args.seed..args.seed + args.seeds {
                    let config = RunConfig {
                        scenario: scenario.clone(),
                        seed,
                        random_faults: !args.no_random_faults,
                        flaw: args.flaw,
                        keep_trace: true,
                        etcdadm: false,
                        member_control: args.member_control.unwrap_or(MemberControl::Child),
                    };
                    failed |= print_trace(&run(&config));
                }
            }
            return if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
        let mut summaries = Vec::new();
        for scenario in &scenarios {
            let mut done = 0;
            let control = args.member_control.unwrap_or(MemberControl::Child);
            let summary =
                sweep(scenario, args.seed, args.seeds, !args.no_random_faults, args.flaw, control, |report| {
                    done += 1;
                    if args.output == "table" && (done % 50 == 0 || !report.violations.is_empty()) {
                        eprint!("\r{:<28} {done}/{} seeds", scenario.name, args.seeds);
                        let _ = std::io::stderr().flush();
                    }
                });
            if args.output == "table" {
                eprintln!(
                    "\r{:<28} {}/{} seeds, {} failed",
                    scenario.name,
                    args.seeds,
                    args.seeds,
                    summary.failed_seeds.len()
                );
            } else if let Ok(line) = serde_json::to_string(&summary) {
                println!("{line}");
            }
            summaries.push(summary);
        }
        if args.output == "table" {
            print!("{}", table(&summaries));
        }
        let mut failed = false;
        for summary in &summaries {
            if let Some(report) = &summary.first_failure {
                failed = true;
                eprintln!(
                    "\nFAILED {}: seeds {:?}\n{}\nreplay with its event trace:\n  scripts/sim --scenario {} --seeds 1 --seed {} --trace{}{}{}",
                    summary.scenario,
                    summary.failed_seeds,
                    violations_text(report),
                    summary.scenario,
                    report.seed,
                    if args.no_random_faults { " --no-random-faults" } else { "" },
                    flaw_flag(args.flaw),
                    control_flag(args.member_control.unwrap_or(MemberControl::Child))
                );
            }
        }
        if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}
