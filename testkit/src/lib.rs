//! Real components for tests, the demo and benches: an N-member etcd cluster and
//! an S3 server (SeaweedFS), each on free loopback ports in a temp dir, torn down
//! on drop. No mocks: these are the binaries `scripts/install-deps` installs.
//!
//! Components are found in `LIFEBOAT_BIN_DIR`, else `<workspace>/.deps/bin`.
//! [`require`] skips a test outside CI when one is missing, and fails it under
//! `CI=true`.
// Test tooling: a failed setup panics with its reason, which is how tests fail.
#![allow(clippy::indexing_slicing, clippy::string_slice)]

mod etcd;
mod pki;
mod s3;

pub use etcd::{EtcdMember, LocalEtcdCluster};
pub use pki::KubeadmPki;
pub use s3::S3Server;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directory holding `etcd`, `etcdctl`, `etcdutl` and `weed`.
pub fn bin_dir() -> PathBuf {
    if let Some(directory) = std::env::var_os("LIFEBOAT_BIN_DIR") {
        return PathBuf::from(directory);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/bin")
}

/// A component by name. etcd 3.4 has no `etcdutl`: its `etcdctl` stands in for it
/// (lifeboat runs either with `snapshot restore|status`).
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if name == "etcdutl" && !path.exists() {
        return bin_dir().join("etcdctl");
    }
    path
}

/// Whether the named binaries are installed. Outside CI a missing one skips the
/// caller (returns `false` with a message); under `CI=true` it panics, because a
/// CI run that silently tests nothing is worse than a red one.
pub fn require(names: &[&str]) -> bool {
    let missing: Vec<&str> = names.iter().copied().filter(|name| !binary(name).is_file()).collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "missing {} in {}: run scripts/install-deps (or set LIFEBOAT_BIN_DIR)",
        missing.join(", "),
        bin_dir().display()
    );
    if std::env::var("CI").is_ok_and(|value| value == "true" || value == "1") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    false
}

/// A loopback port that was free a moment ago, with `port + offset` free too for
/// each offset (SeaweedFS opens gRPC at port + 10000).
///
/// The ports come from below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`), which the kernel hands out to outgoing
/// connections and to binds on port 0: a port chosen from inside it and released
/// for etcd to bind can become some connection's source port first, and etcd exits
/// with "address already in use" (seen in CI for a scratch member, whose product
/// code now moves to fresh ports). Below that range only an explicit bind takes a port.
pub fn free_port(offsets: &[u16]) -> u16 {
    // Never give a port out twice in this process: a member that has not bound its
    // port yet looks free (two members on one port fail with "duplicate url").
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let highest_offset = offsets.iter().copied().max().unwrap_or(0);
    let lowest = PRIVATE_PORTS_FROM;
    let mut end = ephemeral_ports_from().saturating_sub(highest_offset);
    if end < lowest + 1000 {
        // A host whose ephemeral range starts low: take any port, race and all.
        end = u16::MAX - highest_offset;
    }
    // A random start: test processes that run at once mostly pick different ports.
    let start = {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new().build_hasher().finish()
    };
    let span = u64::from(end - lowest);
    for attempt in 0..span {
        let port = lowest + ((start.wrapping_add(attempt)) % span) as u16;
        let ports: Vec<u16> =
            std::iter::once(port).chain(offsets.iter().filter_map(|offset| port.checked_add(*offset))).collect();
        if ports.len() != offsets.len() + 1 || ports.iter().any(|port| handed_out.contains(port)) {
            continue;
        }
        if ports.iter().all(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok()) {
            handed_out.extend(&ports);
            return port;
        }
    }
    panic!("no free loopback port in {lowest}..{end}");
}

/// The lowest port `free_port` hands out: above the well-known and common service ports.
const PRIVATE_PORTS_FROM: u16 = 12_000;

/// The first port of the kernel's ephemeral range (Linux's default when unreadable).
fn ephemeral_ports_from() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Waits until `probe` returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal HTTP/1.0 GET over loopback: status code and body, or `None` when
/// nothing answers. Enough for readiness probes, with no HTTP client dependency.
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Stops a child: SIGTERM, wait up to `grace`, then SIGKILL.
pub fn terminate(child: &mut std::process::Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: plain signal delivery to a child we own; a stale pid is excluded by try_wait above.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let exited = wait_until(grace, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range_and_never_twice() {
        let ephemeral = ephemeral_ports_from();
        let mut seen = Vec::new();
        for _ in 0..50 {
            let port = free_port(&[10_000]);
            if ephemeral >= PRIVATE_PORTS_FROM + 11_000 {
                assert!(
                    (PRIVATE_PORTS_FROM..ephemeral - 10_000).contains(&port),
                    "{port} (ephemeral from {ephemeral})"
                );
            }
            assert!(
                TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok(),
                "the offset port {} is free",
                port + 10_000
            );
            assert!(!seen.contains(&port), "{port} handed out twice");
            seen.push(port);
        }
    }
}
