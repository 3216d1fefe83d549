//! What the runner reads about a tracer process from /proc: its BPF programs (from the fdinfo
//! of its `bpf-prog` descriptors: type, run count, recursion misses) and its CPU time.

use std::{fs, path::Path};

/// BPF program types that can hang off `sock:inet_sock_set_state`.
pub const TRACEPOINT_TYPES: [u32; 3] = [
    5,  // BPF_PROG_TYPE_TRACEPOINT
    17, // BPF_PROG_TYPE_RAW_TRACEPOINT (and tp_btf on old kernels)
    26, // BPF_PROG_TYPE_TRACING (tp_btf)
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    pub prog_type: u32,
    /// Runs counted while BPF stats were enabled.
    pub run_cnt: u64,
    pub run_time_ns: u64,
    /// Runs the kernel skipped because another BPF program was running on that CPU.
    pub recursion_misses: u64,
}

impl ProgInfo {
    pub fn is_tracepoint(&self) -> bool {
        TRACEPOINT_TYPES.contains(&self.prog_type)
    }
}

/// Parses a `bpf-prog` fdinfo (`prog_type:\t5`, `prog_id:\t42`, `run_cnt:\t7`, ...).
pub fn parse_prog_fdinfo(text: &str) -> Option<ProgInfo> {
    let mut p = ProgInfo::default();
    let mut has_id = false;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "prog_id" => {
                p.id = v.parse().ok()?;
                has_id = true;
            }
            "prog_type" => p.prog_type = v.parse().ok()?,
            "run_cnt" => p.run_cnt = v.parse().unwrap_or(0),
            "run_time_ns" => p.run_time_ns = v.parse().unwrap_or(0),
            "recursion_misses" => p.recursion_misses = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    has_id.then_some(p)
}

/// The BPF programs `pid` holds descriptors for, one entry per program.
pub fn bpf_progs(pid: u32) -> Vec<ProgInfo> {
    let mut out: Vec<ProgInfo> = Vec::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if target != Path::new("anon_inode:bpf-prog") {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        if let Some(p) = fs::read_to_string(info)
            .ok()
            .as_deref()
            .and_then(parse_prog_fdinfo)
            && !out.iter().any(|q| q.id == p.id)
        {
            out.push(p);
        }
    }
    out
}

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
    fn parses_prog_fdinfo() {
        let t = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1064\nprog_type:\t5\nprog_jited:\t1\n\
                 prog_tag:\t0123456789abcdef\nmemlock:\t4096\nprog_id:\t42\nrun_time_ns:\t1500\n\
                 run_cnt:\t3\nrecursion_misses:\t1\nverified_insns:\t100\n";
        let p = parse_prog_fdinfo(t).unwrap();
        assert_eq!(
            p,
            ProgInfo {
                id: 42,
                prog_type: 5,
                run_cnt: 3,
                run_time_ns: 1500,
                recursion_misses: 1
            }
        );
        assert!(p.is_tracepoint());
        assert!(parse_prog_fdinfo("pos:\t0\n").is_none());
    }

    #[test]
    fn reads_own_cpu_time() {
        let pid = std::process::id();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_ns(pid).unwrap() > 0);
        assert!(bpf_progs(pid).is_empty());
    }
}
