//! The process's own figures for `/metrics`, read from `/proc/self` when the monitor is asked for
//! them (never on the loop's hot path): open descriptors and their limit, resident memory, CPU
//! time and the start time, under Prometheus's standard `process_*` names.

use std::time::{SystemTime, UNIX_EPOCH};

/// One reading; a figure `/proc` could not give is `None` (and left out of the exposition).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on file descriptors.
    pub max_fds: Option<u64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<u64>,
    /// User and system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// When the process started, in seconds since the epoch.
    pub start_time: Option<f64>,
}

/// Read the figures now.
pub fn read() -> Process {
    let mut p = Process {
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64),
        ..Process::default()
    };
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        p.max_fds = Some(limit.rlim_cur);
    }
    // SAFETY: sysconf has no memory effects.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    if let Some(fields) = stat_fields(&stat)
        && ticks > 0
    {
        let ticks = ticks as f64;
        let field = |n: usize| fields.get(n).and_then(|f| f.parse::<u64>().ok());
        if let (Some(utime), Some(stime)) = (field(13), field(14)) {
            p.cpu_seconds = Some((utime + stime) as f64 / ticks);
        }
        if let Some(rss) = field(23) {
            p.resident_bytes = Some(rss * page.max(0) as u64);
        }
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time(&s));
        if let (Some(start), Some(boot)) = (field(21), boot) {
            p.start_time = Some(boot as f64 + start as f64 / ticks);
        }
    }
    p
}

/// The fields of `/proc/self/stat`, numbered from 0 as in proc(5) less one (field 1, the pid, is
/// index 0). The command name (field 2) may hold spaces and parentheses: split after its last `)`.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let end = stat.rfind(')')?;
    let mut fields = vec![stat.get(..end)?.split(' ').next()?, "comm"];
    fields.extend(stat.get(end + 1..)?.split_whitespace());
    Some(fields)
}

/// `btime` of `/proc/stat`: when the system booted, in seconds since the epoch.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Seconds since the epoch, now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_a_command_name_with_spaces() {
        let f = stat_fields("42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13").unwrap();
        assert_eq!((f[0], f[2], f[3]), ("42", "S", "1"));
        assert_eq!(f[13], "11");
    }

    #[test]
    fn this_process_has_figures() {
        let p = read();
        assert!(p.open_fds.unwrap() >= 3);
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap());
        assert!(p.resident_bytes.unwrap() > 1 << 20);
        let start = p.start_time.unwrap();
        assert!(start <= unix_now() + 1.0 && start > unix_now() - 86_400.0 * 365.0);
        assert!(p.cpu_seconds.unwrap() >= 0.0);
    }
}
