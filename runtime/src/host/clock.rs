//! The system's clocks: the production [`Clock`], wall-clock time for the
//! one-shot commands, and a stopwatch for the durations reports carry.

use crate::ports::Clock;
use lifeboat::Millis;
use std::time::Duration;

/// The production [`Clock`]: the system's wall clock, and tokio's monotonic one
/// (madsim's virtual time in the simulator's build).
#[derive(Clone, Copy, Debug)]
pub struct SystemClock;

/// The monotonic clock's origin: the first time anything asked.
static ORIGIN: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        wall_clock_now()
    }
    fn monotonic(&self) -> Millis {
        let origin = *ORIGIN.get_or_init(tokio::time::Instant::now);
        Millis(u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX))
    }
    async fn sleep_until(&self, deadline: Millis) {
        let wait = deadline.saturating_sub(self.monotonic());
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// Wall-clock now, for the edge only: the core takes time as a value.
pub fn wall_clock_now() -> Millis {
    Millis(
        u64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis(),
        )
        .unwrap_or(u64::MAX),
    )
}

/// How long something took, for reports and progress lines (never a decision).
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch {
    started: tokio::time::Instant,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch { started: tokio::time::Instant::now() }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
