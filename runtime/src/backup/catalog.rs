//! What the store holds for one cluster: versioned snapshots with their
//! manifests, the `snapshot.db` copy, and objects that are not backups (orphans).
//! Backs `snapshots list | verify | prune` and the choice of what to restore.

use crate::backup::verify::{self, Fetched, VerifyError};
use crate::ports::{ObjectInfo, SnapshotStore, StoreError};
use crate::revlog;
use lifeboat::retention::{self, RetentionPlan};
use lifeboat::{Compression, Manifest, Retention, SnapshotMeta, SnapshotName, StoreLayout};
use std::collections::BTreeMap;

/// Orphans (objects without a manifest) younger than this may be a save in
/// progress; prune leaves them alone.
pub const ORPHAN_GRACE_MS: u64 = 3_600_000;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Entry {
    pub name: SnapshotName,
    pub key: String,
    pub object: Option<ObjectInfo>,
    pub manifest: Option<Manifest>,
    /// Why this entry is not a usable backup, if it is not.
    pub problem: Option<String>,
    /// A trial restore proved it (its `.trial.json` record is in the store).
    pub proven: bool,
    /// Its manifest object exists, readable or not: the object is then no
    /// orphan of an interrupted save, and prune never deletes it as one.
    #[serde(skip)]
    pub manifest_listed: bool,
}

impl Entry {
    /// A complete object with a consistent manifest that matches it.
    pub fn is_backup(&self) -> bool {
        self.problem.is_none() && self.manifest.is_some() && self.object.is_some()
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Catalog {
    /// Newest first.
    pub snapshots: Vec<Entry>,
    pub latest: Option<ObjectInfo>,
    /// Keys under the snapshot prefix that are neither snapshots, manifests nor `snapshot.db`.
    pub unknown: Vec<String>,
    /// Manifests written with another client-side key, or with one while none is
    /// configured: backups this configuration cannot see, so prune deletes nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unopened: Vec<Unopened>,
}

/// A manifest this configuration's client-side key cannot open, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Unopened {
    pub key: String,
    pub detail: String,
}

impl Catalog {
    /// The error that says backups are there but this configuration's key cannot
    /// open them (written with another key, or with one while none is configured).
    pub fn unopened_error<S: SnapshotStore>(&self, store: &S, consequence: &str) -> Option<StoreError> {
        let first = self.unopened.first()?;
        Some(StoreError::Sealed {
            location: store.location(&first.key),
            detail: format!("{} ({} manifest(s) like it); {consequence}", first.detail, self.unopened.len()),
            other_key: true,
        })
    }

    pub fn metas(&self) -> Vec<SnapshotMeta> {
        self.snapshots
            .iter()
            .filter(|entry| entry.manifest.is_some())
            .map(|entry| SnapshotMeta { name: entry.name.clone(), verified: entry.is_backup() })
            .collect()
    }

    pub fn find(&self, name: &SnapshotName) -> Option<&Entry> {
        self.snapshots.iter().find(|entry| &entry.name == name)
    }
}

pub async fn load<S: SnapshotStore>(store: &S, layout: &StoreLayout) -> Result<Catalog, StoreError> {
    let prefix = layout.snapshots_prefix();
    let objects = store.list(&prefix).await?;
    let mut snapshots: BTreeMap<SnapshotName, (Option<ObjectInfo>, Option<String>)> = BTreeMap::new();
    let mut proven: std::collections::BTreeSet<SnapshotName> = std::collections::BTreeSet::new();
    let mut latest = None;
    let mut unknown = Vec::new();
    for object in objects {
        // A listing is untrusted: a key outside the prefix is foreign, not a crash.
        let Some(relative) = object.key.strip_prefix(prefix.as_str()).map(str::to_owned) else {
            unknown.push(object.key);
            continue;
        };
        if relative == StoreLayout::LATEST {
            latest = Some(object);
        } else if let Some(snapshot) = relative.strip_suffix(".trial.json") {
            match snapshot.parse::<SnapshotName>() {
                Ok(name) => {
                    proven.insert(name);
                }
                Err(_) => unknown.push(object.key),
            }
        } else if let Some(snapshot) = relative.strip_suffix(".manifest.json") {
            match snapshot.parse::<SnapshotName>() {
                Ok(name) => snapshots.entry(name).or_default().1 = Some(object.key),
                Err(_) => unknown.push(object.key),
            }
        } else {
            match relative.parse::<SnapshotName>() {
                Ok(name) => snapshots.entry(name).or_default().0 = Some(object),
                Err(_) => unknown.push(object.key),
            }
        }
    }

    let mut entries = Vec::new();
    let mut unopened = Vec::new();
    for (name, (object, manifest_key)) in snapshots.into_iter().rev() {
        let mut manifest = None;
        let mut problem = None;
        match &manifest_key {
            None => problem = Some("no manifest: an interrupted save, not a backup".to_owned()),
            Some(manifest_key) => match store.get_small(manifest_key).await {
                Ok(body) => match serde_json::from_slice::<Manifest>(&body) {
                    Ok(parsed) => {
                        if parsed.name != name || !parsed.is_consistent() {
                            problem = Some("manifest does not match its snapshot".to_owned());
                        } else if let Some(object) = &object {
                            if object.size_bytes != parsed.stored_size_bytes {
                                problem = Some(format!(
                                    "object has {} bytes, manifest says {}",
                                    object.size_bytes, parsed.stored_size_bytes
                                ));
                            }
                        }
                        manifest = Some(parsed);
                    }
                    Err(error) => problem = Some(format!("manifest is not valid JSON: {error}")),
                },
                Err(StoreError::NotFound { .. }) => problem = Some("manifest vanished while listing".to_owned()),
                Err(StoreError::Sealed { detail, other_key: true, .. }) => {
                    unopened.push(Unopened { key: manifest_key.clone(), detail: detail.clone() });
                    problem = Some(detail);
                }
                Err(error) if error.is_bad_content() => problem = Some(error.to_string()),
                Err(error) => return Err(error),
            },
        }
        if object.is_none() && problem.is_none() {
            problem = Some("manifest without its snapshot object".to_owned());
        }
        let proven = proven.contains(&name);
        let manifest_listed = manifest_key.is_some();
        entries.push(Entry {
            key: layout.snapshot_key(&name),
            name,
            object,
            manifest,
            problem,
            proven,
            manifest_listed,
        });
    }
    Ok(Catalog { snapshots: entries, latest, unknown, unopened })
}

/// Downloads one entry through and checks it against its manifest and etcd's trailer.
pub async fn verify_entry<S: SnapshotStore>(store: &S, entry: &Entry) -> Result<Fetched, VerifyError> {
    let location = store.location(&entry.key);
    let Some(manifest) = &entry.manifest else {
        return Err(VerifyError::BadManifest {
            location,
            detail: entry.problem.clone().unwrap_or_else(|| "no manifest".into()),
        });
    };
    if let Some(problem) = &entry.problem {
        return Err(VerifyError::BadManifest { location, detail: problem.clone() });
    }
    let fetched = verify::fetch(store, &entry.key, manifest.compression, None::<(&mut std::io::Sink, &str)>).await?;
    fetched.check(&location, Some(manifest))?;
    Ok(fetched)
}

/// Verifies `snapshot.db`: etcd's trailer must hold, and when a manifest names
/// the same bytes, so must its hash.
pub async fn verify_latest<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    catalog: &Catalog,
) -> Result<(Fetched, Option<SnapshotName>), VerifyError> {
    let key = layout.latest_key();
    let fetched = verify::fetch(store, &key, Compression::None, None::<(&mut std::io::Sink, &str)>).await?;
    fetched.check(&store.location(&key), None)?;
    let matching = catalog
        .snapshots
        .iter()
        .find(|entry| entry.manifest.as_ref().is_some_and(|manifest| manifest.sha256 == fetched.plain.sha256))
        .map(|entry| entry.name.clone());
    Ok((fetched, matching))
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PruneReport {
    pub kept: Vec<SnapshotName>,
    pub deleted: Vec<SnapshotName>,
    pub orphans_deleted: Vec<String>,
    /// Revision-log segments no kept snapshot can use any more.
    pub segments_deleted: Vec<String>,
    pub dry_run: bool,
}

/// Applies the retention plan. The manifest goes first, so an interrupted prune
/// leaves at worst an orphan object, never a manifest pointing at nothing.
pub async fn prune<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    catalog: &Catalog,
    retention: &Retention,
    now_ms: u64,
    dry_run: bool,
) -> Result<PruneReport, StoreError> {
    // Backups this configuration cannot open still count: deleting around them (as
    // orphans, or their log as unreachable) would destroy them.
    if let Some(error) = catalog.unopened_error(store, "prune deletes nothing until it runs with that key") {
        return Err(error);
    }
    let RetentionPlan { mut keep, mut delete } = retention::plan(&catalog.metas(), retention);
    // The newest snapshot a trial restore proved stays, whatever the counts say.
    if let Some(newest_proven) = catalog.snapshots.iter().find(|entry| entry.proven && entry.is_backup()) {
        if let Some(index) = delete.iter().position(|name| *name == newest_proven.name) {
            keep.push(delete.remove(index));
        }
    }
    let orphans: Vec<String> = catalog
        .snapshots
        .iter()
        .filter(|entry| !entry.manifest_listed)
        .filter_map(|entry| entry.object.as_ref())
        .filter(|object| object.modified_ms.is_some_and(|modified| now_ms.saturating_sub(modified) > ORPHAN_GRACE_MS))
        .map(|object| object.key.clone())
        .collect();
    let segments = prunable_segments(store, layout, catalog, &keep, now_ms).await?;
    if !dry_run {
        for name in &delete {
            store.delete(&layout.proof_key(name)).await?;
            store.delete(&layout.manifest_key(name)).await?;
            store.delete(&layout.snapshot_key(name)).await?;
            tracing::info!(snapshot = %name, "pruned");
        }
        for key in &orphans {
            store.delete(key).await?;
            tracing::info!(key = %key, "pruned orphan object");
        }
        // Oldest first: an interrupted prune leaves a shorter log that still starts at a kept snapshot.
        for key in &segments {
            store.delete(key).await?;
        }
        if !segments.is_empty() {
            tracing::info!(segments = segments.len(), "pruned revision-log segments");
        }
    }
    Ok(PruneReport { kept: keep, deleted: delete, orphans_deleted: orphans, segments_deleted: segments, dry_run })
}

/// The log segments a prune deletes: per etcd cluster ID, those that end at or
/// below the oldest kept snapshot of that cluster (no kept snapshot's chain
/// starts before them). A cluster ID with no kept snapshot loses only segments
/// older than [`ORPHAN_GRACE_MS`]: its chain's snapshot may be a save that
/// finished after this catalog was listed.
async fn prunable_segments<S: SnapshotStore>(
    store: &S,
    layout: &StoreLayout,
    catalog: &Catalog,
    keep: &[SnapshotName],
    now_ms: u64,
) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    for cluster_id in revlog::cluster_ids(store, layout).await? {
        let bases: Vec<lifeboat::Revision> = catalog
            .snapshots
            .iter()
            .filter(|entry| keep.contains(&entry.name))
            .filter_map(|entry| entry.manifest.as_ref())
            .filter(|manifest| manifest.cluster_id == cluster_id)
            .map(|manifest| manifest.revision)
            .collect();
        let (listed, _) = revlog::list(store, layout, &cluster_id).await?;
        let names: Vec<lifeboat::revlog::SegmentName> = listed.iter().map(|segment| segment.name).collect();
        let prunable = lifeboat::revlog::prunable(&bases, &names);
        for segment in listed.iter().filter(|segment| prunable.contains(&segment.name)) {
            let old =
                segment.object.modified_ms.is_some_and(|modified| now_ms.saturating_sub(modified) > ORPHAN_GRACE_MS);
            if !bases.is_empty() || old {
                keys.push(segment.object.key.clone());
            }
        }
    }
    Ok(keys)
}
