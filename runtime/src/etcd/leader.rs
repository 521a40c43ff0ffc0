//! Whether the member an agent sits beside leads its cluster: the companions
//! that only one agent of a cluster runs (the revision log's writer, the trial
//! restores that prove new snapshots) run beside the leader, as saves do.

use super::EtcdClient;
use crate::ports::EtcdCluster;
use std::time::Duration;

/// The member an agent sits beside, and how often it asks whether it leads.
#[derive(Clone, Debug)]
pub struct Local {
    pub client_url: String,
    pub check: Duration,
}

impl Local {
    /// True when this member answers and is its cluster's leader (a voter).
    pub async fn leads(&self, etcd: &EtcdClient) -> bool {
        etcd.endpoint_status(&self.client_url)
            .await
            .is_ok_and(|status| status.member_id == status.leader && !status.is_learner)
    }
}
