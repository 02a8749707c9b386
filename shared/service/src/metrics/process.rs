//! The standard `process_*` metrics, read from Linux `/proc` at scrape time (the names
//! and meanings of the Prometheus client libraries). Elsewhere, or when `/proc` cannot be
//! read, the metrics are left out rather than reported as zero.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`): 100 in the kernel's ABI on
/// every architecture Linux exposes to user space (Prometheus' own procfs library assumes
/// the same; asking `sysconf` would need `unsafe` or another dependency).
const USER_HZ: f64 = 100.0;

/// Collects the process metrics on every scrape.
#[derive(Debug)]
pub(super) struct ProcessCollector;

/// What `/proc` says about this process.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: Option<f64>,
    threads: Option<f64>,
    start_time_seconds: Option<f64>,
    resident_bytes: Option<f64>,
    virtual_bytes: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

impl Sample {
    fn read() -> Self {
        let mut sample = Self::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| boot_time(&s));
            sample.read_stat(&stat, boot_time);
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            sample.resident_bytes = status_kib(&status, "VmRSS:").map(|kib| kib * 1024.0);
            sample.virtual_bytes = status_kib(&status, "VmSize:").map(|kib| kib * 1024.0);
        }
        sample.open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
        sample.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| max_open_files(&l));
        sample
    }

    /// Fields of `/proc/self/stat` (see proc(5)); the command name may contain spaces
    /// and parentheses, so fields are counted from after its last `)`.
    fn read_stat(&mut self, stat: &str, boot_time: Option<f64>) {
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Field N of proc(5) is fields[N - 3] (field 3, the state, comes first).
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            self.cpu_seconds = Some((utime + stime) / USER_HZ);
        }
        self.threads = field(20);
        if let (Some(start), Some(boot)) = (field(22), boot_time) {
            self.start_time_seconds = Some(boot + start / USER_HZ);
        }
    }
}

/// `btime` of `/proc/stat`: boot time in seconds since the epoch.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A `Key:   1234 kB` line of `/proc/self/status`, in KiB.
fn status_kib(status: &str, key: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<f64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: Option<f64>) -> std::fmt::Result {
    let Some(value) = value else { return Ok(()) };
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = Sample::read();
        if let Some(cpu) = s.cpu_seconds {
            let counter = ConstCounter::new(cpu);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                counter.metric_type(),
            )?)?;
        }
        let e = &mut encoder;
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            s.resident_bytes,
        )?;
        gauge(
            e,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            s.virtual_bytes,
        )?;
        gauge(e, "process_open_fds", "Number of open file descriptors.", s.open_fds)?;
        gauge(
            e,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            s.max_fds,
        )?;
        gauge(
            e,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            s.start_time_seconds,
        )?;
        gauge(e, "process_threads", "Number of OS threads in the process.", s.threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (flex core) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 7 0 \
                    12345 1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let mut sample = Sample::default();
        sample.read_stat(stat, Some(1_700_000_000.0));
        assert_eq!(sample.cpu_seconds, Some(3.0));
        assert_eq!(sample.threads, Some(7.0));
        let start = sample.start_time_seconds.unwrap();
        assert!((start - 1_700_000_123.45).abs() < 1e-3, "{start}");
    }

    #[test]
    fn status_limits_and_btime_are_read() {
        assert_eq!(status_kib("Name:\tx\nVmRSS:\t   2048 kB\n", "VmRSS:"), Some(2048.0));
        assert_eq!(
            max_open_files("Max cpu time   unlimited  unlimited  seconds\nMax open files  1024  524288  files\n"),
            Some(1024.0)
        );
        assert_eq!(boot_time("cpu 1 2 3\nbtime 1700000000\n"), Some(1_700_000_000.0));
    }
}
