//! How far a long command has come (bytes streamed, the phase it is in), reported by
//! the streaming code without knowing who shows it, if anyone. The command line
//! installs a terminal bar for `save`, `restore` and `snapshots verify`
//! (`cli::progress`); the agent and the simulator install nothing, and then a report
//! costs one uncontended lock.

use std::sync::{Arc, Mutex};

/// Where progress goes while a command runs.
pub trait Sink: Send + Sync {
    fn advance(&self, bytes: u64);
    fn phase(&self, text: &str);
    /// The command is done with it (success or not): clear whatever was drawn.
    fn finish(&self);
}

static SINK: Mutex<Option<Arc<dyn Sink>>> = Mutex::new(None);

fn current() -> Option<Arc<dyn Sink>> {
    SINK.lock().ok().and_then(|sink| sink.clone())
}

/// `bytes` more went through the current stream.
pub fn advance(bytes: u64) {
    if let Some(sink) = current() {
        sink.advance(bytes);
    }
}

/// The command moved on to `text` (e.g. "building the data dir from NAME").
pub fn phase(text: &str) {
    if let Some(sink) = current() {
        sink.phase(text);
    }
}

/// Reports go to `sink` until the returned guard is dropped.
pub fn install(sink: Arc<dyn Sink>) -> Installed {
    if let Ok(mut current) = SINK.lock() {
        *current = Some(Arc::clone(&sink));
    }
    Installed { sink }
}

#[must_use = "progress goes to the sink only while this guard lives"]
pub struct Installed {
    sink: Arc<dyn Sink>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Ok(mut current) = SINK.lock() {
            *current = None;
        }
        self.sink.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Counts only the reports of the thread that made it: the sink is process-wide, and
    /// other tests (the pipeline's, the sealed store's) stream through it at the same time.
    struct Counter {
        thread: std::thread::ThreadId,
        bytes: AtomicU64,
        phases: Mutex<Vec<String>>,
        finished: AtomicU64,
    }

    impl Counter {
        fn mine(&self) -> bool {
            std::thread::current().id() == self.thread
        }
    }

    impl Sink for Counter {
        fn advance(&self, bytes: u64) {
            if self.mine() {
                self.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
        }
        fn phase(&self, text: &str) {
            if self.mine() {
                self.phases.lock().unwrap().push(text.to_owned());
            }
        }
        fn finish(&self) {
            self.finished.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn reports_reach_the_installed_sink_only_while_it_is_installed() {
        advance(5);
        let counter = Arc::new(Counter {
            thread: std::thread::current().id(),
            bytes: AtomicU64::new(0),
            phases: Mutex::new(Vec::new()),
            finished: AtomicU64::new(0),
        });
        let guard = install(counter.clone());
        advance(7);
        advance(3);
        phase("restoring");
        drop(guard);
        advance(100);
        phase("after");
        assert_eq!(counter.bytes.load(Ordering::Relaxed), 10);
        assert_eq!(*counter.phases.lock().unwrap(), ["restoring"]);
        assert_eq!(counter.finished.load(Ordering::Relaxed), 1);
    }
}
