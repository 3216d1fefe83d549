//! What the report says about the machine and the build: CPU model, kernel, commit, date, the
//! decode/format micro-benchmark's figures; and running a helper command.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;
use tcpstate_bench::report::MicroBench;

pub fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.with_file_name(name))
}

pub fn cmd_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The decode/format micro-benchmark's results, if criterion left them in `dir`.
pub fn micro_benches(dir: &Path) -> Vec<MicroBench> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir.join("decode_format")) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let new = p.join("new");
        let (Ok(b), Ok(e)) = (
            fs::read_to_string(new.join("benchmark.json")),
            fs::read_to_string(new.join("estimates.json")),
        ) else {
            continue;
        };
        let (Ok(b), Ok(e)) = (
            serde_json::from_str::<serde_json::Value>(&b),
            serde_json::from_str::<serde_json::Value>(&e),
        ) else {
            continue;
        };
        let Some(elements) = b["throughput"]["Elements"].as_f64() else {
            continue;
        };
        let Some(ns) = e["median"]["point_estimate"].as_f64() else {
            continue;
        };
        let when = fs::metadata(new.join("estimates.json"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| format_utc(d.as_secs()))
            .unwrap_or_default();
        out.push(MicroBench {
            name: b["function_id"].as_str().unwrap_or("?").to_string(),
            events_per_s: elements / (ns / 1e9),
            measured: format!(
                "criterion medians from {} (`cargo bench -p tcpstate-user --bench decode_format`), {when}",
                dir.display()
            ),
        });
    }
    out
}

pub fn format_utc(secs: u64) -> String {
    // SAFETY: gmtime_r with valid pointers.
    let tm = unsafe {
        let t = secs as libc::time_t;
        let mut tm: libc::tm = std::mem::zeroed();
        libc::gmtime_r(&t, &mut tm);
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

pub fn uname_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn git_describe() -> String {
    let Some(rev) = cmd_output("git", &["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = cmd_output("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{rev} (with uncommitted changes)")
    } else {
        rev
    }
}
