//! What the runner reads about a tracer process from /proc besides its BPF programs (those
//! are `tcpstate_devsupport::bpf::progs`): its CPU time.

use std::fs;

/// CPU time of all of `pid`'s threads so far, in ns (`/proc/PID/task/*/schedstat`).
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let dir = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0;
    for entry in dir.flatten() {
        if let Ok(s) = fs::read_to_string(entry.path().join("schedstat")) {
            sum += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_time() {
        let pid = std::process::id();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_ns(pid).unwrap() > 0);
    }
}
