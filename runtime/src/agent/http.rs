//! The agent's HTTP endpoint (`--metrics-listen`): `/metrics` for Prometheus,
//! `/healthz` (the agent loop turns) and `/readyz` (a fresh view of the cluster
//! and the store). Liveness is kept apart from backup freshness: a failing backup
//! must raise an alert, not get etcd's neighbour restarted.
//!
//! A deliberately small HTTP/1.x server: GET only, one request per connection,
//! the request head bounded and read with a deadline, because whoever can reach
//! the port is untrusted.

use super::metrics::AgentMetrics;
use crate::ports::Clock;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most of a request head read before answering 400.
const MAX_HEAD_BYTES: usize = 8 << 10;
const READ_DEADLINE: Duration = Duration::from_secs(5);

/// How stale the loop and the view may be before `/healthz` and `/readyz` fail.
#[derive(Clone, Copy, Debug)]
pub struct HealthBounds {
    /// The loop may be busy in one long step (a multi-GiB restore) this long.
    pub live_ms: u64,
    /// A fresh view is at most this old (a few check intervals).
    pub ready_ms: u64,
}

impl HealthBounds {
    pub fn for_check_interval(check_interval_ms: u64) -> HealthBounds {
        HealthBounds { live_ms: (check_interval_ms * 10).max(3_600_000), ready_ms: (check_interval_ms * 3).max(5_000) }
    }
}

/// Serves until the listener fails; each connection on its own task.
pub async fn serve<C: Clock + Clone + Send + Sync + 'static>(
    listener: tokio::net::TcpListener,
    metrics: Arc<AgentMetrics>,
    clock: C,
    bounds: HealthBounds,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (metrics, clock) = (metrics.clone(), clock.clone());
        tokio::spawn(async move {
            let _ = answer(stream, &metrics, &clock, bounds).await;
        });
    }
}

/// The response to a request head: status line, content type, body.
pub fn respond(head: &[u8], metrics: &AgentMetrics, now_ms: u64, bounds: HealthBounds) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let line = head.split(|byte| *byte == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if method != "GET" && method != "HEAD" {
        return (405, TEXT, "only GET\n".into());
    }
    match path.split('?').next().unwrap_or_default() {
        "/metrics" => (200, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode()),
        "/healthz" => match metrics.live(now_ms, bounds.live_ms) {
            Ok(()) => (200, TEXT, "ok\n".into()),
            Err(reason) => (503, TEXT, format!("{reason}\n")),
        },
        "/readyz" => match metrics.ready(now_ms, bounds.ready_ms) {
            Ok(()) => (200, TEXT, "ok\n".into()),
            Err(reason) => (503, TEXT, format!("{reason}\n")),
        },
        _ => (404, TEXT, "try /metrics, /healthz or /readyz\n".into()),
    }
}

async fn answer<C: Clock>(
    mut stream: tokio::net::TcpStream,
    metrics: &AgentMetrics,
    clock: &C,
    bounds: HealthBounds,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    let complete = tokio::time::timeout(READ_DEADLINE, async {
        loop {
            let read = stream.read(&mut buffer).await?;
            head.extend(buffer.iter().take(read));
            if read == 0 || head.windows(4).any(|window| window == b"\r\n\r\n") || head.len() > MAX_HEAD_BYTES {
                return Ok::<bool, std::io::Error>(head.len() <= MAX_HEAD_BYTES);
            }
        }
    })
    .await;
    let (status, content_type, body) = match complete {
        Ok(Ok(true)) => respond(&head, metrics, clock.monotonic().0, bounds),
        _ => (400, "text/plain; charset=utf-8", "bad request\n".to_owned()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let head_only = head.starts_with(b"HEAD ");
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if head_only { "" } else { body.as_str() }
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_methods() {
        let metrics = AgentMetrics::new();
        let bounds = HealthBounds { live_ms: 1000, ready_ms: 1000 };
        assert_eq!(respond(b"GET /healthz HTTP/1.1\r\n\r\n", &metrics, 0, bounds).0, 503);
        metrics.loop_turned(0);
        assert_eq!(respond(b"GET /healthz HTTP/1.1\r\n\r\n", &metrics, 10, bounds).0, 200);
        assert_eq!(respond(b"GET /readyz HTTP/1.1\r\n\r\n", &metrics, 10, bounds).0, 503);
        let (status, content_type, body) = respond(b"GET /metrics HTTP/1.1\r\n\r\n", &metrics, 10, bounds);
        assert_eq!((status, content_type.starts_with("application/openmetrics-text")), (200, true));
        assert!(body.contains("lifeboat_members"), "{body}");
        assert_eq!(respond(b"POST /metrics HTTP/1.1\r\n\r\n", &metrics, 10, bounds).0, 405);
        assert_eq!(respond(b"GET /nope HTTP/1.1\r\n\r\n", &metrics, 10, bounds).0, 404);
        assert_eq!(respond(b"\xff\xfe garbage", &metrics, 10, bounds).0, 405);
    }
}
