//! Human output: aligned tables and key/value blocks; JSON for `--output json`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::Output;

/// A table with a header row; columns are padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra ones are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text; an empty table says so instead of printing a bare header.
    pub fn render(&self, empty: &str) -> String {
        if self.rows.is_empty() {
            return format!("{empty}\n");
        }
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .chain([self.headers[i].len()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (i, cell) in cells.enumerate() {
                let _ = write!(text, "{cell:<w$}  ", w = widths.get(i).copied().unwrap_or(0));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&mut self.headers.iter().copied());
        for row in &self.rows {
            line(&mut (0..self.headers.len()).map(|i| row.get(i).map_or("", String::as_str)));
        }
        out
    }
}

/// Key/value lines, keys aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs.iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
}

/// Prints `value` as JSON, or `text()` for humans.
pub fn emit<T: Serialize + ?Sized>(output: Output, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    let rendered = match output {
        Output::Json => serde_json::to_string_pretty(value)?,
        Output::Text => text(),
    };
    crate::write_stdout(rendered.trim_end_matches('\n'))
}

/// The parser of a list's `--state`: one of a lifecycle's wire names (`RunStatus::ALL`,
/// …), so a misspelt state is refused with the names there are (also in `--help`)
/// instead of matching nothing.
pub fn states<T: Copy>(all: &[T], wire_name: fn(T) -> &'static str) -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(all.iter().map(|s| wire_name(*s)))
}

/// `2026-11-24 17:03:09Z`, or `-`.
pub fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
}

/// An id shortened for a table on its own: [`min_hex_digits`] hex digits (see [`short_ids`]).
pub fn short(id: uuid::Uuid) -> String {
    prefix_text(id, min_hex_digits(id))
}

/// The fewest hex digits an id is shown with: for a UUIDv7, its first 12 digits are its
/// millisecond timestamp and the 13th its version, so ids made in the same millisecond
/// (or the same ~65 s, for 8 digits) share them; 14 digits include the first random one.
/// Other ids (v5 plugin and scheduled-run ids, v4) are random from the start: 8 digits.
pub fn min_hex_digits(id: uuid::Uuid) -> usize {
    if id.get_version_num() == 7 {
        14
    } else {
        8
    }
}

/// Each id shortened to the fewest hex digits that tell it apart from every other id of
/// `ids` (the rows of one table), and never fewer than [`min_hex_digits`]: what a table
/// shows, and what any command taking that kind of id accepts back (a prefix that is
/// unique among all of them; `flexctl` says which ids an ambiguous one matches).
pub fn short_ids(ids: &[uuid::Uuid]) -> Vec<String> {
    let hex: Vec<String> = ids.iter().map(|id| id.simple().to_string()).collect();
    let mut sorted: Vec<&str> = hex.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let common = |a: &str, b: &str| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    ids.iter()
        .zip(&hex)
        .map(|(id, h)| {
            // The nearest ids in sorted order share the longest prefixes with it.
            let at = sorted.binary_search(&h.as_str()).unwrap_or(0);
            let before = at
                .checked_sub(1)
                .and_then(|i| sorted.get(i))
                .map_or(0, |o| common(h, o));
            let after = sorted.get(at + 1).map_or(0, |o| common(h, o));
            let digits = (before.max(after) + 1).max(min_hex_digits(*id)).min(32);
            prefix_text(*id, digits)
        })
        .collect()
}

/// The hyphenated id cut after its first `digits` hex digits (`01a24157-89ab-7c`), so it
/// reads as the start of the full id.
fn prefix_text(id: uuid::Uuid, digits: usize) -> String {
    let mut seen = 0;
    id.hyphenated()
        .to_string()
        .chars()
        .take_while(|c| {
            if seen == digits {
                return false;
            }
            if *c != '-' {
                seen += 1;
            }
            true
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let mut t = Table::new(&["NAME", "STATE"]);
        t.row(vec!["a-long-name".into(), "active".into()]);
        t.row(vec!["b".into(), "paused".into()]);
        assert_eq!(
            t.render("none"),
            "NAME         STATE\na-long-name  active\nb            paused\n"
        );
        assert_eq!(Table::new(&["X"]).render("no pipelines"), "no pipelines\n");
    }

    #[test]
    fn short_ids_are_unique_among_the_rows_and_keep_a_random_digit() {
        // Two UUIDv7s of the same millisecond: their first 13 digits are the same.
        let a: uuid::Uuid = "01a24157-89ab-7c01-8000-000000000001".parse().unwrap();
        let b: uuid::Uuid = "01a24157-89ab-7c02-8000-000000000002".parse().unwrap();
        let c: uuid::Uuid = "01a24158-0000-7fff-8000-000000000003".parse().unwrap();
        assert_eq!(
            short_ids(&[a, b, c]),
            ["01a24157-89ab-7c01", "01a24157-89ab-7c02", "01a24158-0000-7f"]
        );
        // Alone, a v7 id still shows its timestamp, version and one random digit.
        assert_eq!(short_ids(&[a]), ["01a24157-89ab-7c"]);
        assert_eq!(short(a), "01a24157-89ab-7c");
        // Random ids need 8 digits; the same id twice is the same row shown twice.
        let v5 = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, b"x");
        assert_eq!(short_ids(&[v5, v5]), [short(v5), short(v5)]);
        assert_eq!(short(v5).len(), 8);
        // Every shown id is a prefix of its full id.
        for (id, shown) in [a, b, c].iter().zip(short_ids(&[a, b, c])) {
            assert!(id.to_string().starts_with(&shown));
        }
    }

    #[test]
    fn fields_align_their_keys() {
        assert_eq!(
            fields(&[("id", "1".into()), ("state", "ok".into())]),
            "id     1\nstate  ok\n"
        );
    }
}
