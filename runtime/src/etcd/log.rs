//! The revision log's two conversations with etcd: a watch over the whole key
//! space that yields whole revisions (the writer), and one transaction per
//! logged revision into a scratch member (the replay). etcd-client types stop
//! here; the rest sees `lifeboat::revlog` values.

use super::client::{describe, request_error, EtcdClient};
use crate::ports::EtcdError;
use etcd_client::{Client, PutOptions, Txn, TxnOp, WatchOptions, WatchStream};
use lifeboat::revlog::{Event, EventKind, LeaseRecord, RevisionEntry};
use lifeboat::{Millis, Revision};

/// The largest watch message accepted. The watch asks etcd to fragment large
/// responses (a catch-up batch holds up to 1,000 revisions), so one message is
/// about etcd's --max-request-bytes (1.5 MiB by default); fragments are joined
/// before the batch is handed on, never split inside a revision.
const WATCH_MESSAGE_MAX: usize = 64 << 20;

/// What the watch delivered.
#[derive(Debug)]
pub enum Delivery {
    /// Whole revisions, in order (`seen` is left for the caller to stamp).
    Revisions(Vec<RevisionEntry>),
    /// The watch start was compacted away: the log cannot continue from it.
    Compacted { compact_revision: Revision },
    /// Nothing new; the stream is alive.
    Quiet,
}

/// A watch over every key, from one revision on.
pub struct LogWatch {
    stream: WatchStream,
    endpoint: String,
    _client: Client,
}

impl EtcdClient {
    /// Watches every key from `from` (inclusive) on one endpoint.
    pub async fn watch_everything(&self, endpoint: &str, from: Revision) -> Result<LogWatch, EtcdError> {
        let client = self.connect(&[endpoint.to_owned()], false).await?;
        let options =
            WatchOptions::new().with_all_keys().with_start_revision(from.0).with_progress_notify().with_fragment();
        let mut watch_client = client.watch_client().max_decoding_message_size(WATCH_MESSAGE_MAX);
        let stream = self
            .deadline("watch", endpoint, watch_client.watch(Vec::<u8>::new(), Some(options)))
            .await?
            .map_err(|error| request_error("watch", endpoint, error))?;
        Ok(LogWatch { stream, endpoint: endpoint.to_owned(), _client: client })
    }

    /// The TTL a lease was granted with; `None` when it no longer exists.
    pub async fn lease_granted_ttl(&self, endpoint: &str, lease: i64) -> Result<Option<i64>, EtcdError> {
        let response = self
            .on_endpoint("lease time-to-live", endpoint, |mut client| async move {
                client
                    .lease_time_to_live(lease, None)
                    .await
                    .map_err(|error| request_error("lease time-to-live", endpoint, error))
            })
            .await?;
        Ok((response.ttl() >= 0 && response.granted_ttl() > 0).then_some(response.granted_ttl()))
    }
}

impl LogWatch {
    /// The next batch, as whole revisions (fragments joined). `Ok(None)`: the stream ended.
    pub async fn next(&mut self) -> Result<Option<Delivery>, EtcdError> {
        let mut message = match self.stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(None),
            Err(error) => return Err(request_error("watch", &self.endpoint, error)),
        };
        // A fragmented batch: every fragment but the last says so; join their events.
        while message.0.fragment {
            match self.stream.message().await {
                Ok(Some(mut next)) => {
                    let mut events = std::mem::take(&mut message.0.events);
                    events.append(&mut next.0.events);
                    next.0.events = events;
                    message = next;
                }
                Ok(None) => return Ok(None),
                Err(error) => return Err(request_error("watch", &self.endpoint, error)),
            }
        }
        if message.canceled() {
            if message.compact_revision() > 0 {
                return Ok(Some(Delivery::Compacted { compact_revision: Revision(message.compact_revision()) }));
            }
            return Err(EtcdError::Request {
                operation: "watch",
                endpoint: self.endpoint.clone(),
                detail: format!("the watch was cancelled: {}", message.cancel_reason()),
            });
        }
        let mut revisions: Vec<RevisionEntry> = Vec::new();
        for event in message.events() {
            let Some(kv) = event.kv() else { continue };
            let kind = match event.0.r#type {
                0 => EventKind::Put,
                1 => EventKind::Delete,
                other => {
                    return Err(EtcdError::Request {
                        operation: "watch",
                        endpoint: self.endpoint.clone(),
                        detail: format!("an event of unknown type {other}"),
                    })
                }
            };
            let revision = Revision(kv.mod_revision());
            let logged = Event {
                kind,
                key: kv.key().to_vec(),
                value: if kind == EventKind::Put { kv.value().to_vec() } else { Vec::new() },
                create_revision: kv.create_revision(),
                version: kv.version(),
                lease: kv.lease(),
            };
            match revisions.last_mut() {
                Some(entry) if entry.revision == revision => entry.events.push(logged),
                Some(entry) if entry.revision > revision => {
                    return Err(EtcdError::Request {
                        operation: "watch",
                        endpoint: self.endpoint.clone(),
                        detail: format!("revision {} arrived after {}", revision.0, entry.revision.0),
                    })
                }
                _ => revisions.push(RevisionEntry { revision, seen: Millis(0), events: vec![logged] }),
            }
        }
        Ok(Some(if revisions.is_empty() { Delivery::Quiet } else { Delivery::Revisions(revisions) }))
    }
}

/// A connection to the scratch member a replay writes into.
pub struct ReplayTarget {
    client: Client,
    endpoint: String,
}

/// Why one logged revision could not be applied as it was.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("replaying revision {expected} produced revision {actual}: the scratch member's history differs from the log (a lease expired during the replay, or the snapshot holds other data)")]
    Diverged { expected: i64, actual: i64 },
}

impl EtcdClient {
    pub async fn replay_target(&self, endpoint: &str) -> Result<ReplayTarget, EtcdError> {
        let client = self.connect(&[endpoint.to_owned()], true).await?;
        Ok(ReplayTarget { client, endpoint: endpoint.to_owned() })
    }
}

impl ReplayTarget {
    fn failed(&self, operation: &'static str, error: etcd_client::Error) -> EtcdError {
        request_error(operation, &self.endpoint, error)
    }

    /// The member's current revision.
    pub async fn revision(&mut self) -> Result<Revision, EtcdError> {
        let status = self.client.status().await.map_err(|error| self.failed("status", error))?;
        Ok(Revision(status.header().map(|header| header.revision()).unwrap_or_default()))
    }

    /// Grants a lease with its original ID; one that already exists (from the
    /// snapshot, or granted earlier in the replay) is left as it is.
    pub async fn ensure_lease(&mut self, lease: LeaseRecord) -> Result<(), EtcdError> {
        let options = etcd_client::LeaseGrantOptions::new().with_id(lease.id);
        match self.client.lease_grant(lease.ttl_seconds, Some(options)).await {
            Ok(_) => Ok(()),
            Err(error) if describe(&error).contains("lease already exists") => Ok(()),
            Err(error) => Err(self.failed("lease grant", error)),
        }
    }

    /// Renews every lease the member holds once, so none expires (and deletes
    /// keys, adding revisions the log does not have) while the replay runs.
    pub async fn renew_leases(&mut self) -> Result<usize, EtcdError> {
        let leases = self.client.leases().await.map_err(|error| self.failed("lease list", error))?;
        let ids: Vec<i64> = leases.leases().iter().map(|lease| lease.id()).collect();
        for id in &ids {
            // One renewal per stream: the client sends it when the stream opens.
            if let Err(error) = self.client.lease_keep_alive(*id).await {
                tracing::debug!(lease = id, error = %describe(&error), "lease renewal failed");
            }
        }
        Ok(ids.len())
    }

    /// Applies one logged revision as one transaction; the member's new revision
    /// must be the logged one, or the replay has diverged.
    pub async fn apply(&mut self, entry: &RevisionEntry) -> Result<(), ApplyError> {
        let operations: Vec<TxnOp> = entry
            .events
            .iter()
            .map(|event| match event.kind {
                EventKind::Put => TxnOp::put(
                    event.key.clone(),
                    event.value.clone(),
                    (event.lease != 0).then(|| PutOptions::new().with_lease(event.lease)),
                ),
                EventKind::Delete => TxnOp::delete(event.key.clone(), None),
            })
            .collect();
        let response =
            self.client.txn(Txn::new().and_then(operations)).await.map_err(|error| self.failed("txn", error))?;
        let actual = response.header().map(|header| header.revision()).unwrap_or_default();
        if actual != entry.revision.0 {
            return Err(ApplyError::Diverged { expected: entry.revision.0, actual });
        }
        Ok(())
    }
}
