//! The decision journal: every observation summary, decision, action and outcome
//! with its evidence, as JSON lines, so `lifeboat status --journal` (and a
//! postmortem) can say why the agent did what it did.

use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn open(state_dir: &Path) -> std::io::Result<Journal> {
        std::fs::create_dir_all(state_dir)?;
        Ok(Journal { path: state_dir.join("journal.jsonl") })
    }

    /// Appends one entry; a failed write is logged, never fatal (the journal
    /// explains decisions, it does not make them).
    pub fn record(&self, at: &str, event: &str, details: Value) {
        let mut line = json!({ "at": at, "event": event });
        if let (Some(object), Value::Object(extra)) = (line.as_object_mut(), details) {
            object.extend(extra);
        }
        // One write per line: `writeln!` on a File issues one syscall per JSON token, and
        // a whole line in one append cannot interleave with another writer's.
        let text = format!("{line}\n");
        let result = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(text.as_bytes()));
        if let Err(error) = result {
            tracing::warn!(path = %self.path.display(), error = %error, "cannot write the journal");
        }
    }

    /// The last `count` entries, oldest first.
    pub fn tail(path: &Path, count: usize) -> std::io::Result<Vec<Value>> {
        let text = std::fs::read_to_string(path)?;
        let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
        Ok(lines
            .iter()
            .skip(lines.len().saturating_sub(count))
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }
}
