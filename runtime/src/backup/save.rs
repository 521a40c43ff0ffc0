//! `lifeboat save`: one snapshot from the healthiest member into the store.
//!
//! Order of visibility, so a failure at any point loses nothing:
//! 1. stream into multipart uploads (nothing visible yet);
//! 2. check etcd's own trailing hash and the bolt header; abort on failure;
//! 3. complete the versioned object and check its size;
//! 4. write its manifest (create-if-absent): only now is it a backup;
//! 5. replace `snapshot.db` (copy, or complete its own plain upload when the
//!    versioned object is compressed) and check its size.

use crate::backup::verify::Trailer;
use crate::exit::{Classify, Exit};
use crate::pipeline::{self, PipelineError, PipelineSettings, Target};
use crate::ports::{EndpointStatus, EtcdCluster, EtcdError, SnapshotStore, StoreError, Upload};
use bytes::Bytes;
use lifeboat::{Compression, Manifest, Millis, SnapshotName, StoreLayout};

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("the snapshot from {endpoint} failed etcd's integrity check ({detail}); nothing was published")]
    Corrupt { endpoint: String, detail: String },
    #[error("{location} has {actual} bytes after upload, expected {expected}; the store may have truncated it")]
    SizeMismatch { location: String, expected: u64, actual: u64 },
    #[error("internal error: {0}; nothing was published (please report it)")]
    Internal(&'static str),
}

impl Classify for SaveError {
    fn exit(&self) -> Exit {
        match self {
            SaveError::Etcd(error) => error.exit(),
            SaveError::Store(error) => error.exit(),
            SaveError::Pipeline(PipelineError::Store(error)) => error.exit(),
            SaveError::Pipeline(PipelineError::Source { .. }) => Exit::Etcd,
            SaveError::Pipeline(PipelineError::Compress(_)) => Exit::Failure,
            SaveError::Corrupt { .. } => Exit::Corrupt,
            SaveError::SizeMismatch { .. } => Exit::Store,
            SaveError::Internal(_) => Exit::Failure,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SaveSettings {
    pub cluster: String,
    pub compression: Compression,
    pub pipeline: PipelineSettings,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SaveReport {
    pub name: SnapshotName,
    pub key: String,
    pub location: String,
    pub manifest_key: String,
    pub latest_key: String,
    pub source_endpoint: String,
    pub revision: i64,
    pub size_bytes: u64,
    pub stored_size_bytes: u64,
    pub sha256: String,
    pub compression: Compression,
    pub elapsed_ms: u64,
    pub mib_per_second: f64,
}

/// Picks the member to stream from: the leader when it answers, else refuses,
/// like etcdadm, which saved only while the cluster was healthy.
pub async fn choose_source<E: EtcdCluster>(etcd: &E) -> Result<EndpointStatus, EtcdError> {
    let statuses =
        futures::future::join_all(etcd.endpoints().iter().map(|endpoint| etcd.endpoint_status(endpoint))).await;
    let mut reachable = Vec::new();
    let mut errors = Vec::new();
    for status in statuses {
        match status {
            Ok(status) => reachable.push(status),
            Err(error) => errors.push(error.to_string()),
        }
    }
    if reachable.is_empty() {
        return Err(EtcdError::Unreachable { endpoints: etcd.endpoints().join(","), detail: errors.join("; ") });
    }
    if let Some(leader) = reachable.iter().find(|status| status.member_id == status.leader && !status.is_learner) {
        return Ok(leader.clone());
    }
    if reachable.iter().all(|status| status.leader.0 == 0) {
        return Err(EtcdError::NoQuorum {
            detail: "no member reports a leader; lifeboat saves only from a cluster with quorum".into(),
        });
    }
    // The leader's client URL is not among --endpoints: use the most up-to-date voter we can reach.
    reachable.retain(|status| !status.is_learner && status.leader.0 != 0);
    reachable.sort_by_key(|status| std::cmp::Reverse(status.raft_index));
    reachable
        .into_iter()
        .next()
        .ok_or_else(|| EtcdError::NoQuorum { detail: "no voting member with a leader answered".into() })
}

pub async fn save<E: EtcdCluster, S: SnapshotStore>(
    etcd: &E,
    store: &S,
    layout: &StoreLayout,
    settings: &SaveSettings,
    now: Millis,
) -> Result<SaveReport, SaveError> {
    let source = choose_source(etcd).await?;
    save_from(etcd, store, layout, settings, now, &source).await
}

/// Saves from `source`, leader or not: a disaster recovery saves a surviving
/// member's data this way, when it is newer than any stored snapshot.
pub async fn save_from<E: EtcdCluster, S: SnapshotStore>(
    etcd: &E,
    store: &S,
    layout: &StoreLayout,
    settings: &SaveSettings,
    now: Millis,
    source: &EndpointStatus,
) -> Result<SaveReport, SaveError> {
    let source = source.clone();
    let members = match etcd.member_list().await {
        Ok(members) => members,
        Err(error) => {
            tracing::warn!(error = %error, "member list unavailable; the manifest will not list members");
            Vec::new()
        }
    };
    tracing::info!(endpoint = %source.endpoint, member = %source.member_id, revision = source.revision.0, "streaming snapshot");
    let mut stream = etcd.snapshot(&source.endpoint).await?;

    // The revision is read just before the stream starts, so the snapshot holds at least it.
    let name = SnapshotName::new(now, source.revision, settings.compression);
    let key = layout.snapshot_key(&name);
    let latest_key = layout.latest_key();
    let mut targets = vec![Target { upload: store.begin_upload(&key).await?, compression: settings.compression }];
    if settings.compression != Compression::None {
        // snapshot.db stays plain for kube-aws tooling: a second, uncompressed upload
        // straight to its key, completed only after the versioned one is published.
        match store.begin_upload(&latest_key).await {
            Ok(upload) => targets.push(Target { upload, compression: Compression::None }),
            Err(error) => {
                abort_all(targets).await;
                return Err(error.into());
            }
        }
    }

    let report = match pipeline::run(&mut stream, &targets, &settings.pipeline).await {
        Ok(report) => report,
        Err(error) => {
            abort_all(targets).await;
            return Err(error.into());
        }
    };
    if report.trailer != Trailer::Valid || !report.is_bolt {
        abort_all(targets).await;
        return Err(SaveError::Corrupt {
            endpoint: source.endpoint.clone(),
            detail: format!("trailer {:?}, bolt header {}", report.trailer, report.is_bolt),
        });
    }

    let mut targets = targets.into_iter();
    // The versioned target is always first, and the pipeline reports one digest per target.
    let (Some(versioned), Some(stored)) = (targets.next(), report.stored.first()) else {
        abort_all(targets.collect()).await;
        return Err(SaveError::Internal("the pipeline reported no versioned object"));
    };
    let latest_upload = targets.next();
    let published = versioned.upload.complete().await;
    let published = match published {
        Ok(info) => info,
        Err(error) => {
            if let Some(target) = latest_upload {
                target.upload.abort().await;
            }
            return Err(error.into());
        }
    };
    if published.size_bytes != stored.size_bytes {
        if let Some(target) = latest_upload {
            target.upload.abort().await;
        }
        // The object is under its final name but has no manifest, so it is not a
        // backup; prune removes such orphans.
        return Err(SaveError::SizeMismatch {
            location: store.location(&key),
            expected: stored.size_bytes,
            actual: published.size_bytes,
        });
    }

    // What a trial restore must reproduce; a save without it is still a backup.
    let kv_hash = match etcd.hash_kv(&source.endpoint, source.revision).await {
        Ok(hash) => Some(hash),
        Err(error) => {
            tracing::warn!(error = %error, "HashKV unavailable; the manifest will carry no hash to verify a restore against");
            None
        }
    };
    let manifest = Manifest {
        format: Manifest::FORMAT,
        name: name.clone(),
        sha256: report.plain.sha256.clone(),
        size_bytes: report.plain.size_bytes,
        stored_sha256: stored.sha256.clone(),
        stored_size_bytes: stored.size_bytes,
        compression: settings.compression,
        revision: source.revision,
        cluster_id: format!("{:x}", source.cluster_id),
        cluster: settings.cluster.clone(),
        members,
        source_member: source.member_id.to_string(),
        etcd_version: source.version.clone(),
        created_at: now.to_rfc3339(),
        created_ms: now,
        writer: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
        kv_hash,
        key_id: store.key_id(),
    };
    let manifest_key = layout.manifest_key(&name);
    let body = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");
    if let Err(error) = store.put_small(&manifest_key, Bytes::from(body), true).await {
        if let Some(target) = latest_upload {
            target.upload.abort().await;
        }
        return Err(error.into());
    }

    match latest_upload {
        Some(target) => {
            target.upload.complete().await?;
        }
        None => store.copy(&key, &latest_key).await?,
    }
    let latest = store.head(&latest_key).await?.map(|info| info.size_bytes).unwrap_or(0);
    if latest != report.plain.size_bytes {
        return Err(SaveError::SizeMismatch {
            location: store.location(&latest_key),
            expected: report.plain.size_bytes,
            actual: latest,
        });
    }

    let seconds = report.elapsed.as_secs_f64().max(0.001);
    Ok(SaveReport {
        location: store.location(&key),
        name,
        key,
        manifest_key,
        latest_key,
        source_endpoint: source.endpoint,
        revision: source.revision.0,
        size_bytes: report.plain.size_bytes,
        stored_size_bytes: stored.size_bytes,
        sha256: report.plain.sha256,
        compression: settings.compression,
        elapsed_ms: report.elapsed.as_millis() as u64,
        mib_per_second: (report.plain.size_bytes as f64 / (1 << 20) as f64 / seconds * 10.0).round() / 10.0,
    })
}

async fn abort_all<U: Upload>(targets: Vec<Target<U>>) {
    for target in targets {
        target.upload.abort().await;
    }
}

pub use crate::host::clock::wall_clock_now;
