//! One run: one variant watching one load, and its figures.

use std::{
    fs::{self, File},
    io::BufReader,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Result, anyhow};
use tcpstate_bench::{
    CONNECTION_TRANSITIONS, LISTENER_TRANSITIONS,
    count::{self, TcpstateSummary},
    loadgen::{ClientReport, Load, ServerReport},
    procfs,
    report::RunResult,
};
use tcpstate_devsupport::{Netns, bpf};

use super::{
    idle::{cpu_jiffies, share_busy},
    load::run_load,
    tracer::{Companion, bpf_runs, start_tracer, stop_tracer, tail, wait_quiet},
    variants::{Counting, Variant},
};
use crate::Cli;

/// What every run of the benchmark shares.
pub struct Ctx<'a> {
    pub cli: &'a Cli,
    /// The load generator's binary.
    pub loadgen: PathBuf,
    pub netns: &'a Netns,
    /// Where the tracers' output goes.
    pub work: PathBuf,
    /// Connections per run (the client's count).
    pub connections: u64,
}

pub fn run_one(ctx: &Ctx, v: &Variant, round: usize) -> RunResult {
    let mut r = RunResult {
        variant: v.info.id.clone(),
        round,
        ..Default::default()
    };
    if let Err(e) = run_one_inner(ctx, v, &mut r) {
        r.error = Some(format!("{e:#}"));
    }
    r
}

fn run_one_inner(ctx: &Ctx, v: &Variant, r: &mut RunResult) -> Result<()> {
    let companion = v.companion.as_deref().map(Companion::start).transpose()?;
    let mut tracer = match v.program {
        Some(_) => Some(start_tracer(ctx, v, r.round)?),
        None => None,
    };
    if let Some(t) = &tracer {
        r.startup_ms = Some(t.startup.as_secs_f64() * 1e3);
    }
    let j0 = cpu_jiffies();
    let load = run_load(ctx, !v.unpinned);
    drop(companion);
    let j1 = cpu_jiffies();
    r.load_cpu_busy = share_busy(&j0, &j1, ctx.cli.load_cpu);
    r.tracer_cpu_busy = share_busy(&j0, &j1, ctx.cli.tracer_cpu);
    let mut notes = Vec::new();
    let Some(t) = tracer.as_mut() else {
        let (c, s, share) = load?;
        fill_load(r, &c, &s, &mut notes);
        r.load_cpu_share = Some(share);
        r.note = (!notes.is_empty()).then(|| notes.join("; "));
        return Ok(());
    };
    let quiet = wait_quiet(t, Duration::from_secs(120));
    if !quiet {
        notes.push("output still growing after 120 s".into());
    }
    let cpu_end = procfs::cpu_ns(t.pid).unwrap_or(0);
    let progs = bpf::progs(t.pid);
    let misses: u64 = progs.iter().map(|p| p.recursion_misses).sum();
    let mut bpf_ns_all = None;
    if t.stats_fd.is_some() {
        let (cnt, ns, all) = bpf_runs(&progs);
        let (c0, n0, a0) = t.runs_at_ready;
        if cnt > c0 {
            r.bpf_ns_per_run = Some((ns - n0) as f64 / (cnt - c0) as f64);
        }
        bpf_ns_all = Some(all.saturating_sub(a0));
    }
    let exit = stop_tracer(t)?;
    t.stats_fd = None;
    if exit.killed {
        notes.push("did not exit on SIGINT; killed".into());
    }
    r.rss_kb = Some(exit.rss_kb);
    r.total_cpu_s = Some(exit.cpu_s);
    r.cpu_s = Some(cpu_end.saturating_sub(t.cpu_at_ready) as f64 / 1e9);
    r.recursion_misses = Some(misses);
    let (c, s, share) = load?;
    fill_load(r, &c, &s, &mut notes);
    r.load_cpu_share = Some(share);
    if let Some(ns) = bpf_ns_all {
        r.bpf_ns_per_conn = Some(ns as f64 / r.load.connections as f64);
    }
    let expected = Load::from_reports(&c, &s).expected_events();
    let stderr = fs::read_to_string(&t.err).unwrap_or_default();
    match v.counting {
        Counting::None => {}
        Counting::Tcpstate { all } => {
            let sum = count::tcpstate_summary(&stderr)
                .ok_or_else(|| anyhow!("no exit summary from tcpstate: {}", tail(&t.err, 5)))?;
            r.received = Some(sum.events);
            r.expected = Some(if all { expected } else { 0 });
            r.lost = Some(sum.lost);
            let lines = count::event_lines(BufReader::new(File::open(&t.out)?))?;
            if lines != sum.events + sum.extra_events {
                notes.push(format!(
                    "{lines} event lines in the output, summary says {} + {}",
                    sum.events, sum.extra_events
                ));
            } else if sum.extra_events > 0 {
                notes.push(format!(
                    "also {} non-transition events (timewait, ...)",
                    sum.extra_events
                ));
            }
            if all && let Some(bad) = check_transitions(&sum, c.ok + 1) {
                notes.push(bad);
            }
        }
        Counting::PortLines => {
            r.received = Some(count::port_lines(
                BufReader::new(File::open(&t.out)?),
                ctx.cli.port,
            )?);
            r.expected = Some(expected);
            r.lost = Some(count::reported_lost(&stderr) + misses);
        }
        Counting::BpftraceScalar(name) => {
            let out = fs::read_to_string(&t.out).unwrap_or_default();
            r.received = count::bpftrace_scalar(&out, name);
            r.expected = Some(expected);
            r.lost = Some(count::reported_lost(&stderr) + misses);
        }
    }
    if let Ok(f) = File::open(&t.out) {
        let _ = f.sync_all();
    }
    if !ctx.cli.keep_output {
        let _ = fs::remove_file(&t.out);
    }
    r.note = (!notes.is_empty()).then(|| notes.join("; "));
    Ok(())
}

fn fill_load(r: &mut RunResult, c: &ClientReport, s: &ServerReport, notes: &mut Vec<String>) {
    let load = Load::from_reports(c, s);
    r.load = load;
    r.rate = load.rate();
    if c.failed > 0 {
        notes.push(format!(
            "{} failed connects (first: {})",
            c.failed,
            c.first_error.as_deref().unwrap_or("?")
        ));
    }
    if c.timed_out {
        notes.push("stopped by --max-secs".into());
    }
}

/// Every connection's 10 transitions exactly `n` times, the listener's once.
fn check_transitions(sum: &TcpstateSummary, n: u64) -> Option<String> {
    let mut bad = Vec::new();
    for (o, w) in CONNECTION_TRANSITIONS {
        let got = sum.count(o, w);
        if got != n {
            bad.push(format!("{o}->{w} {got}"));
        }
    }
    for (o, w) in LISTENER_TRANSITIONS {
        let got = sum.count(o, w);
        if got != 1 {
            bad.push(format!("{o}->{w} {got}"));
        }
    }
    (!bad.is_empty()).then(|| format!("transitions off (want {n} each): {}", bad.join(", ")))
}
