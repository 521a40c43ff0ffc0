//! A deadline for a whole container test, and the trail of what it did.
//!
//! A container test that hangs (a Docker call that never returns, an engine that
//! stops answering) would otherwise hold CI until its wall budget runs out and
//! say nothing about where it stood: one such hang cost a whole 90-minute run.
//! The watchdog is a plain thread, so it fires even while the test's own thread
//! is blocked. It writes the test's steps, its containers' state and their last
//! log lines straight to stderr (past libtest's output capture, which a process
//! exit would throw away) and ends the test process with a failure.
//!
//! `LIFEBOAT_CONTAINER_TEST_SECONDS` sets the deadline (default 480 s; a test
//! here takes 20–150 s).

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a Docker CLI call may take before it is killed and reported.
pub const DOCKER_CALL_LIMIT: Duration = Duration::from_secs(60);

const DEFAULT_DEADLINE: Duration = Duration::from_secs(480);

/// Runs `docker args…`, killed after `limit`; its trimmed stdout, or an error
/// naming the call and what it printed.
pub fn docker_within(args: &[&str], limit: Duration) -> Result<String, String> {
    run_within("docker", args, limit)
}

fn run_within(program: &str, args: &[&str], limit: Duration) -> Result<String, String> {
    let call = format!("{program} {}", args.join(" "));
    // coreutils' timeout: TERM at the limit, KILL 5 s later; exit 124 when it fired.
    let output = std::process::Command::new("timeout")
        .args(["--kill-after=5", &limit.as_secs().max(1).to_string(), program])
        .args(args)
        .output()
        .map_err(|error| format!("{call}: {error}"))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned());
    }
    if output.status.code() == Some(124) {
        return Err(format!("{call}: no answer within {} s", limit.as_secs().max(1)));
    }
    Err(format!("{call}: {}", String::from_utf8_lossy(&output.stderr).trim()))
}

struct Shared {
    test: String,
    started: Instant,
    trail: Mutex<Vec<String>>,
    containers: Mutex<Vec<String>>,
    finished: Mutex<bool>,
    wake: Condvar,
}

/// Armed for one test; disarmed when dropped.
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Arms a watchdog for the current test (named after libtest's thread) with the
    /// deadline from `LIFEBOAT_CONTAINER_TEST_SECONDS` or the default.
    pub fn arm() -> Watchdog {
        let seconds = std::env::var("LIFEBOAT_CONTAINER_TEST_SECONDS").ok().and_then(|value| value.parse().ok());
        let deadline = seconds.map_or(DEFAULT_DEADLINE, Duration::from_secs);
        let test = std::thread::current().name().unwrap_or("a container test").to_owned();
        Watchdog::arm_for(test, deadline, fire)
    }

    fn arm_for(test: String, deadline: Duration, on_expiry: fn(&Shared, Duration)) -> Watchdog {
        let shared = Arc::new(Shared {
            test,
            started: Instant::now(),
            trail: Mutex::new(Vec::new()),
            containers: Mutex::new(Vec::new()),
            finished: Mutex::new(false),
            wake: Condvar::new(),
        });
        let watching = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let Ok(finished) = watching.finished.lock() else { return };
            let waited = watching.wake.wait_timeout_while(finished, deadline, |finished| !*finished);
            if waited.is_ok_and(|(_, result)| result.timed_out()) {
                on_expiry(&watching, deadline);
            }
        });
        Watchdog { shared, thread: Some(thread) }
    }

    /// Notes a step of the test, with the time since it was armed.
    pub fn step(&self, what: impl std::fmt::Display) {
        let line = format!("[{:>6.1} s] {what}", self.shared.started.elapsed().as_secs_f64());
        if let Ok(mut trail) = self.shared.trail.lock() {
            trail.push(line);
        }
    }

    /// A container whose state and last log lines go into the report.
    pub fn watch(&self, container: &str) {
        if let Ok(mut containers) = self.shared.containers.lock() {
            if !containers.iter().any(|known| known == container) {
                containers.push(container.to_owned());
            }
        }
    }

    #[cfg(test)]
    fn trail(&self) -> Vec<String> {
        self.shared.trail.lock().map(|trail| trail.clone()).unwrap_or_default()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Ok(mut finished) = self.shared.finished.lock() {
            *finished = true;
        }
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The report, then the end of the test process.
fn fire(shared: &Shared, deadline: Duration) {
    let mut report = format!(
        "\nWATCHDOG: {} still runs after {} s (LIFEBOAT_CONTAINER_TEST_SECONDS); its steps:\n",
        shared.test,
        deadline.as_secs()
    );
    for line in shared.trail.lock().map(|trail| trail.clone()).unwrap_or_default() {
        report.push_str(&format!("  {line}\n"));
    }
    let containers = shared.containers.lock().map(|containers| containers.clone()).unwrap_or_default();
    for container in &containers {
        let limit = Duration::from_secs(10);
        let state = docker_within(&["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", container], limit);
        report.push_str(&format!("--- {container}: {}\n", state.unwrap_or_else(|error| error)));
        // The agent logs to stderr: `2>&1` through a shell keeps both streams in order.
        let logs = run_within("sh", &["-c", &format!("docker logs --tail 20 {container} 2>&1")], limit);
        report.push_str(&logs.unwrap_or_else(|error| error));
        report.push('\n');
    }
    report.push_str(&format!("left behind; remove with: docker rm -f {}\n", containers.join(" ")));
    let _ = std::io::stderr().write_all(report.as_bytes());
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    static FIRED: AtomicBool = AtomicBool::new(false);

    fn note(_: &Shared, _: Duration) {
        FIRED.store(true, Ordering::SeqCst);
    }

    #[test]
    fn it_fires_after_the_deadline_and_not_once_disarmed() {
        let watchdog = Watchdog::arm_for("slow".into(), Duration::from_millis(50), note);
        watchdog.step("docker kill m1");
        assert!(lifeboat_testkit::wait_until(Duration::from_secs(10), || FIRED.load(Ordering::SeqCst)));
        assert_eq!(watchdog.trail().len(), 1);
        assert!(watchdog.trail()[0].ends_with("docker kill m1"), "{:?}", watchdog.trail());
        drop(watchdog);
        FIRED.store(false, Ordering::SeqCst);
        let quick = Watchdog::arm_for("quick".into(), Duration::from_secs(3600), note);
        let disarmed = Instant::now();
        drop(quick);
        assert!(disarmed.elapsed() < Duration::from_secs(5), "drop waits for the deadline");
        assert!(!FIRED.load(Ordering::SeqCst));
    }

    #[test]
    fn a_call_past_its_limit_is_killed_and_named() {
        // `sleep` stands in for a Docker engine that does not answer.
        let started = Instant::now();
        let stuck = run_within("sleep", &["30"], Duration::from_secs(1));
        assert_eq!(stuck, Err("sleep 30: no answer within 1 s".to_owned()));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(run_within("echo", &[" ok "], Duration::from_secs(5)), Ok("ok".to_owned()));
        let failed = run_within("ls", &["/nonexistent-lifeboat"], Duration::from_secs(5)).unwrap_err();
        assert!(failed.starts_with("ls /nonexistent-lifeboat: ") && failed.contains("No such file"), "{failed}");
    }
}
