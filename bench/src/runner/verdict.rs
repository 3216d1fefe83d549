//! What a run and the smoke run print: one progress line per run, and the smoke verdict.

use tcpstate_bench::report::{Report, Role, RunResult};

pub fn print_progress(r: &RunResult, label: &str, round: usize, rounds: usize) {
    let mut line = format!("tcpstate-bench: round {}/{rounds} {label}: ", round + 1);
    if let Some(e) = &r.error {
        line.push_str(&format!("FAILED: {e}"));
    } else {
        line.push_str(&format!(
            "{} connections in {:.2} s = {:.0}/s",
            r.load.connections, r.load.seconds, r.rate
        ));
        if let (Some(a), Some(b)) = (r.received, r.expected) {
            line.push_str(&format!(", events {a}/{b}"));
        }
        if let Some(l) = r.lost {
            line.push_str(&format!(", lost {l}"));
        }
        if let Some(s) = r.startup_ms {
            line.push_str(&format!(", startup {s:.1} ms"));
        }
        if let Some(k) = r.rss_kb {
            line.push_str(&format!(", RSS {:.1} MB", k as f64 / 1024.0));
        }
        if let Some(c) = r.cpu_s {
            line.push_str(&format!(", CPU {c:.2} s"));
        }
        if let Some(n) = r.bpf_ns_per_run {
            line.push_str(&format!(", BPF {n:.0} ns/run"));
        }
        if let Some(n) = r.bpf_ns_per_conn {
            line.push_str(&format!(" ({n:.0} ns/connection, all programs)"));
        }
        if let Some(n) = &r.note {
            line.push_str(&format!(" [{n}]"));
        }
    }
    eprintln!("{line}");
}

/// The smoke run passes when every run worked and tcpstate delivered exactly what the kernel
/// made (a shortfall fully explained by the kernel's recursion misses is reported, not failed:
/// another BPF program on the machine can cause it).
pub fn smoke_verdict(report: &Report) -> bool {
    let mut ok = true;
    for r in &report.runs {
        if let Some(e) = &r.error {
            eprintln!("tcpstate-bench: smoke: {} failed: {e}", r.variant);
            ok = false;
            continue;
        }
        if r.rate <= 0.0 {
            eprintln!("tcpstate-bench: smoke: {} measured no rate", r.variant);
            ok = false;
        }
        let is_tcpstate = report.variants.iter().any(|v| {
            v.id == r.variant
                && matches!(
                    v.role,
                    Role::Tcpstate | Role::TcpstateIdlePort | Role::TcpstateAlongside
                )
        });
        if !is_tcpstate {
            continue;
        }
        let (Some(rec), Some(exp)) = (r.received, r.expected) else {
            eprintln!("tcpstate-bench: smoke: {}: no event count", r.variant);
            ok = false;
            continue;
        };
        let misses = r.recursion_misses.unwrap_or(0);
        // Missing events that tcpstate itself reported as skipped by the kernel.
        let explained = rec < exp && exp - rec <= misses.min(r.lost.unwrap_or(0));
        if rec != exp {
            if explained {
                eprintln!(
                    "tcpstate-bench: smoke: {}: {rec}/{exp} events, the shortfall is the \
                     kernel's recursion misses (another BPF program ran): reported, not failed",
                    r.variant
                );
            } else {
                eprintln!(
                    "tcpstate-bench: smoke: {}: received {rec} events, expected {exp}",
                    r.variant
                );
                ok = false;
            }
        }
        if let Some(n) = r
            .note
            .as_deref()
            .filter(|n| n.contains("transitions off") && !explained)
        {
            eprintln!("tcpstate-bench: smoke: {}: {n}", r.variant);
            ok = false;
        }
    }
    eprintln!(
        "tcpstate-bench: smoke: {}",
        if ok { "ok" } else { "FAILED" }
    );
    ok
}
