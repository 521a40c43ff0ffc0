//! The production ports, implemented over the simulated world: what one agent's
//! machine sees of etcd, the store, its local member, the restore tool and time.
//! Each call takes virtual time (latency, or a timeout when a zone cuts it off);
//! the world lock is never held across an await.

use crate::flaws::{self, Flaw};
use crate::model::{lock, Shared};
use bytes::Bytes;
use lifeboat::{Member, MemberId, Millis, Revision};
use lifeboat_runtime::backup::restore::{RestoreError, RestoreSettings};
use lifeboat_runtime::member::{Launch, MemberError, MemberSpec};
use lifeboat_runtime::ports::Clock;
use lifeboat_runtime::ports::{
    BoxError, ByteSource, DataDirBuilder, EndpointHealth, EndpointStatus, EtcdCluster, EtcdError, LocalMember,
    ObjectInfo, Part, SnapshotStore, StoreError, Upload,
};
use madsim::rand::{thread_rng, Rng};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The virtual wall clock starts at 2026-01-01T00:00:00Z.
pub const EPOCH_MS: u64 = 1_767_225_600_000;
/// What a call to a machine in another zone costs before it fails.
const TIMEOUT_MS: u64 = 500;

pub(crate) async fn latency(low: u64, high: u64) {
    let ms = thread_rng().gen_range(low..=high);
    madsim::time::sleep(Duration::from_millis(ms)).await;
}

/// How long etcd takes to stop on SIGTERM, serving all the while: a leader first
/// hands its leadership over (etcd's `TransferLeadership`, up to an election
/// timeout), then the server drains and exits. Writes acknowledged meanwhile are on
/// its disk, so what an agent looked at before it asked for the stop may be stale
/// once the stop returns. Stopping what does not run takes no such time.
pub(crate) async fn graceful_stop(world: &Shared, node: usize) {
    let running = lock(world).nodes[node].running;
    if running {
        latency(50, 1_500).await;
    } else {
        latency(5, 50).await;
    }
}

async fn timeout() {
    madsim::time::sleep(Duration::from_millis(TIMEOUT_MS)).await;
}

/// etcd as the agent on machine `me` reaches it through its client URLs.
pub struct SimEtcd {
    pub world: Shared,
    pub me: usize,
    pub endpoints: Vec<String>,
    /// A broken component planted for the teeth tests; `None` in every other run.
    pub flaw: Option<Flaw>,
}

pub struct SimReader {
    bytes: Bytes,
}

impl ByteSource for SimReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BoxError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let size = self.bytes.len().min(64 << 10);
        Ok(Some(self.bytes.split_to(size)))
    }
}

enum Reach {
    /// Serving, in our zone.
    Serving(usize),
    /// In our zone, but no process.
    Refused,
    /// In another zone: the call times out.
    CutOff,
}

impl SimEtcd {
    fn reach(&self, url: &str) -> Reach {
        let world = lock(&self.world);
        let Some(node) = world.node_by_client_url(url) else { return Reach::Refused };
        if world.nodes[node].zone != world.nodes[self.me].zone {
            Reach::CutOff
        } else if world.serving(node).is_some() {
            Reach::Serving(node)
        } else {
            Reach::Refused
        }
    }

    /// The endpoints in our zone, as node indexes, in configured order.
    fn reachable(&self) -> Vec<usize> {
        let world = lock(&self.world);
        self.endpoints
            .iter()
            .filter_map(|url| world.node_by_client_url(url))
            .filter(|node| world.nodes[*node].zone == world.nodes[self.me].zone)
            .collect()
    }

    async fn at_leader<T>(
        &self,
        operation: &'static str,
        call: impl FnOnce(&mut crate::model::World, u64, usize) -> Result<T, String>,
    ) -> Result<T, EtcdError> {
        latency(1, 5).await;
        let reachable = self.reachable();
        if reachable.is_empty() {
            timeout().await;
            return Err(EtcdError::Unreachable { endpoints: self.endpoints.join(","), detail: "cut off".into() });
        }
        let mut world = lock(&self.world);
        let (cluster, leader) = world.route(&reachable).map_err(|detail| EtcdError::NoQuorum { detail })?;
        let endpoint = world.nodes[leader].client_url.clone();
        call(&mut world, cluster, leader).map_err(|detail| EtcdError::Request { operation, endpoint, detail })
    }
}

impl EtcdCluster for SimEtcd {
    type Snapshot = SimReader;

    fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    async fn member_list(&self) -> Result<Vec<Member>, EtcdError> {
        for url in &self.endpoints {
            latency(1, 3).await;
            match self.reach(url) {
                Reach::Serving(node) => {
                    if let Some(members) = lock(&self.world).members_seen_by(node) {
                        return Ok(members);
                    }
                }
                Reach::Refused => {}
                Reach::CutOff => timeout().await,
            }
        }
        Err(EtcdError::Unreachable { endpoints: self.endpoints.join(","), detail: "no member answered".into() })
    }

    async fn endpoint_status(&self, endpoint: &str) -> Result<EndpointStatus, EtcdError> {
        latency(1, 5).await;
        let node = match self.reach(endpoint) {
            Reach::Serving(node) => node,
            Reach::Refused => {
                return Err(EtcdError::Request {
                    operation: "status",
                    endpoint: endpoint.into(),
                    detail: "connection refused".into(),
                })
            }
            Reach::CutOff => {
                timeout().await;
                return Err(EtcdError::Timeout {
                    operation: "status",
                    endpoint: endpoint.into(),
                    timeout_ms: TIMEOUT_MS,
                });
            }
        };
        let world = lock(&self.world);
        let (cluster, member) = world.serving(node).ok_or_else(|| EtcdError::Request {
            operation: "status",
            endpoint: endpoint.into(),
            detail: "stopped".into(),
        })?;
        let (leader, term) = world.leader_reported_by(node);
        let leader = leader.unwrap_or(MemberId(0));
        let (revision, index) = world.status_of(node).unwrap_or((0, 0));
        let is_learner = world
            .clusters
            .get(&cluster)
            .and_then(|state| state.members.iter().find(|entry| entry.id == member))
            .is_some_and(|entry| entry.learner);
        Ok(EndpointStatus {
            endpoint: endpoint.into(),
            member_id: member,
            cluster_id: cluster,
            leader,
            revision: Revision(revision),
            raft_index: index as u64,
            raft_term: term,
            db_size_bytes: 0,
            version: "3.5.1-sim".into(),
            is_learner,
            errors: Vec::new(),
        })
    }

    async fn endpoint_health(&self, endpoint: &str) -> EndpointHealth {
        latency(1, 5).await;
        let own = self.endpoints.first().is_some_and(|own| own == endpoint);
        if self.flaw == Some(Flaw::PeersAlwaysHealthy) && !own {
            return EndpointHealth {
                endpoint: endpoint.into(),
                healthy: true,
                took_ms: 1,
                error: None,
                alarms: vec![],
            };
        }
        let (healthy, error) = match self.reach(endpoint) {
            Reach::Serving(node) => {
                let healthy = lock(&self.world).healthy(node);
                (healthy, (!healthy).then(|| "etcdserver: no leader".to_string()))
            }
            Reach::Refused => (false, Some("connection refused".into())),
            Reach::CutOff => {
                timeout().await;
                (false, Some("context deadline exceeded".into()))
            }
        };
        EndpointHealth { endpoint: endpoint.into(), healthy, took_ms: 1, error, alarms: vec![] }
    }

    async fn snapshot(&self, endpoint: &str) -> Result<SimReader, EtcdError> {
        latency(5, 20).await;
        let bytes = match self.reach(endpoint) {
            Reach::Serving(node) => lock(&self.world).snapshot_bytes(node),
            Reach::CutOff => {
                timeout().await;
                None
            }
            Reach::Refused => None,
        };
        bytes.map(|bytes| SimReader { bytes }).ok_or_else(|| EtcdError::Request {
            operation: "snapshot",
            endpoint: endpoint.into(),
            detail: "unavailable".into(),
        })
    }

    async fn member_add(&self, peer_urls: &[String], learner: bool) -> Result<(Member, Vec<Member>), EtcdError> {
        let peer_url = peer_urls.first().cloned().unwrap_or_default();
        self.at_leader("member add", |world, cluster, leader| {
            let member = world.member_add(cluster, leader, &peer_url, learner)?;
            let members = world.members_seen_by(leader).unwrap_or_default();
            Ok((member, members))
        })
        .await
    }

    async fn member_remove(&self, id: MemberId) -> Result<(), EtcdError> {
        self.at_leader("member remove", |world, cluster, leader| world.member_remove(cluster, leader, id)).await
    }

    async fn member_promote(&self, id: MemberId) -> Result<(), EtcdError> {
        self.at_leader("member promote", |world, cluster, leader| world.member_promote(cluster, leader, id)).await
    }

    async fn try_lock(&self, key: &str, holder: &str, ttl_seconds: i64) -> Result<Option<i64>, EtcdError> {
        let free = self.flaw == Some(Flaw::LockAlwaysFree);
        self.at_leader("lock", |world, cluster, _| {
            let granted = world.try_lock(cluster, key, holder, ttl_seconds);
            // The flawed lock grants every request (a lease is made all the same).
            Ok(granted.or_else(|| {
                free.then(|| world.try_lock(cluster, &format!("{key}/{holder}"), holder, ttl_seconds)).flatten()
            }))
        })
        .await
    }

    async fn keep_alive(&self, lease: i64) -> Result<bool, EtcdError> {
        self.at_leader("lease keep-alive", |world, cluster, _| Ok(world.keep_alive(cluster, lease))).await
    }

    /// Not modelled: saves in the simulator carry no hash (trial restores are not
    /// simulated), as a save against an etcd that refuses HashKV would.
    async fn hash_kv(&self, endpoint: &str, _revision: lifeboat::Revision) -> Result<lifeboat::KvHash, EtcdError> {
        Err(EtcdError::Request { operation: "hash kv", endpoint: endpoint.to_owned(), detail: "not modelled".into() })
    }

    async fn unlock(&self, lease: i64) -> Result<(), EtcdError> {
        self.at_leader("unlock", |world, cluster, _| {
            world.unlock(cluster, lease);
            Ok(())
        })
        .await
    }
}

/// The S3-like store as the agent on machine `me` reaches it: from every zone,
/// unless it is down, this machine is cut from it, or it is flaky.
pub struct SimStore {
    pub world: Shared,
    pub me: usize,
    /// A broken component planted for the teeth tests; `None` in every other run.
    pub flaw: Option<Flaw>,
}

/// What a store call meets before it does its work: latency, then maybe a fault.
async fn store_weather(world: &Shared, me: usize, key: &str) -> Result<(), StoreError> {
    latency(2, 10).await;
    let flaky = lock(world).store_flaky;
    if let Some((fail_percent, extra_ms)) = flaky {
        latency(0, extra_ms).await;
        if thread_rng().gen_range(0..100) < fail_percent {
            return Err(StoreError::Request {
                operation: "request",
                location: format!("sim://store/{key}"),
                detail: "503 SlowDown (simulated)".into(),
            });
        }
    }
    let cut = {
        let world = lock(world);
        world.store_down || world.store_cut.contains(&me)
    };
    if cut {
        timeout().await;
        return Err(StoreError::Unreachable { endpoint: "sim://store".into(), detail: format!("{key}: outage") });
    }
    Ok(())
}

impl SimStore {
    async fn call<T>(
        &self,
        key: &str,
        work: impl FnOnce(&mut crate::model::World) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        store_weather(&self.world, self.me, key).await?;
        let mut world = lock(&self.world);
        work(&mut world)
    }
}

fn info(key: &str, object: &crate::model::Object) -> ObjectInfo {
    ObjectInfo {
        key: key.to_owned(),
        size_bytes: object.bytes.len() as u64,
        // S3's LastModified has whole seconds (truncated), as heartbeat freshness must allow for.
        modified_ms: Some((EPOCH_MS + object.modified_ms) / 1000 * 1000),
    }
}

pub struct SimUpload {
    world: Shared,
    me: usize,
    key: String,
    parts: Mutex<BTreeMap<i32, Bytes>>,
}

impl Upload for SimUpload {
    async fn put_part(&self, part: Part) -> Result<(), StoreError> {
        store_weather(&self.world, self.me, &self.key).await?;
        self.parts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(part.number, part.bytes);
        Ok(())
    }

    async fn complete(self) -> Result<ObjectInfo, StoreError> {
        store_weather(&self.world, self.me, &self.key).await?;
        let mut world = lock(&self.world);
        let parts = self.parts.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut body = Vec::new();
        for bytes in parts.values() {
            body.extend_from_slice(bytes);
        }
        world.put_object(&self.key, Bytes::from(body));
        let object = &world.objects[&self.key];
        Ok(info(&self.key, object))
    }

    async fn abort(self) {}
}

impl SnapshotStore for SimStore {
    type Upload = SimUpload;
    type Reader = SimReader;

    fn location(&self, key: &str) -> String {
        format!("sim://store/{key}")
    }

    async fn begin_upload(&self, key: &str) -> Result<SimUpload, StoreError> {
        self.call(key, |_| Ok(())).await?;
        Ok(SimUpload {
            world: self.world.clone(),
            me: self.me,
            key: key.to_owned(),
            parts: Mutex::new(BTreeMap::new()),
        })
    }

    async fn put_small(&self, key: &str, body: Bytes, if_absent: bool) -> Result<(), StoreError> {
        self.call(key, |world| {
            let probe_honoured = self.flaw == Some(Flaw::ProbeHonouredOnly) && key.contains("/coordination/probes/");
            let unconditional = world.store_unconditional && !probe_honoured;
            if if_absent && !unconditional && world.objects.contains_key(key) {
                return Err(StoreError::AlreadyExists { location: key.to_owned() });
            }
            let forged =
                (self.flaw == Some(Flaw::ClaimsCommitAtOnce)).then(|| flaws::forged_outcome(key, &body)).flatten();
            world.put_object(key, body);
            if let Some((outcome_key, outcome)) = forged {
                world.put_object(&outcome_key, outcome);
            }
            Ok(())
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<SimReader, StoreError> {
        let bytes = self
            .call(key, |world| match world.objects.get(key) {
                Some(object) => Ok(object.bytes.clone()),
                None => Err(StoreError::NotFound { location: key.to_owned() }),
            })
            .await?;
        let forged = (self.flaw == Some(Flaw::ManifestsMatchAnyBytes))
            .then(|| flaws::forged_manifest(&self.world, key, &bytes))
            .flatten();
        Ok(SimReader { bytes: forged.unwrap_or(bytes) })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.call(key, |world| Ok(world.objects.get(key).map(|object| info(key, object)))).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut listed: Vec<ObjectInfo> = self
            .call(prefix, |world| {
                Ok(world
                    .objects
                    .range(prefix.to_owned()..)
                    .take_while(|(key, _)| key.starts_with(prefix))
                    .map(|(key, object)| info(key, object))
                    .collect())
            })
            .await?;
        if self.flaw == Some(Flaw::LogListsStale) && prefix.contains("/exported/etcd-log/") {
            listed.pop();
        }
        Ok(listed)
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        self.call(from, |world| {
            let bytes = world.objects.get(from).map(|object| object.bytes.clone());
            match bytes {
                Some(bytes) => {
                    world.put_object(to, bytes);
                    Ok(())
                }
                None => Err(StoreError::NotFound { location: from.to_owned() }),
            }
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.call(key, |world| {
            world.objects.remove(key);
            Ok(())
        })
        .await
    }
}

/// The local etcd process on machine `node`.
pub struct SimMember {
    pub world: Shared,
    pub node: usize,
    pub spec: MemberSpec,
}

impl LocalMember for SimMember {
    fn spec(&self) -> &MemberSpec {
        &self.spec
    }

    async fn is_running(&self) -> bool {
        lock(&self.world).nodes[self.node].running
    }

    async fn start(&self, launch: &Launch) -> Result<(), MemberError> {
        latency(5, 50).await;
        lock(&self.world)
            .start(self.node, &launch.initial_cluster, &launch.initial_cluster_state, &launch.initial_cluster_token)
            .map_err(|detail| MemberError::Spawn {
                program: "etcd (simulated)".into(),
                source: std::io::Error::other(detail),
            })
    }

    async fn stop(&self) -> Result<(), MemberError> {
        graceful_stop(&self.world, self.node).await;
        lock(&self.world).stop(self.node);
        Ok(())
    }
}

/// The simulated `etcdutl snapshot restore`: the model checks the file and makes a disk.
pub struct SimBuilder {
    pub world: Shared,
    /// A broken component planted for the teeth tests; `None` in every other run.
    pub flaw: Option<Flaw>,
}

impl DataDirBuilder for SimBuilder {
    fn ready(&self) -> Result<(), RestoreError> {
        Ok(())
    }

    async fn build(&self, snapshot: &Path, into: &Path, settings: &RestoreSettings) -> Result<(), RestoreError> {
        latency(10, 100).await;
        let failed = |stderr: String| RestoreError::Etcdutl { status: "exit status: 1".into(), stderr };
        let bytes = std::fs::read(snapshot).map_err(|error| failed(error.to_string()))?;
        if let lifeboat_runtime::backup::restore::SnapshotChoice::Named(name) = &settings.snapshot {
            let mut world = lock(&self.world);
            let key = format!("backups/sim/exported/etcd-snapshots/{name}");
            if !world.stats.restored_keys.contains(&key) {
                world.stats.restored_keys.push(key);
            }
        }
        let disk = lock(&self.world)
            .restore(
                &bytes,
                &settings.initial_cluster_token,
                &settings.initial_cluster,
                &settings.initial_advertise_peer_urls,
            )
            .map_err(failed)?;
        let member = into.join("member");
        std::fs::create_dir_all(&member).map_err(|error| failed(error.to_string()))?;
        std::fs::write(member.join("disk"), disk.to_string()).map_err(|error| failed(error.to_string()))
    }

    /// Not modelled: simulated restores keep their revisions.
    async fn supports_bump(&self) -> bool {
        false
    }

    async fn extend_with_log<S: SnapshotStore>(
        &self,
        store: &S,
        layout: &lifeboat::StoreLayout,
        snapshot: &lifeboat::SnapshotName,
        _save: &lifeboat_runtime::backup::save::SaveSettings,
    ) -> Result<Option<lifeboat_runtime::ports::LogExtension>, lifeboat_runtime::ports::ExtendError> {
        latency(100, 1_000).await;
        crate::revlog::extend_with_log(&self.world, store, layout, snapshot).await
    }

    async fn data_revision(&self, data_dir: &Path) -> Result<Option<Revision>, RestoreError> {
        latency(10, 100).await;
        let world = lock(&self.world);
        let node = world.nodes.iter().position(|node| node.data_dir == data_dir);
        let revision = node.and_then(|node| world.revision_of(node)).map(|(revision, _)| Revision(revision));
        if self.flaw == Some(Flaw::DataDirsReadStale) {
            return Ok(revision.map(|_| Revision(1)));
        }
        Ok(revision)
    }
}

/// Virtual time as a wall clock, with a per-agent skew the fault injector sets.
#[derive(Clone)]
pub struct SimClock {
    pub skew_ms: Arc<AtomicI64>,
}

impl Clock for SimClock {
    fn now(&self) -> Millis {
        let elapsed = crate::model::virtual_ms() as i64;
        Millis((EPOCH_MS as i64 + elapsed + self.skew_ms.load(Ordering::Relaxed)).max(0) as u64)
    }

    fn monotonic(&self) -> Millis {
        Millis(crate::model::virtual_ms())
    }

    async fn sleep_until(&self, deadline: Millis) {
        let wait = deadline.saturating_sub(self.monotonic());
        madsim::time::sleep(Duration::from_millis(wait)).await;
    }
}
