//! `tcpstate-bench`: how much each tracer slows the workload it watches.
//!
//! One run = one variant (no tracer, tcpstate, tcpstate `--port` on an idle port, or a peer
//! tool) watching one load: `loadgen server` and `loadgen client` in a network namespace of our
//! own, both pinned to the load CPU, the tracer pinned to the other. Every round runs every
//! variant once, in an order rotated each round, so slow drift of the machine hits all alike.
//!
//! Per run: connections/s, events received against the exact expected count, losses the tool
//! reported (plus the kernel's `recursion_misses` of its programs), the tracer's CPU time and
//! peak RSS, and its startup: exec until its program has run on a probe connection (BPF run
//! statistics enabled just for that) and, for tcpstate, until it printed its ready line.
//! Prints the markdown report and writes it (and the raw runs as JSON) to `--out`.

mod runner;

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use tcpstate_bench::report::Report;

use runner::{
    idle::wait_idle,
    interrupted,
    machine::{
        cmd_output, cpu_model, format_utc, git_describe, micro_benches, now_secs, sibling,
        uname_release,
    },
    one::{Ctx, run_one},
    procs::pin_self,
    variants::variants,
    verdict::{print_progress, smoke_verdict},
};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "tcpstate-bench",
    about = "Measure how much tcpstate and its peers slow a connect/close workload",
    long_about = "Measure how much tcpstate and its peers slow a connect/close workload. \
                  Needs root (network namespace, BPF). Usually run as `cargo xtask bench`."
)]
struct Cli {
    /// A short correctness run for CI: few connections, one round, no peers; fails unless
    /// tcpstate delivered exactly the expected events.
    #[arg(long)]
    smoke: bool,
    /// Rounds; each runs every variant once.
    #[arg(long)]
    rounds: Option<usize>,
    /// Connections per run (the client's count).
    #[arg(long)]
    connections: Option<u64>,
    /// Wall-time bound of one load run, in seconds.
    #[arg(long, default_value_t = 60.0)]
    max_secs: f64,
    /// The tracer (default: `tcpstate` next to this binary).
    #[arg(long)]
    tcpstate: Option<PathBuf>,
    /// The load generator (default: `loadgen` next to this binary).
    #[arg(long)]
    loadgen: Option<PathBuf>,
    /// Write the markdown report here (and the raw runs as JSON beside it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Scratch directory for tracer output (default: target/bench).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Do not run the peer tools even if installed.
    #[arg(long)]
    no_peers: bool,
    /// Only these variants (comma-separated ids: untraced, tcpstate, tcpstate-port,
    /// tcpstate-container, libbpf-tcpstates, bcc-tcpstates, bpftrace, bpftrace-count).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// CPU for the load generator (client and server).
    #[arg(long, default_value_t = 0)]
    load_cpu: usize,
    /// CPU for the tracer.
    #[arg(long, default_value_t = 1)]
    tracer_cpu: usize,
    /// The load's server port.
    /// (The peers cannot filter by namespace: they count this port's lines in every namespace,
    /// so it should be one nothing else on the machine uses.)
    #[arg(long, default_value_t = 23571)]
    port: u16,
    /// The port given to `tcpstate --port` in the idle-port variant (carries no load).
    #[arg(long, default_value_t = 23579)]
    idle_port: u16,
    /// Keep BPF run statistics on during the load and report ns per program run (adds a
    /// little overhead to every traced run).
    #[arg(long)]
    bpf_stats: bool,
    /// Pause between runs, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Keep the tracers' output files.
    #[arg(long)]
    keep_output: bool,
    /// Before each run, wait up to this many seconds for both CPUs to be idle (other work on
    /// the machine skews every figure); a run that starts busy says so in its note.
    /// Default 600 (smoke: 0).
    #[arg(long)]
    idle_wait: Option<u64>,
    /// Most CPU use (percent, each of the two CPUs) that counts as idle.
    #[arg(long, default_value_t = 10.0)]
    idle_threshold: f64,
    /// Most NET_RX softirqs per second (all CPUs) that count as idle.
    #[arg(long, default_value_t = 300.0)]
    idle_net_rx: f64,
    /// Where criterion keeps its results (default: <target>/criterion); the decode/format
    /// micro-benchmark's figures found there are added to the report.
    #[arg(long)]
    criterion_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    runner::catch_sigint();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tcpstate-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<bool> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (network namespace and BPF)");
    }
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cli.load_cpu == cli.tracer_cpu || cli.load_cpu.max(cli.tracer_cpu) >= ncpu {
        bail!(
            "--load-cpu {} and --tracer-cpu {} must be two different CPUs of the {ncpu} here",
            cli.load_cpu,
            cli.tracer_cpu
        );
    }
    let tcpstate = match &cli.tcpstate {
        Some(p) => p.clone(),
        None => sibling("tcpstate")?,
    };
    let loadgen = match &cli.loadgen {
        Some(p) => p.clone(),
        None => sibling("loadgen")?,
    };
    for p in [&tcpstate, &loadgen] {
        if !p.is_file() {
            bail!(
                "{} not found (build with `cargo build --release -p tcpstate-user -p tcpstate-bench`)",
                p.display()
            );
        }
    }
    // Run private copies: the tree's target/release may be rebuilt while the benchmark runs,
    // and every run must use the same binaries.
    let bin_dir = work_dir_for(cli, &tcpstate).join("bin");
    fs::create_dir_all(&bin_dir)?;
    let original = tcpstate.clone();
    let tcpstate = copy_to(&tcpstate, &bin_dir)?;
    let loadgen = copy_to(&loadgen, &bin_dir)?;
    let target = target_dir_of(&original);
    let work = work_dir_for(cli, &original);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let rounds = cli.rounds.unwrap_or(if cli.smoke { 1 } else { 3 });
    let connections = cli
        .connections
        .unwrap_or(if cli.smoke { 300 } else { 100_000 });

    let idle_wait = Duration::from_secs(cli.idle_wait.unwrap_or(if cli.smoke { 0 } else { 600 }));
    // The runner itself stays off the tracer's CPU; it sleeps while the load runs.
    pin_self(cli.load_cpu)?;
    let (netns, sysctls) =
        runner::netns::create(&format!("tcpstate-bench-{}", std::process::id()))?;
    let (variants, skipped) = variants(cli, &tcpstate, &netns.path(), &work)?;
    let ctx = Ctx {
        cli,
        loadgen,
        netns: &netns,
        work: work.clone(),
        connections,
    };

    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut report = Report {
        title: if cli.smoke {
            "tcpstate benchmark (smoke run)".into()
        } else {
            "tcpstate benchmark: overhead on a connect/close workload".into()
        },
        meta: vec![
            ("date".into(), format_utc(now_secs())),
            (
                "machine".into(),
                format!(
                    "{} CPUs ({}), kernel {}",
                    ncpu,
                    cpu_model(),
                    uname_release()
                ),
            ),
            (
                "tcpstate".into(),
                format!(
                    "{} ({}, {} bytes, copied for the runs), commit {}",
                    original.display(),
                    cmd_output(&tcpstate.display().to_string(), &["--version"]).unwrap_or_default(),
                    fs::metadata(&tcpstate).map_or(0, |m| m.len()),
                    git_describe()
                ),
            ),
            (
                "load".into(),
                format!(
                    "{connections} connections per run (+1 stop connection), {rounds} rounds, \
                     variants alternating (order rotated each round); loopback 127.0.0.1:{} in \
                     network namespace `{}` ({}); client and server are separate processes \
                     pinned to CPU {}, the tracer to CPU {}",
                    cli.port,
                    netns.name(),
                    sysctls.join(", "),
                    cli.load_cpu,
                    cli.tracer_cpu
                ),
            ),
            (
                "load average at start".into(),
                loadavg
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ],
        variants: variants.iter().map(|v| v.info.clone()).collect(),
        skipped,
        ..Default::default()
    };
    if cli.bpf_stats {
        report.meta.push((
            "BPF stats".into(),
            "enabled during the load (`--bpf-stats`): every traced run pays for them".into(),
        ));
    }
    for (name, why) in &report.skipped {
        eprintln!("tcpstate-bench: skipping {name}: {why}");
    }

    for round in 0..rounds {
        for i in 0..variants.len() {
            interrupted()?;
            let v = &variants[(i + round) % variants.len()];
            let cpus = [cli.load_cpu, cli.tracer_cpu];
            let busy = if idle_wait.is_zero() {
                None
            } else {
                wait_idle(
                    &cpus,
                    cli.idle_threshold / 100.0,
                    cli.idle_net_rx,
                    idle_wait,
                )
                .err()
            };
            let mut r = run_one(&ctx, v, round);
            if let Some(b) = busy {
                let n = format!("machine busy before the run ({b})");
                r.note = Some(match r.note.take() {
                    Some(x) => format!("{n}; {x}"),
                    None => n,
                });
            }
            print_progress(&r, &v.info.label, round, rounds);
            report.runs.push(r);
            std::thread::sleep(Duration::from_millis(cli.settle_ms));
        }
    }
    interrupted()?;
    drop(netns);

    let criterion = cli
        .criterion_dir
        .clone()
        .unwrap_or_else(|| target.join("criterion"));
    report.micro = micro_benches(&criterion);
    let md = report.render();
    println!("\n{md}");
    if let Some(out) = &cli.out {
        if let Some(dir) = out.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
        let json = out.with_extension("json");
        fs::write(&json, serde_json::to_string_pretty(&report)?)?;
        println!(
            "tcpstate-bench: wrote {} and {}",
            out.display(),
            json.display()
        );
    }
    Ok(if cli.smoke {
        smoke_verdict(&report)
    } else {
        true
    })
}

/// `--work-dir`, else `<target>/bench` for the target directory holding `tcpstate`.
fn work_dir_for(cli: &Cli, tcpstate: &Path) -> PathBuf {
    cli.work_dir
        .clone()
        .unwrap_or_else(|| target_dir_of(tcpstate).join("bench"))
}

/// The target directory holding `<target>/<profile>/tcpstate` (`target` if it has none).
fn target_dir_of(tcpstate: &Path) -> PathBuf {
    tcpstate
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
}

fn copy_to(bin: &Path, dir: &Path) -> Result<PathBuf> {
    let dest = dir.join(bin.file_name().unwrap_or_default());
    let tmp = dest.with_extension("tmp");
    fs::copy(bin, &tmp).with_context(|| format!("copying {}", bin.display()))?;
    fs::rename(&tmp, &dest)?;
    Ok(dest)
}
