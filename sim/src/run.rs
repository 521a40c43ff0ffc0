//! One seed of one scenario: machines with agents running the production driver,
//! a client writing, the scenario's faults plus seeded random ones, and the
//! checks at the end.

use crate::flaws::Flaw;
use crate::model::{lock, Invariant, Node, Shared, Stats, Violation, World};
use crate::ports::{SimBuilder, SimClock, SimEtcd, SimMember, SimStore};
use crate::systemd::{AgentMember, Machine, MemberControl, SimUnitMember};
use lifeboat::{Compression, Policy, StoreLayout};
use lifeboat_runtime::agent::{AgentSettings, ConfiguredMember, Driver};
use lifeboat_runtime::member::MemberSpec;
use lifeboat_runtime::pipeline::PipelineSettings;
use lifeboat_runtime::ports::LocalMember;
use lifeboat_scenarios::{Check, Fault, Loss, Recovery, ReplaceStep, Scenario, ScheduledFault};
use madsim::rand::{thread_rng, Rng};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CLUSTER: &str = "sim";
const TOKEN: &str = "lifeboat-sim";
/// A lost machine's replacement boots this long after the loss.
const REBOOT_MS: u64 = 5_000;

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub scenario: Scenario,
    pub seed: u64,
    /// Seeded random faults on top of the scenario's schedule.
    pub random_faults: bool,
    /// A broken component planted in every agent's ports (the teeth tests); `None` otherwise.
    pub flaw: Option<Flaw>,
    /// Keep the readable event trace (for a replay).
    pub keep_trace: bool,
    /// Run kube-aws etcdadm's rules instead of lifeboat's agents (the baseline).
    pub etcdadm: bool,
    /// etcd as the agent's child, or as a systemd unit beside it (the production default).
    pub member_control: MemberControl,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub seed: u64,
    pub violations: Vec<Violation>,
    pub stats: Stats,
    /// From the end of the last fault to N healthy members again.
    pub rto_ms: Option<u64>,
    pub faults: Vec<String>,
    pub trace_hash: String,
    #[serde(skip)]
    pub trace: Vec<String>,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// Runs one seed in its own madsim runtime; the same config gives the same report.
pub fn run(config: &RunConfig) -> RunReport {
    let base = scratch_dir();
    let runtime = madsim::runtime::Runtime::with_seed_and_config(config.seed, madsim::Config::default());
    let report = runtime.block_on(simulate(config.clone(), base.clone()));
    // LIFEBOAT_SIM_KEEP=1 keeps the machines' dirs (agent journals) for a look after a replay.
    if std::env::var_os("LIFEBOAT_SIM_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&base);
    } else {
        eprintln!("kept {}", base.display());
    }
    report
}

/// A fresh directory for the machines' data and state dirs of one run.
pub fn scratch_dir() -> PathBuf {
    let base = std::env::temp_dir().join("lifeboat-sim").join(format!(
        "{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&base);
    base
}

fn machine(base: &Path, index: usize) -> (Node, PathBuf) {
    let name = format!("m{index}");
    let node = Node {
        name: name.clone(),
        peer_url: format!("http://{name}:2380"),
        client_url: format!("http://{name}:2379"),
        data_dir: base.join(&name).join("data"),
        running: false,
        disk: None,
        zone: 0,
        catch_up: None,
    };
    (node, base.join(&name).join("state"))
}

struct Machines {
    world: Shared,
    agents: Vec<madsim::runtime::NodeHandle>,
    /// Each machine's systemd, running its etcd unit (`--member-control systemd` only).
    systemds: Vec<madsim::runtime::NodeHandle>,
    skews: Vec<Arc<AtomicI64>>,
    state_dirs: Vec<PathBuf>,
}

impl Machines {
    fn kill_agent(&self, member: usize) {
        madsim::runtime::Handle::current().kill(self.agents[member].id());
        lock(&self.world).event(format!("agent m{member} killed"));
    }
    fn restart_agent(&self, member: usize) {
        madsim::runtime::Handle::current().restart(self.agents[member].id());
        lock(&self.world).event(format!("agent m{member} started"));
    }
    /// The machine is gone: agent, etcd (and its unit), disk and the agent's state dir.
    fn lose(&self, member: usize) {
        self.kill_agent(member);
        if let Some(systemd) = self.systemds.get(member) {
            madsim::runtime::Handle::current().kill(systemd.id());
            lock(&self.world).units[member] = crate::systemd::Unit::default();
        }
        lock(&self.world).wipe(member);
        let _ = std::fs::remove_dir_all(&self.state_dirs[member]);
    }
    /// A (replacement) machine boots: its agent starts, and under systemd its etcd
    /// unit too, on its own.
    fn boot(&self, member: usize) {
        if let Some(systemd) = self.systemds.get(member) {
            madsim::runtime::Handle::current().restart(systemd.id());
        }
        self.restart_agent(member);
    }
}

/// The run itself, inside a madsim runtime that [`run`] (or a test) provides.
pub async fn simulate(config: RunConfig, base: PathBuf) -> RunReport {
    let scenario = &config.scenario;
    let count = scenario.members;
    let (nodes, state_dirs): (Vec<Node>, Vec<PathBuf>) = (0..count).map(|index| machine(&base, index)).unzip();
    let configured: Vec<ConfiguredMember> = nodes
        .iter()
        .map(|node| ConfiguredMember {
            name: node.name.clone(),
            peer_url: node.peer_url.clone(),
            client_url: node.client_url.clone(),
        })
        .collect();
    let world: Shared = Arc::new(std::sync::Mutex::new(World::new(nodes.clone(), config.keep_trace)));
    let handle = madsim::runtime::Handle::current();
    let skews: Vec<Arc<AtomicI64>> = (0..count).map(|_| Arc::new(AtomicI64::new(0))).collect();

    let systemd = config.member_control == MemberControl::Systemd && !config.etcdadm;
    let mut agents = Vec::new();
    let mut systemds = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let settings = AgentSettings {
            cluster: CLUSTER.into(),
            policy: Policy::default(),
            compression: Compression::None,
            pipeline: PipelineSettings::default(),
            members: configured.clone(),
            initial_cluster_token: TOKEN.into(),
            state_dir: state_dirs[index].clone(),
            supervise: !systemd,
            prepare_only: false,
            dry_run: false,
        };
        let spec = MemberSpec {
            name: node.name.clone(),
            data_dir: node.data_dir.clone(),
            client_url: node.client_url.clone(),
            peer_url: node.peer_url.clone(),
            extra_args: Vec::new(),
        };
        let mut endpoints: Vec<String> = vec![node.client_url.clone()];
        endpoints.extend(nodes.iter().filter(|other| other.name != node.name).map(|other| other.client_url.clone()));
        let (world, skew) = (world.clone(), skews[index].clone());
        let (etcdadm, flaw) = (config.etcdadm, config.flaw);
        let machine = Machine {
            world: world.clone(),
            index,
            settings: settings.clone(),
            spec: spec.clone(),
            endpoints: endpoints.clone(),
            layout: StoreLayout::new("backups", CLUSTER),
            skew: skew.clone(),
            flaw,
        };
        if systemd {
            let machine = machine.clone();
            let unit = handle
                .create_node()
                .name(format!("systemd-{}", node.name))
                .init(move || machine.clone().run_systemd())
                .build();
            systemds.push(unit);
        }
        let initial_cluster: String =
            nodes.iter().map(|node| format!("{}={}", node.name, node.peer_url)).collect::<Vec<_>>().join(",");
        let client_urls: Vec<String> = nodes.iter().map(|node| node.client_url.clone()).collect();
        let agent = handle
            .create_node()
            .name(format!("agent-{}", node.name))
            .init(move || {
                let settings = settings.clone();
                let etcd = SimEtcd { world: world.clone(), me: index, endpoints: endpoints.clone(), flaw };
                let store = SimStore { world: world.clone(), me: index, flaw };
                let local = if systemd {
                    AgentMember::Unit(Box::new(SimUnitMember { machine: machine.clone() }))
                } else {
                    AgentMember::Child(SimMember { world: world.clone(), node: index, spec: spec.clone() })
                };
                let clock = SimClock { skew_ms: skew.clone() };
                let builder = SimBuilder { world: world.clone(), flaw };
                let layout = StoreLayout::new("backups", CLUSTER);
                let world = world.clone();
                let baseline = etcdadm.then(|| crate::etcdadm::Etcdadm {
                    world: world.clone(),
                    etcd: SimEtcd { world: world.clone(), me: index, endpoints: endpoints.clone(), flaw: None },
                    store: SimStore { world: world.clone(), me: index, flaw: None },
                    local: SimMember { world: world.clone(), node: index, spec: spec.clone() },
                    builder: SimBuilder { world: world.clone(), flaw: None },
                    layout: layout.clone(),
                    initial_cluster: initial_cluster.clone(),
                    client_urls: client_urls.clone(),
                });
                // The revision log's writer, beside the driver: it dies and restarts with the agent.
                let log_writer = (!etcdadm).then(|| crate::revlog::SimLogWriter {
                    world: world.clone(),
                    me: index,
                    store: SimStore { world: world.clone(), me: index, flaw },
                    layout: layout.clone(),
                });
                async move {
                    if let Some(writer) = log_writer {
                        madsim::task::spawn(writer.run());
                    }
                    if let Some(baseline) = baseline {
                        // Boots like its reconfigure: start the member as configured.
                        let local = &baseline.local;
                        let _ = local
                            .start(&lifeboat_runtime::member::Launch {
                                initial_cluster: baseline.initial_cluster.clone(),
                                initial_cluster_state: if lifeboat_runtime::member::has_data(&local.spec) {
                                    "existing".into()
                                } else {
                                    "new".into()
                                },
                                initial_cluster_token: TOKEN.into(),
                            })
                            .await;
                        return baseline.run().await;
                    }
                    match Driver::new(settings, etcd, store, layout, local, clock, builder) {
                        Ok(mut driver) => driver.run(std::future::pending()).await,
                        Err(error) => lock(&world).event(format!("agent m{index} cannot start: {error}")),
                    }
                }
            })
            .build();
        agents.push(agent);
    }
    let machines = Arc::new(Machines { world: world.clone(), agents, systemds, skews, state_dirs });

    // The client: writes at the scenario's rate, recording what was acknowledged.
    let rate = scenario.workload.writes_per_second.max(1) as u64;
    let client_world = world.clone();
    let mut helpers = Vec::new();
    let client = handle.create_node().name("client").build();
    client.spawn(async move {
        let mut next = 0u64;
        loop {
            madsim::time::sleep(Duration::from_millis(1000 / rate)).await;
            lock(&client_world).client_write(format!("key-{:03}", next % 256));
            next += 1;
        }
    });
    helpers.push(client);

    // Faults: the scenario's schedule, plus seeded random ones.
    let mut faults = scenario.faults.clone();
    let mut random = Vec::new();
    if config.random_faults {
        random = random_faults(scenario);
    }
    faults.sort_by_key(|fault| fault.at_ms);
    // RTO counts from the end of the scenario's own faults; liveness is judged at the
    // end of the run, after the random ones too.
    let faults_end = faults.iter().map(fault_end).max().unwrap_or(0);
    let all_faults_end = random.iter().map(|fault| fault.end_ms()).max().unwrap_or(0).max(faults_end);
    let mut descriptions: Vec<String> =
        faults.iter().map(|fault| format!("{}ms {:?}", fault.at_ms, fault.fault)).collect();
    descriptions.extend(random.iter().map(|fault| fault.describe()));
    for fault in faults {
        let machines = machines.clone();
        let node = handle.create_node().name("faults").build();
        node.spawn(async move {
            madsim::time::sleep(Duration::from_millis(fault.at_ms)).await;
            apply(&machines, fault.fault).await;
        });
        helpers.push(node);
    }
    for fault in random {
        let machines = machines.clone();
        let node = handle.create_node().name("random-faults").build();
        node.spawn(async move {
            fault.apply(&machines).await;
        });
        helpers.push(node);
    }

    // Liveness: when N healthy members are back after the faults.
    let monitor_world = world.clone();
    let monitor = handle.create_node().name("monitor").build();
    monitor.spawn(async move {
        loop {
            madsim::time::sleep(Duration::from_millis(500)).await;
            let mut world = lock(&monitor_world);
            let now = world.now_ms();
            if now >= faults_end && world.stats.recovered_at_ms.is_none() && world.healthy_members() == count {
                world.stats.recovered_at_ms = Some(now);
                world.event(format!("all {count} members healthy"));
            }
        }
    });

    helpers.push(monitor);

    madsim::time::sleep(Duration::from_millis(scenario.duration_ms)).await;
    // madsim's runtime does not drop tasks that never finish: kill every node so the
    // agents, the client and the faults let go of the world (thousands of runs in one
    // process otherwise grow by megabytes each).
    for node in machines.agents.iter().chain(&machines.systemds).chain(&helpers) {
        handle.kill(node.id());
    }
    let mut world = lock(&world);
    // The revision log's bound holds on the catalogue's schedules (with their seeded
    // extra faults: a claimer whose replay meets a store outage waits for the next
    // round). The nemesis' drawn schedules cut the store from a claimer or a machine
    // from its peers in ways a catalogue does not, so there the log may be replayed
    // by a claimer that never saw its end; its exactness is still checked at restore.
    let log_checked = !config.etcdadm && !scenario.name.starts_with("random");
    final_checks(&mut world, scenario, all_faults_end, log_checked);
    RunReport {
        scenario: scenario.name.to_owned(),
        seed: config.seed,
        violations: world.violations.clone(),
        stats: world.stats.clone(),
        rto_ms: world.stats.recovered_at_ms.map(|at| at.saturating_sub(faults_end)),
        faults: descriptions,
        trace_hash: world.trace_hash(),
        trace: world.trace_lines.take().unwrap_or_default(),
    }
}

/// When a scheduled fault is over (its machine back, its partition healed).
fn fault_end(fault: &ScheduledFault) -> u64 {
    fault.at_ms + crate::nemesis::duration_ms(&fault.fault)
}

async fn sleep_ms(ms: u64) {
    madsim::time::sleep(Duration::from_millis(ms)).await;
}

/// A supervisor restarting a crashed etcd (systemd's `Restart=`, through the
/// `reconfigure` ExecStartPre): it starts nothing while the machine's agent holds
/// its member stopped for an undecided recovery claim.
async fn restart_etcd(machines: &Machines, member: usize) {
    if lifeboat_runtime::agent::read_holding(&machines.state_dirs[member]).is_some() {
        lock(&machines.world).event(format!("m{member} not restarted: its agent holds it for a recovery claim"));
        return;
    }
    let mut world = lock(&machines.world);
    let initial: Vec<String> = world.nodes.iter().map(|node| format!("{}={}", node.name, node.peer_url)).collect();
    let _ = world.start(member, &initial.join(","), "existing", TOKEN);
}

/// etcd on `member` dies and stays down `down_ms`; then its supervisor brings it
/// back: the restart above, or systemd's `Restart=` through `reconfigure`.
async fn crash_etcd(machines: &Machines, member: usize, down_ms: u64) {
    if machines.systemds.is_empty() {
        lock(&machines.world).stop(member);
        sleep_ms(down_ms).await;
        restart_etcd(machines, member).await;
    } else {
        crate::systemd::crash(&machines.world, member, down_ms);
        sleep_ms(down_ms).await;
    }
}

fn set_zone(machines: &Machines, members: &[usize], zone: u32) {
    let mut world = lock(&machines.world);
    for member in members {
        world.nodes[*member].zone = zone;
    }
    world.event(format!("zone of {members:?} set to {zone}"));
    world.settle();
}

async fn apply(machines: &Machines, fault: Fault) {
    lock(&machines.world).event(format!("fault: {fault:?}"));
    match fault {
        Fault::CrashRestart { member, down_ms } => crash_etcd(machines, member, down_ms).await,
        Fault::WipeMember { member } => lock(&machines.world).wipe(member),
        // Then its supervisor starts it again on the damaged disk, as after any
        // crash, and it exits.
        Fault::DamageData { member } => {
            lock(&machines.world).damage(member);
            crash_etcd(machines, member, 1_000).await;
        }
        Fault::LoseMember { member } => {
            machines.lose(member);
            sleep_ms(REBOOT_MS).await;
            machines.boot(member);
        }
        Fault::RestartAllEmpty => {
            for member in 0..machines.agents.len() {
                machines.lose(member);
            }
            sleep_ms(REBOOT_MS).await;
            for member in 0..machines.agents.len() {
                machines.boot(member);
            }
        }
        Fault::Partition { isolated, heal_after_ms } => {
            set_zone(machines, &isolated, 1);
            sleep_ms(heal_after_ms).await;
            set_zone(machines, &isolated, 0);
        }
        Fault::IsolateAgent { member, heal_after_ms } => {
            set_zone(machines, &[member], 100 + member as u32);
            sleep_ms(heal_after_ms).await;
            set_zone(machines, &[member], 0);
        }
        Fault::StoreOutage { duration_ms } => {
            store_down(machines, true);
            sleep_ms(duration_ms).await;
            store_down(machines, false);
        }
        Fault::UnconditionalStore => lock(&machines.world).store_unconditional = true,
        Fault::CorruptLatestSnapshot => {
            let truncate = thread_rng().gen_bool(0.5);
            lock(&machines.world).corrupt_latest_snapshot(truncate);
        }
        Fault::AgentCrashMidReplace { member, after_step } => {
            let peer_url = lock(&machines.world).nodes[member].peer_url.clone();
            loop {
                sleep_ms(5).await;
                let world = lock(&machines.world);
                let removed = world.stats.removals.iter().any(|(_, url)| *url == peer_url);
                let reached = match after_step {
                    ReplaceStep::Removed => removed,
                    ReplaceStep::Wiped => removed && !world.nodes[member].data_dir.exists(),
                    ReplaceStep::Added => {
                        removed
                            && world.clusters.values().any(|cluster| {
                                cluster.members.iter().any(|entry| entry.peer_url == peer_url && entry.name.is_empty())
                            })
                    }
                };
                if reached {
                    break;
                }
            }
            machines.kill_agent(member);
            sleep_ms(3_000).await;
            machines.restart_agent(member);
        }
        Fault::AgentCrashMidRecovery { member } => {
            loop {
                sleep_ms(5).await;
                let world = lock(&machines.world);
                if world.objects.keys().any(|key| key.contains("/coordination/epochs/")) {
                    break;
                }
            }
            machines.kill_agent(member);
            sleep_ms(3_000).await;
            machines.restart_agent(member);
        }
        Fault::Flap { member, down_ms, up_ms, times } => {
            for _ in 0..times {
                crash_etcd(machines, member, down_ms).await;
                sleep_ms(up_ms).await;
            }
        }
        Fault::ClockSkew { member, skew_ms } => {
            machines.skews[member].store(skew_ms, Ordering::Relaxed);
        }
        Fault::KillAgent { member, down_ms } => {
            machines.kill_agent(member);
            sleep_ms(down_ms).await;
            machines.restart_agent(member);
        }
        Fault::CutStore { members, heal_after_ms } => {
            lock(&machines.world).store_cut.extend(members.iter().copied());
            sleep_ms(heal_after_ms).await;
            let mut world = lock(&machines.world);
            for member in &members {
                world.store_cut.remove(member);
            }
            world.event(format!("store reachable again from {members:?}"));
        }
        Fault::FlakyStore { duration_ms, fail_percent, extra_latency_ms } => {
            lock(&machines.world).store_flaky = Some((fail_percent, extra_latency_ms));
            sleep_ms(duration_ms).await;
            let mut world = lock(&machines.world);
            world.store_flaky = None;
            world.event("store steady again".into());
        }
        Fault::SkewLeader { skew_ms } => {
            let leader = lock(&machines.world).clusters.values().find_map(|cluster| cluster.leader);
            if let Some(member) = leader {
                machines.skews[member].store(skew_ms, Ordering::Relaxed);
                lock(&machines.world).event(format!("clock of m{member} (the leader) stepped by {skew_ms} ms"));
            }
        }
        Fault::CrashLeader { down_ms } => {
            let leader = lock(&machines.world).clusters.values().find_map(|cluster| cluster.leader);
            if let Some(member) = leader {
                crash_etcd(machines, member, down_ms).await;
            }
        }
    }
}

fn store_down(machines: &Machines, down: bool) {
    let mut world = lock(&machines.world);
    world.store_down = down;
    world.event(format!("store {}", if down { "down" } else { "up" }));
}

/// Faults drawn from the seed on top of the schedule. They never change what the
/// scenario expects: an agent crash (every step must be resumable) and a short
/// store blip.
#[derive(Clone, Debug)]
enum RandomFault {
    AgentCrash { member: usize, at_ms: u64, down_ms: u64 },
    StoreBlip { at_ms: u64, down_ms: u64 },
}

impl RandomFault {
    fn end_ms(&self) -> u64 {
        match self {
            RandomFault::AgentCrash { at_ms, down_ms, .. } | RandomFault::StoreBlip { at_ms, down_ms } => {
                at_ms + down_ms
            }
        }
    }
    fn describe(&self) -> String {
        format!("random: {self:?}")
    }
    async fn apply(self, machines: &Machines) {
        match self {
            RandomFault::AgentCrash { member, at_ms, down_ms } => {
                sleep_ms(at_ms).await;
                machines.kill_agent(member);
                sleep_ms(down_ms).await;
                machines.restart_agent(member);
            }
            RandomFault::StoreBlip { at_ms, down_ms } => {
                sleep_ms(at_ms).await;
                store_down(machines, true);
                sleep_ms(down_ms).await;
                store_down(machines, false);
            }
        }
    }
}

fn random_faults(scenario: &Scenario) -> Vec<RandomFault> {
    let mut rng = thread_rng();
    let mut faults = Vec::new();
    let latest = scenario.duration_ms.saturating_sub(200_000).max(20_000);
    if rng.gen_bool(0.5) {
        faults.push(RandomFault::AgentCrash {
            member: rng.gen_range(0..scenario.members),
            at_ms: rng.gen_range(10_000..latest),
            down_ms: rng.gen_range(500..10_000),
        });
    }
    if rng.gen_bool(0.3) {
        faults
            .push(RandomFault::StoreBlip { at_ms: rng.gen_range(10_000..latest), down_ms: rng.gen_range(500..5_000) });
    }
    faults
}

/// Invariant 5, the scenario's expected recovery, and its extra checks.
fn final_checks(world: &mut World, scenario: &Scenario, faults_end: u64, log_checked: bool) {
    let healthy = world.healthy_members();
    if healthy < scenario.members && scenario.expected.recovery != Recovery::Refused {
        let detail = (0..world.nodes.len())
            .filter(|node| !world.healthy(*node))
            .map(|node| {
                let state = &world.nodes[node];
                format!("{} (running: {}, zone {})", state.name, state.running, state.zone)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "{healthy} of {} members healthy {} s after the faults ended; unhealthy: {detail}",
            scenario.members,
            (world.now_ms().saturating_sub(faults_end)) / 1000
        );
        world.violate(Invariant::Liveness, text);
    }
    let removed: std::collections::BTreeSet<String> = world.stats.removals.iter().map(|(_, url)| url.clone()).collect();
    let epochs = world.stats.epochs.len();
    let expected = match scenario.expected.recovery {
        Recovery::None => (removed.is_empty() && epochs == 0).then_some(()).ok_or("no recovery"),
        Recovery::Replace { count } => (removed.len() == count && epochs == 0).then_some(()).ok_or("replacements"),
        Recovery::DisasterRecovery => (epochs == 1).then_some(()).ok_or("exactly one disaster recovery"),
        Recovery::Any => Ok(()),
        Recovery::Refused => (removed.is_empty() && epochs == 0).then_some(()).ok_or("no automatic recovery"),
    };
    if let Err(what) = expected {
        let text = format!(
            "expected {what} ({:?}); saw {} member(s) replaced ({}) and {epochs} disaster recover(ies)",
            scenario.expected.recovery,
            removed.len(),
            removed.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        world.violate(Invariant::Expectation, text);
    }
    let lost = world.stats.lost_by_recovery;
    let disk_lost = scenario.faults.iter().any(|fault| {
        matches!(fault.fault, Fault::WipeMember { .. } | Fault::LoseMember { .. } | Fault::RestartAllEmpty)
    });
    let no_loss = match scenario.expected.loss {
        Loss::None => true,
        Loss::NoneUnlessDiskLost => !disk_lost,
        Loss::BoundedBySnapshotInterval => false,
    };
    if no_loss && lost > 0 {
        let text = format!("{lost} acknowledged writes lost to a disaster recovery");
        world.violate(Invariant::NoAcknowledgedWriteLost, text);
    }
    // Invariant 2's bound (the RPO): what a recovery leaves behind was written within
    // one snapshot interval plus a check interval (the save's own time) before the loss,
    // one more interval for each damaged snapshot the recovery had to skip. In a drawn
    // schedule, the time store and agent faults kept saves from happening widens it.
    let policy = Policy::default();
    let intervals = 1 + world.stats.corrupted_keys.len() as u64;
    let unsaved_ms: u64 = match scenario.expected.loss {
        Loss::NoneUnlessDiskLost => scenario
            .faults
            .iter()
            .filter(|fault| {
                !matches!(
                    fault.fault,
                    Fault::WipeMember { .. }
                        | Fault::LoseMember { .. }
                        | Fault::RestartAllEmpty
                        | Fault::ClockSkew { .. }
                )
            })
            .map(|fault| crate::nemesis::duration_ms(&fault.fault) + policy.snapshot_interval_ms)
            .sum(),
        _ => 0,
    };
    let window_ms = intervals * policy.snapshot_interval_ms + policy.check_interval_ms + unsaved_ms;
    if log_checked {
        // With the revision log, a recovery restores at least as far as the log reached
        // in the store: it leaves behind only what the log had not flushed (one flush
        // interval while the writer runs), however many snapshots were skipped or missing.
        // The snapshot-interval window above stays the bound for when the writer was down.
        for (restored, log_end) in world.stats.log_at_restore.clone() {
            if let Some(end) = log_end.filter(|end| restored < *end) {
                let text = format!("a recovery restored revision {restored}, but the revision log reached {end}");
                world.violate(Invariant::RestoredStateExact, text);
            }
        }
    }
    let bound = scenario.workload.writes_per_second as u64 * window_ms / 1000;
    if lost > bound {
        let text = format!(
            "a disaster recovery left {lost} acknowledged writes behind, more than {window_ms} ms of writes ({bound})"
        );
        world.violate(Invariant::RestoredStateExact, text);
    }
    for check in scenario.expected.checks {
        if let Err(text) = extra_check(world, scenario, *check) {
            world.violate(Invariant::Expectation, format!("{check:?}: {text}"));
        }
    }
}

/// Versioned snapshots in the store now (after retention).
fn versioned(world: &World) -> Vec<(String, i64)> {
    world
        .objects
        .keys()
        .filter(|key| {
            key.contains("/exported/etcd-snapshots/") && key.ends_with(".db") && !key.ends_with("/snapshot.db")
        })
        .filter_map(|key| {
            let name = key.rsplit('/').next()?;
            let parsed: lifeboat::SnapshotName = name.parse().ok()?;
            Some((name.to_owned(), parsed.revision().0))
        })
        .collect()
}

/// Versioned snapshots written (by the store's clock) no later than `at_ms`,
/// whether retention deleted them since or not.
fn versioned_before(world: &World, at_ms: u64) -> Vec<(String, i64)> {
    let mut written: Vec<(String, i64)> = world
        .stats
        .versioned_written
        .iter()
        .filter(|(modified_ms, _)| *modified_ms <= at_ms)
        .filter_map(|(_, name)| {
            let parsed: lifeboat::SnapshotName = name.parse().ok()?;
            Some((name.clone(), parsed.revision().0))
        })
        .collect();
    written.sort();
    written.dedup();
    written
}

fn extra_check(world: &World, scenario: &Scenario, check: Check) -> Result<(), String> {
    match check {
        Check::SnapshotsKeepComing => {
            // Saves kept coming, and retention pruned the oldest: at most keep-last remain
            // (one more for a save that finished after the last prune), at least one went.
            let kept = versioned(world).len() as u64;
            let saved = u64::from(world.stats.saves);
            let keep_last = u64::from(Policy::default().retention.keep_last);
            let latest = world.objects.keys().any(|key| key.ends_with("/exported/etcd-snapshots/snapshot.db"));
            if kept == 0 || !latest || saved <= kept || kept > keep_last + 1 {
                return Err(format!(
                    "{saved} saves, {kept} versioned snapshots kept (keep-last {keep_last}), snapshot.db present: {latest}"
                ));
            }
            Ok(())
        }
        Check::SaveRecoversAfterOutage => {
            let outage_end = scenario.faults.iter().map(fault_end).max().unwrap_or(0);
            let after = world
                .objects
                .iter()
                .filter(|(key, _)| key.ends_with(".manifest.json"))
                .any(|(_, object)| object.modified_ms > outage_end);
            after.then_some(()).ok_or_else(|| "no snapshot saved after the outage".into())
        }
        Check::CorruptSnapshotRefused => {
            // Invariant 6 is checked at every restore; here: the corruption hit the snapshot
            // a recovery would have picked first (the newest then), and a recovery restored
            // another one.
            let Some(corrupted) = world.stats.corrupted_keys.first() else {
                return Err("nothing was corrupted".into());
            };
            let at_ms = fault_time(scenario, |fault| matches!(fault, Fault::CorruptLatestSnapshot));
            let name = corrupted.rsplit('/').next().unwrap_or_default();
            let highest = versioned_before(world, at_ms).iter().map(|(_, revision)| *revision).max();
            let was_newest = name.parse::<lifeboat::SnapshotName>().ok().map(|own| own.revision().0) == highest;
            let restored_other =
                !world.stats.restored_keys.is_empty() && world.stats.restored_keys.iter().all(|key| key != corrupted);
            (restored_other && was_newest)
                .then_some(())
                .ok_or_else(|| format!("{name}: newest when corrupted {was_newest}, another restored {restored_other}"))
        }
        Check::NoThrash => {
            let removals = world.stats.removals.len();
            (removals <= 1).then_some(()).ok_or_else(|| format!("{removals} removals"))
        }
        Check::SkewTolerated => {
            // Leadership moved between clocks that disagree, so names from the clock that is
            // behind sort before older snapshots. The recovery must still restore at least the
            // highest revision saved before the disks were lost.
            let at_ms = fault_time(scenario, |fault| matches!(fault, Fault::RestartAllEmpty));
            let before: Vec<lifeboat::SnapshotName> =
                versioned_before(world, at_ms).iter().filter_map(|(name, _)| name.parse().ok()).collect();
            let highest = before.iter().map(|name| name.revision()).max();
            let reordered = before.iter().any(|left| {
                before.iter().any(|right| left.created() < right.created() && left.revision() > right.revision())
            });
            let restored: Option<lifeboat::Revision> = world
                .stats
                .restored_keys
                .first()
                .and_then(|key| key.rsplit('/').next())
                .and_then(|name| name.parse::<lifeboat::SnapshotName>().ok())
                .map(|name| name.revision());
            if !reordered {
                return Err("the skew never reordered names: no save from the clock that is behind".into());
            }
            // The revision log may carry the restore past the highest snapshot, never short of it.
            if restored < highest {
                return Err(format!("restored revision {restored:?}, but {highest:?} was saved before the loss"));
            }
            Ok(())
        }
        Check::NewestSurvivorRestored => match world.stats.survivors_at_restore.first() {
            Some((restored, Some(survivor))) if restored < survivor => {
                Err(format!("restored revision {restored}, but a surviving member held {survivor}"))
            }
            Some(_) => Ok(()),
            None => Err("no recovery ran".into()),
        },
        // A property of real byte streams, which the model does not carry: the pipeline's
        // tests bound its buffers and scripts/bench measures peak RSS. Not a simulator check.
        Check::ConstantMemory => Err("the simulator cannot judge memory; run this check on processes".into()),
    }
}

/// When the scenario's first fault of a kind struck (the end of the run if none).
fn fault_time(scenario: &Scenario, kind: impl Fn(&Fault) -> bool) -> u64 {
    scenario.faults.iter().filter(|fault| kind(&fault.fault)).map(|fault| fault.at_ms).min().unwrap_or(u64::MAX)
}

/// Seeds run and what they found, for one scenario.
pub fn violations_text(report: &RunReport) -> String {
    report
        .violations
        .iter()
        .map(|violation| format!("[{}] at {} ms: {}", violation.invariant.label(), violation.at_ms, violation.detail))
        .collect::<Vec<_>>()
        .join("\n")
}
