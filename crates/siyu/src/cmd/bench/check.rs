//! The correctness side of the benchmarks: a gate that records failed checks (the state
//! comparison itself is `cmd::rebuild::verify`), and the process figures Linux exposes under
//! /proc (peak memory, CPU time).

pub use crate::cmd::rebuild::verify as verify_sample;

/// The checks of one target; a target whose gate failed has no valid figures.
#[derive(Debug, Default, Clone)]
pub struct Gate {
    pub failures: Vec<String>,
}

impl Gate {
    /// Records and prints one check.
    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        println!("  check {} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            self.failures.push(what);
        }
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The process's peak resident memory (VmHWM), in bytes.
pub fn peak_memory_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

/// The process's current resident memory (VmRSS), in bytes.
pub fn resident_memory_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// CPU time the calling thread has used, in nanoseconds: /proc/thread-self/schedstat (ns
/// precision) when the kernel keeps it, else utime + stime of /proc/thread-self/stat (ticks of
/// 10 ms, assuming the usual USER_HZ of 100).
pub fn thread_cpu_ns() -> Option<u64> {
    if let Ok(text) = std::fs::read_to_string("/proc/thread-self/schedstat") {
        if let Some(ns) = text.split_whitespace().next().and_then(|t| t.parse::<u64>().ok()) {
            if ns > 0 {
                return Some(ns);
            }
        }
    }
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which may hold spaces) — utime and stime are the 14th and
    // 15th fields overall, the 12th and 13th after ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000_000)
}

/// Counts the lines of a file (a final line without a newline counts).
pub fn count_lines(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("failed to open {}: {e}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        last = buf[n - 1];
    }
    Ok(lines + u64::from(last != b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_figures_are_read() {
        assert!(peak_memory_bytes().unwrap() >= resident_memory_bytes().unwrap() / 2);
        let before = thread_cpu_ns().unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_ns().unwrap() >= before);
    }

    #[test]
    fn lines_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, "a\nb\nc").unwrap();
        assert_eq!(count_lines(&path).unwrap(), 3);
        std::fs::write(&path, "a\nb\n").unwrap();
        assert_eq!(count_lines(&path).unwrap(), 2);
    }
}
