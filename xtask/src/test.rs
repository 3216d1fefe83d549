//! `cargo xtask test [--no-lint] [-- <cargo test args>]`: setup, build the release binary, run
//! every test of the default members against it, the kernel matrix (`vm-test`), then lint.
//! cargo test's own output (and its summary lines) goes straight to our stdout.
//!
//! `cargo xtask test --fast [-- <cargo test args>]`: the unit tests only (every default
//! member's lib and bin tests except the end-to-end crate), debug profile, no root, no lint,
//! and only the toolchain setup (building tcpstate-user builds the eBPF object).

use std::time::Instant;

use anyhow::{Result, bail};

use crate::{
    build, setup,
    util::{self, secs},
};

/// The end-to-end crate (`tests/`), which `--fast` leaves out, and the eBPF crate, which only
/// builds for the bpf target.
const NOT_FAST: &[&str] = &["tcpstate-tests", crate::build::EBPF_PACKAGE];

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    pub no_lint: bool,
    /// Unit tests only (lib and bin tests of every crate but the end-to-end one): no root, no
    /// test or fleet packages, no lint; for changes to logic.
    #[arg(long, conflicts_with = "no_lint")]
    pub fast: bool,
    /// Extra arguments for `cargo test --release` (e.g. a test name filter).
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// `cargo test` of the unit tests (`--fast`).
fn fast_command(extra: &[String]) -> std::process::Command {
    let mut cmd = util::cargo();
    cmd.args(["test", "--workspace", "--lib", "--bins"]);
    for p in NOT_FAST {
        cmd.args(["--exclude", p]);
    }
    cmd.args(extra);
    cmd
}

fn run_fast(opts: &Options) -> Result<()> {
    let start = Instant::now();
    setup::ensure(setup::Purpose::Run.parts())?;
    util::run(&mut fast_command(&opts.args))
        .map_err(|e| anyhow::anyhow!("test --fast FAILED ({}): {e:#}", secs(start.elapsed())))?;
    println!(
        "xtask test --fast: unit tests ok ({})",
        secs(start.elapsed())
    );
    Ok(())
}

pub fn run(opts: &Options) -> Result<()> {
    if opts.fast {
        return run_fast(opts);
    }
    let start = Instant::now();
    setup::ensure(setup::Purpose::Test.parts())?;
    let bin = build::build_user(&["--bins"])?;
    // The fleet tests install this package (a few seconds to make).
    let deb = crate::deb::package(&bin)?;
    // The as-users-run-it storm drives the bench's load generator from
    // target/release/loadgen, which `cargo test` does not build.
    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "tcpstate-bench",
        "--bin",
        "loadgen",
    ]))?;

    // Run every phase even if one fails, so one CI run reports all problems.
    let mut failed = Vec::new();
    let mut phase = |name: &'static str, cmd: &mut std::process::Command| {
        let t = Instant::now();
        match util::run(cmd) {
            Ok(()) => println!("xtask test: {name} ok ({})", secs(t.elapsed())),
            Err(e) => {
                eprintln!("xtask test: {name} FAILED: {e:#}");
                failed.push(name);
            }
        }
    };
    phase(
        "cargo test",
        util::cargo()
            // Every test binary runs even when one fails: one CI run reports
            // all problems.
            .args(["test", "--release", "--no-fail-fast"])
            .args(&opts.args)
            .env("TCPSTATE_BIN", &bin)
            .env("TCPSTATE_DEB", &deb)
            .env("CONTAINERS_CONF", crate::fleet::containers_conf()?),
    );
    if opts.args.is_empty() {
        // The kernel matrix: the same release binary and a subset of the same tests in QEMU
        // guests of Debian's 6.1 and 6.12 kernels (the host's kernel ran them all above).
        phase(
            "kernel matrix (vm-test)",
            util::cargo().args(["xtask", "vm-test"]),
        );
        // One short run of the benchmark so it cannot rot; the full benchmark is not a test.
        phase(
            "bench smoke",
            util::cargo().args(["xtask", "bench", "--smoke"]),
        );
        // A short bounded fuzz of the decoder and the format-file parser
        // (`cargo xtask fuzz --seconds 600` for a long one).
        phase(
            "fuzz smoke",
            util::cargo().args(["xtask", "fuzz", "--seconds", "20"]),
        );
    }
    if !opts.no_lint {
        phase(
            "cargo fmt",
            util::cargo().args(["fmt", "--all", "--", "--check"]),
        );
        phase(
            "cargo clippy",
            util::cargo().args([
                "clippy",
                "--release",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        );
        // The eBPF crate only builds for the bpf target, so it is linted there.
        phase(
            "cargo clippy (eBPF, bpf target)",
            std::process::Command::new("rustup")
                .current_dir(util::workspace_root())
                .args(["run", crate::setup::NIGHTLY, "cargo", "clippy"])
                .args(["-p", crate::build::EBPF_PACKAGE, "--release"])
                .args(["--target", crate::build::BPF_TARGET, "-Z", "build-std=core"])
                .args(["--", "-D", "warnings"])
                .env("CARGO_ENCODED_RUSTFLAGS", crate::build::ebpf_rustflags())
                .env_remove("RUSTC")
                .env_remove("RUSTC_WORKSPACE_WRAPPER"),
        );
    }
    if !failed.is_empty() {
        bail!(
            "test FAILED: {} ({})",
            failed.join(", "),
            secs(start.elapsed())
        );
    }
    println!("xtask test: all ok ({})", secs(start.elapsed()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_runs_unit_tests_without_the_end_to_end_crate() {
        let cmd = fast_command(&["decode".into()]);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "test",
                "--workspace",
                "--lib",
                "--bins",
                "--exclude",
                "tcpstate-tests",
                "--exclude",
                "tcpstate-ebpf",
                "decode",
            ]
        );
    }
}
