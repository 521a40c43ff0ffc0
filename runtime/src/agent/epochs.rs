//! The driver's side of the recovery-epoch protocol (docs/DESIGN.md): follow
//! claims (hold, join, commit, abandon, apply), claim a disaster recovery, and
//! restore the epoch's snapshot. Every decision is `lifeboat::recovery::step`;
//! this file gathers the facts and carries the step out.

use super::*;

impl<E: EtcdCluster, S: SnapshotStore, L: LocalMember, C: Clock, B: DataDirBuilder> Driver<E, S, L, C, B> {
    /// Takes this agent's steps in the epoch protocol (see [`lifeboat::recovery`]):
    /// join, commit, abandon, resume or apply. `None` when there was nothing to do.
    pub(super) async fn follow_epochs(
        &mut self,
        mut listing: EpochListing,
        old_cluster_has_quorum: bool,
        revision: Option<Revision>,
    ) -> Option<Result<Progress, AgentError>> {
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
                    return Some(self.apply_epoch(&record).await.map(|_| Progress::Applied));
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
                        Err(error) => return Some(Err(error.into())),
                    }
                }
                EpochStep::Hold { epoch } => {
                    if self.settings.dry_run {
                        self.record("would-join", json!({ "epoch": epoch }));
                        return result;
                    }
                    // Remember first, then stop: a crash at any point leaves a member that
                    // stays stopped for the claim until it is decided.
                    self.set_holding(Some(epoch));
                    if let Err(source) = self.local.stop().await {
                        return Some(Err(AgentError::CannotHold { epoch, source }));
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
                        return Some(Err(error.into()));
                    }
                    self.record("epoch-joined", json!({ "epoch": epoch, "revision": vote.revision }));
                    result = Some(Ok(Progress::Pending));
                }
                EpochStep::Commit { epoch, joined } => {
                    let outcome = EpochOutcome::Committed { joined };
                    match coordination::decide(&self.store, &self.layout, epoch, &outcome).await {
                        Ok(winner) => self.record("epoch-decided", json!({ "epoch": epoch, "outcome": winner })),
                        Err(error) => return Some(Err(error.into())),
                    }
                }
            }
            listing = match coordination::load_epochs(&self.store, &self.layout, self.epoch, &self.configured_names())
                .await
            {
                Ok(listing) => listing,
                Err(error) => return Some(Err(error.into())),
            };
        }
        result
    }

    /// The epoch this member stopped its etcd for, if any (`<state-dir>/holding-epoch`).
    pub(super) fn holding_for(&self) -> Option<u64> {
        self.state.holding()
    }

    pub(super) fn set_holding(&mut self, holding: Option<u64>) {
        if let Err(error) = self.state.set_holding(holding) {
            tracing::warn!(error = %error, "cannot record the held epoch");
            self.record("holding-write-failed", json!({ "error": error.to_string() }));
        }
    }

    pub(super) fn save_settings(&self) -> SaveSettings {
        self.settings.save_settings()
    }

    pub(super) async fn start(&self, launch: Launch) -> Result<(), AgentError> {
        Ok(self.local.start(&launch).await?)
    }

    /// Claims a recovery epoch (an intent: see [`lifeboat::recovery`]) and takes this
    /// member's first steps in it; or follows a claim that is already there.
    pub(super) async fn disaster_recovery(&mut self, newest_verified: SnapshotName) -> Result<Progress, AgentError> {
        let names = self.configured_names();
        let listing = coordination::load_epochs(&self.store, &self.layout, self.epoch, &names).await?;
        let undecided_above =
            listing.newest.as_ref().is_some_and(|(record, view)| record.epoch > self.epoch && view.outcome.is_none());
        let committed_above = listing.newest_committed.as_ref().is_some_and(|record| record.epoch > self.epoch);
        if undecided_above || committed_above {
            // Quorum is lost from here: that is this round's view of the old cluster.
            let revision = self.local_client_status().await.map(|status| status.revision);
            return self.follow_epochs(listing, false, revision).await.unwrap_or(Ok(Progress::Pending));
        }
        let next = listing.newest_number.max(self.epoch) + 1;
        // Never restore something older than what a surviving member holds
        // (`recovery::before_claim` decides; this gathers the facts and carries it out).
        let mut snapshot = newest_verified;
        let local = self.local_client_status().await;
        let peers: Vec<recovery::PeerReport> = coordination::fresh_peer_heartbeats(
            &self.store,
            &self.layout,
            &self.local.spec().name,
            self.settings.heartbeat_freshness_ms(),
        )
        .await?
        .into_iter()
        .map(|heartbeat| recovery::PeerReport {
            member: heartbeat.member,
            epoch: heartbeat.epoch,
            revision: heartbeat.revision.map(Revision),
        })
        .collect();
        let local_revision = local.as_ref().map(|status| status.revision);
        let decided = recovery::before_claim(self.epoch, local_revision, snapshot.revision(), &peers);
        self.record(
            "survivor",
            json!({ "local_revision": local_revision.map(|revision| revision.0),
                    "newest_verified_revision": snapshot.revision().0, "peers": peers, "decided": decided }),
        );
        if let recovery::BeforeClaim::DeferTo { peer, revision } = decided {
            return Err(AgentError::PeerHoldsNewerData { peer, revision: revision.0 });
        }
        if let Some(local) = local.filter(|_| matches!(decided, recovery::BeforeClaim::SaveOwnData { .. })) {
            let settings = self.save_settings();
            match save::save_from(&self.etcd, &self.store, &self.layout, &settings, self.clock.now(), &local).await {
                Ok(report) => {
                    self.record("saved-survivor", json!({ "snapshot": report.name, "revision": report.revision }));
                    snapshot = report.name;
                }
                Err(error) => {
                    // Never claim a snapshot older than this member's data: try again next round.
                    self.record("save-survivor-failed", json!({ "error": error.to_string() }));
                    return Err(AgentError::SurvivorNotSaved(error));
                }
            }
        }
        // The revision log, where it reaches past that snapshot, is replayed onto it and
        // saved as a newer snapshot: the recovery then loses about one log flush of
        // writes, not one snapshot interval. Without it (no log, no etcd binary for
        // the replay) the recovery still goes ahead from the snapshot.
        if !self.settings.dry_run {
            let settings = self.save_settings();
            match self.builder.extend_with_log(&self.store, &self.layout, &snapshot, &settings).await {
                Ok(Some(extension)) => {
                    self.record(
                        "log-replayed",
                        json!({ "snapshot": extension.name, "from": snapshot, "revisions": extension.revisions_applied,
                                "reached": extension.reached, "stopped_early": extension.stopped_early }),
                    );
                    snapshot = extension.name;
                }
                Ok(None) => {}
                // The claim needs the store too: wait for the next round rather than
                // recover without the writes the log holds.
                Err(crate::ports::ExtendError::Store(error)) => {
                    self.record("log-replay-deferred", json!({ "snapshot": snapshot, "error": error.to_string() }));
                    return Err(AgentError::Store(error));
                }
                Err(error) => {
                    tracing::warn!(error = %error, "the revision log could not be replayed; recovering from the snapshot alone");
                    self.record("log-replay-failed", json!({ "snapshot": snapshot, "error": error.to_string() }));
                }
            }
        }
        // The chosen snapshot, else the newest older one whose hash verifies: a corrupt
        // newest snapshot must not block the recovery forever.
        let catalog = catalog::load(&self.store, &self.layout).await?;
        let listed: Vec<SnapshotName> =
            catalog.snapshots.iter().filter(|entry| entry.manifest.is_some()).map(|entry| entry.name.clone()).collect();
        let candidates = recovery::claim_candidates(&listed, &snapshot)
            .into_iter()
            .filter_map(|name| catalog.snapshots.iter().find(|entry| entry.name == name));
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
        let (snapshot, sha256) = chosen.ok_or(AgentError::NoVerifiedSnapshot { newest: snapshot })?;
        let record = EpochRecord {
            epoch: next,
            snapshot: snapshot.clone(),
            sha256,
            initial_cluster: self.settings.initial_cluster(),
            token: format!("{}-epoch-{next}", self.settings.cluster),
            claimed_by: self.local.spec().name.clone(),
            claimed_at: self.now_text(),
            protocol: EpochRecord::PROTOCOL,
            bump_revision: self.builder.supports_bump().await.then_some(restore::DEFAULT_BUMP_REVISION),
        };
        let (winner, won) = coordination::claim_epoch(&self.store, &self.layout, &record).await?;
        self.record("epoch-claim", json!({ "epoch": winner.epoch, "won": won, "snapshot": winner.snapshot }));
        let listing = coordination::load_epochs(&self.store, &self.layout, self.epoch, &names).await?;
        let revision = self.local_client_status().await.map(|status| status.revision);
        self.follow_epochs(listing, false, revision).await.unwrap_or(Ok(Progress::Pending))
    }

    pub(super) async fn local_client_status(&self) -> Option<crate::ports::EndpointStatus> {
        let spec = self.local.spec();
        self.etcd.endpoint_status(&spec.client_url).await.ok()
    }

    /// Brings this member into `record`'s epoch: stop, move the data aside, then
    /// either restore the epoch's snapshot under its token, mark the member started
    /// in the store, remember the epoch and start; or, when this member name may
    /// have run in the epoch already ([`recovery::entry`]), remember the epoch with
    /// an empty data dir and leave etcd stopped, to rejoin as a new member.
    pub(super) async fn apply_epoch(&mut self, record: &EpochRecord) -> Result<recovery::Entry, AgentError> {
        let spec = self.local.spec().clone();
        if self.settings.dry_run {
            self.record("would-restore", json!({ "epoch": record.epoch, "snapshot": record.snapshot }));
            return Ok(recovery::Entry::Restore);
        }
        // One process at a time changes this data dir, and the epoch it holds is read
        // under that lock, not remembered: under systemd, `reconfigure` (another
        // process) may have restored this member into the epoch already, and since
        // then the new cluster's writes may live on it alone. Restoring twice would
        // move them aside (found by the simulator's systemd mode, nemesis seed 101933).
        let lock = crate::host::files::lock_member(&spec)
            .map_err(|problem| AgentError::Replace(problem.into()))?
            .ok_or_else(|| AgentError::MemberBusy {
                name: spec.name.clone(),
                path: crate::host::files::member_lock_path(&spec),
            })?;
        self.epoch = self.epoch.max(self.state.epoch());
        if self.epoch >= record.epoch {
            self.record("epoch-already-applied", json!({ "epoch": record.epoch, "local_epoch": self.epoch }));
            if self.holding_for().is_some_and(|held| held <= self.epoch) {
                self.set_holding(None);
            }
            return Ok(recovery::Entry::Restore);
        }
        // Every member restores the epoch alike: one whose etcdutl cannot bump the
        // revisions as the claim asks stops here, before anything is moved.
        if let Some(bump) = record.bump_revision {
            if !self.builder.supports_bump().await {
                return Err(AgentError::CannotBumpRevisions { epoch: record.epoch, bump });
            }
        }
        let may_have_run = coordination::started_in(&self.store, &self.layout, record.epoch, &spec.name).await?;
        let entry = recovery::entry(may_have_run);
        self.local.stop().await?;
        // A replacement this member began in the old cluster ends here: the epoch's
        // cluster lists other incarnations, and resumed there it would remove this
        // member's new one and set its data aside (nemesis seed 25000016949: a
        // healthy voter of the recovered cluster replaced 190 s after it had joined).
        // Forgotten before the data dir moves, so no crash leaves it to resume.
        if crate::host::files::abandon_replacement(&spec).map_err(|problem| AgentError::Replace(problem.into()))? {
            self.record(
                "replace-abandoned",
                json!({ "epoch": record.epoch, "why": "the member restores into a recovered cluster; the replacement belonged to the cluster before it" }),
            );
        }
        let now = self.clock.now().0;
        if let Some(aside) = member::move_data_dir_aside(&spec, &spec.data_dir, now)? {
            self.record("moved-aside", json!({ "path": aside }));
        }
        if entry == recovery::Entry::Rejoin {
            self.state.set_epoch(record.epoch)?;
            self.epoch = record.epoch;
            self.set_holding(None);
            self.record("epoch-rejoin", json!({ "epoch": record.epoch, "why": "this member may have run in the epoch already: it rejoins empty, as a new member, once the epoch's cluster has quorum" }));
            return Ok(entry);
        }
        let settings = RestoreSettings {
            data_dir: spec.data_dir.clone(),
            name: spec.name.clone(),
            initial_cluster: record.initial_cluster.clone(),
            initial_advertise_peer_urls: spec.peer_url.clone(),
            initial_cluster_token: record.token.clone(),
            snapshot: SnapshotChoice::Named(record.snapshot.clone()),
            cluster: self.settings.cluster.clone(),
            bump_revision: record.bump_revision,
        };
        let report = restore::restore(&self.store, &self.layout, &settings, &self.builder).await?;
        // Before the epoch is remembered, so a member that may have started always
        // has its marker (without it, the next round restores again: nothing ran).
        coordination::mark_started(&self.store, &self.layout, record.epoch, &spec.name, &self.now_text()).await?;
        self.state.set_epoch(record.epoch)?;
        self.epoch = record.epoch;
        self.set_holding(None);
        self.record(
            "restored",
            json!({ "epoch": record.epoch, "snapshot": report.snapshot, "revision": report.revision }),
        );
        // `existing`, not `new`: etcd ignores the state when the data dir holds the
        // restored WAL, and if the disk vanished since the restore, `new` would
        // bootstrap an empty cluster of its own while `existing` joins the epoch's
        // cluster as the never-started member it is (found by the nemesis, seeds
        // 31008682, 31012314, 31016435: a disk wiped between restore and start).
        // Only this start may run etcd while the lock is held.
        let _starting = lock.prepare_start().map_err(|problem| AgentError::Replace(problem.into()))?;
        self.start(Launch {
            initial_cluster: record.initial_cluster.clone(),
            initial_cluster_state: "existing".into(),
            initial_cluster_token: record.token.clone(),
        })
        .await?;
        Ok(entry)
    }
}
