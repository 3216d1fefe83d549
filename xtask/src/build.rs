//! `cargo xtask build-ebpf` and `cargo xtask build`.

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::Stdio,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{
    setup,
    util::{self, display},
};

/// The eBPF crate, built for the kernel by nightly.
pub const EBPF_PACKAGE: &str = "tcpstate-ebpf";
/// The userspace crate; its build.rs builds the eBPF crate again with aya-build and embeds it.
pub const USER_PACKAGE: &str = "tcpstate-user";
pub const BPF_TARGET: &str = "bpfel-unknown-none";

/// Rust flags aya-build passes to the eBPF build (separated by 0x1f as in
/// `CARGO_ENCODED_RUSTFLAGS`).
pub fn ebpf_rustflags() -> OsString {
    let arch = match std::env::consts::ARCH {
        a if a.starts_with("riscv64") => "riscv64",
        a => a,
    };
    format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf").into()
}

/// Builds only the eBPF object, the way aya-build does, and reports its path and size.
/// Quiet unless it fails: cargo's progress lines are kept back and printed, with everything
/// else, only on failure (a compiler warning is still shown on success).
pub fn build_ebpf() -> Result<()> {
    setup::ensure(setup::Purpose::Run.parts())?;
    let mut cmd = std::process::Command::new("rustup");
    cmd.current_dir(util::workspace_root())
        .args(["run", setup::NIGHTLY, "cargo", "build", "-p", EBPF_PACKAGE])
        .args(["--bins", "--release", "--target", BPF_TARGET])
        .args([
            "-Z",
            "build-std=core",
            "--message-format=json-render-diagnostics",
        ])
        .env("CARGO_ENCODED_RUSTFLAGS", ebpf_rustflags())
        // As aya-build: make sure nightly's own rustc is used.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!("xtask: $ {}", display(&cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}`", display(&cmd)))?;
    let stderr = child.stderr.take().expect("piped");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let stdout = child.stdout.take().expect("piped");
    let mut objects = Vec::new();
    // Everything that is not an artifact message (e.g. a build script's output).
    let mut other = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(msg) => {
                if msg["reason"] == "compiler-artifact"
                    && let Some(exe) = msg["executable"].as_str()
                {
                    objects.push(PathBuf::from(exe));
                }
            }
            Err(_) => other.push(line),
        }
    }
    let status = child.wait()?;
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        for line in &other {
            println!("{line}");
        }
        eprint!("{stderr}");
        bail!("`{}` failed ({status})", display(&cmd));
    }
    let diagnostics: Vec<&str> = stderr
        .lines()
        .filter(|l| !tcpstate_devsupport::cargo::is_status(l))
        .collect();
    if diagnostics.iter().any(|l| !l.trim().is_empty()) {
        eprintln!("{}", diagnostics.join("\n"));
    }
    if objects.is_empty() {
        bail!("cargo built no binary for {EBPF_PACKAGE}");
    }
    for obj in objects {
        let size = obj
            .metadata()
            .with_context(|| format!("cannot stat {}", obj.display()))?
            .len();
        println!("build-ebpf: {} ({size} bytes)", obj.display());
    }
    Ok(())
}

/// `cargo build --release -p tcpstate-user` (after setup); returns the binary's path.
pub fn build_user(extra: &[&str]) -> Result<PathBuf> {
    util::run(
        util::cargo()
            .args(["build", "--release", "-p", USER_PACKAGE])
            .args(extra),
    )?;
    let bin = util::tcpstate_bin();
    let size = bin
        .metadata()
        .map_err(|e| anyhow!("{USER_PACKAGE} built but {} is missing: {e}", bin.display()))?
        .len();
    println!("build: {} ({size} bytes)", bin.display());
    Ok(bin)
}

/// Setup for building and running only (the toolchain parts: [`setup::Purpose::Run`]), then
/// the release binary. Commands that need more set it up themselves, then call [`build_user`].
pub fn build() -> Result<PathBuf> {
    setup::ensure(setup::Purpose::Run.parts())?;
    build_user(&[])
}

#[cfg(test)]
mod tests {

    #[test]
    fn rustflags_match_aya_build() {
        let flags = super::ebpf_rustflags().into_string().unwrap();
        let flags: Vec<&str> = flags.split('\x1f').collect();
        assert_eq!(flags.len(), 3);
        assert!(flags[0].starts_with("--cfg=bpf_target_arch=\""));
        assert_eq!(&flags[1..], ["-Cdebuginfo=2", "-Clink-arg=--btf"]);
    }
}
