//! The terminal bar of `save`, `restore` and `snapshots verify`: bytes streamed,
//! their rate and the phase, on stderr. Drawn only when stderr is a terminal and
//! the output is a table; with `--output json`, in a pipe, under systemd or in CI
//! nothing is drawn (indicatif hides a bar whose target is not a terminal).

use super::output::Format;
use crate::progress::{self, Installed, Sink};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

struct TerminalBar(ProgressBar);

impl Sink for TerminalBar {
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn phase(&self, text: &str) {
        self.0.set_message(text.to_owned());
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// A bar for `what` until the guard is dropped, or `None` where none is drawn.
pub fn bar(what: &str, format: Format) -> Option<Installed> {
    if format == Format::Json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    let style = ProgressStyle::with_template("{spinner} {msg}: {bytes} ({binary_bytes_per_sec}), {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(progress::install(Arc::new(TerminalBar(bar))))
}
