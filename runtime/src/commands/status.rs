//! `lifeboat status`: what the agent last saw and decided, from its journal.

use crate::agent;
use crate::agent::journal::Journal;
use crate::cli::args::StatusArgs;
use crate::cli::output::{self, Format};
use crate::exit::Exit;
use anyhow::Context;

pub fn run(args: &StatusArgs, format: Format) -> anyhow::Result<Exit> {
    let path = args.state_dir.join("journal.jsonl");
    let entries = Journal::tail(&path, if args.journal { args.lines } else { 2000 })
        .with_context(|| format!("cannot read the journal {}", path.display()))?;
    let epoch = agent::read_epoch(&args.state_dir);
    if args.journal {
        for entry in &entries {
            match format {
                Format::Json => println!("{entry}"),
                Format::Table => println!(
                    "{} {:<16} {}",
                    entry["at"].as_str().unwrap_or(""),
                    entry["event"].as_str().unwrap_or(""),
                    serde_json::Value::Object(
                        entry
                            .as_object()
                            .map(|object| object
                                .iter()
                                .filter(|(key, _)| *key != "at" && *key != "event")
                                .map(|(key, value)| (key.clone(), value.clone()))
                                .collect())
                            .unwrap_or_default()
                    )
                ),
            }
        }
        return Ok(Exit::Success);
    }
    let last = |event: &str| entries.iter().rev().find(|entry| entry["event"] == event).cloned();
    let summary = serde_json::json!({
        "epoch": epoch,
        "last_observation": last("observation"),
        "last_decision": last("decision"),
        "last_save": last("saved"),
        "last_warning": last("warning"),
    });
    match format {
        Format::Json => println!("{}", output::json(&summary)),
        Format::Table => {
            println!("recovery epoch: {epoch}");
            for (label, key) in [
                ("last observation", "last_observation"),
                ("last decision", "last_decision"),
                ("last save", "last_save"),
                ("last warning", "last_warning"),
            ] {
                match summary.get(key) {
                    None | Some(serde_json::Value::Null) => println!("{label}: none"),
                    Some(value) => println!("{label}: {value}"),
                }
            }
        }
    }
    Ok(Exit::Success)
}
