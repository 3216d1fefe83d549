//! `cargo xtask fuzz [--seconds N] [--target NAME]...`: a bounded cargo-fuzz run of every
//! target in `fuzz/`: `decode` (ring-buffer records through every renderer) and
//! `layout` (tracepoint format files).
//!
//! Steps, each printed: the toolchain part of setup (the targets link tcpstate-user, whose
//! build script compiles the eBPF object), `cargo-fuzz` installed if missing (pinned, with
//! `cargo install --locked`; only this subcommand needs it, so plain setup stays lean), then
//! per target `cargo +nightly fuzz run -O -a -s none TARGET fuzz/corpus/TARGET
//! fuzz/seeds/TARGET -- -max_total_time=N` (`-a`: debug assertions, so arithmetic overflow
//! panics too). New inputs go to `fuzz/corpus/` (git-ignored); a crash fails the
//! command and leaves its input in `fuzz/artifacts/TARGET/` with the line to replay it.

use std::{process::Command, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::{
    setup::{self, NIGHTLY},
    util::{self, secs, step},
};

/// Every target in fuzz/Cargo.toml.
pub const TARGETS: &[&str] = &["decode", "layout"];

/// The cargo-fuzz release the targets were written against.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Seconds of fuzzing per target (after the build).
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Only this target (repeatable); default: all of them.
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// cargo fuzz's sanitizer. `none` by default: the code under test is safe Rust (but for
    /// one bounds-checked `read_unaligned`), and without ASan it runs ~5x more inputs.
    #[arg(long, default_value = "none", value_parser = ["none", "address", "leak", "memory", "thread"])]
    pub sanitizer: String,
}

/// `cargo +nightly ...` through rustup, whatever toolchain runs xtask.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", NIGHTLY, "cargo"])
        .current_dir(util::workspace_root())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTFLAGS");
    cmd
}

fn cargo_fuzz_version() -> Option<String> {
    let out = nightly_cargo().args(["fuzz", "--version"]).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn ensure_cargo_fuzz() -> Result<String> {
    if let Some(v) = cargo_fuzz_version() {
        return Ok(format!("found {v}"));
    }
    util::run_captured(util::cargo().args([
        "install",
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
        "--locked",
    ]))?;
    let v =
        cargo_fuzz_version().context("cargo fuzz does not run after cargo install cargo-fuzz")?;
    Ok(format!("installed {v}"))
}

pub fn run(opts: &Options) -> Result<()> {
    let start = Instant::now();
    setup::toolchain()?;
    step("fuzz", "cargo-fuzz", ensure_cargo_fuzz)?;
    let targets: Vec<&str> = if opts.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in &opts.targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!("unknown fuzz target {t:?}; targets: {}", TARGETS.join(", "));
            }
        }
        opts.targets.iter().map(String::as_str).collect()
    };
    let fuzz = util::workspace_root().join("fuzz");
    for &target in &targets {
        let corpus = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        let t = Instant::now();
        util::run(
            nightly_cargo()
                .args(["fuzz", "run", "--fuzz-dir"])
                .arg(&fuzz)
                .args(["-O", "-a", "-s", &opts.sanitizer, target])
                .arg(&corpus)
                .arg(fuzz.join("seeds").join(target))
                .arg("--")
                .arg(format!("-max_total_time={}", opts.seconds))
                .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"]),
        )
        .with_context(|| {
            format!(
                "fuzz target `{target}` failed; the input is in fuzz/artifacts/{target}/ \
                 (replay: cargo +nightly fuzz run -O -a -s {} {target} \
                 fuzz/artifacts/{target}/<file>)",
                opts.sanitizer
            )
        })?;
        println!("fuzz: {target}: ok ({})", secs(t.elapsed()));
    }
    println!(
        "fuzz: {} targets, {} s each: ok ({})",
        targets.len(),
        opts.seconds,
        secs(start.elapsed())
    );
    Ok(())
}
