//! What Linux `/proc` says about a process: memory, threads, open files and CPU time. Shared by
//! the reliability tests and the load test, so neither parses `/proc` on its own.

/// A snapshot of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// Resident memory now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Highest resident memory so far (`VmHWM`), KiB.
    pub hwm_kib: u64,
    /// OS threads.
    pub threads: u64,
    /// Open file descriptors (sockets included).
    pub fds: u64,
}

impl ProcStats {
    /// The process's figures; zeros for what cannot be read (a process that has exited).
    pub fn of(pid: u32) -> ProcStats {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        ProcStats {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            threads: field("Threads:"),
            fds,
        }
    }
}

/// CPU time (user + system) the process has used, in milliseconds (`/proc/<pid>/stat`).
pub fn cpu_ms(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name is parenthesised and may contain spaces: count fields after its `)`.
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .ok_or_else(|| format!("/proc/{pid}/stat: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat: field {} unreadable", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) as f64 * 1000.0 / clock_ticks() as f64)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux we run on, the fallback).
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}
