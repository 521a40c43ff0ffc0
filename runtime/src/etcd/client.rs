//! The etcd adapter, through etcd-client. Every request has a deadline: an
//! unreachable member must turn into an observation, not a hung agent.

use crate::ports::{BoxError, ByteSource, EndpointHealth, EndpointStatus, EtcdCluster, EtcdError};
use bytes::Bytes;
use etcd_client::{AlarmAction, AlarmType, Client, ConnectOptions};
use lifeboat::{Member, MemberId, Revision};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Clients for one cluster: one connection per endpoint, so one dead member never
/// blocks another. Short requests reuse a kept connection (see [`Connections`]);
/// streams (a snapshot, the log's watch) get their own.
#[derive(Clone, Debug)]
pub struct EtcdClient {
    endpoints: Vec<String>,
    timeout: Duration,
    security: EtcdSecurity,
    connections: Connections,
}

/// Connected clients by endpoint, kept between requests. Every new connection costs
/// a TLS handshake and, under RBAC, an `Authenticate` call in which etcd checks the
/// password with bcrypt (tens of milliseconds of the member's CPU) and writes the
/// new token through raft. An agent checks each member twice a round and lists the
/// members once: connecting afresh each time made a three-member cluster with 300 ms
/// checks spend more than two cores on bcrypt, and its members missed enough checks
/// to be replaced while they were healthy (CI, the RBAC chaos test). A kept client
/// gets a new token when etcd refuses an expired one (etcd-client's token refresh);
/// any failed request drops the connection, so the next one connects afresh
/// (a restarted member, a rotated certificate, a changed password).
#[derive(Clone, Default)]
struct Connections(Arc<Mutex<HashMap<String, Client>>>);

impl Connections {
    fn get(&self, endpoint: &str) -> Option<Client> {
        self.0.lock().ok()?.get(endpoint).cloned()
    }

    fn keep(&self, endpoint: &str, client: Client) {
        if let Ok(mut connections) = self.0.lock() {
            connections.insert(endpoint.to_owned(), client);
        }
    }

    fn drop_connection(&self, endpoint: &str) {
        if let Ok(mut connections) = self.0.lock() {
            connections.remove(endpoint);
        }
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.0.lock().map(|connections| connections.len()).unwrap_or_default();
        formatter.debug_struct("Connections").field("kept", &kept).finish()
    }
}

/// How lifeboat proves itself to etcd and checks etcd back: TLS (the CA that signed
/// the servers' certificates, and a client certificate for `--client-cert-auth`)
/// and an RBAC user. The PEM bytes are read once, when the settings are resolved.
#[derive(Clone, Default)]
pub struct EtcdSecurity {
    pub ca_pem: Option<Vec<u8>>,
    /// Certificate and private key, PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub user: Option<EtcdUser>,
}

/// An etcd user; the password never appears in `Debug` output, logs or JSON.
#[derive(Clone)]
pub struct EtcdUser {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for EtcdSecurity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EtcdSecurity")
            .field("tls", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity.is_some())
            .field("user", &self.user.as_ref().map(|user| user.name.as_str()))
            .finish()
    }
}

pub(super) fn request_error(operation: &'static str, endpoint: &str, error: etcd_client::Error) -> EtcdError {
    EtcdError::Request { operation, endpoint: endpoint.to_owned(), detail: describe(&error) }
}

/// etcd-client wraps gRPC statuses; the status message is what an operator needs,
/// with the fix named when it is a certificate or a credential.
pub(super) fn describe(error: &etcd_client::Error) -> String {
    let detail = describe_plain(error);
    match problem(error, &detail) {
        Problem::Tls => format!("{detail} ({TLS_HINT})"),
        Problem::Auth => format!("{detail} ({AUTH_HINT})"),
        Problem::Other => detail,
    }
}

const TLS_HINT: &str = "a TLS problem: check --cacert and --cert/--key";
const AUTH_HINT: &str = "check --user and its password";

enum Problem {
    Tls,
    Auth,
    Other,
}

fn problem(error: &etcd_client::Error, detail: &str) -> Problem {
    let auth = match error {
        etcd_client::Error::GRpcStatus(status) => {
            i32::from(status.code()) == GRPC_UNAUTHENTICATED || status.message().contains("authentication failed")
        }
        _ => false,
    };
    let lower = detail.to_lowercase();
    if auth {
        Problem::Auth
    } else if ["certificate", "tls", "handshake", "unknownissuer", "badsignature", "notvalidforname"]
        .iter()
        .any(|word| lower.contains(word))
    {
        Problem::Tls
    } else {
        Problem::Other
    }
}

fn describe_plain(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.is_empty() {
                format!("{:?}", status.code())
            } else {
                message.to_owned()
            }
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

/// gRPC's status code 16.
const GRPC_UNAUTHENTICATED: i32 = 16;

/// A failed connect, told apart by what the operator must fix: the address, the
/// certificates or the credentials.
fn connect_error(endpoints: String, error: &etcd_client::Error) -> EtcdError {
    let detail = describe_plain(error);
    match problem(error, &detail) {
        Problem::Tls => EtcdError::Tls { endpoints, detail },
        Problem::Auth => EtcdError::Auth { endpoints, detail },
        Problem::Other => EtcdError::Unreachable { endpoints, detail },
    }
}

impl EtcdClient {
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> EtcdClient {
        EtcdClient { endpoints, timeout, security: EtcdSecurity::default(), connections: Connections::default() }
    }

    /// The same client, connecting with TLS and/or as an etcd user (no connection
    /// made with the earlier settings is reused).
    pub fn with_security(self, security: EtcdSecurity) -> EtcdClient {
        EtcdClient { security, connections: Connections::default(), ..self }
    }

    /// Runs one short request (`work`, under the request deadline) on the kept
    /// connection to `endpoint`, connecting first when there is none. A failure of
    /// any kind drops the connection: the next request starts from a new one.
    pub(super) async fn on_endpoint<T, F, Fut>(
        &self,
        operation: &'static str,
        endpoint: &str,
        work: F,
    ) -> Result<T, EtcdError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, EtcdError>>,
    {
        let client = match self.connections.get(endpoint) {
            Some(client) => client,
            None => {
                let client = self.connect(&[endpoint.to_owned()], true).await?;
                self.connections.keep(endpoint, client.clone());
                client
            }
        };
        let result = self.deadline(operation, endpoint, work(client)).await.and_then(|result| result);
        if result.is_err() {
            self.connections.drop_connection(endpoint);
        }
        result
    }

    pub(super) async fn connect(&self, endpoints: &[String], request_timeout: bool) -> Result<Client, EtcdError> {
        // HTTP/2 keep-alive: a half-open connection (a peer that vanished without a
        // reset) fails within seconds instead of hanging a long stream (the log's watch).
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_keep_alive(KEEP_ALIVE, KEEP_ALIVE)
            .with_keep_alive_while_idle(true);
        if request_timeout {
            options = options.with_timeout(self.timeout);
        }
        if let Some(ca) = &self.security.ca_pem {
            let mut tls = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca));
            if let Some((certificate, key)) = &self.security.identity {
                tls = tls.identity(etcd_client::Identity::from_pem(certificate, key));
            }
            options = options.with_tls(tls);
        }
        if let Some(user) = &self.security.user {
            // A snapshot stream may outlive a short token TTL: re-authenticate on
            // "invalid auth token" and retry once.
            options = options.with_user(user.name.clone(), user.password.clone()).with_auto_token_refresh(true);
        }
        let connect = Client::connect(endpoints, Some(options));
        self.deadline("connect", &endpoints.join(","), connect)
            .await?
            .map_err(|error| connect_error(endpoints.join(","), &error))
    }

    pub(super) async fn deadline<T>(
        &self,
        operation: &'static str,
        endpoint: &str,
        work: impl Future<Output = T>,
    ) -> Result<T, EtcdError> {
        tokio::time::timeout(self.timeout, work).await.map_err(|_| EtcdError::Timeout {
            operation,
            endpoint: endpoint.to_owned(),
            timeout_ms: self.timeout.as_millis() as u64,
        })
    }

    /// Runs `work` against one endpoint at a time until one answers. A dead member
    /// must not fail cluster-wide operations the others can serve (etcd-client's
    /// balanced channel may keep picking it).
    async fn on_any_endpoint<T, F, Fut>(&self, operation: &'static str, work: F) -> Result<T, EtcdError>
    where
        F: Fn(Client, String) -> Fut,
        Fut: Future<Output = Result<T, EtcdError>>,
    {
        let mut errors = Vec::new();
        for endpoint in &self.endpoints {
            match self.on_endpoint(operation, endpoint, |client| work(client, endpoint.clone())).await {
                Ok(value) => return Ok(value),
                Err(error) => errors.push(error.to_string()),
            }
        }
        Err(EtcdError::Unreachable { endpoints: self.endpoints.join(","), detail: errors.join("; ") })
    }

    /// A linearizable read through the member, then the cluster's alarms. An alarm
    /// (NOSPACE above all) does not make the member unhealthy here, unlike
    /// `etcdctl endpoint health`: the member still serves and its cluster still has
    /// quorum, and counting it unhealthy would make every agent see quorum lost and
    /// recover a cluster whose fix is a compaction and a defragmentation. The alarms
    /// are reported on their own.
    async fn try_health(&self, endpoint: &str) -> Result<Vec<String>, String> {
        let check = |mut client: Client| async move {
            // What `etcdctl endpoint health` does: a linearizable read (it needs quorum),
            // where "permission denied" still proves the member serves requests.
            match client.get("health", None).await {
                Ok(_) => {}
                Err(etcd_client::Error::GRpcStatus(status)) if i32::from(status.code()) == GRPC_PERMISSION_DENIED => {}
                Err(error) => return Err(request_error("health", endpoint, error)),
            }
            // Listing alarms needs the root role under auth: a refusal there is not a failed check.
            match client.alarm(AlarmAction::Get, AlarmType::None, None).await {
                Ok(alarms) => Ok(alarms
                    .alarms()
                    .iter()
                    .map(|alarm| format!("{} on member {:x}", alarm.alarm().as_str_name(), alarm.member_id()))
                    .collect()),
                Err(etcd_client::Error::GRpcStatus(status)) if i32::from(status.code()) == GRPC_PERMISSION_DENIED => {
                    Ok(Vec::new())
                }
                Err(error) => Err(request_error("alarm list", endpoint, error)),
            }
        };
        self.on_endpoint("health", endpoint, check).await.map_err(|error| error.to_string())
    }
}

/// The HTTP/2 keep-alive interval, and how long a ping may go unanswered.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// gRPC status code 7, fixed by the gRPC specification.
const GRPC_PERMISSION_DENIED: i32 = 7;

pub fn member_from(member: &etcd_client::Member) -> Member {
    Member {
        id: MemberId(member.id()),
        name: member.name().to_owned(),
        peer_urls: member.peer_urls().to_vec(),
        client_urls: member.client_urls().to_vec(),
        is_learner: member.is_learner(),
    }
}

/// A snapshot as it streams from one member.
pub struct EtcdSnapshot {
    stream: etcd_client::SnapshotStreaming,
    first: Option<Bytes>,
    /// Idle limit between two messages; the whole stream has no deadline.
    idle_timeout: Duration,
    _client: Client,
}

impl ByteSource for EtcdSnapshot {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BoxError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        loop {
            let message = tokio::time::timeout(self.idle_timeout, self.stream.message())
                .await
                .map_err(|_| format!("snapshot stream stalled for {} ms", self.idle_timeout.as_millis()))?
                .map_err(|error| describe(&error))?;
            match message {
                Some(response) if response.blob().is_empty() => continue,
                Some(response) => return Ok(Some(Bytes::copy_from_slice(response.blob()))),
                None => return Ok(None),
            }
        }
    }
}

impl EtcdCluster for EtcdClient {
    type Snapshot = EtcdSnapshot;

    fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    async fn member_list(&self) -> Result<Vec<Member>, EtcdError> {
        self.on_any_endpoint("member list", |mut client, endpoint| async move {
            let response =
                client.member_list().await.map_err(|error| request_error("member list", &endpoint, error))?;
            let mut members: Vec<Member> = response.members().iter().map(member_from).collect();
            members.sort_by_key(|member| member.id);
            Ok(members)
        })
        .await
    }
    async fn endpoint_status(&self, endpoint: &str) -> Result<EndpointStatus, EtcdError> {
        let status = self
            .on_endpoint("status", endpoint, |mut client| async move {
                client.status().await.map_err(|error| request_error("status", endpoint, error))
            })
            .await?;
        let header = status.header().ok_or_else(|| EtcdError::Request {
            operation: "status",
            endpoint: endpoint.to_owned(),
            detail: "response has no header".into(),
        })?;
        Ok(EndpointStatus {
            endpoint: endpoint.to_owned(),
            member_id: MemberId(header.member_id()),
            cluster_id: header.cluster_id(),
            leader: MemberId(status.leader()),
            revision: Revision(header.revision()),
            raft_index: status.raft_index(),
            raft_term: status.raft_term(),
            db_size_bytes: status.db_size(),
            version: status.version().to_owned(),
            is_learner: status.is_learner(),
            errors: status.errors().to_vec(),
        })
    }

    async fn endpoint_health(&self, endpoint: &str) -> EndpointHealth {
        let started = Instant::now();
        let result = self.try_health(endpoint).await;
        let took_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(alarms) => EndpointHealth { endpoint: endpoint.to_owned(), healthy: true, took_ms, error: None, alarms },
            Err(error) => EndpointHealth {
                endpoint: endpoint.to_owned(),
                healthy: false,
                took_ms,
                error: Some(error),
                alarms: vec![],
            },
        }
    }

    async fn member_add(&self, peer_urls: &[String], learner: bool) -> Result<(Member, Vec<Member>), EtcdError> {
        self.on_any_endpoint("member add", |mut client, endpoint| async move {
            let options = learner.then(|| etcd_client::MemberAddOptions::new().with_is_learner());
            let response = client
                .member_add(peer_urls, options)
                .await
                .map_err(|error| request_error("member add", &endpoint, error))?;
            let member = response.member().map(member_from).ok_or_else(|| EtcdError::Request {
                operation: "member add",
                endpoint: endpoint.clone(),
                detail: "response names no member".into(),
            })?;
            let mut members: Vec<Member> = response.member_list().iter().map(member_from).collect();
            members.sort_by_key(|member| member.id);
            Ok((member, members))
        })
        .await
    }

    async fn member_remove(&self, id: MemberId) -> Result<(), EtcdError> {
        self.on_any_endpoint("member remove", |mut client, endpoint| async move {
            match client.member_remove(id.0).await {
                Ok(_) => Ok(()),
                // A retry after a lost answer: the first attempt removed it.
                Err(error) if describe(&error).contains("member not found") => Ok(()),
                Err(error) => Err(request_error("member remove", &endpoint, error)),
            }
        })
        .await
    }

    async fn member_promote(&self, id: MemberId) -> Result<(), EtcdError> {
        self.on_any_endpoint("member promote", |mut client, endpoint| async move {
            client.member_promote(id.0).await.map_err(|error| request_error("member promote", &endpoint, error))?;
            Ok(())
        })
        .await
    }

    async fn hash_kv(&self, endpoint: &str, revision: lifeboat::Revision) -> Result<lifeboat::KvHash, EtcdError> {
        let response = self
            .on_endpoint("hash kv", endpoint, |mut client| async move {
                client.hash_kv(revision.0).await.map_err(|error| request_error("hash kv", endpoint, error))
            })
            .await?;
        Ok(lifeboat::KvHash { hash: response.hash(), compact_revision: response.compact_version() })
    }

    async fn try_lock(&self, key: &str, holder: &str, ttl_seconds: i64) -> Result<Option<i64>, EtcdError> {
        use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
        self.on_any_endpoint("lock", |mut client, endpoint| async move {
            let lease = client
                .lease_grant(ttl_seconds, None)
                .await
                .map_err(|error| request_error("lease grant", &endpoint, error))?
                .id();
            // Create-if-absent: the key exists only while some holder's lease lives.
            let txn = Txn::new().when([Compare::create_revision(key, CompareOp::Equal, 0)]).and_then([TxnOp::put(
                key,
                holder,
                Some(PutOptions::new().with_lease(lease)),
            )]);
            // Re-entrant by holder: an agent restarted mid-change takes its own lock back
            // instead of waiting for its dead predecessor's lease to expire.
            let takeover = Txn::new().when([Compare::value(key, CompareOp::Equal, holder)]).and_then([TxnOp::put(
                key,
                holder,
                Some(PutOptions::new().with_lease(lease)),
            )]);
            let first = client.txn(txn).await;
            let result = match first {
                Ok(response) if response.succeeded() => Ok(true),
                Ok(_) => client.txn(takeover).await.map(|response| response.succeeded()),
                Err(error) => Err(error),
            };
            match result {
                Ok(true) => Ok(Some(lease)),
                Ok(false) => {
                    let _ = client.lease_revoke(lease).await;
                    Ok(None)
                }
                Err(error) => {
                    // Never leave a granted lease behind: it would look like a held lock.
                    let _ = client.lease_revoke(lease).await;
                    Err(request_error("lock", &endpoint, error))
                }
            }
        })
        .await
    }

    async fn unlock(&self, lease: i64) -> Result<(), EtcdError> {
        self.on_any_endpoint("unlock", |mut client, endpoint| async move {
            client.lease_revoke(lease).await.map_err(|error| request_error("lease revoke", &endpoint, error))?;
            Ok(())
        })
        .await
    }

    async fn keep_alive(&self, lease: i64) -> Result<bool, EtcdError> {
        self.on_any_endpoint("lease keep-alive", |mut client, endpoint| async move {
            // One request, one response: the client sends a renewal when it opens the stream.
            match client.lease_keep_alive(lease).await {
                Ok(_) => Ok(true),
                Err(error) => {
                    // Gone, or a failed call? The lease's remaining time tells (-1: expired).
                    let remaining = client
                        .lease_time_to_live(lease, None)
                        .await
                        .map_err(|_| request_error("lease keep-alive", &endpoint, error))?;
                    Ok(remaining.ttl() > 0)
                }
            }
        })
        .await
    }

    async fn snapshot(&self, endpoint: &str) -> Result<EtcdSnapshot, EtcdError> {
        // No request timeout: a large database streams for minutes. Stalls are caught per message.
        let mut client = self.connect(&[endpoint.to_owned()], false).await?;
        let mut stream = self
            .deadline("snapshot", endpoint, client.snapshot())
            .await?
            .map_err(|error| request_error("snapshot", endpoint, error))?;
        let first = self
            .deadline("snapshot", endpoint, stream.message())
            .await?
            .map_err(|error| request_error("snapshot", endpoint, error))?
            .map(|response| Bytes::copy_from_slice(response.blob()));
        Ok(EtcdSnapshot { stream, first, idle_timeout: self.timeout.max(Duration::from_secs(30)), _client: client })
    }
}
