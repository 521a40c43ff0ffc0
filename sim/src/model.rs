//! The simulated world: an etcd cluster model, an S3-like store, the network
//! zones between machines, the client history, and the invariant violations
//! seen so far. Everything is plain data behind one lock; the ports in
//! [`crate::ports`] add latency and faults around it.
//!
//! The etcd model is a leader-based replicated log kept per cluster (one per
//! recovery epoch). A member's disk is a prefix of its cluster's log. A leader
//! is elected when a majority of voters run in one network zone, and answers an
//! election timeout later (members name the deposed one in `status` meanwhile);
//! a write is acknowledged only then, and every member in the leader's zone stores it, so an
//! acknowledged write is on a majority. Membership changes follow etcd 3.5's
//! strict reconfiguration checks. Invariants are checked where the state changes.

use bytes::Bytes;
use lifeboat::membership::quorum;
use lifeboat::{Member, MemberId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

pub type Shared = Arc<Mutex<World>>;

/// Locks the world; a poisoned lock means a check already panicked, so go on.
pub fn lock(world: &Shared) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// bbolt's meta page magic at offset 16, as `lifeboat::verify` expects.
const BOLT_MAGIC: [u8; 4] = [0xED, 0xDA, 0x0C, 0xED];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Invariant {
    /// 1. No acknowledged write is lost when at most a minority failed.
    NoAcknowledgedWriteLost,
    /// 2. After a disaster recovery the cluster holds exactly the restored snapshot.
    RestoredStateExact,
    /// 3. Never two live clusters (epochs) for one logical cluster.
    NoSplitBrain,
    /// 4. No membership change loses quorum; at most one in flight.
    MembershipChangesSafe,
    /// 5. N healthy members again after faults stop.
    Liveness,
    /// 6. A corrupt, truncated or foreign snapshot is never restored.
    NoCorruptRestore,
    /// 7. No partial object under a final name.
    NoPartialObject,
    /// 10. etcd never starts on a data dir another process is changing (a restore
    ///     or a replacement), except by that process's own start.
    NoStartMidChange,
    /// The scenario's expected recovery and checks.
    Expectation,
}

impl Invariant {
    pub fn label(self) -> &'static str {
        match self {
            Invariant::NoAcknowledgedWriteLost => "1 no acknowledged write lost",
            Invariant::RestoredStateExact => "2 restored state exact",
            Invariant::NoSplitBrain => "3 no split brain",
            Invariant::MembershipChangesSafe => "4 membership changes safe",
            Invariant::Liveness => "5 liveness",
            Invariant::NoCorruptRestore => "6 no corrupt restore",
            Invariant::NoPartialObject => "7 no partial object",
            Invariant::NoStartMidChange => "10 no start mid-change",
            Invariant::Expectation => "scenario expectation",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub invariant: Invariant,
    pub at_ms: u64,
    pub detail: String,
}

/// One machine: an etcd member process, its data dir, and (beside it) an agent.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
    pub data_dir: PathBuf,
    pub running: bool,
    /// The disk the running process uses.
    pub disk: Option<u64>,
    /// Machines talk (peer and client traffic) only within one zone; clients sit in zone 0.
    pub zone: u32,
    /// Set when the running member rejoined its leader far behind: the log length it
    /// had then, and when. It is "up but behind" until it has streamed the rest.
    pub catch_up: Option<(usize, u64)>,
}

/// A follower that missed more than this many entries is behind for a while when it
/// rejoins (fewer stream within a heartbeat or two, as in etcd's pipeline).
pub const CATCH_UP_FREE_ENTRIES: usize = 100;
/// How fast a follower that is behind applies the entries it missed: about 140 a
/// second, under three times the catalogue's write rate, so a minute's partition
/// takes over 30 s to make up: more than K = 3 checks of 10 s (the case found on
/// real containers).
pub const CATCH_UP_MS_PER_ENTRY: u64 = 7;
/// Beyond this many missed entries the leader sends a snapshot instead of entries
/// (etcd's `--snapshot-catchup-entries` is 5,000): catching up takes at most this long.
pub const CATCH_UP_MAX_ENTRIES: usize = 5_000;

#[derive(Clone, Debug)]
pub struct Disk {
    pub cluster: u64,
    pub member: MemberId,
    /// How much of the cluster's log this disk holds.
    pub len: usize,
    /// Damaged (a corrupt database or WAL): etcd exits at every start on it.
    pub damaged: bool,
}

#[derive(Clone, Debug)]
pub struct ClusterMember {
    pub id: MemberId,
    pub peer_url: String,
    /// Empty until the member first starts (as etcd shows unstarted members).
    pub name: String,
    pub client_url: String,
    pub learner: bool,
    /// When this member first started: a learner needs time to catch up.
    pub started_at: Option<u64>,
}

/// etcd's default `--election-timeout`.
pub const ELECTION_TIMEOUT_MS: u64 = 1_000;

/// A leader that lost its place (see [`Cluster::deposed`]).
#[derive(Clone, Copy, Debug)]
pub struct Deposed {
    pub member: MemberId,
    /// Until then the members still name it as their leader.
    pub until_ms: u64,
}

#[derive(Clone, Debug)]
pub struct Cluster {
    pub id: u64,
    pub token: String,
    pub base: Arc<BTreeMap<String, u64>>,
    /// The revision of `base`: 1 for a fresh cluster, the snapshot's for a restored one.
    pub base_revision: i64,
    /// Puts after `base`, in order: (key, write id).
    pub log: Vec<(String, u64)>,
    pub members: Vec<ClusterMember>,
    /// The leader node, once elected; it answers only from `leader_ready_ms` on.
    pub leader: Option<usize>,
    /// Raft's term: one more at every election.
    pub term: u64,
    /// When the current leader's election completes. Until then the cluster has
    /// no leader to serve writes, reads or membership changes: an election takes
    /// an election timeout, randomised in [1x, 2x) as etcd does.
    pub leader_ready_ms: u64,
    /// The leader that lost its place, which the members still report in `status`
    /// until their own election timeout fires (a cut-off leader steps down only
    /// then: etcd's CheckQuorum), though none answers a linearizable read.
    pub deposed: Option<Deposed>,
    /// For a restored cluster: the cluster and revision it came from, and the content's digest.
    pub source: Option<(u64, i64)>,
    pub digest: Option<String>,
    /// The last state computed by `state_at`, and its log length.
    checkpoint: Option<(usize, Arc<BTreeMap<String, u64>>)>,
    /// Lock keys and their leases, by key: part of the cluster's data.
    pub locks: BTreeMap<String, Lock>,
}

impl Cluster {
    pub fn voters(&self) -> impl Iterator<Item = &ClusterMember> {
        self.members.iter().filter(|member| !member.learner)
    }
    pub fn revision(&self, len: usize) -> i64 {
        self.base_revision + len as i64
    }
    /// The key-value state after the first `len` log entries. Snapshots are taken
    /// at growing lengths, so the last result is kept and replay starts from it.
    pub fn state_at(&mut self, len: usize) -> Arc<BTreeMap<String, u64>> {
        let len = len.min(self.log.len());
        let (mut from, mut state) = match &self.checkpoint {
            Some((at, state)) if *at <= len => (*at, state.clone()),
            _ => (0, self.base.clone()),
        };
        if from < len {
            let map = Arc::make_mut(&mut state);
            for (key, id) in &self.log[from..len] {
                map.insert(key.clone(), *id);
            }
            from = len;
        }
        self.checkpoint = Some((from, state.clone()));
        state
    }
}

/// A lock key attached to a lease, as etcd's `concurrency` mutex keeps it: in the
/// cluster's own data, so a snapshot carries it and a restore brings it back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lock {
    pub holder: String,
    pub lease: i64,
    pub expires_ms: u64,
    pub ttl_ms: u64,
}

#[derive(Clone, Debug)]
pub struct Object {
    pub bytes: Bytes,
    pub modified_ms: u64,
    /// Damaged on purpose by the fault injector.
    pub corrupted: bool,
}

#[derive(Clone, Debug)]
pub struct AckedWrite {
    pub id: u64,
    pub cluster: u64,
    /// Position in the cluster's log, 1-based.
    pub index: usize,
    pub revision: i64,
    pub at_ms: u64,
}

/// What the sim's snapshot file holds between bolt's magic and etcd's trailer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotContent {
    pub cluster: u64,
    pub revision: i64,
    pub kv: BTreeMap<String, u64>,
    /// The lock keys with their leases when the snapshot was taken.
    #[serde(default)]
    pub locks: BTreeMap<String, Lock>,
}

impl SnapshotContent {
    /// The file etcd would stream: bolt's magic, the state, whole pages, etcd's trailing sha256.
    pub fn to_file(&self) -> Bytes {
        let mut bytes = vec![0u8; 16];
        bytes.extend_from_slice(&BOLT_MAGIC);
        bytes.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        // Whole bolt pages, as etcd's own trailer check expects (size % 512 == 32).
        bytes.resize(bytes.len().div_ceil(512) * 512, 0);
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        Bytes::from(bytes)
    }

    /// The state in a file, when its magic and trailer hold.
    pub fn from_file(file: &[u8]) -> Option<SnapshotContent> {
        if file.len() < 20 + 32 || file.get(16..20)? != BOLT_MAGIC {
            return None;
        }
        let (body, trailer) = file.split_at(file.len() - 32);
        if Sha256::digest(body).as_slice() != trailer {
            return None;
        }
        serde_json::from_slice(body.get(20..)?.split(|byte| *byte == 0).next().unwrap_or_default()).ok()
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// (virtual ms, peer URL) of every member removal.
    pub removals: Vec<(u64, String)>,
    pub promotions: u32,
    /// Clusters created by a restore (recovery epochs).
    pub epochs: Vec<u64>,
    pub saves: u32,
    pub restores: u32,
    /// Acknowledged revisions a disaster recovery left behind (the RPO at work).
    pub lost_by_recovery: u64,
    /// What the same recoveries would have left behind from the snapshot the log was
    /// replayed onto (the baseline without the revision log).
    pub lost_without_log: u64,
    /// Each replay of the log before a claim: (the snapshot's revision, the revision reached).
    pub log_replays: Vec<(i64, i64)>,
    pub writes_acked: u64,
    pub writes_refused: u64,
    /// When N healthy members were first seen after the last fault ended.
    pub recovered_at_ms: Option<u64>,
    pub restored_keys: Vec<String>,
    /// Per new cluster: the revision restored, and the newest revision a surviving
    /// disk of the source cluster held at that moment.
    pub survivors_at_restore: Vec<(i64, Option<i64>)>,
    /// Per new cluster: the revision restored, and how far the source cluster's
    /// revision log reached in the store at that moment (`None`: no log).
    pub log_at_restore: Vec<(i64, Option<i64>)>,
    /// Revision-log segments written.
    pub log_segments: u32,
    /// Every versioned snapshot ever written: (virtual ms, name). Retention deletes
    /// objects; checks about what existed at a moment read this.
    pub versioned_written: Vec<(u64, String)>,
    pub corrupted_keys: Vec<String>,
}

pub struct World {
    pub nodes: Vec<Node>,
    pub clusters: BTreeMap<u64, Cluster>,
    pub disks: BTreeMap<u64, Disk>,
    next_disk: u64,
    pub objects: BTreeMap<String, Object>,
    pub store_down: bool,
    /// The store ignores create-if-absent: conditional puts overwrite.
    pub store_unconditional: bool,
    /// Agents (by machine) that cannot reach the store.
    pub store_cut: BTreeSet<usize>,
    /// Store calls fail this often (percent) and take this much longer (ms).
    pub store_flaky: Option<(u32, u64)>,
    /// Lease IDs are unique across clusters, as etcd's random ones are in practice.
    next_lease: i64,
    pub writes: Vec<AckedWrite>,
    next_write: u64,
    pub violations: Vec<Violation>,
    pub stats: Stats,
    trace: Sha256,
    pub trace_lines: Option<Vec<String>>,
    split_brain_seen: BTreeSet<(u64, u64)>,
    /// Each machine's etcd unit, in `--member-control systemd` runs.
    pub units: Vec<crate::systemd::Unit>,
    /// How far each cluster's revision log reaches in the store.
    pub log_ends: BTreeMap<u64, i64>,
}

/// Milliseconds since the simulation started.
pub fn virtual_ms() -> u64 {
    madsim::time::TimeHandle::current().elapsed().as_millis() as u64
}

/// A stable 64-bit id from text (cluster and member IDs, like etcd's hashes).
pub fn stable_id(parts: &[&str]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("a sha256 digest has 8 bytes")) >> 1
}

impl World {
    pub fn new(nodes: Vec<Node>, keep_trace: bool) -> World {
        World {
            units: vec![crate::systemd::Unit::default(); nodes.len()],
            nodes,
            clusters: BTreeMap::new(),
            disks: BTreeMap::new(),
            next_disk: 1,
            objects: BTreeMap::new(),
            store_down: false,
            store_unconditional: false,
            store_cut: BTreeSet::new(),
            store_flaky: None,
            next_lease: 1,
            writes: Vec::new(),
            next_write: 1,
            violations: Vec::new(),
            stats: Stats::default(),
            trace: Sha256::new(),
            trace_lines: keep_trace.then(Vec::new),
            split_brain_seen: BTreeSet::new(),
            log_ends: BTreeMap::new(),
        }
    }

    /// The log writer stored a segment of `cluster` ending at `last`.
    pub fn log_flushed(&mut self, cluster: u64, last: i64) {
        let end = self.log_ends.entry(cluster).or_insert(last);
        *end = (*end).max(last);
        self.stats.log_segments += 1;
    }

    pub fn now_ms(&self) -> u64 {
        virtual_ms()
    }

    /// Every state change goes through here: it feeds the trace hash that the
    /// determinism test compares, and the readable trace of a replay.
    pub fn event(&mut self, text: String) {
        let line = format!("{:>9.3}s {text}", self.now_ms() as f64 / 1000.0);
        self.trace.update(line.as_bytes());
        self.trace.update(b"\n");
        if let Some(lines) = &mut self.trace_lines {
            lines.push(line);
        }
    }

    pub fn trace_hash(&self) -> String {
        hex::encode(self.trace.clone().finalize())
    }

    pub fn violate(&mut self, invariant: Invariant, detail: String) {
        self.event(format!("VIOLATION [{}] {detail}", invariant.label()));
        let at_ms = self.now_ms();
        self.violations.push(Violation { invariant, at_ms, detail });
    }

    pub fn node_by_client_url(&self, url: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.client_url == url.trim_end_matches('/'))
    }

    fn disk_of(&self, node: usize) -> Option<&Disk> {
        self.nodes[node].disk.and_then(|disk| self.disks.get(&disk))
    }

    /// The cluster and member a running node serves.
    pub fn serving(&self, node: usize) -> Option<(u64, MemberId)> {
        if !self.nodes[node].running {
            return None;
        }
        self.disk_of(node).map(|disk| (disk.cluster, disk.member))
    }

    /// The leader node of `node`'s cluster, when its election is complete and
    /// `node` can reach it.
    pub fn leader_seen_by(&self, node: usize) -> Option<usize> {
        let (cluster, _) = self.serving(node)?;
        let leader = self.ready_leader(cluster)?;
        (self.nodes[leader].zone == self.nodes[node].zone).then_some(leader)
    }

    /// The cluster's leader once its election is complete.
    fn ready_leader(&self, cluster: u64) -> Option<usize> {
        let cluster = self.clusters.get(&cluster)?;
        cluster.leader.filter(|_| self.now_ms() >= cluster.leader_ready_ms)
    }

    /// The leader `node` names in `status`, and the term: the one it reaches, or
    /// for an election timeout after the leader lost its place, that one still
    /// (a stale leader: it may be stopped or cut off, and answers no linearizable
    /// read). `None` during an election.
    pub fn leader_reported_by(&self, node: usize) -> (Option<MemberId>, u64) {
        let Some((cluster, _)) = self.serving(node) else { return (None, 0) };
        let Some(state) = self.clusters.get(&cluster) else { return (None, 0) };
        if let Some(leader) = self.leader_seen_by(node) {
            return (self.serving(leader).map(|(_, member)| member), state.term);
        }
        let stale = state.deposed.filter(|deposed| self.now_ms() < deposed.until_ms).map(|deposed| deposed.member);
        (stale, state.term)
    }

    pub fn members_seen_by(&self, node: usize) -> Option<Vec<Member>> {
        let (cluster, _) = self.serving(node)?;
        let cluster = self.clusters.get(&cluster)?;
        let mut members: Vec<Member> = cluster
            .members
            .iter()
            .map(|member| Member {
                id: member.id,
                name: member.name.clone(),
                peer_urls: vec![member.peer_url.clone()],
                client_urls: if member.client_url.is_empty() { vec![] } else { vec![member.client_url.clone()] },
                is_learner: member.learner,
            })
            .collect();
        members.sort_by_key(|member| member.id);
        Some(members)
    }

    pub fn revision_of(&self, node: usize) -> Option<(i64, usize)> {
        let disk = self.disk_of(node)?;
        let cluster = self.clusters.get(&disk.cluster)?;
        Some((cluster.revision(disk.len), disk.len))
    }

    fn is_member(&self, node: usize) -> Option<&ClusterMember> {
        let disk = self.disk_of(node)?;
        self.clusters.get(&disk.cluster)?.members.iter().find(|member| member.id == disk.member)
    }

    /// `endpoint health`: a linearizable read through a leader; learners refuse it, and
    /// a member that is behind times out waiting to apply up to the leader's index.
    pub fn healthy(&self, node: usize) -> bool {
        self.leader_seen_by(node).is_some()
            && self.is_member(node).is_some_and(|member| !member.learner)
            && !self.behind(node)
    }

    /// The log length `node` has applied as its status reports it: all of its disk,
    /// unless it is catching up, when it climbs at the catch-up rate.
    pub fn applied_len(&self, node: usize) -> Option<usize> {
        let len = self.disk_of(node)?.len;
        Some(match self.nodes[node].catch_up {
            Some((from, since)) => {
                let streamed = self.now_ms().saturating_sub(since) / CATCH_UP_MS_PER_ENTRY;
                len.min(from.saturating_add(usize::try_from(streamed).unwrap_or(usize::MAX)))
            }
            None => len,
        })
    }

    /// Whether `node` is up but behind its leader (see [`Node::catch_up`]).
    pub fn behind(&self, node: usize) -> bool {
        let Some(len) = self.disk_of(node).map(|disk| disk.len) else { return false };
        self.nodes[node].catch_up.is_some() && self.applied_len(node).is_some_and(|applied| applied < len)
    }

    /// What `endpoint status` reports of a running member: its revision and raft index
    /// as applied so far (behind its disk while it catches up).
    pub fn status_of(&self, node: usize) -> Option<(i64, usize)> {
        let disk = self.disk_of(node)?;
        let cluster = self.clusters.get(&disk.cluster)?;
        let applied = self.applied_len(node)?;
        Some((cluster.revision(applied), applied))
    }

    // ---- the replicated log -------------------------------------------------

    /// Recomputes leaders, catches members up, and checks invariants 1 and 3.
    /// Called after every change of processes, disks, zones or membership.
    pub fn settle(&mut self) {
        self.exit_removed_members();
        let ids: Vec<u64> = self.clusters.keys().copied().collect();
        let mut led = Vec::new();
        for id in ids {
            let leader = self.elect(id);
            let cluster = &self.clusters[&id];
            if cluster.leader != leader {
                let name = |node: Option<usize>| node.map(|node| self.nodes[node].name.clone());
                let now = self.now_ms();
                // An election takes an election timeout, randomised per term.
                let ready_ms = now
                    + ELECTION_TIMEOUT_MS
                    + stable_id(&[&id.to_string(), &cluster.term.to_string()]) % ELECTION_TIMEOUT_MS;
                let text = format!(
                    "cluster {:x}: leader {:?} -> {:?}{}",
                    id,
                    name(cluster.leader),
                    name(leader),
                    if leader.is_some() { format!(" (elected at {ready_ms} ms)") } else { String::new() }
                );
                let deposed = cluster
                    .leader
                    .and_then(|old| self.disk_of(old).filter(|disk| disk.cluster == id))
                    .map(|disk| Deposed { member: disk.member, until_ms: now + ELECTION_TIMEOUT_MS });
                self.event(text);
                if let Some(cluster) = self.clusters.get_mut(&id) {
                    if deposed.is_some() {
                        cluster.deposed = deposed;
                    }
                    if leader.is_some() {
                        cluster.term += 1;
                        cluster.leader_ready_ms = ready_ms;
                    }
                    cluster.leader = leader;
                    // A new leader's lessor gives every lease its whole TTL again (etcd's
                    // `Promote`), and without a leader none expires: a lock outlives a
                    // quorum loss and a leader change, held by a holder that may be gone.
                    if leader.is_some() {
                        cluster.locks.values_mut().for_each(|lock| lock.expires_ms = now + lock.ttl_ms);
                    }
                }
            }
            if let Some(leader) = leader {
                led.push(id);
                self.sync(id, leader);
            }
        }
        for (index, first) in led.iter().enumerate() {
            for second in &led[index + 1..] {
                if self.split_brain_seen.insert((*first, *second)) {
                    self.violate(
                        Invariant::NoSplitBrain,
                        format!("clusters {first:x} and {second:x} both have a leader and accept writes"),
                    );
                }
            }
        }
    }

    fn elect(&self, id: u64) -> Option<usize> {
        let cluster = &self.clusters[&id];
        let voters: Vec<MemberId> = cluster.voters().map(|member| member.id).collect();
        if voters.is_empty() {
            return None;
        }
        let mut by_zone: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (node, state) in self.nodes.iter().enumerate() {
            if let Some((cluster_id, member)) = self.serving(node) {
                if cluster_id == id && voters.contains(&member) {
                    by_zone.entry(state.zone).or_default().push(node);
                }
            }
        }
        let candidates = by_zone.into_values().find(|nodes| nodes.len() >= quorum(voters.len()))?;
        if let Some(current) = cluster.leader.filter(|current| candidates.contains(current)) {
            return Some(current);
        }
        // Raft's election restriction: the most up-to-date log wins.
        candidates.into_iter().max_by_key(|node| (self.disk_of(*node).map(|disk| disk.len), std::cmp::Reverse(*node)))
    }

    /// Every member in the leader's zone holds the leader's log (catch-up). A leader
    /// shorter than the log means acknowledged entries are on no member of the quorum.
    fn sync(&mut self, id: u64, leader: usize) {
        let Some(leader_len) = self.disk_of(leader).map(|disk| disk.len) else { return };
        let log_len = self.clusters[&id].log.len();
        if leader_len < log_len {
            let lost: Vec<i64> = self
                .writes
                .iter()
                .filter(|write| write.cluster == id && write.index > leader_len)
                .map(|write| write.revision)
                .collect();
            if let (Some(first), Some(last)) = (lost.first(), lost.last()) {
                let text = format!(
                    "cluster {id:x}: {} acknowledged writes (revisions {first}..={last}) are on no member of the new quorum; leader {} holds {leader_len} of {log_len} entries",
                    lost.len(),
                    self.nodes[leader].name
                );
                self.violate(Invariant::NoAcknowledgedWriteLost, text);
            }
            self.writes.retain(|write| !(write.cluster == id && write.index > leader_len));
            if let Some(cluster) = self.clusters.get_mut(&id) {
                cluster.log.truncate(leader_len);
                cluster.checkpoint = None;
            }
        }
        let zone = self.nodes[leader].zone;
        let members: Vec<MemberId> = self.clusters[&id].members.iter().map(|member| member.id).collect();
        let now = self.now_ms();
        for node in 0..self.nodes.len() {
            if self.nodes[node].zone != zone || !self.nodes[node].running {
                continue;
            }
            let caught_up = !self.behind(node);
            if let Some(disk) = self.nodes[node].disk.and_then(|disk| self.disks.get_mut(&disk)) {
                if disk.cluster == id && members.contains(&disk.member) {
                    // The entries count as on the disk at once (the model's durability is
                    // unchanged); what lags is what the member answers: its reads time out
                    // and its status index climbs until it has applied them.
                    let missed = leader_len.saturating_sub(disk.len);
                    let from = disk.len.max(leader_len.saturating_sub(CATCH_UP_MAX_ENTRIES));
                    disk.len = leader_len;
                    if node != leader && missed > CATCH_UP_FREE_ENTRIES && caught_up {
                        self.nodes[node].catch_up = Some((from, now));
                    } else if caught_up {
                        self.nodes[node].catch_up = None;
                    }
                }
            }
        }
    }

    /// A running member that its cluster removed shuts down, as etcd does.
    fn exit_removed_members(&mut self) {
        for node in 0..self.nodes.len() {
            let Some((cluster, member)) = self.serving(node) else { continue };
            let removed =
                self.clusters.get(&cluster).is_none_or(|cluster| !cluster.members.iter().any(|m| m.id == member));
            if removed {
                self.nodes[node].running = false;
                let name = self.nodes[node].name.clone();
                self.event(format!("etcd {name} exited: the member has been permanently removed from the cluster"));
            }
        }
    }

    /// A client write through whatever leader zone 0 reaches; `Some(revision)` once acknowledged.
    pub fn client_write(&mut self, key: String) -> Option<i64> {
        let leader = self
            .clusters
            .values()
            .filter_map(|cluster| self.ready_leader(cluster.id).map(|leader| (cluster.id, leader)))
            .find(|(_, leader)| self.nodes[*leader].zone == 0);
        let Some((id, leader)) = leader else {
            self.stats.writes_refused += 1;
            return None;
        };
        let write = self.next_write;
        self.next_write += 1;
        let cluster = self.clusters.get_mut(&id)?;
        cluster.log.push((key, write));
        let index = cluster.log.len();
        let revision = cluster.revision(index);
        if let Some(disk) = self.nodes[leader].disk.and_then(|disk| self.disks.get_mut(&disk)) {
            disk.len = index;
        }
        self.sync(id, leader);
        let at_ms = self.now_ms();
        self.writes.push(AckedWrite { id: write, cluster: id, index, revision, at_ms });
        self.stats.writes_acked += 1;
        Some(revision)
    }

    // ---- member processes ---------------------------------------------------

    fn new_disk(&mut self, cluster: u64, member: MemberId) -> u64 {
        let id = self.next_disk;
        self.next_disk += 1;
        self.disks.insert(id, Disk { cluster, member, len: 0, damaged: false });
        id
    }

    fn marker(&self, node: usize) -> PathBuf {
        self.nodes[node].data_dir.join("member").join("disk")
    }

    /// The disk `node`'s data dir holds now, as etcd would find it there at start.
    fn disk_in_data_dir(&self, node: usize) -> Option<u64> {
        let on_disk = std::fs::read_to_string(self.marker(node)).ok().and_then(|text| text.trim().parse::<u64>().ok());
        on_disk.filter(|disk| self.disks.contains_key(disk))
    }

    fn write_marker(&self, node: usize, disk: u64) -> Result<(), String> {
        let path = self.marker(node);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| error.to_string())?;
        }
        std::fs::write(&path, disk.to_string()).map_err(|error| error.to_string())
    }

    /// Starts etcd on `node` as the launch flags say; the data dir decides, as in etcd.
    pub fn start(&mut self, node: usize, initial_cluster: &str, state: &str, token: &str) -> Result<(), String> {
        if self.nodes[node].running {
            return Ok(());
        }
        let name = self.nodes[node].name.clone();
        let disk = match self.disk_in_data_dir(node) {
            Some(disk) => disk,
            None if state == "new" => self.bootstrap(node, initial_cluster, token)?,
            None => self.join_existing(node)?,
        };
        if self.disks.get(&disk).is_some_and(|disk| disk.damaged) {
            self.event(format!("etcd {name} exits at start: its data dir is damaged"));
            return Err("etcd exited at start: the data dir is damaged (corrupt database)".into());
        }
        self.nodes[node].disk = Some(disk);
        self.nodes[node].running = true;
        self.nodes[node].catch_up = None;
        let (cluster, member) = (self.disks[&disk].cluster, self.disks[&disk].member);
        let client_url = self.nodes[node].client_url.clone();
        if let Some(entry) =
            self.clusters.get_mut(&cluster).and_then(|cluster| cluster.members.iter_mut().find(|m| m.id == member))
        {
            entry.name = name.clone();
            entry.client_url = client_url;
            entry.started_at.get_or_insert(virtual_ms());
        }
        self.event(format!("etcd {name} started ({state}) as {member} of cluster {cluster:x}"));
        self.settle();
        if self.nodes[node].running {
            Ok(())
        } else {
            Err(format!("etcd {name} exited at once"))
        }
    }

    fn bootstrap(&mut self, node: usize, initial_cluster: &str, token: &str) -> Result<u64, String> {
        let id = stable_id(&[token, initial_cluster]);
        let peer_url = self.nodes[node].peer_url.clone();
        // etcd keeps a cluster nowhere but in its members' data dirs. A member that had
        // started, bootstrapping again from an empty data dir while no data dir holds its
        // cluster's log any more, starts that cluster afresh and empty (under the same ID: it
        // comes from the token and the peer URLs), whatever the cluster held. Only a
        // live member with the old log would tell, and raft then refuses the empty one
        // (`empty_disk_for`). Without this the model refused such a start too, and an
        // agent that bootstrapped over lost data went unseen (a mutant of
        // `reconfigure::plan` that bootstraps where it should await a recovery).
        let started_before = self.clusters.get(&id).is_some_and(|cluster| {
            cluster.members.iter().any(|member| member.peer_url == peer_url && !member.name.is_empty())
        });
        // Any data dir that still holds the cluster's log, running or stopped, keeps it: a
        // lone empty member cannot elect a leader, and the others bring the log back when
        // they start (nemesis seed 100000141928: a stray start on a wiped member while the
        // others had stopped for a recovery was counted as every write lost).
        let held = (0..self.nodes.len())
            .filter(|peer| *peer != node)
            .filter_map(|peer| self.disk_in_data_dir(peer))
            .any(|disk| self.disks[&disk].cluster == id);
        if started_before && !held {
            self.clusters.remove(&id);
            self.event(format!("cluster {id:x} bootstrapped anew from an empty data dir: everything it held is gone"));
            // Its acknowledged writes are gone with it. With snapshots of it in the store
            // that is a loss a recovery would have avoided (without any, there was nothing
            // to restore and the disks took the data).
            let lost: Vec<i64> =
                self.writes.iter().filter(|write| write.cluster == id).map(|write| write.revision).collect();
            let saved = self.objects.keys().any(|key| key.ends_with(".manifest.json"));
            if let (true, Some(first), Some(last)) = (saved, lost.first(), lost.last()) {
                let text = format!(
                    "cluster {id:x} was bootstrapped anew, empty, while the store held snapshots of it: {} acknowledged writes (revisions {first}..={last}) are gone",
                    lost.len()
                );
                self.violate(Invariant::NoAcknowledgedWriteLost, text);
            }
            self.writes.retain(|write| write.cluster != id);
        }
        if let std::collections::btree_map::Entry::Vacant(entry) = self.clusters.entry(id) {
            entry.insert(Cluster {
                id,
                token: token.to_owned(),
                base: Arc::new(BTreeMap::new()),
                base_revision: 1,
                log: Vec::new(),
                members: parse_initial_cluster(initial_cluster, token),
                leader: None,
                term: 0,
                leader_ready_ms: 0,
                deposed: None,
                source: None,
                digest: None,
                checkpoint: None,
                locks: BTreeMap::new(),
            });
            self.event(format!("cluster {id:x} bootstrapped with token {token}"));
        }
        let member = self.clusters[&id]
            .members
            .iter()
            .find(|member| member.peer_url == peer_url)
            .cloned()
            .ok_or_else(|| format!("{peer_url} is not in --initial-cluster"))?;
        self.empty_disk_for(node, id, &member)
    }

    fn join_existing(&mut self, node: usize) -> Result<u64, String> {
        let peer_url = self.nodes[node].peer_url.clone();
        let zone = self.nodes[node].zone;
        let found = (0..self.nodes.len())
            .filter(|peer| *peer != node && self.nodes[*peer].zone == zone)
            .filter_map(|peer| self.serving(peer))
            .find_map(|(cluster, _)| {
                self.clusters[&cluster]
                    .members
                    .iter()
                    .find(|member| member.peer_url == peer_url)
                    .map(|member| (cluster, member.clone()))
            });
        let Some((cluster, member)) = found else {
            return Err(self.crash(node, "could not retrieve cluster information from the given URLs"));
        };
        self.empty_disk_for(node, cluster, &member)
    }

    /// An empty data dir joins only as a member that never started: raft panics when a
    /// member the leader already replicated to comes back without its log.
    fn empty_disk_for(&mut self, node: usize, cluster: u64, member: &ClusterMember) -> Result<u64, String> {
        if !member.name.is_empty() {
            return Err(
                self.crash(node, "raft: tocommit is out of range (an empty disk for a member that had started)")
            );
        }
        let disk = self.new_disk(cluster, member.id);
        self.write_marker(node, disk)?;
        Ok(disk)
    }

    fn crash(&mut self, node: usize, why: &str) -> String {
        let name = self.nodes[node].name.clone();
        self.event(format!("etcd {name} failed to start: {why}"));
        format!("etcd {name} exited: {why}")
    }

    pub fn stop(&mut self, node: usize) {
        if self.nodes[node].running {
            self.nodes[node].running = false;
            let name = self.nodes[node].name.clone();
            self.event(format!("etcd {name} stopped"));
            self.settle();
        }
    }

    /// The disk stays but is damaged: the process stops, and exits at every start on it.
    pub fn damage(&mut self, node: usize) {
        self.stop(node);
        if let Some(disk) = self.nodes[node].disk.and_then(|disk| self.disks.get_mut(&disk)) {
            disk.damaged = true;
        }
        let name = self.nodes[node].name.clone();
        self.event(format!("data dir of {name} damaged"));
    }

    /// The disk is gone: the process stops and the data dir vanishes.
    pub fn wipe(&mut self, node: usize) {
        self.stop(node);
        self.nodes[node].disk = None;
        let _ = std::fs::remove_dir_all(&self.nodes[node].data_dir);
        let name = self.nodes[node].name.clone();
        self.event(format!("disk of {name} wiped"));
    }

    // ---- membership (etcd 3.5's strict reconfiguration checks) --------------

    /// The cluster a request from `from`'s agent reaches, with its leader.
    pub fn route(&self, endpoints: &[usize]) -> Result<(u64, usize), String> {
        let mut reached = false;
        for node in endpoints {
            if self.serving(*node).is_some() {
                reached = true;
                if let Some(leader) = self.leader_seen_by(*node) {
                    let cluster = self.serving(*node).map(|(cluster, _)| cluster).unwrap_or_default();
                    return Ok((cluster, leader));
                }
            }
        }
        Err(if reached { "etcdserver: no leader".into() } else { "no endpoint reachable".into() })
    }

    /// Voters whose process runs in the leader's zone: etcd's "active" peers.
    fn active_voters(&self, cluster: u64, leader: usize) -> Vec<MemberId> {
        let zone = self.nodes[leader].zone;
        (0..self.nodes.len())
            .filter(|node| self.nodes[*node].zone == zone)
            .filter_map(|node| self.serving(node))
            .filter(|(id, member)| *id == cluster && self.clusters[&cluster].voters().any(|voter| voter.id == *member))
            .map(|(_, member)| member)
            .collect()
    }

    pub fn member_add(&mut self, cluster: u64, leader: usize, peer_url: &str, learner: bool) -> Result<Member, String> {
        let active = self.active_voters(cluster, leader);
        let state = &self.clusters[&cluster];
        if state.members.iter().any(|member| member.peer_url == peer_url) {
            return Err("etcdserver: Peer URLs already exists".into());
        }
        let voters = state.voters().count();
        let started = state.voters().filter(|member| !member.name.is_empty()).count();
        if !learner && started < quorum(voters + 1) {
            return Err("etcdserver: re-configuration failed due to not enough started members".into());
        }
        if active.len() < voters {
            return Err("etcdserver: unhealthy cluster".into());
        }
        let joining: Vec<String> = state
            .members
            .iter()
            .filter(|member| member.learner || member.name.is_empty())
            .map(|member| member.peer_url.clone())
            .collect();
        if !joining.is_empty() {
            self.violate(
                Invariant::MembershipChangesSafe,
                format!(
                    "two membership changes in flight: adding {peer_url} while {} is still joining",
                    joining.join(", ")
                ),
            );
        }
        let id = MemberId(stable_id(&[&cluster.to_string(), peer_url, &self.now_ms().to_string()]));
        let member = ClusterMember {
            id,
            peer_url: peer_url.to_owned(),
            name: String::new(),
            client_url: String::new(),
            learner,
            started_at: None,
        };
        if let Some(state) = self.clusters.get_mut(&cluster) {
            state.members.push(member);
        }
        self.event(format!(
            "member add {peer_url} as {} ({id}) in {cluster:x}",
            if learner { "learner" } else { "voter" }
        ));
        self.settle();
        Ok(Member {
            id,
            name: String::new(),
            peer_urls: vec![peer_url.to_owned()],
            client_urls: vec![],
            is_learner: learner,
        })
    }

    pub fn member_remove(&mut self, cluster: u64, leader: usize, id: MemberId) -> Result<(), String> {
        let active = self.active_voters(cluster, leader);
        let state = &self.clusters[&cluster];
        let Some(target) = state.members.iter().find(|member| member.id == id).cloned() else {
            return Err(format!("etcdserver: member {id} not found"));
        };
        if !target.learner {
            let voters = state.voters().count();
            let remaining = active.iter().filter(|member| **member != id).count();
            if remaining < quorum(voters - 1) {
                self.violate(
                    Invariant::MembershipChangesSafe,
                    format!(
                        "removal of {} requested with {remaining} active voters left of {}: quorum would be lost",
                        target.peer_url,
                        voters - 1
                    ),
                );
                // etcd's own check refuses it (removing an active member below quorum).
                if active.contains(&id) {
                    return Err("etcdserver: unhealthy cluster".into());
                }
            }
        }
        if let Some(state) = self.clusters.get_mut(&cluster) {
            state.members.retain(|member| member.id != id);
        }
        self.stats.removals.push((self.now_ms(), target.peer_url.clone()));
        self.event(format!("member remove {} ({id}) from {cluster:x}", target.peer_url));
        self.settle();
        Ok(())
    }

    pub fn member_promote(&mut self, cluster: u64, leader: usize, id: MemberId) -> Result<(), String> {
        let leader_len = self.disk_of(leader).map(|disk| disk.len).unwrap_or(0);
        let zone = self.nodes[leader].zone;
        let in_sync = (0..self.nodes.len()).any(|node| {
            self.nodes[node].zone == zone
                && self.serving(node) == Some((cluster, id))
                && self.disk_of(node).is_some_and(|disk| disk.len == leader_len)
        });
        let state = &self.clusters[&cluster];
        // Streaming the leader's data takes time: a second, plus a millisecond per ten entries.
        let catch_up_ms = 1_000 + leader_len as u64 / 10;
        let now = self.now_ms();
        match state.members.iter().find(|member| member.id == id) {
            None => return Err(format!("etcdserver: member {id} not found")),
            Some(member) if !member.learner => return Err("etcdserver: can only promote a learner member".into()),
            Some(member) if !in_sync || member.started_at.is_none_or(|at| at + catch_up_ms > now) => {
                return Err("etcdserver: can only promote a learner member which is in sync with leader".into())
            }
            Some(_) => {}
        }
        if let Some(member) =
            self.clusters.get_mut(&cluster).and_then(|state| state.members.iter_mut().find(|member| member.id == id))
        {
            member.learner = false;
        }
        self.stats.promotions += 1;
        self.event(format!("member promote {id} in {cluster:x}"));
        self.settle();
        Ok(())
    }

    /// `cluster`'s live locks, expired leases dropped.
    fn live_locks(&mut self, cluster: u64) -> Option<&mut BTreeMap<String, Lock>> {
        let now = self.now_ms();
        let locks = &mut self.clusters.get_mut(&cluster)?.locks;
        locks.retain(|_, lock| lock.expires_ms > now);
        Some(locks)
    }

    pub fn try_lock(&mut self, cluster: u64, key: &str, holder: &str, ttl_seconds: i64) -> Option<i64> {
        let ttl_ms = ttl_seconds.max(1) as u64 * 1000;
        let expires_ms = self.now_ms() + ttl_ms;
        let lease = self.next_lease;
        let locks = self.live_locks(cluster)?;
        match locks.get_mut(key) {
            Some(lock) if lock.holder == holder => {
                lock.expires_ms = expires_ms;
                Some(lock.lease)
            }
            Some(_) => None,
            None => {
                locks.insert(key.to_owned(), Lock { holder: holder.to_owned(), lease, expires_ms, ttl_ms });
                self.next_lease += 1;
                self.event(format!("lock {key} taken by {holder} in {cluster:x}"));
                Some(lease)
            }
        }
    }

    /// Renews a live lease of `cluster` by its TTL; `false` once it expired there.
    pub fn keep_alive(&mut self, cluster: u64, lease: i64) -> bool {
        let now = self.now_ms();
        let Some(locks) = self.live_locks(cluster) else { return false };
        match locks.values_mut().find(|lock| lock.lease == lease) {
            Some(lock) => {
                lock.expires_ms = now + lock.ttl_ms;
                true
            }
            None => false,
        }
    }

    pub fn unlock(&mut self, cluster: u64, lease: i64) {
        if let Some(locks) = self.live_locks(cluster) {
            locks.retain(|_, lock| lock.lease != lease);
        }
    }

    // ---- snapshots and restore ---------------------------------------------

    /// `etcdctl snapshot save` from `node`: its state, framed as a bolt file with etcd's trailer.
    pub fn snapshot_bytes(&mut self, node: usize) -> Option<Bytes> {
        let (cluster, len) = self.disk_of(node).map(|disk| (disk.cluster, disk.len))?;
        let now = self.now_ms();
        let cluster = self.clusters.get_mut(&cluster)?;
        let kv = cluster.state_at(len);
        let locks = cluster.locks.iter().filter(|(_, lock)| lock.expires_ms > now);
        let locks = locks.map(|(key, lock)| (key.clone(), lock.clone())).collect();
        let content =
            SnapshotContent { cluster: cluster.id, revision: cluster.revision(len), kv: (*kv).clone(), locks };
        Some(content.to_file())
    }

    /// What `etcdutl snapshot restore` does to a file: check the trailer, read the
    /// state, and create a disk in the new cluster named by the token. Checks
    /// invariants 2, 3 and 6 at the moment a restore happens.
    pub fn restore(&mut self, file: &[u8], token: &str, initial_cluster: &str, peer_url: &str) -> Result<u64, String> {
        if file.len() < 20 + 32 || file[16..20] != BOLT_MAGIC {
            self.violate(Invariant::NoCorruptRestore, "a file that is not a snapshot reached the restore".into());
            return Err("snapshot file is not a bolt database".into());
        }
        let (body, trailer) = file.split_at(file.len() - 32);
        if Sha256::digest(body).as_slice() != trailer {
            self.violate(
                Invariant::NoCorruptRestore,
                "a snapshot whose hash does not match reached the restore".into(),
            );
            return Err("snapshot file integrity check failed".into());
        }
        let content: SnapshotContent =
            serde_json::from_slice(body[20..].split(|byte| *byte == 0).next().unwrap_or_default())
                .map_err(|error| format!("cannot read the snapshot: {error}"))?;
        let digest = hex::encode(Sha256::digest(body));
        // Invariant 2: the snapshot holds exactly the source cluster's state at its revision.
        if let Some(source) = self.clusters.get_mut(&content.cluster) {
            let len = (content.revision - source.base_revision).max(0) as usize;
            if len > source.log.len() || *source.state_at(len) != content.kv {
                self.violate(
                    Invariant::RestoredStateExact,
                    format!(
                        "snapshot of cluster {:x} at revision {} does not hold that cluster's state",
                        content.cluster, content.revision
                    ),
                );
            }
        }
        let id = stable_id(&[token, "restored"]);
        match self.clusters.get(&id) {
            Some(existing) if existing.digest.as_deref() != Some(digest.as_str()) => {
                self.violate(
                    Invariant::NoSplitBrain,
                    format!("members of cluster {id:x} (token {token}) restored from different snapshots"),
                );
                return Err("restored from a different snapshot than the other members".into());
            }
            Some(_) => {}
            None => self.create_restored(id, token, initial_cluster, &content, digest)?,
        }
        let member = self.clusters[&id]
            .members
            .iter()
            .find(|member| member.peer_url == peer_url)
            .map(|member| member.id)
            .ok_or_else(|| format!("{peer_url} is not in --initial-cluster"))?;
        self.stats.restores += 1;
        Ok(self.new_disk(id, member))
    }

    fn create_restored(
        &mut self,
        id: u64,
        token: &str,
        initial_cluster: &str,
        content: &SnapshotContent,
        digest: String,
    ) -> Result<(), String> {
        // What the surviving disks of the source cluster held at this moment.
        let survivors = (0..self.nodes.len())
            .filter_map(|node| self.disk_of(node).filter(|disk| disk.cluster == content.cluster).map(|_| node))
            .filter_map(|node| self.revision_of(node).map(|(revision, _)| revision))
            .max();
        self.stats.survivors_at_restore.push((content.revision, survivors));
        let log_end = self.log_ends.get(&content.cluster).copied();
        self.stats.log_at_restore.push((content.revision, log_end));
        let live: Vec<u64> =
            self.clusters.values().filter(|cluster| cluster.leader.is_some()).map(|cluster| cluster.id).collect();
        if !live.is_empty() {
            self.violate(
                Invariant::NoSplitBrain,
                format!("a recovery restored token {token} while cluster {:x} still had a leader", live[0]),
            );
        }
        let lost: Vec<&AckedWrite> = self
            .writes
            .iter()
            .filter(|write| write.cluster == content.cluster && write.revision > content.revision)
            .collect();
        self.stats.lost_by_recovery += lost.len() as u64;
        // The snapshot this one extended, if the revision log carried it here.
        let without_log = self
            .stats
            .log_replays
            .iter()
            .filter(|(_, reached)| *reached == content.revision)
            .map(|(from, _)| *from)
            .min()
            .unwrap_or(content.revision);
        self.stats.lost_without_log +=
            self.writes.iter().filter(|write| write.cluster == content.cluster && write.revision > without_log).count()
                as u64;
        let now = self.now_ms();
        self.clusters.insert(
            id,
            Cluster {
                id,
                token: token.to_owned(),
                base: Arc::new(content.kv.clone()),
                base_revision: content.revision,
                log: Vec::new(),
                members: parse_initial_cluster(initial_cluster, token),
                leader: None,
                term: 0,
                leader_ready_ms: 0,
                deposed: None,
                source: Some((content.cluster, content.revision)),
                digest: Some(digest),
                checkpoint: None,
                // etcd restores leases with the keys and gives each its whole TTL again
                // once the new cluster has a leader: a lock held when the snapshot was
                // taken is held again, by a holder that may be gone, until it expires.
                locks: content
                    .locks
                    .iter()
                    .map(|(key, lock)| (key.clone(), Lock { expires_ms: now + lock.ttl_ms, ..lock.clone() }))
                    .collect(),
            },
        );
        self.stats.epochs.push(id);
        let lost = lost.len();
        for (key, lock) in &content.locks {
            let text = format!("cluster {id:x} restored lock {key} held by {} (lease {})", lock.holder, lock.lease);
            self.event(text);
        }
        let text = format!(
            "cluster {id:x} restored from {:x} at revision {} ({} acknowledged writes after it left behind)",
            content.cluster, content.revision, lost
        );
        self.event(text);
        Ok(())
    }

    /// How many configured machines run a caught-up voter of the one live cluster.
    pub fn healthy_members(&self) -> usize {
        (0..self.nodes.len()).filter(|node| self.healthy(*node)).count()
    }

    // ---- the store ----------------------------------------------------------

    pub fn put_object(&mut self, key: &str, bytes: Bytes) {
        let modified_ms = self.now_ms();
        if !key.contains("/coordination/heartbeats/") && !key.contains("/exported/etcd-log/") {
            self.event(format!("store: put {key} ({} bytes)", bytes.len()));
        }
        self.check_final_object(key, &bytes);
        if key.contains("/exported/etcd-snapshots/") && key.ends_with(".db") && !key.ends_with("/snapshot.db") {
            let name = key.rsplit('/').next().unwrap_or_default().to_owned();
            self.stats.versioned_written.push((modified_ms, name));
        }
        if key.contains("/exported/etcd-snapshots/") && key.ends_with(".manifest.json") {
            self.stats.saves += 1;
        }
        self.objects.insert(key.to_owned(), Object { bytes, modified_ms, corrupted: false });
    }

    /// Invariant 7: a snapshot under a final name is whole (bolt magic, etcd's trailer).
    fn check_final_object(&mut self, key: &str, bytes: &[u8]) {
        if !key.contains("/exported/etcd-snapshots/") || !key.ends_with(".db") {
            return;
        }
        let whole = bytes.len() >= 52 && bytes[16..20] == BOLT_MAGIC && {
            let (body, trailer) = bytes.split_at(bytes.len() - 32);
            Sha256::digest(body).as_slice() == trailer
        };
        if !whole {
            self.violate(Invariant::NoPartialObject, format!("{key} was written incomplete or damaged"));
        }
    }

    /// Damages the newest versioned snapshot: a flipped byte in the middle, or
    /// (`truncate`) its second half gone, as an interrupted copy would leave it.
    pub fn corrupt_latest_snapshot(&mut self, truncate: bool) {
        let newest = self
            .objects
            .keys()
            .filter(|key| key.contains("/exported/etcd-snapshots/") && key.ends_with(".db"))
            .filter(|key| !key.ends_with("/snapshot.db"))
            .max()
            .cloned();
        if let Some(key) = newest {
            if let Some(object) = self.objects.get_mut(&key) {
                let mut bytes = object.bytes.to_vec();
                let middle = bytes.len() / 2;
                if truncate {
                    bytes.truncate(middle);
                } else {
                    bytes[middle] ^= 0x01;
                }
                object.bytes = Bytes::from(bytes);
                object.corrupted = true;
            }
            self.stats.corrupted_keys.push(key.clone());
            self.event(format!("store: {key} {}", if truncate { "truncated" } else { "corrupted" }));
        }
    }
}

/// `name=url,…` as members of a new cluster; IDs from the peer URL and token, as etcd does.
pub fn parse_initial_cluster(text: &str, token: &str) -> Vec<ClusterMember> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(_, url)| ClusterMember {
            id: MemberId(stable_id(&[url, token])),
            peer_url: url.to_owned(),
            name: String::new(),
            client_url: String::new(),
            learner: false,
            started_at: None,
        })
        .collect()
}
