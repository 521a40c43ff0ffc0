//! Simulator throughput: one seed of a scenario, start to end, on one core.
//! Target (issue 7): ≥ 1,000 seeds of a 10-minute virtual scenario per wall minute,
//! i.e. one 600 s seed in ≤ 60 ms. `scripts/sim --bench` runs this; the summary
//! table of every sweep also prints seeds per wall minute for each scenario.

#[cfg(madsim)]
mod bench {
    use criterion::Criterion;
    use lifeboat_sim::run::{run, RunConfig};
    use std::cell::Cell;

    pub fn seeds(criterion: &mut Criterion) {
        let mut group = criterion.benchmark_group("simulator seed");
        group.sample_size(10);
        for name in ["steady-snapshots", "two-of-five-lost", "two-of-three-lost"] {
            let scenario = lifeboat_scenarios::find(name).expect("in the catalogue");
            let seed = Cell::new(0u64);
            let virtual_s = scenario.duration_ms / 1000;
            group.bench_function(format!("{name} ({virtual_s} s virtual)"), |bencher| {
                bencher.iter(|| {
                    seed.set(seed.get() + 1);
                    let config = RunConfig {
                        scenario: scenario.clone(),
                        seed: seed.get(),
                        random_faults: true,
                        flaw: None,
                        keep_trace: false,
                        etcdadm: false,
                        member_control: lifeboat_sim::systemd::MemberControl::Child,
                    };
                    let report = run(&config);
                    assert!(report.violations.is_empty(), "{name} seed {} violated an invariant", seed.get());
                })
            });
        }
        group.finish();
    }
}

#[cfg(madsim)]
criterion::criterion_group!(benches, bench::seeds);
#[cfg(madsim)]
criterion::criterion_main!(benches);

#[cfg(not(madsim))]
fn main() {
    eprintln!("build with --cfg madsim: scripts/sim --bench");
}
