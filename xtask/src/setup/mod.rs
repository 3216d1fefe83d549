//! `cargo xtask setup [--bench]`: installs what building and testing tcpstate needs on a fresh
//! Debian 12 machine, idempotently: every step first looks, installs only what is missing, and
//! prints one line saying what it found or did.
//!
//! 1. nightly's `rust-src` (for `-Z build-std=core`): rustup, else the offline tarball in
//!    `<repo>/../shared/toolchain/`.
//! 2. `bpf-linker` 0.13, built with `cargo install` against nightly's own libLLVM.
//! 3. Debian packages used by the tests ([`TEST_PACKAGES`]), and with `--bench` the peer
//!    tracers the benchmark compares against ([`BENCH_PACKAGES`]).
//!    And what the kernel matrix boots guests with ([`VM_PACKAGES`]).
//! 4. tracefs at /sys/kernel/tracing and bpffs at /sys/fs/bpf.
//! 5. The fleet parts (image, package, manifests, their tests): see [`crate::fleet`].

mod apt;
mod bpf_linker;
mod rust_src;

use std::{process::Command, time::Instant};

use anyhow::{Context as _, Result, bail};
use tcpstate_devsupport::mounts;

use crate::util::{self, run_captured, secs, step};
use apt::apt;
pub use bpf_linker::cargo_bin_dir;
use bpf_linker::ensure_bpf_linker;
use rust_src::{Nightly, ensure_rust_src, offline_dir};

/// Debian packages the integration tests use. The one place to add a test dependency.
/// graphviz: `--diagram` also writes SVG when `dot` is there, and the tests check it.
/// libbpf-tools: `tests/tests/integration/as_users_run_it.rs` compares tcpstate's kernel rows with what
/// its `tcpstates` records on the same traffic (the benchmark uses it too).
pub const TEST_PACKAGES: &[&str] = &[
    "nftables",
    "iproute2",
    "libcap2-bin",
    "bpftool",
    "strace",
    "graphviz",
    "libbpf-tools",
    // The `--top` screen is tested in a real terminal (tests/tests/integration/top.rs).
    "tmux",
];

/// Debian packages the kernel matrix (`cargo xtask vm-test`, [`crate::vm`]) uses: QEMU's
/// software emulation (installing it replaces the preinstalled qemu-utils 10.x with Debian's
/// 7.2, harmless), the static busybox of the guests' initramfs, `kmod` (depmod indexes the
/// unpacked kernel packages' modules; the guests' modprobe loads them on demand), and the
/// decompressors of vmlinuz and of 6.12's `.ko.xz` modules.
pub const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "xz-utils",
    "zstd",
];

/// Optional peer tracers for `cargo xtask bench`, installed by `setup --bench`.
/// One that apt cannot install is reported and skipped.
/// bcc compiles its programs against kernel headers: Debian's (split in -amd64 and -common) are
/// merged by the benchmark into a tree it hands to bcc as `BCC_KERNEL_SOURCE`.
/// (libbpf-tools, also compared, is a test package: [`TEST_PACKAGES`].)
pub const BENCH_PACKAGES: &[&str] = &["bpfcc-tools", "bpftrace", "linux-headers-amd64"];

/// The toolchain that builds the eBPF crate. Never name one that is not installed
/// (`RUSTUP_AUTO_INSTALL=0`).
pub const NIGHTLY: &str = "nightly";

/// Kernel filesystems: (step name, mount point, fstype, source).
const MOUNTS: &[(&str, &str, &str, &str)] = &[
    ("tracefs", "/sys/kernel/tracing", "tracefs", "nodev"),
    ("bpffs", "/sys/fs/bpf", "bpf", "bpf"),
];

#[derive(clap::Args, Debug, Default)]
pub struct Options {
    /// Also install the peer tracers the benchmark compares against.
    #[arg(long)]
    pub bench: bool,
}

/// Every setup step, in order.
pub fn run(opts: &Options) -> Result<()> {
    let start = Instant::now();
    toolchain()?;
    step("setup", "packages", || {
        apt("packages", TEST_PACKAGES, false)
    })?;
    step("setup", "vm packages", || {
        apt("vm packages", VM_PACKAGES, false)
    })?;
    if opts.bench {
        step("setup", "bench packages", || {
            apt("bench packages", BENCH_PACKAGES, true)
        })?;
    }
    for &(name, point, fstype, source) in MOUNTS {
        step("setup", name, || ensure_mount(point, fstype, source))?;
    }
    step("setup", "fleet packages", || {
        apt("fleet packages", crate::fleet::FLEET_PACKAGES, false)
    })?;
    step(
        "setup",
        "kubernetes-validate",
        crate::fleet::ensure_kubernetes_validate,
    )?;
    step("setup", "cargo-deb", crate::fleet::ensure_cargo_deb)?;
    println!("setup: done ({})", secs(start.elapsed()));
    Ok(())
}

/// Only what building the eBPF object needs (no root required when it is all present).
pub fn toolchain() -> Result<()> {
    step("setup", "rust-src (nightly)", || {
        let nightly = Nightly::query()?;
        ensure_rust_src(&nightly, &offline_dir(), true)
    })?;
    step("setup", "bpf-linker", ensure_bpf_linker)
}

// ---------------------------------------------------------------------------------------------
// kernel filesystems

fn mounted(point: &str, fstype: &str) -> Result<bool> {
    mounts::is_mounted(point, fstype).context("cannot read /proc/self/mounts")
}

fn ensure_mount(point: &str, fstype: &str, source: &str) -> Result<String> {
    if mounted(point, fstype)? {
        return Ok(format!("already mounted at {point}"));
    }
    let mut cmd = Command::new("mount");
    cmd.args(["-t", fstype, source, point]);
    if !util::is_root() {
        bail!(
            "{fstype} is not mounted at {point}; as root: {}",
            util::display(&cmd)
        );
    }
    run_captured(&mut cmd)?;
    if !mounted(point, fstype)? {
        bail!(
            "`{}` succeeded but {point} is still not {fstype}",
            util::display(&cmd)
        );
    }
    Ok(format!("mounted at {point}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{fs, path::PathBuf};

    /// A fresh scratch directory for one test.
    pub fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
