//! The production default, `--member-control systemd`, in the simulator.
//!
//! etcd and its agent are separate units that fail separately. etcd's unit has
//! `Restart=` and an `ExecStartPre` that runs the production `lifeboat reconfigure`
//! (a prepare-only [`Driver`] writing the environment file), exactly as the shipped
//! drop-in `etcd-member.service.d/10-lifeboat.conf` says; the agent starts and stops
//! etcd only through `systemctl`, and at boot the unit starts on its own, whether
//! the agent is up or not. Child mode (the agent supervises etcd) stays the
//! catalogue's default; `--member-control systemd` runs either harness this way,
//! and the nemesis draws the mode from the seed.

use crate::flaws::Flaw;
use crate::model::{lock, Invariant, Shared};
use crate::ports::{SimBuilder, SimClock, SimEtcd, SimStore};
use lifeboat::reconfigure::StartPlan;
use lifeboat::StoreLayout;
use lifeboat_runtime::agent::{AgentSettings, Driver};
use lifeboat_runtime::host::files;
use lifeboat_runtime::member::{Launch, MemberError, MemberSpec};
use lifeboat_runtime::ports::LocalMember;
use serde::Serialize;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

/// How etcd is run beside the agent, as `lifeboat agent --member-control` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MemberControl {
    /// The agent starts etcd as its child and restarts it when it dies.
    Child,
    /// etcd is a systemd unit with `Restart=` and `ExecStartPre=lifeboat reconfigure`.
    Systemd,
}

/// etcd's `Restart=` delay in the shipped drop-in.
pub const RESTART_SEC_MS: u64 = 5_000;
const UNIT: &str = "etcd-member.service";

/// What systemd knows about one machine's etcd unit.
#[derive(Clone, Debug, Default)]
pub struct Unit {
    /// Started (at boot or by `systemctl start`) and not stopped since: `Restart=`
    /// brings etcd back when it dies.
    pub wanted: bool,
    /// The launch settings in `/run/lifeboat/etcd.env` (gone at a reboot: /run is tmpfs).
    pub environment: Option<Launch>,
    /// A start job (ExecStartPre, then etcd) is running; systemd runs one at a time.
    pub starting: bool,
    /// Counts `systemctl stop`s: a stop cancels the start job in flight.
    pub stops: u64,
    /// A crashed etcd stays down until then (the fault's outage), then `Restart=` acts.
    pub down_until_ms: u64,
}

/// One machine's ports and settings, from which its `lifeboat reconfigure` runs.
#[derive(Clone)]
pub struct Machine {
    pub world: Shared,
    pub index: usize,
    pub settings: AgentSettings,
    pub spec: MemberSpec,
    pub endpoints: Vec<String>,
    pub layout: StoreLayout,
    pub skew: Arc<AtomicI64>,
    pub flaw: Option<Flaw>,
}

impl Machine {
    /// `systemctl start etcd-member`: one start job at a time; ExecStartPre
    /// (`lifeboat reconfigure`) decides and writes the environment file, then etcd
    /// starts from it. A `systemctl stop` while the job runs cancels it.
    /// `by_agent`: the agent's own `systemctl start`, not systemd's (boot, `Restart=`).
    pub async fn start_unit(&self, by_agent: bool) -> Result<(), String> {
        loop {
            {
                let mut world = lock(&self.world);
                if world.nodes[self.index].running {
                    world.units[self.index].wanted = true;
                    return Ok(());
                }
                if !world.units[self.index].starting {
                    world.units[self.index].starting = true;
                    world.units[self.index].wanted = true;
                    break;
                }
            }
            madsim::time::sleep(Duration::from_millis(100)).await;
        }
        // The job ends with this call, or with the task that runs it: an agent killed
        // in `systemctl start` leaves a failed job behind, which `Restart=` retries.
        let _job = StartJob { world: &self.world, index: self.index };
        let stops = lock(&self.world).units[self.index].stops;
        let prepared = self.reconfigure().await;
        let mut world = lock(&self.world);
        world.units[self.index].starting = false;
        if world.units[self.index].stops != stops {
            return Err("the start job was cancelled by `systemctl stop`".into());
        }
        prepared?;
        // Checker: while a process holds the member lock it is changing the data dir
        // (moved aside, half restored, a learner not yet added) and the environment
        // file may still be the old cluster's; a start systemd began on its own may
        // run etcd only when that process is starting it itself (the marker).
        if !by_agent && files::member_locked_elsewhere(&self.spec) && !files::start_prepared_elsewhere(&self.spec) {
            let name = world.nodes[self.index].name.clone();
            world.violate(
                Invariant::NoStartMidChange,
                format!(
                    "systemd started {name}'s etcd while another process held its member lock to change its data dir"
                ),
            );
        }
        let launch = world.units[self.index].environment.clone().ok_or("no environment file to start etcd from")?;
        world.start(self.index, &launch.initial_cluster, &launch.initial_cluster_state, &launch.initial_cluster_token)
    }

    /// `ExecStartPre=lifeboat reconfigure`: the production command's driver, with
    /// the environment file as its member.
    async fn reconfigure(&self) -> Result<(), String> {
        let mut settings = self.settings.clone();
        settings.prepare_only = true;
        let (world, flaw) = (self.world.clone(), self.flaw);
        let etcd = SimEtcd { world: world.clone(), me: self.index, endpoints: self.endpoints.clone(), flaw };
        let store = SimStore { world: world.clone(), me: self.index, flaw };
        let local = EnvironmentFile { world: world.clone(), node: self.index, spec: self.spec.clone() };
        let clock = SimClock { skew_ms: self.skew.clone() };
        let builder = SimBuilder { world: world.clone(), flaw };
        let mut driver = Driver::new(settings, etcd, store, self.layout.clone(), local, clock, builder)
            .map_err(|error| format!("reconfigure cannot open its state dir: {error}"))?;
        let outcome = driver.reconfigure_and_start().await;
        let mut world = lock(&self.world);
        let name = &world.nodes[self.index].name;
        let text = match &outcome {
            Ok(plan @ (StartPlan::AwaitRecovery | StartPlan::AwaitLockHolder)) => {
                format!("{name} reconfigure: {plan:?}: etcd must not start yet (exit 8)")
            }
            Ok(plan) => format!("{name} reconfigure: {plan:?}"),
            Err(error) => format!("{name} reconfigure failed: {error}"),
        };
        world.event(text.clone());
        match outcome {
            Ok(StartPlan::AwaitRecovery | StartPlan::AwaitLockHolder) | Err(_) => Err(text),
            Ok(_) => Ok(()),
        }
    }

    /// `systemctl stop etcd-member`: etcd stops and `Restart=` leaves it down.
    pub fn stop_unit(&self) {
        let mut world = lock(&self.world);
        world.units[self.index].wanted = false;
        world.units[self.index].stops += 1;
        world.stop(self.index);
    }

    /// systemd itself on this machine: the unit is enabled, so it starts at boot,
    /// and `Restart=` starts it again whenever etcd is down while it is wanted.
    pub async fn run_systemd(self) {
        {
            let mut world = lock(&self.world);
            world.units[self.index] = Unit { wanted: true, ..Unit::default() };
        }
        loop {
            let (due, wait_ms) = {
                let world = lock(&self.world);
                let unit = &world.units[self.index];
                let down = unit.wanted && !unit.starting && !world.nodes[self.index].running;
                let now = world.now_ms();
                (down && now >= unit.down_until_ms, if down { unit.down_until_ms.saturating_sub(now) } else { 0 })
            };
            if due {
                if let Err(error) = self.start_unit(false).await {
                    {
                        let mut world = lock(&self.world);
                        let name = world.nodes[self.index].name.clone();
                        world.event(format!("{name}: {UNIT} failed to start ({error}); Restart= tries again"));
                    }
                    madsim::time::sleep(Duration::from_millis(RESTART_SEC_MS)).await;
                }
                continue;
            }
            // Restart= acts the moment a crashed etcd's outage ends (systemd sees the
            // exit at once); otherwise look again in a second.
            let wait = if wait_ms > 0 { wait_ms } else { 1_000 };
            madsim::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

/// A running start job; when dropped, the unit no longer counts as starting.
struct StartJob<'a> {
    world: &'a Shared,
    index: usize,
}

impl Drop for StartJob<'_> {
    fn drop(&mut self) {
        lock(self.world).units[self.index].starting = false;
    }
}

/// A crash of a unit's etcd: down for `down_ms`, then `Restart=` (through
/// ExecStartPre) brings it back if it is still wanted.
pub fn crash(world: &Shared, member: usize, down_ms: u64) {
    let mut world = lock(world);
    let until = world.now_ms() + down_ms;
    world.units[member].down_until_ms = until;
    world.stop(member);
}

/// The agent's view of its member under systemd (`SystemdMember` in production):
/// start writes the environment file, then `systemctl start`; stop is `systemctl stop`.
pub struct SimUnitMember {
    pub machine: Machine,
}

impl LocalMember for SimUnitMember {
    fn spec(&self) -> &MemberSpec {
        &self.machine.spec
    }

    async fn is_running(&self) -> bool {
        lock(&self.machine.world).nodes[self.machine.index].running
    }

    async fn start(&self, launch: &Launch) -> Result<(), MemberError> {
        crate::ports::latency(5, 50).await;
        lock(&self.machine.world).units[self.machine.index].environment = Some(launch.clone());
        self.machine.start_unit(true).await.map_err(|detail| MemberError::Systemd {
            verb: "start",
            unit: UNIT.into(),
            detail,
        })
    }

    async fn stop(&self) -> Result<(), MemberError> {
        crate::ports::graceful_stop(&self.machine.world, self.machine.index).await;
        self.machine.stop_unit();
        Ok(())
    }
}

/// `reconfigure`'s member (`EnvironmentFileMember` in production): systemd is
/// starting etcd right now, so "start" only writes the environment file.
struct EnvironmentFile {
    world: Shared,
    node: usize,
    spec: MemberSpec,
}

impl LocalMember for EnvironmentFile {
    fn spec(&self) -> &MemberSpec {
        &self.spec
    }

    async fn is_running(&self) -> bool {
        false
    }

    async fn start(&self, launch: &Launch) -> Result<(), MemberError> {
        lock(&self.world).units[self.node].environment = Some(launch.clone());
        Ok(())
    }

    async fn stop(&self) -> Result<(), MemberError> {
        Ok(())
    }
}

/// The agent's member in either mode (the driver takes one type).
pub enum AgentMember {
    Child(crate::ports::SimMember),
    Unit(Box<SimUnitMember>),
}

impl LocalMember for AgentMember {
    fn spec(&self) -> &MemberSpec {
        match self {
            AgentMember::Child(member) => member.spec(),
            AgentMember::Unit(member) => member.spec(),
        }
    }

    async fn is_running(&self) -> bool {
        match self {
            AgentMember::Child(member) => member.is_running().await,
            AgentMember::Unit(member) => member.is_running().await,
        }
    }

    async fn start(&self, launch: &Launch) -> Result<(), MemberError> {
        match self {
            AgentMember::Child(member) => member.start(launch).await,
            AgentMember::Unit(member) => member.start(launch).await,
        }
    }

    async fn stop(&self) -> Result<(), MemberError> {
        match self {
            AgentMember::Child(member) => member.stop().await,
            AgentMember::Unit(member) => member.stop().await,
        }
    }
}
