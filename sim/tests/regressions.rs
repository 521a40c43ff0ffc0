//! Nemesis schedules that once broke an invariant, each replayed in the mode it
//! failed in: they must stay fixed. (Each line names the finding; SAFETY.md has
//! the story.)

#![cfg(madsim)]

use lifeboat_sim::nemesis::draw;
use lifeboat_sim::run::{run, violations_text, RunConfig};
use lifeboat_sim::systemd::MemberControl;

const FOUND: &[(u64, MemberControl, &str)] = &[
    (5951, MemberControl::Child, "a stale vote: the member looked, then stopped after a partition healed"),
    (173, MemberControl::Child, "a learner wiped while catching up could never resume"),
    (9023602318, MemberControl::Child, "a member removed its own place in the recovered cluster"),
    (9023603213, MemberControl::Child, "a member removed its own place in the recovered cluster"),
    (888002305, MemberControl::Child, "a holder of a superseded, abandoned claim stayed stopped"),
    (101933, MemberControl::Systemd, "the agent restored again an epoch its reconfigure had applied"),
    (102836, MemberControl::Systemd, "a lost machine restored into an epoch it had run in (rewound log)"),
    (7003535, MemberControl::Systemd, "an agent killed inside `systemctl start` left the start job running forever"),
    (31008682, MemberControl::Systemd, "a disk wiped between restore and start bootstrapped a cluster of its own"),
    (31012314, MemberControl::Systemd, "a disk wiped between restore and start bootstrapped a cluster of its own"),
    (31016435, MemberControl::Systemd, "a recovered cluster that never formed was waited for forever"),
    (61003273, MemberControl::Child, "a second membership change while a stalled learner was still joining"),
    (25000016949, MemberControl::Child, "a replacement begun before a recovery resumed in the recovered cluster"),
    (100000141928, MemberControl::Systemd, "Restart= started etcd on a wiped member its agent was restoring"),
    (
        101000152681,
        MemberControl::Systemd,
        "a member removed mid-replacement, then restored into an epoch, was never added back",
    ),
];

/// Runs `scenario` at `seed` in `member_control` mode: it must break nothing.
fn assert_passes(
    scenario: lifeboat_scenarios::Scenario,
    seed: u64,
    random_faults: bool,
    member_control: MemberControl,
    what: &str,
    finding: &str,
) {
    let config =
        RunConfig { scenario, seed, random_faults, flaw: None, keep_trace: false, etcdadm: false, member_control };
    let report = run(&config);
    assert!(
        report.violations.is_empty(),
        "{what} ({member_control:?}: {finding}) fails again:\n{}",
        violations_text(&report)
    );
}

/// Catalogue seeds (with their seeded agent crash and store blip) that once failed.
const CATALOGUE_FOUND: &[(&str, u64, MemberControl, &str)] = &[(
    "survivors-at-different-revisions",
    43,
    MemberControl::Systemd,
    "an agent whose member `reconfigure` had restored into an epoch claimed a second one",
)];

#[test]
fn catalogue_seeds_that_once_failed_pass() {
    for (name, seed, member_control, finding) in CATALOGUE_FOUND {
        let scenario = lifeboat_scenarios::find(name).expect("a catalogue scenario");
        assert_passes(scenario, *seed, true, *member_control, &format!("{name} seed {seed}"), finding);
    }
}

#[test]
fn schedules_that_once_failed_pass() {
    for (seed, member_control, finding) in FOUND {
        assert_passes(draw(*seed), *seed, false, *member_control, &format!("nemesis seed {seed}"), finding);
    }
}
