//! Replacing a failed member without losing data: stop it, remove it from the
//! cluster, move its data dir aside, add it back (as a learner), start it with
//! `initial-cluster-state=existing`, let it catch up, promote it.
//!
//! Resumable: a state file beside the data dir records the member ID being
//! replaced and how far the job got, and every step is re-derived from what the
//! cluster shows, so an agent killed at any point completes the job when run
//! again. A lease-held lock in etcd keeps one membership change in flight
//! cluster-wide; quorum is checked before anything changes.

use crate::exit::{Classify, Exit};
use crate::host::clock::Stopwatch;
use crate::host::files;
use crate::member::{self, Launch, MemberError, MemberSpec};
use crate::ports::LocalMember;
use crate::ports::{EtcdCluster, EtcdError};
use lifeboat::membership::{quorum, replacement_keeps_quorum};
use lifeboat::replacement::{self, is_ours, Facts, ReplaceState, RunProgress, Step};
use lifeboat::Member;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Member(#[from] MemberError),
    #[error("replacing {name} now would lose quorum: {healthy} of {voters} other voting members are healthy; wait until more are")]
    WouldLoseQuorum { name: String, healthy: usize, voters: usize },
    #[error("another membership change is in flight (lock {key} is held); try again when it finishes")]
    Busy { key: String },
    #[error("another lifeboat process on this host is replacing {name} (it holds {path}); wait for it to finish, or stop it and run replace again to resume")]
    LocalBusy { name: String, path: PathBuf },
    #[error("{name} did not catch up within {seconds} s; run replace again to resume")]
    CatchUpTimeout { name: String, seconds: u64 },
    #[error("state file {path}: {detail}")]
    State { path: PathBuf, detail: String },
    #[error("{name} is removed and waits to be added back: etcd refuses additions while another voter is down ({detail}); its own replacement removes it, then this one resumes")]
    AddRefused { name: String, detail: String },
    #[error("the membership lock {key} was lost mid-change (its lease expired or could not be renewed for {seconds} s); the change stopped at a step it resumes from; run replace again")]
    LockLost { key: String, seconds: u64 },
}

impl Classify for ReplaceError {
    fn exit(&self) -> Exit {
        match self {
            ReplaceError::Etcd(error) => error.exit(),
            ReplaceError::Member(error) => error.exit(),
            ReplaceError::WouldLoseQuorum { .. } | ReplaceError::Busy { .. } | ReplaceError::LocalBusy { .. } => {
                Exit::Refused
            }
            ReplaceError::CatchUpTimeout { .. } | ReplaceError::State { .. } | ReplaceError::LockLost { .. } => {
                Exit::Failure
            }
            ReplaceError::AddRefused { .. } => Exit::Refused,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ReplaceSettings {
    /// The logical cluster, for the lock key.
    pub cluster: String,
    pub lock_ttl_seconds: i64,
    pub catch_up_timeout: Duration,
    /// Add as a learner and promote once caught up (etcd ≥ 3.4). Off: add as a voter.
    pub learner: bool,
    /// Start the member and wait for it (managed mode). Off: the operator starts it.
    pub start: bool,
    /// Only report what would be done.
    pub dry_run: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplaceReport {
    pub name: String,
    pub old_id: Option<String>,
    pub new_id: Option<String>,
    pub steps: Vec<String>,
    pub moved_aside: Option<PathBuf>,
    pub launch: Option<Launch>,
    pub dry_run: bool,
    pub elapsed_ms: u64,
}

impl From<files::FileProblem> for ReplaceError {
    fn from(problem: files::FileProblem) -> Self {
        ReplaceError::State { path: problem.path, detail: problem.detail }
    }
}

fn lock_locally(spec: &MemberSpec) -> Result<files::LocalGuard, ReplaceError> {
    files::lock_member(spec)?.ok_or_else(|| ReplaceError::LocalBusy {
        name: spec.name.clone(),
        path: crate::host::files::member_lock_path(spec),
    })
}

fn load_state(spec: &MemberSpec) -> Result<Option<ReplaceState>, ReplaceError> {
    Ok(files::load_replacement(spec)?)
}

fn save_state(spec: &MemberSpec, state: &ReplaceState) -> Result<(), ReplaceError> {
    Ok(files::save_replacement(spec, state)?)
}

/// A replacement of this member is under way and has moved the old data aside:
/// what the data dir holds now is the new incarnation's, which only the
/// replacement may start.
pub fn resumes_past_wipe(spec: &MemberSpec) -> bool {
    matches!(load_state(spec), Ok(Some(state)) if state.wiped)
}

/// `--initial-cluster` for joining: every member's name and first peer URL; the
/// unstarted entry that is us gets our name.
pub fn initial_cluster(members: &[Member], spec: &MemberSpec) -> String {
    members
        .iter()
        .filter_map(|member| {
            let url = member.peer_urls.first()?;
            let name = if is_ours(member, &spec.peer_url) || member.name.is_empty() {
                spec.name.clone()
            } else {
                member.name.clone()
            };
            Some(format!("{name}={url}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Who holds the membership lock: the member's name and its peer URL (its host),
/// so a restarted agent of the same member takes its own lock back, and two hosts
/// configured with the same `--name` by mistake never share it.
pub fn lock_holder(spec: &MemberSpec) -> String {
    format!("{}@{}", spec.name, spec.peer_url)
}

/// Renews `lease` every third of its TTL for as long as it is polled; returns only
/// when the lease is gone (expired, revoked) or could not be renewed for a whole TTL.
async fn keep_lock_alive<E: EtcdCluster>(etcd: &E, lease: i64, key: &str, ttl_seconds: i64) -> ReplaceError {
    const TRIES_PER_TTL: u32 = 3;
    let ttl = Duration::from_secs(ttl_seconds.max(3) as u64);
    let mut failures = 0;
    loop {
        tokio::time::sleep(ttl / TRIES_PER_TTL).await;
        match etcd.keep_alive(lease).await {
            Ok(true) => failures = 0,
            Ok(false) => return ReplaceError::LockLost { key: key.to_owned(), seconds: 0 },
            Err(error) => {
                tracing::warn!(error = %error, "could not renew the membership lock's lease");
                failures += 1;
                if failures >= TRIES_PER_TTL {
                    return ReplaceError::LockLost { key: key.to_owned(), seconds: ttl.as_secs() };
                }
            }
        }
    }
}

/// The lock every membership change of one cluster takes. Its value is the
/// holder (see [`lock_holder`]), so a restarted agent can take its own lock back.
pub fn lock_key(cluster: &str) -> String {
    format!("/lifeboat/{cluster}/membership-change")
}

/// Healthy voters other than `spec`'s member, and the voter count.
async fn other_voters_health<E: EtcdCluster>(etcd: &E, members: &[Member], spec: &MemberSpec) -> (usize, usize) {
    let voters: Vec<&Member> = members.iter().filter(|member| member.is_voter()).collect();
    let checks =
        voters.iter().filter(|member| !is_ours(member, &spec.peer_url)).filter_map(|member| member.client_urls.first());
    let results = futures::future::join_all(checks.map(|url| etcd.endpoint_health(url))).await;
    (results.iter().filter(|health| health.healthy).count(), voters.len())
}

/// Runs (or resumes) the replacement of the local member. `etcd` must reach the
/// other members; the local one is down or about to be stopped.
pub async fn replace<E: EtcdCluster, L: LocalMember>(
    etcd: &E,
    local: &L,
    settings: &ReplaceSettings,
    now_ms: u64,
) -> Result<ReplaceReport, ReplaceError> {
    let started = Stopwatch::start();
    let spec = local.spec().clone();
    let mut report = ReplaceReport { name: spec.name.clone(), dry_run: settings.dry_run, ..ReplaceReport::default() };
    // Before the state file is read, so two processes never act on the same state.
    let local_lock = if settings.dry_run { None } else { Some(lock_locally(&spec)?) };
    let members = etcd.member_list().await?;
    let current = members.iter().find(|member| is_ours(member, &spec.peer_url)).cloned();
    let mut state = match load_state(&spec)? {
        Some(state) => {
            report.steps.push(format!("resuming: {state:?}"));
            state
        }
        None => ReplaceState::begin(&members, &spec.peer_url),
    };
    report.old_id = state.old_id.map(|id| id.to_string());

    // Quorum first: nothing changes unless the others can carry the cluster.
    let (healthy, voters) = other_voters_health(etcd, &members, &spec).await;
    let ours_votes = current.as_ref().is_some_and(|member| member.is_voter());
    let safe = if ours_votes { replacement_keeps_quorum(voters, healthy) } else { healthy >= quorum(voters.max(1)) };
    if !safe {
        return Err(ReplaceError::WouldLoseQuorum { name: spec.name.clone(), healthy, voters });
    }
    if settings.dry_run {
        if let Some(old) = state.old_id {
            report.steps.push(format!("would stop {} and remove member {old}", spec.name));
        }
        report.steps.push(format!("would move {} aside", spec.data_dir.display()));
        report.steps.push(format!(
            "would add {} ({}) as a {} and start it with initial-cluster-state=existing",
            spec.name,
            spec.peer_url,
            if settings.learner { "learner, then promote" } else { "voter" }
        ));
        report.elapsed_ms = started.elapsed_ms();
        return Ok(report);
    }

    let key = lock_key(&settings.cluster);
    let Some(lease) = etcd.try_lock(&key, &lock_holder(&spec), settings.lock_ttl_seconds).await? else {
        return Err(ReplaceError::Busy { key });
    };
    // The lock is released only when the change is complete. After a failure the
    // cluster may be one member short: no other change may start until this agent
    // resumes (it takes its own lock back) or the lease expires.
    //
    // One exception: etcd refused the add because another voter is down (its strict
    // reconfiguration check wants every voter connected). This member is cleanly
    // removed, quorum holds, and the dead voter's own replacement must run first, so
    // the lock goes to it; this replacement resumes at the add.
    // The lease lives as long as the change runs, however long a learner takes to
    // catch up; if it cannot be kept, the change stops at its next await (every step
    // resumes) rather than run on while another change may take the lock.
    let result = {
        let change =
            std::pin::pin!(replace_locked(etcd, local, local_lock.as_ref(), settings, &mut state, now_ms, &mut report));
        let keeper = std::pin::pin!(keep_lock_alive(etcd, lease, &key, settings.lock_ttl_seconds));
        match futures::future::select(change, keeper).await {
            futures::future::Either::Left((result, _)) => result,
            futures::future::Either::Right((lost, _)) => Err(lost),
        }
    };
    if let Err(ReplaceError::AddRefused { .. }) = &result {
        let _ = etcd.unlock(lease).await;
    }
    result?;
    if let Err(error) = etcd.unlock(lease).await {
        tracing::warn!(error = %error, "could not release the membership lock; it expires with its lease");
    }
    report.elapsed_ms = started.elapsed_ms();
    Ok(report)
}

/// Carries out [`replacement::next`]'s steps, each decided on a fresh member list,
/// until one ends the run. The state file is written before every step that a
/// later run must not repeat, so a process killed anywhere resumes.
async fn replace_locked<E: EtcdCluster, L: LocalMember>(
    etcd: &E,
    local: &L,
    local_lock: Option<&files::LocalGuard>,
    settings: &ReplaceSettings,
    state: &mut ReplaceState,
    now_ms: u64,
    report: &mut ReplaceReport,
) -> Result<(), ReplaceError> {
    let spec = local.spec();
    save_state(spec, state)?;
    let mut run = RunProgress::default();
    for _ in 0..replacement::MAX_STEPS {
        let members = etcd.member_list().await?;
        let facts = Facts {
            state,
            members: &members,
            peer_url: &spec.peer_url,
            has_data: member::has_data(spec),
            run,
            learner: settings.learner,
            start: settings.start,
        };
        match replacement::next(&facts) {
            Step::StopLocal => {
                local.stop().await?;
                run.stopped = true;
                report.steps.push("stopped the local member".into());
            }
            Step::RemoveStalledLearner(stalled) => {
                etcd.member_remove(stalled).await?;
                let url =
                    members.iter().find(|member| member.id == stalled).and_then(|member| member.peer_urls.first());
                report.steps.push(format!(
                    "removed learner {stalled} ({}): its replacement had stalled (its lock had expired)",
                    url.map(String::as_str).unwrap_or("?")
                ));
            }
            Step::SetAsideRolledBack(rolled_back) => {
                if let Some(aside) = member::move_data_dir_aside(spec, &spec.data_dir, now_ms)? {
                    report.steps.push(format!(
                        "moved {} aside to {}: member {rolled_back} is no longer in the cluster",
                        spec.data_dir.display(),
                        aside.display()
                    ));
                }
                state.new_id = None;
                save_state(spec, state)?;
            }
            Step::RemoveOld(old) => {
                etcd.member_remove(old).await?;
                report.steps.push(format!("removed member {old}"));
            }
            Step::SetAsideData => {
                if let Some(aside) = member::move_data_dir_aside(spec, &spec.data_dir, now_ms)? {
                    report.steps.push(format!("moved {} aside to {}", spec.data_dir.display(), aside.display()));
                    report.moved_aside = Some(aside);
                }
                state.wiped = true;
                save_state(spec, state)?;
            }
            Step::RemoveLostIncarnation(lost) => {
                etcd.member_remove(lost).await?;
                report.steps.push(format!("removed member {lost}: it had started and its data dir is empty now"));
                state.new_id = None;
                save_state(spec, state)?;
            }
            Step::Add { learner } => {
                let (member, _) = match etcd.member_add(std::slice::from_ref(&spec.peer_url), learner).await {
                    Ok(added) => added,
                    Err(error) if error.to_string().contains("unhealthy cluster") => {
                        return Err(ReplaceError::AddRefused { name: spec.name.clone(), detail: error.to_string() })
                    }
                    Err(error) => return Err(error.into()),
                };
                report.steps.push(format!(
                    "added member {} as a {}",
                    member.id,
                    if member.is_learner { "learner" } else { "voter" }
                ));
            }
            Step::Record(added) => {
                state.new_id = Some(added);
                save_state(spec, state)?;
                report.new_id = Some(added.to_string());
            }
            Step::LeaveStopped => {
                report.launch = Some(launch(&members, spec, settings));
                report.new_id = state.new_id.map(|id| id.to_string());
                report.steps.push("left the member stopped: start etcd with the launch settings shown".into());
                files::clear_replacement(spec);
                return Ok(());
            }
            Step::StartLocal => {
                let launch = launch(&members, spec, settings);
                report.launch = Some(launch.clone());
                report.new_id = state.new_id.map(|id| id.to_string());
                // Only this start may run etcd while the lock is held (see
                // `LocalGuard::prepare_start`).
                let _starting = local_lock.map(files::LocalGuard::prepare_start).transpose()?;
                local.start(&launch).await?;
                run.started = true;
                report.steps.push("started the local member with initial-cluster-state=existing".into());
            }
            Step::Promote(learner) => {
                promote_once_caught_up(etcd, learner, settings, spec).await?;
                run.promoted = true;
                report.steps.push(format!("promoted member {learner} to voter"));
            }
            Step::LeaveLearner(learner) => {
                // Resumed where etcd starts only after we return (`reconfigure` as
                // ExecStartPre): the learner cannot catch up while we wait. The progress
                // file stays, so the agent resumes and promotes it once etcd runs.
                report.steps.push(format!("left learner {learner} for the agent to promote once etcd runs"));
                return Ok(());
            }
            Step::Done => {
                files::clear_replacement(spec);
                return Ok(());
            }
        }
    }
    Err(ReplaceError::State {
        path: files::replacement_state_path(spec),
        detail: format!(
            "the replacement did not finish within {} steps (the cluster kept changing under it); run replace again",
            replacement::MAX_STEPS
        ),
    })
}

/// How the new incarnation starts. etcd ignores the token when joining an existing
/// cluster; it is recorded for the journal.
fn launch(members: &[Member], spec: &MemberSpec, settings: &ReplaceSettings) -> Launch {
    Launch {
        initial_cluster: initial_cluster(members, spec),
        initial_cluster_state: "existing".into(),
        initial_cluster_token: format!("{}-join", settings.cluster),
    }
}

/// Promotes `learner`, retrying while etcd says it has not caught up, for at most
/// the catch-up timeout.
async fn promote_once_caught_up<E: EtcdCluster>(
    etcd: &E,
    learner: lifeboat::MemberId,
    settings: &ReplaceSettings,
    spec: &MemberSpec,
) -> Result<(), ReplaceError> {
    let catching_up = Stopwatch::start();
    loop {
        match etcd.member_promote(learner).await {
            Ok(()) => return Ok(()),
            Err(error) if catching_up.elapsed() < settings.catch_up_timeout => {
                tracing::debug!(error = %error, "learner not caught up yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => {
                return Err(ReplaceError::CatchUpTimeout {
                    name: spec.name.clone(),
                    seconds: settings.catch_up_timeout.as_secs(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two replacements of the same member on one host: the second is refused
    /// until the first lets go; a different member is not held up.
    #[test]
    fn one_local_replacement_per_member() {
        let scratch = tempfile::tempdir().expect("a temp dir");
        let spec = |name: &str| MemberSpec {
            name: name.into(),
            data_dir: scratch.path().join(format!("{name}.etcd")),
            client_url: "http://127.0.0.1:2379".into(),
            peer_url: "http://127.0.0.1:2380".into(),
            extra_args: Vec::new(),
        };
        let first = lock_locally(&spec("m0")).expect("the first takes the lock");
        match lock_locally(&spec("m0")) {
            Err(error @ ReplaceError::LocalBusy { .. }) => {
                assert_eq!(error.exit(), Exit::Refused);
                assert!(error.to_string().contains("another lifeboat process"), "{error}");
            }
            other => panic!("expected LocalBusy, got {:?}", other.map(|_| ())),
        }
        let _other_member = lock_locally(&spec("m1")).expect("another member is independent");
        drop(first);
        lock_locally(&spec("m0")).expect("free again once the first is done");
    }
}
