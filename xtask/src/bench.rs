//! `cargo xtask bench [--smoke] [--rounds N] [--connections N] [-- <tcpstate-bench args>]`:
//! setup (with the peer tracers unless `--smoke`), build the release tracer and the benchmark
//! (crate `bench/`), then run `target/release/tcpstate-bench`, which prints a markdown table
//! and writes it to `bench-results/latest.md` (`--smoke`: `target/bench/smoke.md`).
//!
//! `--smoke` is the short correctness run CI does from `cargo xtask test`: a few hundred
//! connections, one round, tcpstate only; it fails unless tcpstate delivered exactly the
//! events the load made. The full benchmark is not a test: run it by hand on a quiet machine.

use std::process::Command;

use anyhow::Result;

use crate::{build, setup, util};

pub const BENCH_PACKAGE: &str = "tcpstate-bench";
/// The full run's report, linked from the README.
pub const REPORT: &str = "bench-results/latest.md";

#[derive(clap::Args, Debug, Default)]
pub struct Options {
    /// Short correctness run (CI): ~300 connections, one round, no peers.
    #[arg(long)]
    pub smoke: bool,
    /// Rounds; each runs every variant once (default 3; smoke 1).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Connections per run (default 100000; smoke 300).
    #[arg(long)]
    pub connections: Option<u64>,
    /// More arguments for tcpstate-bench, after `--` (e.g. `-- --only tcpstate --bpf-stats`;
    /// `target/release/tcpstate-bench --help` lists them).
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn run(opts: &Options) -> Result<()> {
    if opts.smoke {
        // tcpstate only: no peer tracers.
        setup::ensure(&[setup::Part::Mounts])?;
    } else {
        setup::ensure(setup::Purpose::Bench.parts())?;
    }
    let tcpstate = build::build_user(&["--bins"])?;
    util::run(
        util::cargo()
            .args(["build", "--release", "-p", BENCH_PACKAGE])
            .arg("--bins"),
    )?;
    let mut cmd = Command::new(util::target_dir().join("release").join(BENCH_PACKAGE));
    cmd.current_dir(util::workspace_root())
        .arg("--tcpstate")
        .arg(&tcpstate)
        .arg("--out");
    if opts.smoke {
        cmd.arg(util::target_dir().join("bench").join("smoke.md"))
            .arg("--smoke");
    } else {
        cmd.arg(util::workspace_root().join(REPORT));
    }
    if let Some(n) = opts.rounds {
        cmd.arg("--rounds").arg(n.to_string());
    }
    if let Some(n) = opts.connections {
        cmd.arg("--connections").arg(n.to_string());
    }
    cmd.args(&opts.args);
    util::run(&mut cmd)
}
