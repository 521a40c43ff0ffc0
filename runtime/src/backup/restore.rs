//! `lifeboat restore`: fetch a snapshot, prove it whole, and build a member data
//! dir from it with `etcdutl snapshot restore`.
//!
//! The data dir is touched only at the very end, by one rename of a fully built
//! directory; lifeboat never deletes or overwrites an existing data dir.

use crate::backup::catalog::{self, Catalog, Entry};
use crate::backup::verify::{self, VerifyError};
use crate::exit::{Classify, Exit};
use crate::host::clock::Stopwatch;
use crate::member::data_dir::{self, DataDirProblem, Staging};
use crate::ports::{DataDirBuilder, SnapshotStore, StoreError};
use lifeboat::{Compression, SnapshotName, StoreLayout};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotChoice {
    /// The newest versioned snapshot that verifies, else the plain `snapshot.db`.
    Latest,
    Named(SnapshotName),
    /// The kube-aws key `snapshot.db` itself.
    LatestKey,
}

impl std::str::FromStr for SnapshotChoice {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "latest" => Ok(SnapshotChoice::Latest),
            "snapshot.db" => Ok(SnapshotChoice::LatestKey),
            name => name.parse().map(SnapshotChoice::Named),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RestoreSettings {
    pub data_dir: PathBuf,
    pub name: String,
    pub initial_cluster: String,
    pub initial_advertise_peer_urls: String,
    pub initial_cluster_token: String,
    pub snapshot: SnapshotChoice,
    pub cluster: String,
    /// `--bump-revision N --mark-compacted` (etcdutl ≥ 3.5.10): the restored
    /// member's revisions start N above the snapshot's, and everything before is
    /// marked compacted, so watchers (Kubernetes informers) never see revisions go
    /// back. `None`: a plain restore.
    pub bump_revision: Option<u64>,
}

/// The bump a restore asks for by default: far above any revision a cluster
/// reaches between two restores.
pub const DEFAULT_BUMP_REVISION: u64 = 1_000_000_000;

/// etcd's own `etcdutl snapshot restore`. etcd 3.4 has no etcdutl: its
/// `etcdctl` (v3 API) takes the same `snapshot restore|status` arguments, so
/// `--etcdutl /usr/bin/etcdctl` works there.
pub struct Etcdutl(pub PathBuf);

impl Etcdutl {
    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.0);
        // Read only by etcd 3.4's etcdctl (its default API is v2); ignored by etcdutl.
        command.env("ETCDCTL_API", "3");
        command
    }
}

impl DataDirBuilder for Etcdutl {
    fn ready(&self) -> Result<(), RestoreError> {
        std::process::Command::new(&self.0)
            .arg("version")
            .output()
            .map(|_| ())
            .map_err(|source| RestoreError::EtcdutlMissing { etcdutl: self.0.clone(), source })
    }

    async fn build(&self, snapshot: &Path, into: &Path, settings: &RestoreSettings) -> Result<(), RestoreError> {
        let output = self
            .command()
            .arg("snapshot")
            .arg("restore")
            .arg(snapshot)
            .arg("--data-dir")
            .arg(into)
            .arg("--name")
            .arg(&settings.name)
            .arg("--initial-cluster")
            .arg(&settings.initial_cluster)
            .arg("--initial-advertise-peer-urls")
            .arg(&settings.initial_advertise_peer_urls)
            .arg("--initial-cluster-token")
            .arg(&settings.initial_cluster_token)
            .args(
                settings
                    .bump_revision
                    .map(|bump| vec!["--bump-revision".to_owned(), bump.to_string(), "--mark-compacted".to_owned()])
                    .unwrap_or_default(),
            )
            .output()
            .await
            .map_err(|source| RestoreError::EtcdutlMissing { etcdutl: self.0.clone(), source })?;
        if !output.status.success() {
            return Err(RestoreError::Etcdutl {
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().lines().last().unwrap_or("").to_owned(),
            });
        }
        Ok(())
    }

    async fn supports_bump(&self) -> bool {
        // Flags appear in `--help` (etcdutl ≥ 3.5.10); etcd 3.4's etcdctl has none of them.
        self.command().args(["snapshot", "restore", "--help"]).output().await.is_ok_and(|output| {
            String::from_utf8_lossy(&output.stdout).contains("--bump-revision")
                || String::from_utf8_lossy(&output.stderr).contains("--bump-revision")
        })
    }

    async fn data_revision(&self, data_dir: &Path) -> Result<Option<lifeboat::Revision>, RestoreError> {
        // The backend database is a bbolt file like a snapshot; etcd commits it on a
        // graceful stop, so `snapshot status` reads the revision the member reached.
        let db = data_dir.join("member").join("snap").join("db");
        if !db.is_file() {
            return Ok(None);
        }
        let output = self
            .command()
            .args(["snapshot", "status", "--write-out", "json"])
            .arg(&db)
            .output()
            .await
            .map_err(|source| RestoreError::EtcdutlMissing { etcdutl: self.0.clone(), source })?;
        let failed = |detail: String| RestoreError::Etcdutl { status: output.status.to_string(), stderr: detail };
        if !output.status.success() {
            return Err(failed(String::from_utf8_lossy(&output.stderr).trim().lines().last().unwrap_or("").to_owned()));
        }
        #[derive(serde::Deserialize)]
        struct Status {
            revision: i64,
        }
        let status: Status = serde_json::from_slice(&output.stdout)
            .map_err(|error| failed(format!("unreadable `snapshot status` output: {error}")))?;
        Ok(Some(lifeboat::Revision(status.revision)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "data dir {path} is not empty: lifeboat never overwrites a data dir; move it away or choose another --data-dir"
    )]
    DataDirNotEmpty { path: PathBuf },
    #[error("cannot prepare {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot run {etcdutl}: {source}; install etcd's etcdutl or pass --etcdutl PATH")]
    EtcdutlMissing { etcdutl: PathBuf, source: std::io::Error },
    #[error("etcdutl snapshot restore failed ({status}): {stderr}")]
    Etcdutl { status: String, stderr: String },
    #[error("no snapshot to restore in {location}: run `lifeboat save` first")]
    NothingToRestore { location: String },
    #[error("snapshot {name} not found in the store; `lifeboat snapshots list` shows what there is")]
    NotFound { name: String },
    #[error("no snapshot passed verification; tried: {tried}")]
    AllCorrupt { tried: String },
    #[error("snapshot {name} belongs to cluster {found:?}, not {expected:?}")]
    ForeignCluster { name: String, found: String, expected: String },
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for RestoreError {
    fn exit(&self) -> Exit {
        match self {
            RestoreError::DataDirNotEmpty { .. } => Exit::Refused,
            RestoreError::Io { .. } | RestoreError::Etcdutl { .. } => Exit::Failure,
            RestoreError::EtcdutlMissing { .. } => Exit::Usage,
            RestoreError::NothingToRestore { .. } | RestoreError::NotFound { .. } => Exit::NotFound,
            RestoreError::AllCorrupt { .. } | RestoreError::ForeignCluster { .. } => Exit::Corrupt,
            RestoreError::Verify(error) => error.exit(),
            RestoreError::Store(error) => error.exit(),
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreReport {
    /// A versioned snapshot name, or `snapshot.db`.
    pub snapshot: String,
    pub revision: Option<i64>,
    pub sha256: String,
    pub size_bytes: u64,
    pub data_dir: PathBuf,
    /// Snapshots that were newer but failed verification, with the reason.
    pub skipped: Vec<(String, String)>,
    pub elapsed_ms: u64,
    /// The revision bump applied (`--bump-revision`), if any.
    pub bump_revision: Option<u64>,
}

impl From<DataDirProblem> for RestoreError {
    fn from(problem: DataDirProblem) -> Self {
        match problem {
            DataDirProblem::NotEmpty { path } => RestoreError::DataDirNotEmpty { path },
            DataDirProblem::Io { path, source } => RestoreError::Io { path, source },
        }
    }
}

/// Refuses early, before any download, when the data dir holds anything.
pub(crate) fn check_data_dir(data_dir: &Path) -> Result<(), RestoreError> {
    Ok(data_dir::check_empty(data_dir)?)
}

/// What to try, in order.
fn candidates(catalog: &Catalog, choice: &SnapshotChoice) -> Result<Vec<Option<Entry>>, RestoreError> {
    match choice {
        SnapshotChoice::Named(name) => match catalog.find(name) {
            Some(entry) => Ok(vec![Some(entry.clone())]),
            None => Err(RestoreError::NotFound { name: name.to_string() }),
        },
        SnapshotChoice::LatestKey => Ok(vec![None]),
        SnapshotChoice::Latest => {
            let mut list: Vec<Option<Entry>> =
                catalog.snapshots.iter().filter(|entry| entry.manifest.is_some()).cloned().map(Some).collect();
            if catalog.latest.is_some() {
                // Last resort, and the only choice for a store written by kube-aws' etcdadm.
                list.push(None);
            }
            Ok(list)
        }
    }
}

/// Downloads `key` into the staging dir as `snapshot.db` and proves it whole
/// against `manifest` and etcd's own trailing hash.
pub(crate) async fn fetch_verified<S: SnapshotStore>(
    store: &S,
    staging: &Staging,
    key: &str,
    compression: Compression,
    manifest: Option<&lifeboat::Manifest>,
    problem: Option<String>,
) -> Result<verify::Fetched, VerifyError> {
    let location = store.location(key);
    if let Some(problem) = problem {
        return Err(VerifyError::BadManifest { location, detail: problem });
    }
    let snapshot_path = staging.path().join("snapshot.db");
    let path_text = snapshot_path.display().to_string();
    let (_, mut file) = staging.create_file("snapshot.db").map_err(|problem| VerifyError::Write {
        path: path_text.clone(),
        source: match problem {
            DataDirProblem::Io { source, .. } => source,
            DataDirProblem::NotEmpty { .. } => std::io::Error::other("the staging file exists"),
        },
    })?;
    let fetched = verify::fetch(store, key, compression, Some((&mut file, &path_text))).await?;
    file.sync_all().map_err(|source| VerifyError::Write { path: path_text.clone(), source })?;
    fetched.check(&location, manifest)?;
    Ok(fetched)
}

pub async fn restore<S: SnapshotStore, B: DataDirBuilder>(
    store: &S,
    layout: &StoreLayout,
    settings: &RestoreSettings,
    builder: &B,
) -> Result<RestoreReport, RestoreError> {
    let started = Stopwatch::start();
    check_data_dir(&settings.data_dir)?;
    builder.ready()?;
    // Staging beside the data dir keeps the final rename on one filesystem (atomic).
    let staging = Staging::beside(&settings.data_dir)?;
    let snapshot_path = staging.path().join("snapshot.db");

    let catalog = catalog::load(store, layout).await?;
    let candidates = candidates(&catalog, &settings.snapshot)?;
    if candidates.is_empty() {
        if let Some(error) = catalog.unopened_error(store, "nothing this key opens can be restored") {
            return Err(error.into());
        }
        return Err(RestoreError::NothingToRestore { location: store.location(&layout.snapshots_prefix()) });
    }
    let may_fall_back = settings.snapshot == SnapshotChoice::Latest;
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut chosen = None;
    for candidate in candidates {
        let (label, key, compression, manifest) = match &candidate {
            Some(entry) => {
                (entry.name.to_string(), entry.key.clone(), entry.name.compression(), entry.manifest.as_ref())
            }
            None => (StoreLayout::LATEST.to_owned(), layout.latest_key(), Compression::None, None),
        };
        if let Some(manifest) = manifest {
            if manifest.cluster != settings.cluster {
                let error = RestoreError::ForeignCluster {
                    name: label.clone(),
                    found: manifest.cluster.clone(),
                    expected: settings.cluster.clone(),
                };
                if !may_fall_back {
                    return Err(error);
                }
                skipped.push((label, error.to_string()));
                continue;
            }
        }
        let problem = candidate.as_ref().and_then(|entry| entry.problem.clone());
        crate::progress::phase(&format!("downloading and verifying {label}"));
        match fetch_verified(store, &staging, &key, compression, manifest, problem).await {
            Ok(fetched) => {
                chosen = Some((label, manifest.map(|manifest| manifest.revision.0), fetched));
                break;
            }
            // A store that fails is not a snapshot that fails: stop. (An object client-side
            // encryption refuses is damaged content, and falls back like a bad hash.)
            Err(VerifyError::Store(error))
                if !matches!(error, StoreError::NotFound { .. }) && !error.is_bad_content() =>
            {
                return Err(error.into())
            }
            Err(error) if may_fall_back => {
                tracing::warn!(snapshot = %label, error = %error, "snapshot failed verification; trying the previous one");
                skipped.push((label, error.to_string()));
            }
            Err(error) => return Err(error.into()),
        }
    }
    let Some((label, revision, fetched)) = chosen else {
        let tried = skipped.iter().map(|(name, reason)| format!("{name} ({reason})")).collect::<Vec<_>>().join("; ");
        return Err(RestoreError::AllCorrupt { tried });
    };

    let built = staging.path().join("data");
    crate::progress::phase(&format!("building the data dir from {label}"));
    builder.build(&snapshot_path, &built, settings).await?;

    // The data dir may have appeared meanwhile: `install` checks again right before the rename.
    staging.install(&built, &settings.data_dir)?;

    Ok(RestoreReport {
        snapshot: label,
        revision,
        sha256: fetched.plain.sha256,
        size_bytes: fetched.plain.size_bytes,
        data_dir: settings.data_dir.clone(),
        skipped,
        elapsed_ms: started.elapsed_ms(),
        bump_revision: settings.bump_revision,
    })
}
