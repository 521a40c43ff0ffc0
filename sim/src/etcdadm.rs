//! kube-aws' etcdadm, as the simulator's baseline: its rules, run on the same
//! seeds and schedules as lifeboat so the summary can put the two side by side.
//!
//! Modelled from its script (the seed document): every check interval each node
//! looks at every member; while the cluster is healthy the leader saves one
//! overwritten object (`snapshot.db`) and a member failing longer than the limit is
//! replaced (remove, wipe, add, start); when the cluster has failed longer than the
//! limit, each node restores `snapshot.db` on its own, with the same initial
//! cluster, and starts. No epoch, no heartbeats, no verification beyond etcd's own.
//! This is test tooling: it lives in the simulator, never in the product.

use crate::model::{lock, virtual_ms, Shared};
use crate::ports::{SimBuilder, SimEtcd, SimMember, SimStore};
use lifeboat::StoreLayout;
use lifeboat_runtime::agent::replace::{self, ReplaceSettings};
use lifeboat_runtime::backup::restore::{RestoreSettings, SnapshotChoice};
use lifeboat_runtime::member::{self, Launch};
use lifeboat_runtime::ports::{ByteSource, EtcdCluster, SnapshotStore};
use lifeboat_runtime::ports::{DataDirBuilder, LocalMember};
use std::time::Duration;

/// etcdadm checked on a timer and acted after a failure period; the same cadence
/// as lifeboat's defaults keeps the comparison about the rules, not the timing.
const CHECK_MS: u64 = 10_000;
const FAILURE_CHECKS: u32 = 3;
const SAVE_MS: u64 = 60_000;
/// Every restore uses the same token, as etcdadm's did.
const RESTORE_TOKEN: &str = "etcdadm-restore";

pub struct Etcdadm {
    pub world: Shared,
    pub etcd: SimEtcd,
    pub store: SimStore,
    pub local: SimMember,
    pub builder: SimBuilder,
    pub layout: StoreLayout,
    /// `name=peer-url,…` of every member.
    pub initial_cluster: String,
    /// Every member's client URL.
    pub client_urls: Vec<String>,
}

impl Etcdadm {
    pub async fn run(self) {
        let (mut cluster_failing, mut member_failing, mut last_save) = (0u32, 0u32, None::<u64>);
        loop {
            madsim::time::sleep(Duration::from_millis(CHECK_MS)).await;
            let spec = self.local.spec().clone();
            if !self.local.is_running().await && member::has_data(&spec) {
                // systemd's Restart=: the unit comes back with its data.
                let _ = self.local.start(&self.launch("existing", "lifeboat-sim")).await;
            }
            let mut healthy = 0;
            for url in &self.client_urls {
                if self.etcd.endpoint_health(url).await.healthy {
                    healthy += 1;
                }
            }
            let quorum = healthy > self.client_urls.len() / 2;
            let me_healthy = self.etcd.endpoint_health(&spec.client_url).await.healthy;
            if !quorum {
                cluster_failing += 1;
                if cluster_failing >= FAILURE_CHECKS {
                    cluster_failing = 0;
                    self.restore_on_its_own().await;
                }
                continue;
            }
            cluster_failing = 0;
            member_failing = if me_healthy { 0 } else { member_failing + 1 };
            if member_failing >= FAILURE_CHECKS {
                member_failing = 0;
                let settings = ReplaceSettings {
                    cluster: "sim".into(),
                    lock_ttl_seconds: 120,
                    catch_up_timeout: Duration::from_secs(120),
                    learner: false,
                    start: true,
                    dry_run: false,
                };
                let _ = replace::replace(&self.etcd, &self.local, &settings, virtual_ms()).await;
                continue;
            }
            let leads = match self.etcd.endpoint_status(&spec.client_url).await {
                Ok(status) => status.leader == status.member_id,
                Err(_) => false,
            };
            let due = last_save.is_none_or(|at| virtual_ms() >= at + SAVE_MS);
            if me_healthy && leads && due && self.save().await {
                last_save = Some(virtual_ms());
            }
        }
    }

    fn launch(&self, state: &str, token: &str) -> Launch {
        Launch {
            initial_cluster: self.initial_cluster.clone(),
            initial_cluster_state: state.into(),
            initial_cluster_token: token.into(),
        }
    }

    /// `etcdctl snapshot save` then `aws s3 cp` over the one key.
    async fn save(&self) -> bool {
        let Ok(mut stream) = self.etcd.snapshot(&self.local.spec().client_url).await else { return false };
        let mut bytes = Vec::new();
        while let Ok(Some(chunk)) = stream.next_chunk().await {
            bytes.extend_from_slice(&chunk);
        }
        self.store.put_small(&self.layout.latest_key(), bytes.into(), false).await.is_ok()
    }

    /// Stop, wipe, restore `snapshot.db` with the same initial cluster, start new.
    async fn restore_on_its_own(&self) {
        let spec = self.local.spec().clone();
        let Ok(bytes) = self.store.get_small(&self.layout.latest_key()).await else { return };
        let _ = self.local.stop().await;
        if member::move_data_dir_aside(&spec, &spec.data_dir, virtual_ms()).is_err() {
            return;
        }
        let file = spec.data_dir.with_extension("snapshot.db");
        if std::fs::write(&file, &bytes).is_err() {
            return;
        }
        let settings = RestoreSettings {
            data_dir: spec.data_dir.clone(),
            name: spec.name.clone(),
            initial_cluster: self.initial_cluster.clone(),
            initial_advertise_peer_urls: spec.peer_url.clone(),
            initial_cluster_token: RESTORE_TOKEN.into(),
            snapshot: SnapshotChoice::LatestKey,
            cluster: "sim".into(),
            bump_revision: None,
        };
        let built = self.builder.build(&file, &spec.data_dir, &settings).await;
        let _ = std::fs::remove_file(&file);
        lock(&self.world).event(format!("etcdadm: {} restored snapshot.db on its own: {built:?}", spec.name));
        if built.is_ok() {
            let _ = self.local.start(&self.launch("new", RESTORE_TOKEN)).await;
        }
    }
}
