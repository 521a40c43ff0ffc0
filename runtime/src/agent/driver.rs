//! The driver's loop: observe, hand the observation to the core, carry out its
//! actions (save, prune, replace this member), and start etcd as a reboot finds it.

use super::*;

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
        let state = crate::host::files::FsStateDir::new(settings.state_dir.clone());
        let epoch = state.epoch();
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
            alarms: Vec::new(),
            newest_committed_seen: 0,
            conditional_puts: None,
            key_mismatch: None,
            metrics: std::sync::Arc::new(super::metrics::AgentMetrics::new()),
            state,
        })
    }

    /// The figures and health this driver keeps, for the HTTP endpoint.
    pub fn metrics(&self) -> std::sync::Arc<super::metrics::AgentMetrics> {
        self.metrics.clone()
    }

    pub(super) fn now_text(&self) -> String {
        self.clock.now().to_rfc3339()
    }

    pub(super) fn record(&self, event: &str, details: serde_json::Value) {
        let now = self.clock.now();
        self.metrics.on_event(now.0, event, &details);
        self.journal.record(&now.to_rfc3339(), event, details);
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
            self.metrics.loop_turned(now.0);
            self.agent.handle_timeout(now);
            while let Some(action) = self.agent.poll_action() {
                self.execute(action).await;
                self.metrics.loop_turned(self.clock.monotonic().0);
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

    pub(super) async fn execute(&mut self, action: Action) {
        let now = self.clock.now();
        // Under systemd, `reconfigure` (another process) may have moved this member
        // into a newer epoch since the last step: the state dir says (epochs only grow).
        // That is a recovery as much as one of this agent's own: the core then waits
        // for the new cluster to form instead of counting it as lost. Without this, an
        // agent that had counted the old cluster lost claimed a second epoch while the
        // first one's members were still starting (simulator, systemd mode,
        // survivors-at-different-revisions seed 43: two recoveries, no write lost).
        let stored = self.state.epoch();
        if stored > self.epoch {
            self.record("epoch-applied-elsewhere", json!({ "epoch": stored, "previous": self.epoch }));
            self.epoch = stored;
            self.agent.handle_outcome(self.clock.monotonic(), Outcome::Recovered);
        }
        match action {
            Action::CheckHealth => {
                if self.settings.supervise && !self.local.is_running().await {
                    // Journaled either way; the next check tries again.
                    let _ = self.reconfigure_and_start().await;
                } else if !self.settings.dry_run && crate::host::files::replacement_in_progress(self.local.spec()) {
                    // A replacement was interrupted (agent killed, promotion timed out) with
                    // etcd still running, e.g. as a learner nobody promotes: finish it.
                    // Found by the simulator (member-disk-wiped, seed 89).
                    self.record("replace-resume", json!({ "member": self.local.spec().name }));
                    if let Err(error) = self.replace_local(now.0).await {
                        self.record("replace-failed", json!({ "error": error.to_string() }));
                    }
                } else if !self.settings.supervise
                    && !self.settings.dry_run
                    && self.local_id.is_none()
                    && !self.agent.members().is_empty()
                    && !self.local.is_running().await
                {
                    // Under systemd the agent stopped the unit (to restore or to replace the
                    // member) and the cluster no longer lists it: no `Restart=` will run
                    // `reconfigure`, and no failing incarnation will make the core replace
                    // it, so nothing would ever add it back. `reconfigure` decides (it
                    // joins a cluster with quorum as a new member). Found by the long
                    // sweep, seed 101000152681: a machine lost mid-replacement, then a
                    // recovery's epoch applied, stayed out for good.
                    self.record(
                        "rejoin",
                        json!({ "member": self.local.spec().name, "why": "not listed and not running" }),
                    );
                    let _ = self.reconfigure_and_start().await;
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
                        self.record(
                            "replace-failed",
                            json!({ "member": member.id.to_string(), "error": error.to_string() }),
                        );
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
                    Some(true) if self.key_mismatch.is_some() => {
                        Err(AgentError::KeyMismatch { detail: self.key_mismatch.clone().unwrap_or_default() })
                    }
                    Some(true) => self.disaster_recovery(snapshot).await,
                    Some(false) => Err(AgentError::ConditionalPutsIgnored),
                    None => Err(AgentError::StoreNotProbed),
                };
                self.report_recovery(&result);
            }
            Action::Warn(warning) => {
                tracing::warn!(?warning, "needs attention");
                self.record("warning", json!({ "warning": warning }));
            }
        }
    }

    /// One round of looking: etcd, the store, heartbeats and epochs.
    pub(super) async fn observe(&mut self) -> Observation {
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
                        let status = status.ok();
                        // Progress only from a member that names a leader: one cut off answers
                        // its status with an index that means nothing about catching up.
                        let progress =
                            status.as_ref().filter(|status| status.leader.0 != 0).map(|status| status.raft_index);
                        (MemberHealth { id: member.id, healthy: health.healthy, progress }, status, health.alarms)
                    }
                    None => (MemberHealth::new(member.id, false), None, Vec::new()),
                }
            }
        });
        let probed = futures::future::join_all(probes).await;
        let alarms: std::collections::BTreeSet<String> =
            probed.iter().flat_map(|(_, _, alarms)| alarms.iter().cloned()).collect();
        self.note_alarms(alarms.into_iter().collect());
        let results: Vec<(MemberHealth, Option<crate::ports::EndpointStatus>)> =
            probed.into_iter().map(|(health, status, _)| (health, status)).collect();
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
        // So it has when a voter's raft index rose since the last round: only a leader
        // with a quorum commits (its members are catching up, not lost).
        let committing =
            health.iter().any(|check| voters.contains(&check.id) && self.agent.tracker().would_advance(check));
        let old_cluster_has_quorum =
            !voters.is_empty() && (healthy_voters >= lifeboat::membership::quorum(voters.len()) || committing);
        let local_revision = local_status.as_ref().map(|status| status.revision);
        if store.is_ok() && self.conditional_puts.is_none() && !self.settings.dry_run {
            self.probe_conditional_puts().await;
        }
        let store = match store {
            Ok((snapshots, peers, epochs)) => {
                if let Some(result) = self.follow_epochs(epochs, old_cluster_has_quorum, local_revision).await {
                    if !matches!(result, Ok(Progress::Pending)) {
                        self.report_recovery(&result);
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
        self.metrics.observed(self.clock.monotonic().0);
        self.record(
            "observation",
            json!({ "members": known.len(), "healthy": healthy, "leader": leader.map(|id| id.to_string()),
                    "unhealthy": health.iter().filter(|check| !check.healthy).map(|check| check.id.to_string()).collect::<Vec<_>>(),
                    // The raft index of each unhealthy member that answered its status: rising, it is catching up.
                    "unhealthy_raft_index": health.iter().filter(|check| !check.healthy)
                        .filter_map(|check| check.progress.map(|index| (check.id.to_string(), index)))
                        .collect::<std::collections::BTreeMap<_, _>>(),
                    "store_reachable": store.reachable, "snapshots": store.snapshots.len(),
                    "healthy_peer_heartbeats": store.healthy_peer_heartbeats.len(), "epoch": self.epoch,
                    "alarms": self.alarms.len() }),
        );
        Observation { members, health, leader, store }
    }

    /// Journals the cluster's alarms when they change. An alarm needs a human (NOSPACE:
    /// compact, defragment, then disarm) and changes no decision: a member with an
    /// alarm still serves, so it counts as healthy for quorum and replacement.
    fn note_alarms(&mut self, alarms: Vec<String>) {
        if alarms == self.alarms {
            return;
        }
        if alarms.is_empty() {
            tracing::info!("the cluster's alarms are cleared");
            self.record("alarms-cleared", json!({ "was": self.alarms }));
        } else {
            tracing::warn!(?alarms, "etcd raised an alarm: it needs a human, lifeboat changes nothing for it");
            self.record(
                "alarm",
                json!({ "alarms": alarms,
                        "fix": "NOSPACE: `etcdctl compact` to the current revision, `etcdctl defrag` on each member, raise --quota-backend-bytes if the data needs it, then `etcdctl alarm disarm`; CORRUPT: find the member whose hash differs (`etcdctl endpoint hashkv`), replace it with `lifeboat replace`, then disarm" }),
            );
        }
        self.alarms = alarms;
    }

    /// Replaces the local member (remove, wipe, re-add, start, promote).
    pub(super) async fn replace_local(&mut self, now_ms: u64) -> Result<(), AgentError> {
        // A member that holds for a recovery claim, or whose data belongs to an older
        // epoch than one already committed, must follow the epoch first: replacing
        // itself would remove its place in the recovered cluster (found by the nemesis:
        // the store was cut while the claim committed, the new cluster saw this member
        // as never started, and its own agent removed it for good).
        if let Some(held) = self.holding_for() {
            return Err(AgentError::HoldingForEpoch { epoch: held });
        }
        if self.newest_committed_seen > self.epoch {
            return Err(AgentError::EpochNotFollowed { committed: self.newest_committed_seen, local: self.epoch });
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
        let report = replace::replace(&self.etcd, &self.local, &settings, now_ms).await?;
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
    pub async fn reconfigure_and_start(&mut self) -> Result<StartPlan, AgentError> {
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
        let locked_elsewhere = crate::host::files::member_locked_elsewhere(&spec);
        let facts = Facts {
            has_data: member::has_data(&spec),
            local_epoch: self.epoch,
            latest_epoch: latest.as_ref().map(|record| record.epoch),
            holding,
            peers,
            peer_url: spec.peer_url.clone(),
            snapshots_exist,
            locked_elsewhere,
            start_prepared: locked_elsewhere && crate::host::files::start_prepared_elsewhere(&spec),
        };
        let plan = reconfigure::plan(&facts);
        self.record("reconfigure", json!({ "facts": facts, "plan": plan }));
        if self.settings.dry_run {
            return Ok(plan);
        }
        let result = match plan {
            // A learner whose etcd had started, then was rolled back by another member's
            // replacement, must not start as it was: its replacement resumes instead.
            // (Only past the wipe: before it, the data is the old voter's own.)
            StartPlan::StartAsIs if replace::resumes_past_wipe(&spec) => self.replace_local(self.clock.now().0).await,
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
            StartPlan::Join | StartPlan::Replace { .. } if crate::host::files::replacement_in_progress(&spec) => {
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
                Some(record) => match self.apply_epoch(&record).await {
                    Ok(entry) => {
                        self.report_recovery(&Ok(Progress::Applied));
                        if entry == lifeboat::recovery::Entry::Rejoin {
                            // Entered empty: etcd must not start until it rejoins as a new member.
                            return Ok(StartPlan::AwaitRecovery);
                        }
                        Ok(())
                    }
                    Err(error) => {
                        let result: Result<Progress, AgentError> = Err(error);
                        self.report_recovery(&result);
                        result.map(|_| ())
                    }
                },
                None => Err(AgentError::EpochVanished),
            },
            StartPlan::AwaitRecovery | StartPlan::AwaitLockHolder | StartPlan::StartAsPrepared => Ok(()),
        };
        match result {
            Ok(()) => Ok(plan),
            Err(error) => {
                tracing::warn!(error = %error, "reconfigure could not start the member");
                self.record("reconfigure-failed", json!({ "error": error.to_string() }));
                Err(error)
            }
        }
    }

    /// Tells the core where a recovery stands: after a restore it waits for the new
    /// cluster instead of claiming another epoch; while a claim waits for votes it
    /// claims nothing new.
    pub(super) fn report_recovery(&mut self, result: &Result<Progress, AgentError>) {
        let outcome = match result {
            Ok(Progress::Applied) => Outcome::Recovered,
            Ok(Progress::Pending) => Outcome::RecoveryPending,
            Err(error) => {
                self.record("recovery-failed", json!({ "error": error.to_string() }));
                Outcome::RecoveryFailed
            }
        };
        self.agent.handle_outcome(self.clock.monotonic(), outcome);
    }

    pub(super) async fn probe_conditional_puts(&mut self) {
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
                if let Ok(catalog) = crate::backup::catalog::load(&self.store, &self.layout).await {
                    let off =
                        "automatic disaster recovery is off for this agent until it has the key they were written with";
                    if let Some(error) = catalog.unopened_error(&self.store, off) {
                        tracing::error!(error = %error, "the store holds backups this agent's key cannot open");
                        self.record("store-key-mismatch", json!({ "error": error.to_string() }));
                        self.key_mismatch = Some(error.to_string());
                    }
                }
            }
            Err(error) => tracing::warn!(error = %error, "could not probe the store; trying again next round"),
        }
    }

    pub(super) fn configured_names(&self) -> Vec<String> {
        self.settings.members.iter().map(|member| member.name.clone()).collect()
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
