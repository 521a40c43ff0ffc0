//! Restore to a revision or a point in time: the newest snapshot at or below
//! the target, then the log after it, replayed one transaction per revision.
//!
//! The replay runs into a scratch one-member etcd on loopback, started from the
//! verified snapshot; every applied revision must come out with exactly the
//! logged revision number, so the result holds the same keys, values, create and
//! mod revisions and versions as the cluster did at the target (anything else
//! stops the replay as diverged). The scratch member is then snapshotted and
//! that snapshot is built into the data dir with etcdutl, exactly as a plain
//! restore does, so the data dir is still touched only by one final rename.
//!
//! Leases: every lease a logged put refers to is granted again with its ID and
//! its granted TTL, and every lease in the scratch member is renewed while the
//! replay runs, so none expires half way. What is approximate: a lease's
//! remaining time starts again from its full TTL at the restored member's
//! start (etcd does the same on every leader change), and a lease the log saw
//! only after it was gone gets [`UNKNOWN_LEASE_TTL_SECONDS`].

use super::{list, read, LogError};
use crate::backup::catalog::{self, Entry};
use crate::backup::restore::{self, Etcdutl, RestoreError, RestoreReport, RestoreSettings, SnapshotChoice};
use crate::backup::save::{self, SaveError, SaveSettings};
use crate::backup::scratch::{free_bytes, NotReady, ScratchMember};
use crate::etcd::log::ApplyError;
use crate::etcd::EtcdClient;
use crate::exit::{Classify, Exit};
use crate::host::clock::wall_clock_now;
use crate::host::clock::Stopwatch;
use crate::member::data_dir::Staging;
use crate::member::MemberError;
use crate::ports::{
    ByteSource, DataDirBuilder, EtcdCluster, EtcdError, ExtendError, LocalMember, LogExtension, SnapshotStore,
    StoreError,
};
use lifeboat::revlog::{self, Chain, EventKind, LeaseRecord};
use lifeboat::{Millis, Revision, SnapshotName, StoreLayout};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The TTL given to a lease the writer could not read (it was gone already).
pub const UNKNOWN_LEASE_TTL_SECONDS: i64 = 60;

/// How far a restore goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// As far as the newest history's log reaches without a hole.
    Latest,
    /// Exactly this revision.
    Revision(Revision),
    /// The last revision the writer saw at or before this wall-clock time.
    Time(Millis),
}

/// Where and with what a replay runs.
#[derive(Clone, Debug)]
pub struct ReplaySettings {
    /// The etcd binary the scratch member runs.
    pub etcd: PathBuf,
    /// The scratch dir is created under this one.
    pub scratch_parent: PathBuf,
    /// How long the scratch member may take to answer.
    pub start_timeout: Duration,
}

/// What the log added to the snapshot.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogApplied {
    pub cluster_id: String,
    /// The revision the snapshot actually held (its name gives a lower bound).
    pub snapshot_revision: i64,
    /// The revision the restored data ends at.
    pub reached: i64,
    /// When the writer saw that revision (`None`: no log was applied).
    pub reached_seen: Option<String>,
    pub revisions_applied: u64,
    pub segments_read: u64,
    pub replay_ms: u64,
    /// Why a `latest` or time restore stopped before the log's end, if it did.
    pub stopped_early: Option<String>,
}

/// A restore with its log.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogRestoreReport {
    #[serde(flatten)]
    pub restore: RestoreReport,
    pub log: LogApplied,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no snapshot and log of cluster {cluster:?} reach {target}: {detail}")]
    Unreachable { cluster: String, target: String, detail: String },
    #[error("not enough space for the replay in {path}: {needed} bytes needed, {available} free; pass --scratch-dir on a larger filesystem")]
    NoSpace { path: PathBuf, needed: u64, available: u64 },
    #[error("cannot use the scratch dir {path}: {source}; pass --scratch-dir with a writable directory")]
    Scratch { path: PathBuf, source: std::io::Error },
    #[error("cannot start the scratch member for the replay: {0}; pass --etcd with the path of the etcd binary (restore: or --no-log for the snapshot alone)")]
    Start(#[from] MemberError),
    #[error("the scratch member did not answer within {seconds} s ({detail}); its log: {log}")]
    NoAnswer { seconds: u64, detail: String, log: String },
    #[error("the scratch member's etcd exited before it answered; its log: {log}")]
    Exited { log: String },
    #[error("replay of revision {revision} failed: {source}")]
    Apply { revision: i64, source: ApplyError },
    #[error("cannot snapshot the replayed member: {0}")]
    Snapshot(String),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("cannot save the replayed data as a snapshot: {0}")]
    Save(#[from] SaveError),
}

impl Classify for ReplayError {
    fn exit(&self) -> Exit {
        match self {
            ReplayError::Restore(error) => error.exit(),
            ReplayError::Log(error) => error.exit(),
            ReplayError::Store(error) => error.exit(),
            ReplayError::Unreachable { .. } => Exit::NotFound,
            ReplayError::Start(_) | ReplayError::Scratch { .. } | ReplayError::NoSpace { .. } => Exit::Usage,
            ReplayError::Apply { source: ApplyError::Etcd(_), .. } => Exit::Etcd,
            ReplayError::Apply { .. } => Exit::Corrupt,
            ReplayError::Save(error) => error.exit(),
            _ => Exit::Failure,
        }
    }
}

/// One way to reach the target: a verified snapshot and the chain after it.
struct Candidate {
    entry: Entry,
    cluster_id: String,
    chain: Chain,
}

/// Restores the member data dir to `target`: snapshot, log replay, etcdutl,
/// one rename. A snapshot that fails verification is skipped for the next
/// candidate that still reaches the target.
pub async fn restore_to<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    settings: &RestoreSettings,
    etcdutl: &Etcdutl,
    target: Target,
    replay: &ReplaySettings,
) -> Result<LogRestoreReport, ReplayError> {
    let started = Stopwatch::start();
    restore::check_data_dir(&settings.data_dir)?;
    etcdutl.ready()?;
    let candidates = candidates(store, layout, &settings.cluster, target).await?;
    let staging = Staging::beside(&settings.data_dir).map_err(RestoreError::from)?;
    let mut skipped: Vec<(String, String)> = Vec::new();
    for candidate in candidates {
        let entry = &candidate.entry;
        let label = entry.name.to_string();
        let fetched = match restore::fetch_verified(
            store,
            &staging,
            &entry.key,
            entry.name.compression(),
            entry.manifest.as_ref(),
            entry.problem.clone(),
        )
        .await
        {
            Ok(fetched) => fetched,
            Err(crate::backup::verify::VerifyError::Store(error)) if !matches!(error, StoreError::NotFound { .. }) => {
                return Err(error.into())
            }
            Err(error) => {
                tracing::warn!(snapshot = %label, error = %error, "snapshot failed verification; trying the next one that reaches the target");
                skipped.push((label, error.to_string()));
                continue;
            }
        };
        let snapshot = staging.path().join("snapshot.db");
        let replayed = with_replayed(
            store,
            layout,
            &candidate,
            &snapshot,
            target,
            etcdutl,
            replay,
            &settings.cluster,
            snapshot_to_file,
        )
        .await;
        let (file, applied, _scratch) = match replayed {
            Ok(replayed) => replayed,
            Err(ReplayError::Unreachable { detail, .. }) => {
                skipped.push((label, detail));
                continue;
            }
            Err(error) => return Err(error),
        };
        let built = staging.path().join("data");
        etcdutl.build(&file, &built, settings).await?;
        staging.install(&built, &settings.data_dir).map_err(RestoreError::from)?;
        return Ok(LogRestoreReport {
            restore: RestoreReport {
                snapshot: label,
                revision: Some(applied.reached),
                sha256: fetched.plain.sha256,
                size_bytes: fetched.plain.size_bytes,
                data_dir: settings.data_dir.clone(),
                skipped,
                elapsed_ms: started.elapsed_ms(),
                bump_revision: settings.bump_revision,
            },
            log: applied,
        });
    }
    let tried = skipped.iter().map(|(name, reason)| format!("{name} ({reason})")).collect::<Vec<_>>().join("; ");
    Err(ReplayError::Unreachable {
        cluster: settings.cluster.clone(),
        target: describe(target),
        detail: format!("every candidate failed: {tried}"),
    })
}

fn describe(target: Target) -> String {
    match target {
        Target::Latest => "the latest revision".into(),
        Target::Revision(revision) => format!("revision {}", revision.0),
        Target::Time(time) => time.to_rfc3339(),
    }
}

/// The snapshots (with their chains) that reach `target`, best first.
async fn candidates<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    cluster: &str,
    target: Target,
) -> Result<Vec<Candidate>, ReplayError> {
    let catalog = catalog::load(store, layout).await?;
    let backups: Vec<&Entry> = catalog
        .snapshots
        .iter()
        .filter(|entry| {
            entry.is_backup() && entry.manifest.as_ref().is_some_and(|manifest| manifest.cluster == cluster)
        })
        .collect();
    let unreachable =
        |detail: String| ReplayError::Unreachable { cluster: cluster.to_owned(), target: describe(target), detail };
    if backups.is_empty() {
        if let Some(error) = catalog.unopened_error(store, "no snapshot this key opens reaches the target") {
            return Err(error.into());
        }
        return Err(unreachable(format!(
            "no verified snapshot in {}; run `lifeboat save` first",
            store.location(&layout.snapshots_prefix())
        )));
    }
    let with_manifest: Vec<(&Entry, &lifeboat::Manifest)> =
        backups.iter().filter_map(|entry| entry.manifest.as_ref().map(|manifest| (*entry, manifest))).collect();
    let mut segments_of: BTreeMap<String, Vec<revlog::SegmentName>> = BTreeMap::new();
    for (_, manifest) in &with_manifest {
        if !segments_of.contains_key(&manifest.cluster_id) {
            let (listed, _) = list(store, layout, &manifest.cluster_id).await?;
            segments_of.insert(manifest.cluster_id.clone(), listed.into_iter().map(|listed| listed.name).collect());
        }
    }
    let bases: Vec<revlog::Base> = with_manifest
        .iter()
        .map(|(_, manifest)| revlog::Base {
            history: manifest.cluster_id.clone(),
            revision: manifest.revision,
            saved: manifest.created_ms,
        })
        .collect();
    let aim = match target {
        Target::Latest => revlog::Aim::Latest,
        Target::Revision(revision) => revlog::Aim::Revision(revision),
        Target::Time(time) => revlog::Aim::Time(time),
    };
    let segments = |history: &str| segments_of.get(history).map(Vec::as_slice).unwrap_or_default();
    let candidates: Vec<Candidate> = revlog::candidates(&bases, segments, aim)
        .into_iter()
        .filter_map(|(index, chain)| {
            let (entry, manifest) = with_manifest.get(index)?;
            Some(Candidate { entry: (*entry).clone(), cluster_id: manifest.cluster_id.clone(), chain })
        })
        .collect();
    if candidates.is_empty() {
        let reaches: Vec<String> = segments_of
            .iter()
            .map(|(cluster_id, segments)| {
                let gaps = revlog::gaps(segments);
                let range = match (segments.first(), segments.iter().map(|segment| segment.last()).max()) {
                    (Some(first), Some(last)) => format!("log {}..={}", first.first().0, last.0),
                    _ => "no log".to_owned(),
                };
                format!(
                    "cluster ID {cluster_id}: {range}{}",
                    if gaps.is_empty() {
                        String::new()
                    } else {
                        format!(", holes after {:?}", gaps.iter().map(|gap| gap.0 .0).collect::<Vec<_>>())
                    }
                )
            })
            .collect();
        return Err(unreachable(format!(
            "no snapshot at or below it has a log without holes up to it ({}); `lifeboat log status` shows the chains",
            reaches.join("; ")
        )));
    }
    Ok(candidates)
}

/// etcd flags of the scratch member: room for any logged transaction and any
/// database, and no fsync where etcd offers that (3.5+): the replay's result is
/// taken as a snapshot, so a crash loses only the scratch dir.
async fn scratch_flags(etcd: &Path) -> Vec<String> {
    let mut flags = vec![
        "--quota-backend-bytes=68719476736".to_owned(),
        "--max-txn-ops=1000000".to_owned(),
        "--max-request-bytes=268435456".to_owned(),
    ];
    let help = tokio::process::Command::new(etcd).arg("--help").output().await;
    if help.is_ok_and(|output| {
        String::from_utf8_lossy(&output.stdout).contains("--unsafe-no-fsync")
            || String::from_utf8_lossy(&output.stderr).contains("--unsafe-no-fsync")
    }) {
        flags.push("--unsafe-no-fsync".to_owned());
    }
    flags
}

/// A scratch member holding the snapshot plus the log up to the target, alive
/// while `finish` runs: `finish` takes the result out (as a file, or as a new
/// snapshot in the store).
#[allow(clippy::too_many_arguments)]
async fn with_replayed<T>(
    store: &impl SnapshotStore,
    layout: &StoreLayout,
    candidate: &Candidate,
    snapshot: &Path,
    target: Target,
    etcdutl: &Etcdutl,
    settings: &ReplaySettings,
    cluster: &str,
    finish: impl AsyncFnOnce(&EtcdClient, &ScratchMember) -> Result<T, ReplayError>,
) -> Result<(T, LogApplied, tempfile::TempDir), ReplayError> {
    let started = Stopwatch::start();
    let size = std::fs::metadata(snapshot).map(|metadata| metadata.len()).unwrap_or(0);
    // The restored db, the replayed db and its snapshot, plus the log's growth.
    let needed = size.saturating_mul(3).saturating_add(256 << 20);
    let available = free_bytes(&settings.scratch_parent).unwrap_or(u64::MAX);
    if available < needed {
        return Err(ReplayError::NoSpace { path: settings.scratch_parent.clone(), needed, available });
    }
    let scratch = tempfile::Builder::new()
        .prefix("lifeboat-replay-")
        .tempdir_in(&settings.scratch_parent)
        .map_err(|source| ReplayError::Scratch { path: settings.scratch_parent.clone(), source })?;
    let scratch_error = |source: std::io::Error| ReplayError::Scratch { path: scratch.path().to_owned(), source };
    let mut member = ScratchMember::new(scratch.path(), "lifeboat-replay", "lifeboat-replay").map_err(scratch_error)?;
    let build = member.restore_settings(SnapshotChoice::Latest, cluster);
    etcdutl.build(snapshot, &member.data_dir(), &build).await?;
    let flags = scratch_flags(&settings.etcd).await;
    let (running, (client, mut connection)) = member
        .start_ready(&settings.etcd, flags, settings.start_timeout, |url| async move {
            let client = EtcdClient::new(vec![url.clone()], Duration::from_secs(30));
            let mut connection = client.replay_target(&url).await.map_err(|error| error.to_string())?;
            connection.revision().await.map_err(|error| error.to_string())?;
            Ok((client, connection))
        })
        .await
        .map_err(|failure| match failure {
            NotReady::Start(error) => ReplayError::Start(error),
            NotReady::Exited { log } => ReplayError::Exited { log },
            NotReady::NoAnswer { seconds, detail, log } => ReplayError::NoAnswer { seconds, detail, log },
        })?;
    let outcome = async {
        // Every lease renewed in the background until the result is taken: none may
        // expire (and delete keys, adding revisions the log does not have) meanwhile.
        let _renewer = AbortOnDrop(tokio::spawn({
            let (client, url) = (client.clone(), member.client_url.clone());
            async move {
                let Ok(mut connection) = client.replay_target(&url).await else { return };
                loop {
                    let _ = connection.renew_leases().await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }));
        let mut applied = apply_chain(store, layout, candidate, target, &mut connection).await?;
        // Nothing but the log may have moved the member: checked before the result is taken.
        let now = connection.revision().await?;
        if now.0 != applied.reached {
            return Err(ReplayError::Apply {
                revision: applied.reached,
                source: ApplyError::Diverged { expected: applied.reached, actual: now.0 },
            });
        }
        let finished = finish(&client, &member).await?;
        applied.replay_ms = started.elapsed_ms();
        Ok::<_, ReplayError>((finished, applied))
    }
    .await;
    if let Err(error) = running.stop().await {
        tracing::warn!(error = %error, "could not stop the replay member; it is killed with its scratch dir");
    }
    let (finished, applied) = outcome?;
    Ok((finished, applied, scratch))
}

/// The replayed member's data as a snapshot file in its scratch dir, as etcd
/// streams it (with its trailing hash, which etcdutl checks).
async fn snapshot_to_file(client: &EtcdClient, member: &ScratchMember) -> Result<PathBuf, ReplayError> {
    let file = member.dir.join("replayed.db");
    let write_error = |source: std::io::Error| ReplayError::Scratch { path: member.dir.join("replayed.db"), source };
    let mut out = std::fs::File::create(&file).map_err(write_error)?;
    let mut stream = client.snapshot(&member.client_url).await?;
    loop {
        match stream.next_chunk().await {
            Ok(Some(chunk)) => out.write_all(&chunk).map_err(write_error)?,
            Ok(None) => break,
            Err(error) => return Err(ReplayError::Snapshot(error.to_string())),
        }
    }
    out.sync_all().map_err(write_error)?;
    Ok(file)
}

/// Stops a background task when dropped, whatever way the scope ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Applies the chain up to the target onto the member, from the revision its
/// snapshot actually holds (the name gives a lower bound).
async fn apply_chain<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    candidate: &Candidate,
    target: Target,
    connection: &mut crate::etcd::log::ReplayTarget,
) -> Result<LogApplied, ReplayError> {
    let base = connection.revision().await?;
    if let Target::Revision(revision) = target {
        if base > revision {
            return Err(ReplayError::Unreachable {
                cluster: String::new(),
                target: describe(target),
                detail: format!("the snapshot holds revision {} already, past the target", base.0),
            });
        }
    }
    let mut applied = apply_segments(store, layout, candidate, target, base, connection).await?;
    applied.snapshot_revision = base.0;
    Ok(applied)
}

/// Applies every logged revision after `base` up to the target.
async fn apply_segments<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    candidate: &Candidate,
    target: Target,
    base: Revision,
    member: &mut crate::etcd::log::ReplayTarget,
) -> Result<LogApplied, ReplayError> {
    let mut applied = LogApplied {
        cluster_id: candidate.cluster_id.clone(),
        snapshot_revision: base.0,
        reached: base.0,
        reached_seen: None,
        revisions_applied: 0,
        segments_read: 0,
        replay_ms: 0,
        stopped_early: None,
    };
    let mut granted: HashSet<i64> = HashSet::new();
    let mut reached = base;
    let mut passed_time = false;
    'segments: for name in &candidate.chain.segments {
        // A time target reads the segments the snapshot already holds too: their times
        // tell whether the snapshot overshoots the target.
        if name.last() <= reached && !matches!(target, Target::Time(_)) {
            continue;
        }
        let segment = match read(store, layout, &candidate.cluster_id, name).await {
            Ok(segment) => segment,
            // A store that does not answer is not a damaged log: the caller retries (a
            // recovery's claim waits for the next round).
            Err(LogError::Store(error)) if !permanent(&error) => return Err(ReplayError::Store(error)),
            // A time target must see the times of the revisions its snapshot holds.
            Err(error) if matches!(target, Target::Time(_)) && name.first() <= base => {
                return Err(ReplayError::Unreachable {
                    cluster: String::new(),
                    target: describe(target),
                    detail: format!("cannot tell when the snapshot's last revisions were written: {error}"),
                })
            }
            // Latest and a time restore go as far as the log is whole, and say where it stopped.
            Err(error) if !matches!(target, Target::Revision(_)) => {
                tracing::warn!(error = %error, reached = reached.0, "the log stops at a damaged segment");
                applied.stopped_early = Some(error.to_string());
                break;
            }
            Err(error) => return Err(error.into()),
        };
        applied.segments_read += 1;
        let ttls: BTreeMap<i64, i64> =
            segment.header.leases.iter().map(|lease| (lease.id, lease.ttl_seconds)).collect();
        for entry in &segment.revisions {
            if entry.revision <= reached {
                // A snapshot named before the target time may hold revisions written after
                // it (they landed while it streamed, above its name's revision): the log
                // says when; an older base then.
                if let Target::Time(time) = target {
                    if entry.revision > candidate.chain.base && entry.revision <= base && entry.seen > time {
                        return Err(ReplayError::Unreachable {
                            cluster: String::new(),
                            target: describe(target),
                            detail: format!(
                                "the snapshot holds revision {}, written after the target time",
                                entry.revision.0
                            ),
                        });
                    }
                }
                continue;
            }
            match target {
                Target::Revision(revision) if entry.revision > revision => break 'segments,
                Target::Time(time) if entry.seen > time => {
                    passed_time = true;
                    break 'segments;
                }
                _ => {}
            }
            for event in &entry.events {
                if event.kind == EventKind::Put && event.lease != 0 && granted.insert(event.lease) {
                    let ttl =
                        ttls.get(&event.lease).copied().filter(|ttl| *ttl > 0).unwrap_or(UNKNOWN_LEASE_TTL_SECONDS);
                    member.ensure_lease(LeaseRecord { id: event.lease, ttl_seconds: ttl }).await?;
                }
            }
            member.apply(entry).await.map_err(|source| ReplayError::Apply { revision: entry.revision.0, source })?;
            reached = entry.revision;
            applied.reached = reached.0;
            applied.reached_seen = Some(entry.seen.to_rfc3339());
            applied.revisions_applied += 1;
            if applied.revisions_applied.is_multiple_of(10_000) {
                tracing::info!(revision = reached.0, applied = applied.revisions_applied, "replaying the log");
            }
            if applied.revisions_applied.is_multiple_of(500) {
                crate::progress::phase(&format!("replaying the log: revision {}", reached.0));
            }
        }
    }
    match target {
        Target::Revision(revision) if reached < revision => {
            return Err(ReplayError::Unreachable {
                cluster: String::new(),
                target: describe(target),
                detail: format!("the log ends at revision {}", reached.0),
            });
        }
        // The chain ended (a hole, or the log's end) before any revision past the time:
        // the restore is the latest the log holds before it, which may be short of it.
        Target::Time(time) if applied.stopped_early.is_none() && !passed_time => {
            applied.stopped_early = Some(format!(
                "the log of this chain ends at revision {} before {}: any later writes before that time are past a hole or were never logged",
                reached.0,
                time.to_rfc3339()
            ));
        }
        _ => {}
    }
    Ok(applied)
}

/// Store errors a retry cannot fix: the log is as short as it reads.
fn permanent(error: &StoreError) -> bool {
    matches!(error, StoreError::NotFound { .. }) || error.is_bad_content()
}

/// Extends `snapshot` with the log after it into a new versioned snapshot (see
/// [`DataDirBuilder::extend_with_log`]). Its manifest names the original etcd
/// cluster ID, so the log could continue from it; its source member is the
/// scratch member that replayed it.
pub async fn extend_with_log<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    snapshot: &SnapshotName,
    etcdutl: &Etcdutl,
    replay: &ReplaySettings,
    save_settings: &SaveSettings,
) -> Result<Option<LogExtension>, ReplayError> {
    let catalog = catalog::load(store, layout).await?;
    let Some(chosen) = catalog.find(snapshot).and_then(|entry| entry.manifest.clone()) else { return Ok(None) };
    let (listed, _) = list(store, layout, &chosen.cluster_id).await?;
    let names: Vec<revlog::SegmentName> = listed.into_iter().map(|listed| listed.name).collect();
    // The chosen snapshot, else the newest older one of its cluster that verifies (its
    // hash first, then the chain from it): with the log after it, an older snapshot
    // reaches as far, and without the log the recovery would fall back to it anyway.
    let staging = Staging::beside(&replay.scratch_parent.join("lifeboat-log-extend")).map_err(RestoreError::from)?;
    let mut base = None;
    for entry in catalog.snapshots.iter().filter(|entry| {
        entry.is_backup()
            && entry.name.revision() <= snapshot.revision()
            && entry.manifest.as_ref().is_some_and(|manifest| manifest.cluster_id == chosen.cluster_id)
    }) {
        match restore::fetch_verified(
            store,
            &staging,
            &entry.key,
            entry.name.compression(),
            entry.manifest.as_ref(),
            None,
        )
        .await
        {
            Ok(_) => {
                let chain = revlog::chain(entry.name.revision(), &names, None);
                base = Some(Candidate { entry: entry.clone(), cluster_id: chosen.cluster_id.clone(), chain });
                break;
            }
            Err(crate::backup::verify::VerifyError::Store(error)) if !permanent(&error) => return Err(error.into()),
            Err(error) => {
                tracing::warn!(snapshot = %entry.name, error = %error, "snapshot failed verification; extending an older one")
            }
        }
    }
    let Some(candidate) = base else { return Ok(None) };
    if candidate.chain.reaches <= candidate.entry.name.revision() {
        // No log after it: the recovery restores it as it is.
        return Ok(None);
    }
    // Another claimer's replay, a moment earlier, may reach as far: taken once it verifies.
    if let Some(done) = super::reached_already(&catalog, &chosen.cluster_id, candidate.chain.reaches) {
        if let Some(entry) = catalog.find(&done.name) {
            if crate::backup::catalog::verify_entry(store, entry).await.is_ok() {
                return Ok(Some(done));
            }
        }
    }
    let cluster_id = u64::from_str_radix(&chosen.cluster_id, 16).unwrap_or_default();
    let file = staging.path().join("snapshot.db");
    let base_revision = candidate.entry.name.revision();
    let (report, applied, _scratch) = with_replayed(
        store,
        layout,
        &candidate,
        &file,
        Target::Latest,
        etcdutl,
        replay,
        &save_settings.cluster,
        async |client: &EtcdClient, member: &ScratchMember| {
            let mut source = client.endpoint_status(&member.client_url).await?;
            if source.revision <= base_revision {
                return Ok(None);
            }
            source.cluster_id = cluster_id;
            Ok(Some(save::save_from(client, store, layout, save_settings, wall_clock_now(), &source).await?))
        },
    )
    .await?;
    Ok(report.map(|report| LogExtension {
        name: report.name,
        revisions_applied: applied.revisions_applied,
        reached: applied.reached,
        stopped_early: applied.stopped_early,
    }))
}

/// The agent's data-dir builder: etcdutl, plus the log replay a disaster
/// recovery uses to extend the snapshot it restores.
pub struct LogBuilder {
    pub etcdutl: Etcdutl,
    pub replay: ReplaySettings,
}

impl DataDirBuilder for LogBuilder {
    fn ready(&self) -> Result<(), RestoreError> {
        self.etcdutl.ready()
    }
    async fn build(&self, snapshot: &Path, into: &Path, settings: &RestoreSettings) -> Result<(), RestoreError> {
        self.etcdutl.build(snapshot, into, settings).await
    }
    async fn supports_bump(&self) -> bool {
        self.etcdutl.supports_bump().await
    }
    async fn data_revision(&self, data_dir: &Path) -> Result<Option<Revision>, RestoreError> {
        self.etcdutl.data_revision(data_dir).await
    }
    async fn extend_with_log<S: SnapshotStore>(
        &self,
        store: &S,
        layout: &StoreLayout,
        snapshot: &SnapshotName,
        save: &SaveSettings,
    ) -> Result<Option<LogExtension>, ExtendError> {
        extend_with_log(store, layout, snapshot, &self.etcdutl, &self.replay, save).await.map_err(|error| match error {
            ReplayError::Store(error)
            | ReplayError::Log(LogError::Store(error))
            | ReplayError::Restore(RestoreError::Store(error))
            | ReplayError::Restore(RestoreError::Verify(crate::backup::verify::VerifyError::Store(error)))
            | ReplayError::Save(SaveError::Store(error)) => ExtendError::Store(error),
            other => ExtendError::Replay(Box::new(other)),
        })
    }
}
