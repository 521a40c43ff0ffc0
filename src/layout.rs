//! Where things live in the store (S3 or a local directory), in one place.
//!
//! ```text
//! <prefix>/<cluster>/exported/etcd-snapshots/snapshot.db            latest, plain etcd format (kube-aws key)
//! <prefix>/<cluster>/exported/etcd-snapshots/<name>                 versioned snapshots
//! <prefix>/<cluster>/exported/etcd-snapshots/<name>.manifest.json   their manifests
//! <prefix>/<cluster>/exported/etcd-snapshots/<name>.trial.json      proof that it restores (a trial matched)
//! <prefix>/<cluster>/exported/etcd-log/<cluster id>/<first>-<last>.log.zst   the revision log
//! <prefix>/<cluster>/coordination/...                               heartbeats, recovery epochs
//! ```

use crate::snapshot::SnapshotName;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreLayout {
    /// `<prefix>/<cluster>` with no leading or trailing slash (empty prefix allowed).
    root: String,
}

impl StoreLayout {
    pub const LATEST: &'static str = "snapshot.db";

    pub fn new(prefix: &str, cluster: &str) -> StoreLayout {
        let parts: Vec<&str> = prefix.split('/').chain(cluster.split('/')).filter(|part| !part.is_empty()).collect();
        StoreLayout { root: parts.join("/") }
    }

    /// Directory (key prefix, ending in `/`) of every snapshot object and manifest.
    pub fn snapshots_prefix(&self) -> String {
        format!("{}/exported/etcd-snapshots/", self.root)
    }
    /// The kube-aws compatible "latest" key.
    pub fn latest_key(&self) -> String {
        format!("{}{}", self.snapshots_prefix(), Self::LATEST)
    }
    pub fn snapshot_key(&self, name: &SnapshotName) -> String {
        format!("{}{name}", self.snapshots_prefix())
    }
    pub fn manifest_key(&self, name: &SnapshotName) -> String {
        format!("{}{}", self.snapshots_prefix(), name.manifest_name())
    }
    /// The record that marks a snapshot proven by a trial restore.
    pub fn proof_key(&self, name: &SnapshotName) -> String {
        format!("{}{name}.trial.json", self.snapshots_prefix())
    }
    /// Directory of the revision log of every etcd cluster ID.
    pub fn log_root(&self) -> String {
        format!("{}/exported/etcd-log/", self.root)
    }
    /// Directory of one etcd cluster's revision log (`cluster_id` in hex, as manifests write it).
    pub fn log_prefix(&self, cluster_id: &str) -> String {
        format!("{}{cluster_id}/", self.log_root())
    }
    pub fn segment_key(&self, cluster_id: &str, name: &crate::revlog::SegmentName) -> String {
        format!("{}{name}", self.log_prefix(cluster_id))
    }
    pub fn coordination_prefix(&self) -> String {
        format!("{}/coordination/", self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_kube_aws_key() {
        let layout = StoreLayout::new("/backups/prod/", "kube");
        assert_eq!(layout.latest_key(), "backups/prod/kube/exported/etcd-snapshots/snapshot.db");
        assert_eq!(StoreLayout::new("", "c").latest_key(), "c/exported/etcd-snapshots/snapshot.db");
        let name: SnapshotName = "20261125T233200.123Z-r4711.db".parse().unwrap();
        assert_eq!(
            layout.snapshot_key(&name),
            "backups/prod/kube/exported/etcd-snapshots/20261125T233200.123Z-r4711.db"
        );
        assert_eq!(
            layout.manifest_key(&name),
            "backups/prod/kube/exported/etcd-snapshots/20261125T233200.123Z-r4711.db.manifest.json"
        );
        assert_eq!(layout.coordination_prefix(), "backups/prod/kube/coordination/");
        assert_eq!(layout.log_prefix("cdf818194e3a8c32"), "backups/prod/kube/exported/etcd-log/cdf818194e3a8c32/");
    }
}
