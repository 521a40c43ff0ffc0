//! The agent driver: a thin pump around the core's [`lifeboat::Agent`].
//!
//! It observes (member list, per-member health, the store, peer heartbeats,
//! recovery epochs), hands the observation to the core, and carries out what the
//! core decides (save, prune, replace itself, disaster recovery), reporting each
//! outcome back. It is generic over its ports (etcd, store, local member, clock)
//! so the simulator can run the same driver.

use crate::catalog;
use crate::coordination::{self, EpochListing, EpochRecord, Heartbeat, JoinRecord};
use crate::journal::Journal;
use crate::member::{self, Launch, LocalMember};
use crate::pipeline::PipelineSettings;
use crate::ports::{EtcdCluster, SnapshotStore};
use crate::replace::{self, ReplaceSettings};
use crate::restore::{self, DataDirBuilder, RestoreSettings, SnapshotChoice};
use crate::save::{self, SaveSettings};
use lifeboat::reconfigure::{self, Facts, StartPlan};
use lifeboat::recovery::{self, EpochOutcome, EpochStep, LocalFacts};
use lifeboat::{
    Action, Agent, Compression, Member, MemberHealth, MemberId, Millis, Observation, Outcome, Policy, Revision,
    SnapshotMeta, SnapshotName, StoreLayout, StoreObservation,
};
use serde_json::json;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Time as the driver sees it: two clocks, because a wall clock can step (NTP, an
/// operator, a VM resumed) and the core's timers must not. Production: the system
/// clock and a monotonic one; the simulator: virtual time, skewed and stepped per
/// agent for `now` only.
pub trait Clock {
    /// Wall-clock time: snapshot names, journal timestamps, moved-aside suffixes.
    fn now(&self) -> Millis;
    /// Time that never goes back, for the core's timers (from an arbitrary origin).
    fn monotonic(&self) -> Millis;
    /// Sleeps until `deadline` on the monotonic clock.
    async fn sleep_until(&self, deadline: Millis);
}

pub struct SystemClock;

/// The monotonic clock's origin: the first time anything asked.
static ORIGIN: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        save::wall_clock_now()
    }
    fn monotonic(&self) -> Millis {
        let origin = *ORIGIN.get_or_init(tokio::time::Instant::now);
        Millis(u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX))
    }
    async fn sleep_until(&self, deadline: Millis) {
        let wait = deadline.saturating_sub(self.monotonic());
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// One configured member of the cluster: stable across incarnations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfiguredMember {
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
}

#[derive(Clone, Debug)]
pub struct AgentSettings {
    pub cluster: String,
    pub policy: Policy,
    pub compression: Compression,
    pub pipeline: PipelineSettings,
    /// Every member, in `--initial-cluster` order; the bootstrap cluster and the
    /// cluster a disaster recovery restores.
    pub members: Vec<ConfiguredMember>,
    pub initial_cluster_token: String,
    pub state_dir: PathBuf,
    /// Start and restart the local etcd (child mode); off when systemd does it.
    pub supervise: bool,
    /// `reconfigure` in a unit's ExecStartPre: etcd starts after us, so a replaced
    /// member joins as a voter (a learner would need a promotion nobody waits for).
    pub prepare_only: bool,
    pub dry_run: bool,
}

impl AgentSettings {
    pub fn initial_cluster(&self) -> String {
        self.members.iter().map(|member| format!("{}={}", member.name, member.peer_url)).collect::<Vec<_>>().join(",")
    }
    /// Three missed checks, plus the store's timestamp resolution: S3 reports
    /// `LastModified` in whole seconds, so two heartbeats written 100 ms apart can
    /// look a second apart. Too short a window makes fresh peers look dead, and an
    /// isolated agent would then recover a healthy cluster (split brain).
    fn heartbeat_freshness_ms(&self) -> u64 {
        3 * self.policy.check_interval_ms + 2_000
    }
}

pub struct Driver<E, S, L, C, B> {
    settings: AgentSettings,
    builder: B,
    etcd: E,
    store: S,
    layout: StoreLayout,
    local: L,
    clock: C,
    agent: Agent,
    journal: Journal,
    /// The recovery epoch of the local data (persisted in the state dir).
    epoch: u64,
    local_id: Option<MemberId>,
    /// The last epoch-protocol step journaled, so a wait is journaled once.
    last_step: EpochStep,
    /// Malformed coordination records already journaled.
    malformed_seen: Vec<String>,
    /// The newest committed recovery epoch any listing showed (0: none).
    newest_committed_seen: u64,
    /// Whether the store honours create-if-absent; `None` until probed (the first
    /// round the store answers). Disaster recovery runs only on `Some(true)`.
    conditional_puts: Option<bool>,
}

/// Where a recovery stands after this agent's part in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// This member was restored into the epoch.
    Applied,
    /// The claim waits for votes (this member joined it, or is about to).
    Pending,
}

const HOLDING_FILE: &str = "holding-epoch";

/// The claim this member stopped its etcd for: `<epoch>` in `<state-dir>/holding-epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holding {
    pub epoch: u64,
}

/// The claim this member stopped its etcd for, if any.
pub fn read_holding(state_dir: &std::path::Path) -> Option<Holding> {
    let text = std::fs::read_to_string(state_dir.join(HOLDING_FILE)).ok()?;
    let epoch = text.split_whitespace().next()?.parse().ok()?;
    Some(Holding { epoch })
}

fn epoch_path(settings: &AgentSettings) -> PathBuf {
    settings.state_dir.join("epoch")
}

/// The epoch the local data dir belongs to; 0 before any recovery.
pub fn read_epoch(state_dir: &std::path::Path) -> u64 {
    std::fs::read_to_string(state_dir.join("epoch")).ok().and_then(|text| text.trim().parse().ok()).unwrap_or(0)
}

/// Synthetic IDs for configured members until the cluster tells the real ones.
fn configured_members(settings: &AgentSettings) -> Vec<Member> {
    settings
        .members
        .iter()
        .enumerate()
        .map(|(index, member)| Member {
            id: MemberId(index as u64 + 1),
            name: member.name.clone(),
            peer_urls: vec![member.peer_url.clone()],
            client_urls: vec![member.client_url.clone()],
            is_learner: false,
        })
        .collect()
}

impl<E: EtcdCluster, S: SnapshotStore, L: LocalMember, C: Clock, B: DataDirBuilder> Driver<E, S, L, C, B> {
    pub fn new(
        settings: AgentSettings,
        etcd: E,
        store: S,
        layout: StoreLayout,
        local: L,
        clock: C,
        builder: B,
    ) -> std::io::Result<Driver<E, S, L, C, B>> {
        let journal = Journal::open(&settings.state_dir)?;
        let agent = Agent::new(settings.policy.clone(), configured_members(&settings), clock.monotonic());
        let epoch = read_epoch(&settings.state_dir);
        Ok(Driver {
            settings,
            builder,
            etcd,
            store,
            layout,
            local,
            clock,
            agent,
            journal,
            epoch,
            local_id: None,
            last_step: EpochStep::Nothing,
            malformed_seen: Vec::new(),
            newest_committed_seen: 0,
            conditional_puts: None,
        })
    }

    fn now_text(&self) -> String {
        self.clock.now().to_rfc3339()
    }

    fn record(&self, event: &str, details: serde_json::Value) {
        self.journal.record(&self.now_text(), event, details);
    }

    /// Runs until `shutdown` resolves. The loop is the one DESIGN.md draws:
    /// timeouts → actions → outcomes, then sleep until the core's next deadline.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        self.record(
            "agent-started",
            json!({ "member": self.local.spec().name, "epoch": self.epoch, "dry_run": self.settings.dry_run }),
        );
        loop {
            let now = self.clock.monotonic();
            self.agent.handle_timeout(now);
            while let Some(action) = self.agent.poll_action() {
                self.execute(action).await;
            }
            let deadline =
                self.agent.poll_timeout().unwrap_or(now.saturating_add(self.settings.policy.check_interval_ms));
            tokio::select! {
                biased;
                () = self.clock.sleep_until(deadline) => {}
                () = &mut shutdown => {
                    self.record("agent-stopped", json!({}));
                    return;
                }
            }
        }
    }

    async fn execute(&mut self, action: Action) {
        let now = self.clock.now();
        match action {
            Action::CheckHealth => {
                if self.settings.supervise && !self.local.is_running().await {
                    // Journaled either way; the next check tries again.
                    let _ = self.reconfigure_and_start().await;
                } else if !self.settings.dry_run && replace::state_path(self.local.spec()).exists() {
                    // A replacement was interrupted (agent killed, promotion timed out) with
                    // etcd still running, e.g. as a learner nobody promotes: finish it.
                    // Found by the simulator (member-disk-wiped, seed 89).
                    self.record("replace-resume", json!({ "member": self.local.spec().name }));
                    if let Err(error) = self.replace_local(now.0).await {
                        self.record("replace-failed", json!({ "error": error }));
                    }
                }
                let observation = self.observe().await;
                self.agent.handle_observation(self.clock.monotonic(), observation);
            }
            Action::Save { source } => {
                self.record("decision", json!({ "action": "save", "source": source.to_string() }));
                let outcome = if self.settings.dry_run {
                    Outcome::SaveFailed
                } else {
                    let settings = self.save_settings();
                    match save::save(&self.etcd, &self.store, &self.layout, &settings, now).await {
                        Ok(report) => {
                            self.record("saved", json!({ "snapshot": report.name, "revision": report.revision, "size_bytes": report.size_bytes, "elapsed_ms": report.elapsed_ms }));
                            Outcome::Saved { snapshot: SnapshotMeta { name: report.name, verified: true } }
                        }
                        Err(error) => {
                            self.record("save-failed", json!({ "error": error.to_string() }));
                            tracing::warn!(error = %error, "save failed");
                            Outcome::SaveFailed
                        }
                    }
                };
                self.agent.handle_outcome(self.clock.monotonic(), outcome);
            }
            Action::Prune => {
                if !self.settings.dry_run {
                    let result = async {
                        let catalog = catalog::load(&self.store, &self.layout).await?;
                        catalog::prune(
                            &self.store,
                            &self.layout,
                            &catalog,
                            &self.settings.policy.retention,
                            now.0,
                            false,
                        )
                        .await
                    }
                    .await;
                    match result {
                        Ok(report) if !report.deleted.is_empty() || !report.orphans_deleted.is_empty() => self
                            .record("pruned", json!({ "deleted": report.deleted, "orphans": report.orphans_deleted })),
                        Ok(_) => {}
                        Err(error) => self.record("prune-failed", json!({ "error": error.to_string() })),
                    }
                }
                self.agent.handle_outcome(self.clock.monotonic(), Outcome::Pruned);
            }
            Action::Replace { member } => {
                self.record(
                    "decision",
                    json!({ "action": "replace", "member": member.id.to_string(), "name": member.name,
                            "successive_failures": self.agent.tracker().successive_failures(member.id) }),
                );
                let outcome = match self.replace_local(now.0).await {
                    Ok(()) => Outcome::Replaced { member: member.id },
                    Err(error) => {
                        self.record("replace-failed", json!({ "member": member.id.to_string(), "error": error }));
                        Outcome::ReplaceFailed { member: member.id }
                    }
                };
                self.agent.handle_outcome(self.clock.monotonic(), outcome);
            }
            Action::DisasterRecovery { snapshot, members } => {
                self.record(
                    "decision",
                    json!({ "action": "disaster-recovery", "newest_verified": snapshot,
                            "members_seen": members.iter().map(|member| member.name.clone()).collect::<Vec<_>>() }),
                );
                let result = match self.conditional_puts {
                    Some(true) => self.disaster_recovery(snapshot).await,
                    Some(false) => Err("refused: the store ignores create-if-absent writes (If-None-Match), so two \
                        agents could both claim a recovery; use a store that honours them (AWS S3, MinIO, SeaweedFS), \
                        or recover by hand with lifeboat restore"
                        .into()),
                    None => Err("the store has not been probed for create-if-absent writes yet".into()),
                };
                self.report_recovery(result);
            }
            Action::Warn(warning) => {
                tracing::warn!(?warning, "needs attention");
                self.record("warning", json!({ "warning": warning }));
            }
        }
    }

    /// One round of looking: etcd, the store, heartbeats and epochs.
    async fn observe(&mut self) -> Observation {
        let members = self.etcd.member_list().await.ok();
        let known: Vec<Member> = members.clone().unwrap_or_else(|| self.agent.members().to_vec());
        let spec = self.local.spec().clone();
        self.local_id = known
            .iter()
            .find(|member| member.peer_urls.iter().any(|url| url.trim_end_matches('/') == spec.peer_url))
            .map(|member| member.id);
        if let Some(local) = self.local_id {
            if self.agent.local_member() != Some(local) {
                self.agent = self.agent.clone().with_local_member(local);
            }
        }
        let this = &*self;
        let probes = known.iter().map(|member| {
            let url = member.client_urls.first().cloned().or_else(|| {
                this.settings
                    .members
                    .iter()
                    .find(|configured| member.peer_urls.contains(&configured.peer_url))
                    .map(|configured| configured.client_url.clone())
            });
            async move {
                match url {
                    Some(url) => {
                        let (health, status) =
                            futures::join!(this.etcd.endpoint_health(&url), this.etcd.endpoint_status(&url));
                        (MemberHealth { id: member.id, healthy: health.healthy }, status.ok())
                    }
                    None => (MemberHealth { id: member.id, healthy: false }, None),
                }
            }
        });
        let results = futures::future::join_all(probes).await;
        let leader = results
            .iter()
            .filter_map(|(_, status)| status.as_ref())
            .map(|status| status.leader)
            .find(|leader| leader.0 != 0);
        let local_status =
            results.iter().find(|(health, _)| Some(health.id) == self.local_id).and_then(|(_, status)| status.clone());
        let local_healthy = results.iter().any(|(health, _)| Some(health.id) == self.local_id && health.healthy);
        let health: Vec<MemberHealth> = results.iter().map(|(health, _)| *health).collect();

        // The store: snapshots, our heartbeat, our peers', and recovery epochs.
        let heartbeat = Heartbeat {
            member: spec.name.clone(),
            member_id: self.local_id.map(|id| id.to_string()),
            epoch: self.epoch,
            healthy: local_healthy,
            revision: local_status.as_ref().map(|status| status.revision.0),
            written_at: self.now_text(),
        };
        let store = async {
            let snapshots = quick_metas(&self.store, &self.layout).await?;
            coordination::write_heartbeat(&self.store, &self.layout, &heartbeat).await?;
            let peers = coordination::fresh_peer_heartbeats(
                &self.store,
                &self.layout,
                &spec.name,
                self.settings.heartbeat_freshness_ms(),
            )
            .await?;
            let epochs =
                coordination::load_epochs(&self.store, &self.layout, self.epoch, &self.configured_names()).await?;
            Ok::<_, crate::ports::StoreError>((snapshots, peers, epochs))
        }
        .await;
        // The old cluster has quorum when a quorum of its voters answered healthy this round.
        let voters: Vec<MemberId> = known.iter().filter(|member| member.is_voter()).map(|member| member.id).collect();
        let healthy_voters = health.iter().filter(|check| check.healthy && voters.contains(&check.id)).count();
        let old_cluster_has_quorum = !voters.is_empty() && healthy_voters >= lifeboat::membership::quorum(voters.len());
        let local_revision = local_status.as_ref().map(|status| status.revision);
        if store.is_ok() && self.conditional_puts.is_none() && !self.settings.dry_run {
            self.probe_conditional_puts().await;
        }
        let store = match store {
            Ok((snapshots, peers, epochs)) => {
                if let Some(result) = self.follow_epochs(epochs, old_cluster_has_quorum, local_revision).await {
                    if !matches!(result, Ok(Progress::Pending)) {
                        self.report_recovery(result);
                    }
                }
                let healthy_peer_heartbeats = peers
                    .iter()
                    .filter(|peer| peer.healthy && peer.epoch >= self.epoch)
                    .filter_map(|peer| known.iter().find(|member| member.name == peer.member).map(|member| member.id))
                    .collect();
                StoreObservation { reachable: true, snapshots, healthy_peer_heartbeats }
            }
            Err(error) => {
                tracing::warn!(error = %error, "store unreachable");
                StoreObservation::default()
            }
        };
        let healthy = health.iter().filter(|check| check.healthy).count();
        self.record(
            "observation",
            json!({ "members": known.len(), "healthy": healthy, "leader": leader.map(|id| id.to_string()),
                    "unhealthy": health.iter().filter(|check| !check.healthy).map(|check| check.id.to_string()).collect::<Vec<_>>(),
                    "store_reachable": store.reachable, "snapshots": store.snapshots.len(),
                    "healthy_peer_heartbeats": store.healthy_peer_heartbeats.len(), "epoch": self.epoch }),
        );
        Observation { members, health, leader, store }
    }

    /// Replaces the local member (remove, wipe, re-add, start, promote).
    async fn replace_local(&mut self, now_ms: u64) -> Result<(), String> {
        // A member that holds for a recovery claim, or whose data belongs to an older
        // epoch than one already committed, must follow the epoch first: replacing
        // itself would remove its place in the recovered cluster (found by the nemesis:
        // the store was cut while the claim committed, the new cluster saw this member
        // as never started, and its own agent removed it for good).
        if let Some(held) = self.holding_for() {
            return Err(format!("deferred: this member holds for recovery epoch {held}; it is decided first"));
        }
        if self.newest_committed_seen > self.epoch {
            return Err(format!(
                "deferred: recovery epoch {} is committed and this member's data is of epoch {}; it restores first",
                self.newest_committed_seen, self.epoch
            ));
        }
        let settings = ReplaceSettings {
            cluster: self.settings.cluster.clone(),
            lock_ttl_seconds: 120,
            catch_up_timeout: Duration::from_secs(120),
            learner: !self.settings.prepare_only,
            start: true,
            dry_run: self.settings.dry_run,
        };
        self.record("replace-started", json!({ "member": self.local.spec().name }));
        let report =
            replace::replace(&self.etcd, &self.local, &settings, now_ms).await.map_err(|error| error.to_string())?;
        self.record("replaced", json!({ "report": report }));
        Ok(())
    }

    /// Stops a supervised etcd on the way out, so a stopped agent leaves no orphan.
    pub async fn shutdown(&mut self) {
        if self.settings.supervise {
            if let Err(error) = self.local.stop().await {
                tracing::warn!(error = %error, "could not stop etcd");
            }
        }
    }

    /// What a member does before etcd starts (and when the supervised etcd died).
    ///
    /// Returns the plan carried out (`AwaitRecovery`: etcd must not start yet), or
    /// why it could not be; either way the journal has it. `reconfigure` in a unit's
    /// `ExecStartPre` turns both into an exit code that keeps etcd from starting.
    pub async fn reconfigure_and_start(&mut self) -> Result<StartPlan, String> {
        let spec = self.local.spec().clone();
        let peers = match self.etcd.member_list().await {
            Ok(members) => {
                let others = members.iter().filter(|member| !member.peer_urls.contains(&spec.peer_url));
                let mut healthy = 0;
                for member in others.clone() {
                    if let Some(url) = member.client_urls.first() {
                        if self.etcd.endpoint_health(url).await.healthy {
                            healthy += 1;
                        }
                    }
                }
                let voters = members.iter().filter(|member| member.is_voter()).count();
                (healthy >= lifeboat::membership::quorum(voters.max(1))).then_some(members)
            }
            Err(_) => None,
        };
        let listing = coordination::load_epochs(&self.store, &self.layout, self.epoch, &self.configured_names()).await;
        // Holding for a claim that is still undecided (or unknown: the store did not
        // answer) keeps etcd stopped; a decided or superseded claim releases it.
        let holding = match (&listing, self.holding_for()) {
            (_, None) => false,
            (Err(_), Some(_)) => true,
            (Ok(listing), Some(held)) => {
                listing.newest.as_ref().is_some_and(|(record, view)| record.epoch == held && view.outcome.is_none())
            }
        };
        let latest = listing.ok().and_then(|listing| listing.newest_committed);
        if let Some(record) = &latest {
            self.newest_committed_seen = self.newest_committed_seen.max(record.epoch);
        }
        // Unsure (store unreachable) counts as "the cluster existed": never bootstrap an
        // empty new cluster over one whose backups we merely failed to see.
        let snapshots_exist =
            quick_metas(&self.store, &self.layout).await.map(|metas| !metas.is_empty()).unwrap_or(true);
        let facts = Facts {
            has_data: member::has_data(&spec),
            local_epoch: self.epoch,
            latest_epoch: latest.as_ref().map(|record| record.epoch),
            holding,
            peers,
            peer_url: spec.peer_url.clone(),
            snapshots_exist,
        };
        let plan = reconfigure::plan(&facts);
        self.record("reconfigure", json!({ "facts": facts, "plan": plan }));
        if self.settings.dry_run {
            return Ok(plan);
        }
        let result = match plan {
            StartPlan::StartAsIs => {
                self.start(Launch {
                    initial_cluster: self.settings.initial_cluster(),
                    initial_cluster_state: "existing".into(),
                    initial_cluster_token: self.settings.initial_cluster_token.clone(),
                })
                .await
            }
            StartPlan::Bootstrap => {
                self.start(Launch {
                    initial_cluster: self.settings.initial_cluster(),
                    initial_cluster_state: "new".into(),
                    initial_cluster_token: self.settings.initial_cluster_token.clone(),
                })
                .await
            }
            // An interrupted replacement (its state file is there) resumes: its learner
            // still needs the promotion a plain join would never do.
            StartPlan::Join | StartPlan::Replace { .. } if replace::state_path(&spec).exists() => {
                self.replace_local(self.clock.now().0).await
            }
            StartPlan::Join => {
                let members = facts.peers.clone().unwrap_or_default();
                self.start(Launch {
                    initial_cluster: replace::initial_cluster(&members, &spec),
                    initial_cluster_state: "existing".into(),
                    initial_cluster_token: self.settings.initial_cluster_token.clone(),
                })
                .await
            }
            StartPlan::Replace { .. } => self.replace_local(self.clock.now().0).await,
            StartPlan::RestoreEpoch { .. } => match latest {
                Some(record) => {
                    let result = self.apply_epoch(&record).await;
                    self.report_recovery(result.clone().map(|()| Progress::Applied));
                    result
                }
                None => Err("the epoch vanished".into()),
            },
            StartPlan::AwaitRecovery => Ok(()),
        };
        match result {
            Ok(()) => Ok(plan),
            Err(error) => {
                tracing::warn!(error = %error, "reconfigure could not start the member");
                self.record("reconfigure-failed", json!({ "error": error }));
                Err(error)
            }
        }
    }

    /// Tells the core where a recovery stands: after a restore it waits for the new
    /// cluster instead of claiming another epoch; while a claim waits for votes it
    /// claims nothing new.
    fn report_recovery(&mut self, result: Result<Progress, String>) {
        let outcome = match result {
            Ok(Progress::Applied) => Outcome::Recovered,
            Ok(Progress::Pending) => Outcome::RecoveryPending,
            Err(error) => {
                self.record("recovery-failed", json!({ "error": error }));
                Outcome::RecoveryFailed
            }
        };
        self.agent.handle_outcome(self.clock.monotonic(), outcome);
    }

    async fn probe_conditional_puts(&mut self) {
        let name = self.local.spec().name.clone();
        match coordination::honours_create_if_absent(&self.store, &self.layout, &name).await {
            Ok(honoured) => {
                self.conditional_puts = Some(honoured);
                self.record("store-probed", json!({ "create_if_absent": honoured }));
                if !honoured {
                    tracing::error!(
                        "the store ignores create-if-absent writes: automatic disaster recovery is off for this agent"
                    );
                }
            }
            Err(error) => tracing::warn!(error = %error, "could not probe the store; trying again next round"),
        }
    }

    fn configured_names(&self) -> Vec<String> {
        self.settings.members.iter().map(|member| member.name.clone()).collect()
    }

    /// Takes this agent's steps in the epoch protocol (see [`lifeboat::recovery`]):
    /// join, commit, abandon, resume or apply. `None` when there was nothing to do.
    async fn follow_epochs(
        &mut self,
        mut listing: EpochListing,
        old_cluster_has_quorum: bool,
        revision: Option<Revision>,
    ) -> Option<Result<Progress, String>> {
        if let Some(record) = &listing.newest_committed {
            self.newest_committed_seen = self.newest_committed_seen.max(record.epoch);
        }
        if listing.malformed != self.malformed_seen {
            self.malformed_seen = listing.malformed.clone();
            if !listing.malformed.is_empty() {
                tracing::warn!(keys = ?listing.malformed, "malformed coordination records skipped");
                self.record("store-records-malformed", json!({ "skipped": listing.malformed }));
            }
        }
        let mut result = None;
        // Hold, join, commit, apply: each changes what the store shows, so look again,
        // a few times at most.
        for _ in 0..5 {
            // Stopped for a claim (etcd down by our hand): what the data dir holds.
            let revision_now = match self.holding_for() {
                Some(_) if member::has_data(self.local.spec()) => {
                    match self.builder.data_revision(&self.local.spec().data_dir).await {
                        Ok(revision) => revision,
                        Err(error) => {
                            self.record("data-revision-unreadable", json!({ "error": error.to_string() }));
                            None
                        }
                    }
                }
                Some(_) => None,
                None => revision,
            };
            let facts = LocalFacts {
                member: self.local.spec().name.clone(),
                epoch: self.epoch,
                old_cluster_has_quorum,
                revision: revision_now,
                has_data: member::has_data(self.local.spec()),
                holding_for: self.holding_for(),
                members: self.settings.members.len(),
            };
            let view = listing.newest.as_ref().map(|(_, view)| view);
            let committed = listing.newest_committed.as_ref().map(|record| record.epoch);
            let step = recovery::step(view, committed, &facts);
            if step != self.last_step {
                self.record("epoch-step", json!({ "step": step, "facts": facts }));
                self.last_step = step.clone();
            }
            let record_of = |epoch: u64| {
                listing
                    .newest_committed
                    .iter()
                    .chain(listing.newest.iter().map(|(record, _)| record))
                    .find(|record| record.epoch == epoch)
                    .cloned()
            };
            match step {
                EpochStep::Nothing => {
                    if self.holding_for().is_some_and(|held| held <= self.epoch) {
                        self.set_holding(None);
                    }
                    return result;
                }
                EpochStep::Wait { .. } => return Some(Ok(Progress::Pending)),
                EpochStep::Apply { epoch } => {
                    let Some(record) = record_of(epoch) else { return result };
                    return Some(self.apply_epoch(&record).await.map(|()| Progress::Applied));
                }
                EpochStep::Resume { epoch } => {
                    self.record("epoch-resume", json!({ "epoch": epoch }));
                    self.set_holding(None);
                    if !self.settings.dry_run {
                        let _ = self.reconfigure_and_start().await;
                    }
                    return result;
                }
                EpochStep::Abandon { epoch, reason } => {
                    let outcome = EpochOutcome::Abandoned { by: self.local.spec().name.clone(), reason };
                    if self.settings.dry_run {
                        self.record("would-abandon", json!({ "epoch": epoch, "outcome": outcome }));
                        return result;
                    }
                    match coordination::decide(&self.store, &self.layout, epoch, &outcome).await {
                        Ok(winner) => {
                            tracing::warn!(epoch, outcome = ?winner, "recovery claim conflicts with this member's view");
                            self.record(
                                "epoch-conflict",
                                json!({ "epoch": epoch, "proposed": outcome, "stands": winner }),
                            );
                        }
                        Err(error) => return Some(Err(error.to_string())),
                    }
                }
                EpochStep::Hold { epoch } => {
                    if self.settings.dry_run {
                        self.record("would-join", json!({ "epoch": epoch }));
                        return result;
                    }
                    // Remember first, then stop: a crash at any point leaves a member that
                    // stays stopped for the claim until it is decided.
                    self.set_holding(Some(Holding { epoch }));
                    if let Err(error) = self.local.stop().await {
                        return Some(Err(format!("cannot stop etcd to join epoch {epoch}: {error}")));
                    }
                    self.record("epoch-holding", json!({ "epoch": epoch }));
                    result = Some(Ok(Progress::Pending));
                }
                EpochStep::Join { epoch, revision } => {
                    let vote = JoinRecord {
                        member: self.local.spec().name.clone(),
                        revision: revision.map(|revision| revision.0),
                        joined_at: self.now_text(),
                    };
                    if let Err(error) = coordination::write_join(&self.store, &self.layout, epoch, &vote).await {
                        return Some(Err(error.to_string()));
                    }
                    self.record("epoch-joined", json!({ "epoch": epoch, "revision": vote.revision }));
                    result = Some(Ok(Progress::Pending));
                }
                EpochStep::Commit { epoch, joined } => {
                    let outcome = EpochOutcome::Committed { joined };
                    match coordination::decide(&self.store, &self.layout, epoch, &outcome).await {
                        Ok(winner) => self.record("epoch-decided", json!({ "epoch": epoch, "outcome": winner })),
                        Err(error) => return Some(Err(error.to_string())),
                    }
                }
            }
            listing = match coordination::load_epochs(&self.store, &self.layout, self.epoch, &self.configured_names())
                .await
            {
                Ok(listing) => listing,
                Err(error) => return Some(Err(error.to_string())),
            };
        }
        result
    }

    /// The epoch this member stopped its etcd for, if any (`<state-dir>/holding-epoch`).
    fn holding_for(&self) -> Option<u64> {
        read_holding(&self.settings.state_dir).map(|held| held.epoch)
    }

    fn set_holding(&mut self, holding: Option<Holding>) {
        let path = self.settings.state_dir.join(HOLDING_FILE);
        let result = match holding {
            Some(held) => {
                member::write_atomically(&path, held.epoch.to_string().as_bytes()).map_err(|error| error.to_string())
            }
            None => match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.to_string()),
                _ => Ok(()),
            },
        };
        if let Err(error) = result {
            tracing::warn!(error = %error, "cannot record the held epoch");
            self.record("holding-write-failed", json!({ "error": error }));
        }
    }

    fn save_settings(&self) -> SaveSettings {
        SaveSettings {
            cluster: self.settings.cluster.clone(),
            compression: self.settings.compression,
            pipeline: self.settings.pipeline.clone(),
        }
    }

    async fn start(&self, launch: Launch) -> Result<(), String> {
        self.local.start(&launch).await.map_err(|error| error.to_string())
    }

    /// Claims a recovery epoch (an intent: see [`lifeboat::recovery`]) and takes this
    /// member's first steps in it; or follows a claim that is already there.
    async fn disaster_recovery(&mut self, newest_verified: SnapshotName) -> Result<Progress, String> {
        let names = self.configured_names();
        let listing = coordination::load_epochs(&self.store, &self.layout, self.epoch, &names)
            .await
            .map_err(|error| error.to_string())?;
        let undecided_above =
            listing.newest.as_ref().is_some_and(|(record, view)| record.epoch > self.epoch && view.outcome.is_none());
        let committed_above = listing.newest_committed.as_ref().is_some_and(|record| record.epoch > self.epoch);
        if undecided_above || committed_above {
            // Quorum is lost from here: that is this round's view of the old cluster.
            let revision = self.local_client_status().await.map(|status| status.revision);
            return self.follow_epochs(listing, false, revision).await.unwrap_or(Ok(Progress::Pending));
        }
        let next = listing.newest_number.max(self.epoch) + 1;
        // Never restore something older than what a surviving member holds. The most
        // up-to-date survivor claims: a survivor defers while a live peer of this epoch
        // reports newer data; the claimer saves its own data first when it is newer
        // than every stored snapshot.
        let mut snapshot = newest_verified;
        let local = self.local_client_status().await;
        let local_revision = local.as_ref().map(|status| status.revision.0);
        let peers = coordination::fresh_peer_heartbeats(
            &self.store,
            &self.layout,
            &self.local.spec().name,
            self.settings.heartbeat_freshness_ms(),
        )
        .await
        .map_err(|error| error.to_string())?;
        let best_peer = peers
            .iter()
            .filter(|peer| peer.epoch == self.epoch)
            .filter_map(|peer| peer.revision.map(|revision| (revision, peer.member.clone())))
            .max();
        self.record(
            "survivor",
            json!({ "local_revision": local_revision, "newest_verified_revision": snapshot.revision().0,
                    "best_peer": best_peer }),
        );
        if let Some((peer_revision, peer)) = &best_peer {
            if *peer_revision > local_revision.unwrap_or(0) && *peer_revision > snapshot.revision().0 {
                return Err(format!("{peer} holds newer data (revision {peer_revision}); it claims the recovery"));
            }
        }
        if let Some(local) = local.filter(|local| local.revision > snapshot.revision()) {
            let settings = self.save_settings();
            match save::save_from(&self.etcd, &self.store, &self.layout, &settings, self.clock.now(), &local).await {
                Ok(report) => {
                    self.record("saved-survivor", json!({ "snapshot": report.name, "revision": report.revision }));
                    snapshot = report.name;
                }
                Err(error) => {
                    // Never claim a snapshot older than this member's data: try again next round.
                    self.record("save-survivor-failed", json!({ "error": error.to_string() }));
                    return Err(format!("could not save this survivor's newer data first: {error}"));
                }
            }
        }
        // The chosen snapshot, else the newest older one whose hash verifies: a corrupt
        // newest snapshot must not block the recovery forever.
        let catalog = catalog::load(&self.store, &self.layout).await.map_err(|error| error.to_string())?;
        let candidates = catalog.snapshots.iter().filter(|entry| entry.name <= snapshot && entry.manifest.is_some());
        let mut chosen = None;
        for entry in candidates {
            match catalog::verify_entry(&self.store, entry).await {
                Ok(fetched) => {
                    chosen = Some((entry.name.clone(), fetched.plain.sha256));
                    break;
                }
                Err(error) => {
                    self.record("snapshot-refused", json!({ "snapshot": entry.name, "error": error.to_string() }))
                }
            }
        }
        let (snapshot, sha256) = chosen.ok_or_else(|| format!("no snapshot up to {snapshot} verifies"))?;
        let record = EpochRecord {
            epoch: next,
            snapshot: snapshot.clone(),
            sha256,
            initial_cluster: self.settings.initial_cluster(),
            token: format!("{}-epoch-{next}", self.settings.cluster),
            claimed_by: self.local.spec().name.clone(),
            claimed_at: self.now_text(),
            protocol: EpochRecord::PROTOCOL,
        };
        let (winner, won) =
            coordination::claim_epoch(&self.store, &self.layout, &record).await.map_err(|error| error.to_string())?;
        self.record("epoch-claim", json!({ "epoch": winner.epoch, "won": won, "snapshot": winner.snapshot }));
        let listing = coordination::load_epochs(&self.store, &self.layout, self.epoch, &names)
            .await
            .map_err(|error| error.to_string())?;
        let revision = self.local_client_status().await.map(|status| status.revision);
        self.follow_epochs(listing, false, revision).await.unwrap_or(Ok(Progress::Pending))
    }

    async fn local_client_status(&self) -> Option<crate::ports::EndpointStatus> {
        let spec = self.local.spec();
        self.etcd.endpoint_status(&spec.client_url).await.ok()
    }

    /// Restores this member into `record`'s epoch: stop, move the data aside,
    /// restore the epoch's snapshot under its token, remember the epoch, start.
    async fn apply_epoch(&mut self, record: &EpochRecord) -> Result<(), String> {
        let spec = self.local.spec().clone();
        if self.settings.dry_run {
            self.record("would-restore", json!({ "epoch": record.epoch, "snapshot": record.snapshot }));
            return Ok(());
        }
        self.local.stop().await.map_err(|error| error.to_string())?;
        let now = self.clock.now().0;
        if let Some(aside) =
            member::move_data_dir_aside(&spec, &spec.data_dir, now).map_err(|error| error.to_string())?
        {
            self.record("moved-aside", json!({ "path": aside }));
        }
        let settings = RestoreSettings {
            data_dir: spec.data_dir.clone(),
            name: spec.name.clone(),
            initial_cluster: record.initial_cluster.clone(),
            initial_advertise_peer_urls: spec.peer_url.clone(),
            initial_cluster_token: record.token.clone(),
            snapshot: SnapshotChoice::Named(record.snapshot.clone()),
            cluster: self.settings.cluster.clone(),
        };
        let report = restore::restore(&self.store, &self.layout, &settings, &self.builder)
            .await
            .map_err(|error| error.to_string())?;
        member::write_atomically(&epoch_path(&self.settings), record.epoch.to_string().as_bytes())
            .map_err(|error| error.to_string())?;
        self.epoch = record.epoch;
        self.set_holding(None);
        self.record(
            "restored",
            json!({ "epoch": record.epoch, "snapshot": report.snapshot, "revision": report.revision }),
        );
        self.start(Launch {
            initial_cluster: record.initial_cluster.clone(),
            initial_cluster_state: "new".into(),
            initial_cluster_token: record.token.clone(),
        })
        .await
    }
}

/// Snapshots as the listing shows them: a snapshot with its manifest counts as
/// verified here (cheap, every check); a disaster recovery downloads and checks
/// before it names one.
pub async fn quick_metas<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
) -> Result<Vec<SnapshotMeta>, crate::ports::StoreError> {
    let prefix = layout.snapshots_prefix();
    let objects = store.list(&prefix).await?;
    let keys: std::collections::BTreeSet<&str> =
        objects.iter().filter_map(|object| object.key.strip_prefix(prefix.as_str())).collect();
    Ok(keys
        .iter()
        .filter_map(|key| key.parse::<SnapshotName>().ok())
        .map(|name| {
            let verified = keys.contains(name.manifest_name().as_str());
            SnapshotMeta { name, verified }
        })
        .collect())
}
