//! The standard `process_*` metrics (issue 21), read from `/proc` at each scrape: prometheus-client
//! has no process collector. Linux only; elsewhere nothing is reported. The names are the ones
//! every Prometheus client library uses (no application prefix), so existing dashboards and
//! alerts on memory, CPU and file descriptors work unchanged.

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Clock ticks per second of `/proc/<pid>/stat` times: Linux's `USER_HZ`, 100 on every
/// architecture the image is built for (amd64, arm64); the kernel keeps it fixed for user space.
const USER_HZ: f64 = 100.0;

/// What `/proc` says about this process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: f64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: f64,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: f64,
    /// The soft limit of open file descriptors.
    pub max_fds: Option<f64>,
    /// Threads.
    pub threads: f64,
}

/// Parses `/proc/self/stat`, `/proc/self/status` (`VmRSS`), `/proc/stat` (`btime`) and
/// `/proc/self/limits`; `None` when `stat` is not in the expected shape.
pub fn parse(stat: &str, status: &str, proc_stat: &str, limits: &str) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may contain spaces or ')': the fields
    // after the last ')' start at field 3 (state).
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { f.get(n - 3)?.parse().ok() };
    let ticks = field(14)? + field(15)?;
    let start_ticks = field(22)?;
    let btime: f64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    Some(ProcessStats {
        cpu_seconds: ticks / USER_HZ,
        resident_bytes: rss_kib * 1024.0,
        virtual_bytes: field(23)?,
        start_time_seconds: btime + start_ticks / USER_HZ,
        open_fds: 0.0,
        max_fds,
        threads: field(20)?,
    })
}

/// This process's figures, `None` off Linux or when `/proc` is not readable.
pub fn read() -> Option<ProcessStats> {
    let r = |p: &str| std::fs::read_to_string(p).ok();
    let mut stats = parse(
        &r("/proc/self/stat")?,
        &r("/proc/self/status").unwrap_or_default(),
        &r("/proc/stat")?,
        &r("/proc/self/limits").unwrap_or_default(),
    )?;
    stats.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    Some(stats)
}

/// The `process_*` metrics of `stats` in the OpenMetrics text format, without the closing
/// `# EOF` (the caller appends them to its own exposition).
pub fn encode(stats: &ProcessStats) -> String {
    let mut r = Registry::default();
    r.register(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        ConstCounter::new(stats.cpu_seconds),
    );
    let gauges = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            Some(stats.resident_bytes),
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            Some(stats.virtual_bytes),
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            Some(stats.start_time_seconds),
        ),
        (
            "process_open_fds",
            "Number of open file descriptors",
            Some(stats.open_fds),
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors",
            stats.max_fds,
        ),
        (
            "process_threads",
            "Number of OS threads",
            Some(stats.threads),
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(v) = value {
            r.register(name, help, ConstGauge::new(v));
        }
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &r).is_err() {
        return String::new();
    }
    out.strip_suffix("# EOF\n").unwrap_or(&out).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (autoscaler (x) ) S 1 4242 4242 0 -1 4194560 2750 0 0 0 \
        250 75 0 0 20 0 9 0 123400 851968000 5000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 \
        1 0 0 0 0 0";

    #[test]
    fn proc_files_give_the_standard_figures() {
        let s = parse(
            STAT,
            "Name:\tx\nVmRSS:\t   20480 kB\nThreads:\t9\n",
            "cpu  1 2 3\nbtime 1700000000\n",
            "Limit                     Soft Limit           Hard Limit           Units\n\
             Max open files            1048576              1048576              files\n",
        )
        .expect("parsed");
        assert_eq!(s.cpu_seconds, 3.25, "(250 + 75) ticks at 100 Hz");
        assert_eq!(s.resident_bytes, 20480.0 * 1024.0);
        assert_eq!(s.virtual_bytes, 851_968_000.0);
        assert_eq!(s.start_time_seconds, 1_700_000_000.0 + 1234.0);
        assert_eq!(s.max_fds, Some(1_048_576.0));
        assert_eq!(s.threads, 9.0);
        assert!(parse("garbage", "", "btime 1\n", "").is_none());
        let text = encode(&s);
        for line in [
            "process_cpu_seconds_total 3.25",
            "process_resident_memory_bytes 20971520",
            "process_max_fds 1048576",
            "# TYPE process_open_fds gauge",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(!text.contains("# EOF"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_read_from_proc() {
        let s = read().expect("/proc on Linux");
        assert!(
            s.resident_bytes > 0.0 && s.open_fds > 0.0 && s.threads >= 1.0,
            "{s:?}"
        );
        assert!(s.start_time_seconds > 1_600_000_000.0, "{s:?}");
    }
}
