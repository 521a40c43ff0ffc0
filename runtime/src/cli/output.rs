//! Printing for people (aligned tables) and for scripts (`--output json`).

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// An error and its causes on one line, outermost first, as anyhow's `{:#}` prints them, but a
/// cause is left out when the text already says it: our error types name their cause in their
/// own message (`cannot run etcdutl: No such file…; install…`), and printing it again after
/// that only makes the line harder to read.
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let said = cause.to_string();
        if text.is_empty() {
            text = said;
        } else if !names_cause(&text, &said) {
            text.push_str(": ");
            text.push_str(&said);
        }
    }
    text
}

/// Whether `text` already names `cause` as a cause: the whole cause, set off the way our
/// messages set one off (after `: ` or `(`, before `;`, `)`, `:`, `,` or the end). A short
/// cause that merely occurs inside a longer phrase ("timed out" in "timed out after 5 s")
/// is not named by it.
fn names_cause(text: &str, cause: &str) -> bool {
    !cause.is_empty()
        && text.match_indices(cause).any(|(start, _)| {
            let before = text.get(..start).unwrap_or_default();
            let after = text.get(start + cause.len()..).unwrap_or_default();
            (before.is_empty() || before.ends_with(": ") || before.ends_with('('))
                && (after.is_empty() || after.starts_with([';', ')', ':', ',']))
        })
}

/// Left-aligned columns separated by two spaces; the header in upper case.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|title| title.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: Vec<String>| {
        let mut rendered = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index + 1 == cells.len() {
                rendered.push_str(cell);
            } else {
                let width = widths.get(index).copied().unwrap_or(0);
                rendered.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.push_str(rendered.trim_end());
        text.push('\n');
    };
    line(header.iter().map(|title| title.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
    text
}

/// The first 16 characters of a hash, for tables. Hashes may come from a manifest
/// in the store, so nothing here assumes they are 64 hex digits.
pub fn short_hash(hash: &str) -> String {
    hash.chars().take(16).collect()
}

/// Bytes in binary units, one decimal: `1.5 MiB`.
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match UNITS.get(unit) {
        Some(name) if unit > 0 => format!("{value:.1} {name}"),
        _ => format!("{count} B"),
    }
}

pub fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("report types always serialise")
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot run etcdutl: {source}; install etcd's etcdutl or pass --etcdutl PATH")]
    struct Missing {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_the_message_already_names_is_not_printed_twice() {
        let missing = Missing { source: std::io::Error::new(std::io::ErrorKind::NotFound, "No such file") };
        let error = anyhow::Error::new(missing).context("restore into /d failed; the data dir was not touched");
        assert_eq!(
            super::error_chain(&error),
            "restore into /d failed; the data dir was not touched: cannot run etcdutl: No such file; install etcd's etcdutl or pass --etcdutl PATH"
        );
    }

    #[test]
    fn a_cause_inside_a_longer_phrase_is_still_printed() {
        let error = anyhow::anyhow!("timed out").context("the store timed out after 5 s");
        assert_eq!(super::error_chain(&error), "the store timed out after 5 s: timed out");
        let error = anyhow::anyhow!("refused").context("upload (refused) failed, see: refused; retry");
        assert_eq!(super::error_chain(&error), "upload (refused) failed, see: refused; retry");
    }

    #[test]
    fn every_cause_the_message_does_not_name_is_printed() {
        let error = anyhow::anyhow!("connection refused").context("cannot list the store").context("save failed");
        assert_eq!(super::error_chain(&error), "save failed: cannot list the store: connection refused");
    }

    #[test]
    fn tables_align() {
        let text =
            super::table(&["name", "size"], &[vec!["a".into(), "1 B".into()], vec!["long".into(), "2 B".into()]]);
        assert_eq!(text, "NAME  SIZE\na     1 B\nlong  2 B\n");
        assert_eq!(super::bytes(1536 * 1024), "1.5 MiB");
    }
}
