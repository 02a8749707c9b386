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

/// `2026-11-24 17:03:09Z`, or `-`.
pub fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
}

/// The first 8 characters of an id (enough to recognise it in a table).
pub fn short(id: uuid::Uuid) -> String {
    id.simple().to_string()[..8].to_owned()
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
    fn fields_align_their_keys() {
        assert_eq!(
            fields(&[("id", "1".into()), ("state", "ok".into())]),
            "id     1\nstate  ok\n"
        );
    }
}
