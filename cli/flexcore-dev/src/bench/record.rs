//! `--record FILE`: the machine's facts and one Markdown table row per run, appended to
//! a file such as `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use super::report::Report;
use super::stats::LatencySummary;

/// Columns of the results table in `docs/benchmarks.md`, which rows are appended to.
const COLUMNS: [&str; 8] = [
    "date",
    "machine",
    "clients",
    "measured",
    "commands",
    "raw INSERT+COMMIT",
    "ratio",
    "command",
];
/// A table whose header starts like this takes the rows (tables written before the
/// `command` column existed included: the extra cell is kept in the source).
const HEADER_PREFIX: &str = "| date | machine | clients | measured | commands | raw INSERT+COMMIT | ratio |";

/// The header line of the results table.
pub fn table_header() -> String {
    format!("| {} |", COLUMNS.join(" | "))
}

/// The rule under [`table_header`].
pub fn table_rule() -> String {
    format!("|{}", "---|".repeat(COLUMNS.len()))
}

/// What the numbers depend on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    /// CPUs this process may use (what `nproc` prints).
    pub cores: usize,
    /// CPU model (`model name` of `/proc/cpuinfo`).
    pub cpu: String,
    /// Total memory (`MemTotal` of `/proc/meminfo`), GiB.
    pub memory_gib: f64,
    /// Kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
}

impl Machine {
    /// Reads the facts of this machine; unknown ones are 0 or `unknown`.
    pub fn detect() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|line| {
                line.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: mem_total_kib(&read("/proc/meminfo")).map_or(0.0, |kib| kib as f64 / (1024.0 * 1024.0)),
            kernel: if kernel.is_empty() {
                "unknown".to_owned()
            } else {
                kernel
            },
        }
    }

    /// `AMD EPYC, 2 cores, 24 GiB, Linux 6.1.0-27-amd64`.
    pub fn describe(&self) -> String {
        format!(
            "{}, {} cores, {:.0} GiB, Linux {}",
            self.cpu, self.cores, self.memory_gib, self.kernel
        )
    }
}

/// `MemTotal` in KiB from the text of `/proc/meminfo`.
fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The command line as typed (program shown as `flexctl`), passwords in URLs masked.
pub fn command_line(args: impl IntoIterator<Item = String>) -> String {
    let mut words = vec!["flexctl".to_owned()];
    for arg in args.into_iter().skip(1) {
        let arg = flexcore_config::url_text::redact(&arg);
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=.,:/@+%".contains(c));
        words.push(if plain {
            arg
        } else {
            format!("'{}'", arg.replace('\'', r"'\''"))
        });
    }
    words.join(" ")
}

/// `8456/s, p50 6.95 / p95 12.92 / p99 19.09 ms`, then the errors if there are any.
fn phase_cell<'a>(
    per_second: f64,
    latency: &LatencySummary,
    errors: impl Iterator<Item = (&'a String, &'a u64)>,
) -> String {
    let mut cell = format!(
        "{per_second:.0}/s, p50 {:.2} / p95 {:.2} / p99 {:.2} ms",
        latency.p50_ms, latency.p95_ms, latency.p99_ms
    );
    for (i, (kind, n)) in errors.enumerate() {
        let _ = write!(cell, "{}{kind} {n}", if i == 0 { ", errors: " } else { ", " });
    }
    cell
}

/// One table row for `report` run as `command_line`.
pub fn markdown_row(report: &Report, command_line: &str) -> String {
    let dash = || "—".to_owned();
    let date = format!(
        "{} UTC",
        report.date.get(..16).unwrap_or(&report.date).replace('T', " ")
    );
    let commands = report.commands.as_ref().map_or_else(dash, |c| {
        phase_cell(c.per_second, &c.latency, c.rejected.iter().chain(&c.transport_errors))
    });
    let raw = report
        .raw
        .as_ref()
        .map_or_else(dash, |r| phase_cell(r.per_second, &r.latency, r.errors.iter()));
    let cells = [
        date,
        report.machine.describe(),
        report.clients.to_string(),
        format!("{} s", report.duration_seconds),
        commands,
        raw,
        report.commands_to_raw_percent.map_or_else(dash, |p| format!("{p:.0}%")),
        format!("`{}`", command_line.replace('|', r"\|")),
    ];
    format!("| {} |\n", cells.join(" | "))
}

/// Appends the row of `report` to `path`, after the table header if the file has none
/// yet (the file and its directory are created when missing).
pub fn append(path: &Path, report: &Report, command_line: &str) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut text = String::new();
    if !existing.is_empty() && !existing.ends_with('\n') {
        text.push('\n');
    }
    if !existing.lines().any(|line| line.trim().starts_with(HEADER_PREFIX)) {
        if !existing.trim().is_empty() {
            text.push('\n');
        }
        text.push_str(&table_header());
        text.push('\n');
        text.push_str(&table_rule());
        text.push('\n');
    }
    text.push_str(&markdown_row(report, command_line));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("appending to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::report;

    #[test]
    fn meminfo_total_is_read() {
        let meminfo = "MemFree:  1 kB\nMemTotal:       24683412 kB\n";
        assert_eq!(mem_total_kib(meminfo), Some(24_683_412));
        assert_eq!(mem_total_kib("nothing"), None);
    }

    #[test]
    fn passwords_never_reach_the_record() {
        assert_eq!(
            command_line(["x", "--database-url=postgres://app:s3cr3t@db:5432/flexcore"].map(String::from)),
            "flexctl '--database-url=postgres://app:[redacted]@db:5432/flexcore'"
        );
        let line = command_line(
            [
                "/target/release/flexctl",
                "bench",
                "commands",
                "--database-url",
                "postgres://u:p@h/d",
                "--duration",
                "1m 30s",
            ]
            .map(String::from),
        );
        assert_eq!(
            line,
            "flexctl bench commands --database-url 'postgres://u:[redacted]@h/d' --duration '1m 30s'"
        );
    }

    #[test]
    fn rows_have_every_column() {
        assert!(table_header().starts_with(HEADER_PREFIX));
        let row = markdown_row(&report(), "flexctl bench commands | tee");
        assert_eq!(row.matches(" | ").count() + 1, COLUMNS.len(), "{row}");
        assert!(row.ends_with("| `flexctl bench commands \\| tee` |\n"), "{row}");
        assert!(
            row.contains(
                " UTC | AMD EPYC, 2 cores, 24 GiB, Linux 6.1.0 | 64 | 2 s \
                 | 500/s, p50 50.02 / p95 95.04 / p99 99.01 ms, errors: invalid_state 1, timed_out 1 \
                 | 2000/s, p50 50.02 / p95 95.04 / p99 99.01 ms | 25% |"
            ),
            "{row}"
        );
    }

    #[test]
    fn rows_join_the_table_already_in_the_file() {
        let dir = std::env::temp_dir().join(format!("flexctl-record-{}", uuid::Uuid::new_v4().simple()));
        let path = dir.join("benchmarks.md");
        std::fs::create_dir_all(&dir).unwrap();
        let existing = format!("# Benchmarks\n\n{HEADER_PREFIX}\n|---|---|---|---|---|---|---|\n| old row |\n");
        std::fs::write(&path, &existing).unwrap();
        append(&path, &report(), "flexctl bench commands").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&existing), "{text}");
        assert_eq!(text.lines().count(), existing.lines().count() + 1, "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn append_writes_the_header_once() {
        let dir = std::env::temp_dir().join(format!("flexctl-record-{}", uuid::Uuid::new_v4().simple()));
        let path = dir.join("docs/benchmarks.md");
        append(&path, &report(), "flexctl bench commands").unwrap();
        append(&path, &report(), "flexctl bench commands").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(&table_header()).count(), 1, "{text}");
        assert_eq!(text.lines().count(), 4, "{text}");
        std::fs::write(&path, "# Benchmarks\n\nProse without a table.").unwrap();
        append(&path, &report(), "flexctl bench commands").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# Benchmarks\n\nProse without a table.\n\n| date | machine |"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
