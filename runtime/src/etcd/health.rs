//! `lifeboat check`: the health of each member and of the cluster, as
//! `etcdctl endpoint health` and `endpoint status` report them.

use crate::ports::{EtcdCluster, EtcdError};
use lifeboat::membership::quorum;
use lifeboat::Member;

#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberCheck {
    pub endpoint: String,
    pub healthy: bool,
    pub took_ms: u64,
    pub member_id: Option<String>,
    pub name: Option<String>,
    pub is_leader: bool,
    pub is_learner: bool,
    pub revision: Option<i64>,
    pub raft_index: Option<u64>,
    pub db_size_bytes: Option<i64>,
    pub version: Option<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterCheck {
    pub healthy: bool,
    pub quorum: bool,
    pub healthy_members: usize,
    pub voting_members: usize,
    pub leader: Option<String>,
    pub cluster_id: Option<String>,
    pub members: Vec<MemberCheck>,
    /// Members in the member list whose client URL is not among --endpoints.
    pub unchecked_members: Vec<Member>,
    /// The cluster's active alarms ("NOSPACE on member …"); any makes it unhealthy.
    pub alarms: Vec<String>,
}

/// Checks every endpoint concurrently; never fails: unreachable members are
/// unhealthy members.
pub async fn check<E: EtcdCluster>(etcd: &E) -> ClusterCheck {
    let probes = etcd.endpoints().iter().map(|endpoint| async move {
        let (health, status) = futures::join!(etcd.endpoint_health(endpoint), etcd.endpoint_status(endpoint));
        (health, status)
    });
    let results = futures::future::join_all(probes).await;
    let member_list: Result<Vec<Member>, EtcdError> = etcd.member_list().await;
    let members_known = member_list.as_ref().ok();

    let mut checks = Vec::new();
    let mut alarms = std::collections::BTreeSet::new();
    let mut leader = None;
    let mut cluster_id = None;
    for (health, status) in results {
        alarms.extend(health.alarms.iter().cloned());
        let status = status.ok();
        if let Some(status) = &status {
            if status.leader.0 != 0 {
                leader = Some(status.leader.to_string());
            }
            cluster_id = Some(format!("{:x}", status.cluster_id));
        }
        let name = status.as_ref().and_then(|status| {
            members_known?.iter().find(|member| member.id == status.member_id).map(|member| member.name.clone())
        });
        checks.push(MemberCheck {
            endpoint: health.endpoint,
            healthy: health.healthy,
            took_ms: health.took_ms,
            member_id: status.as_ref().map(|status| status.member_id.to_string()),
            name,
            is_leader: status.as_ref().is_some_and(|status| status.leader == status.member_id),
            is_learner: status.as_ref().is_some_and(|status| status.is_learner),
            revision: status.as_ref().map(|status| status.revision.0),
            raft_index: status.as_ref().map(|status| status.raft_index),
            db_size_bytes: status.as_ref().map(|status| status.db_size_bytes),
            version: status.as_ref().map(|status| status.version.clone()),
            error: health.error,
        });
    }
    let voting_members = match members_known {
        Some(members) => members.iter().filter(|member| member.is_voter()).count(),
        None => checks.iter().filter(|check| !check.is_learner).count(),
    };
    let healthy_members = checks.iter().filter(|check| check.healthy && !check.is_learner).count();
    let unchecked_members = members_known
        .map(|members| {
            members
                .iter()
                .filter(|member| {
                    !member
                        .client_urls
                        .iter()
                        .any(|url| etcd.endpoints().iter().any(|endpoint| endpoint == url.trim_end_matches('/')))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let has_quorum = voting_members > 0 && healthy_members >= quorum(voting_members);
    ClusterCheck {
        healthy: has_quorum && checks.iter().all(|check| check.healthy) && alarms.is_empty(),
        quorum: has_quorum,
        healthy_members,
        voting_members,
        leader,
        cluster_id,
        members: checks,
        unchecked_members,
        alarms: alarms.into_iter().collect(),
    }
}
