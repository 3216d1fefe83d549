//! Setup by need: every command installs what *it* uses, idempotently (each step first looks,
//! installs only what is missing, and prints one line saying what it found or did).
//!
//! Always, for any build ([`toolchain`]):
//! 1. [`BUILD_TOOLS`]: the host C linker `cc` (gcc, libc6-dev) and `xz` (unpacks the offline
//!    rust-src tarball); checked by looking for the tools, so usually no apt at all.
//! 2. nightly's `rust-src` (for `-Z build-std=core`): rustup, else the offline tarball in
//!    `<repo>/../shared/toolchain/`.
//! 3. `bpf-linker` 0.13, built with `cargo install` against nightly's own libLLVM.
//!
//! That is all `build`, `build-ebpf`, `run`, `install`, `dist` and `test --fast` need: the
//! tracer mounts tracefs itself when it is not mounted (`tcpstate-user/src/tracefs.rs`) and
//! pins nothing in bpffs. The other [`Part`]s are set up by the commands that use them
//! ([`Purpose::parts`]): the tests' Debian packages ([`TEST_PACKAGES`]), the kernel matrix's
//! ([`VM_PACKAGES`]), the benchmark's peer tracers ([`BENCH_PACKAGES`]), tracefs and bpffs
//! mounts (for the tests and the peer tracers), and the fleet parts ([`crate::fleet`]).
//!
//! `cargo xtask setup` sets up everything (`--for PURPOSE` only what that purpose needs).

mod apt;
mod bpf_linker;
mod rust_src;

use std::{process::Command, time::Instant};

use anyhow::{Context as _, Result, bail};
use tcpstate_devsupport::mounts;

use crate::util::{self, run_captured, secs, step, which};
use apt::apt;
pub use bpf_linker::cargo_bin_dir;
use bpf_linker::ensure_bpf_linker;
use rust_src::{Nightly, ensure_rust_src, offline_dir};

/// What every build needs from Debian: (tool looked for on PATH, packages that provide it).
/// `cc` links the host binaries (build scripts, the loader); `xz` unpacks the offline rust-src
/// tarball. Looked up by tool, so a machine that has them some other way needs no apt.
pub const BUILD_TOOLS: &[(&str, &[&str])] = &[("cc", &["gcc", "libc6-dev"]), ("xz", &["xz-utils"])];

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

/// Peer tracers for `cargo xtask bench` (not `--smoke`, which runs tcpstate only), and with
/// `setup --bench`. Optional: one that apt cannot install is reported and skipped (the
/// benchmark skips a peer that is not there).
/// bcc compiles its programs against kernel headers: Debian's (split in -amd64 and -common) are
/// merged by the benchmark into a tree it hands to bcc as `BCC_KERNEL_SOURCE`.
/// libbpf-tools is also a test package ([`TEST_PACKAGES`]).
pub const BENCH_PACKAGES: &[&str] = &[
    "libbpf-tools",
    "bpfcc-tools",
    "bpftrace",
    "linux-headers-amd64",
];

/// What `cargo xtask compare` runs besides tcpstate: `ip` (a network namespace), `ss` (the
/// poller it measures) and `nft`.
pub const COMPARE_PACKAGES: &[&str] = &["iproute2", "nftables"];

/// The toolchain that builds the eBPF crate. Never name one that is not installed
/// (`RUSTUP_AUTO_INSTALL=0`).
pub const NIGHTLY: &str = "nightly";

/// Kernel filesystems: (step name, mount point, fstype, source).
const MOUNTS: &[(&str, &str, &str, &str)] = &[
    ("tracefs", "/sys/kernel/tracing", "tracefs", "nodev"),
    ("bpffs", "/sys/fs/bpf", "bpf", "bpf"),
];

/// One setup step beyond the [`toolchain`] (which every build needs and always comes first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// [`TEST_PACKAGES`].
    TestPackages,
    /// [`VM_PACKAGES`].
    VmPackages,
    /// [`BENCH_PACKAGES`] (optional ones).
    BenchPackages,
    /// [`COMPARE_PACKAGES`].
    ComparePackages,
    /// tracefs at /sys/kernel/tracing and bpffs at /sys/fs/bpf ([`MOUNTS`]).
    Mounts,
    /// Everything the fleet tests use: [`crate::fleet::FLEET_PACKAGES`].
    FleetPackages,
    /// podman, buildah, runc: [`crate::fleet::IMAGE_PACKAGES`].
    ImagePackages,
    /// dpkg-dev (cargo-deb's `$auto` depends): [`crate::fleet::DEB_PACKAGES`].
    DebPackages,
    /// `kubernetes-validate` from PyPI.
    KubernetesValidate,
    /// `cargo-deb` from crates.io.
    CargoDeb,
}

/// What a command sets up (`cargo xtask setup --for PURPOSE` does the same by hand).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Purpose {
    /// Build and run the tracer (`build`, `build-ebpf`, `run`, `install`, `dist`,
    /// `test --fast`): the toolchain parts only.
    Run,
    /// `cargo xtask test`: the test, kernel-matrix and fleet packages, kubernetes-validate,
    /// cargo-deb, tracefs and bpffs.
    Test,
    /// `cargo xtask bench`: the peer tracers, tracefs and bpffs.
    Bench,
    /// `cargo xtask image`: podman, buildah, runc.
    Image,
    /// `cargo xtask deb`: cargo-deb, dpkg-dev.
    Deb,
    /// `cargo xtask vm-test`: the kernel matrix's and the tests' packages, tracefs, bpffs.
    Vm,
    /// Everything `test` needs (the default of `cargo xtask setup`).
    All,
}

impl Purpose {
    pub fn parts(self) -> &'static [Part] {
        use Part::*;
        match self {
            Purpose::Run => &[],
            Purpose::Test | Purpose::All => &[
                TestPackages,
                VmPackages,
                Mounts,
                FleetPackages,
                KubernetesValidate,
                CargoDeb,
            ],
            Purpose::Bench => &[BenchPackages, Mounts],
            Purpose::Image => &[ImagePackages],
            Purpose::Deb => &[DebPackages, CargoDeb],
            Purpose::Vm => &[TestPackages, VmPackages, Mounts],
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Set up only what this purpose needs (default: everything `cargo xtask test` needs).
    #[arg(long = "for", value_enum, default_value = "all")]
    pub purpose: Purpose,
    /// Also install the peer tracers the benchmark compares against.
    #[arg(long)]
    pub bench: bool,
}

/// `cargo xtask setup`.
pub fn run(opts: &Options) -> Result<()> {
    let mut parts = opts.purpose.parts().to_vec();
    if opts.bench && !parts.contains(&Part::BenchPackages) {
        parts.push(Part::BenchPackages);
    }
    ensure(&parts)
}

/// The toolchain, then each of `parts` in order; one line per step, then `setup: done`.
pub fn ensure(parts: &[Part]) -> Result<()> {
    let start = Instant::now();
    toolchain()?;
    for &part in parts {
        ensure_part(part)?;
    }
    println!("setup: done ({})", secs(start.elapsed()));
    Ok(())
}

impl Part {
    /// The Debian packages of an apt step: (step name, packages, optional).
    fn apt(self) -> Option<(&'static str, &'static [&'static str], bool)> {
        Some(match self {
            Part::TestPackages => ("packages", TEST_PACKAGES, false),
            Part::VmPackages => ("vm packages", VM_PACKAGES, false),
            Part::BenchPackages => ("bench packages", BENCH_PACKAGES, true),
            Part::ComparePackages => ("compare packages", COMPARE_PACKAGES, false),
            Part::FleetPackages => ("fleet packages", crate::fleet::FLEET_PACKAGES, false),
            Part::ImagePackages => ("image packages", crate::fleet::IMAGE_PACKAGES, false),
            Part::DebPackages => ("deb packages", crate::fleet::DEB_PACKAGES, false),
            Part::Mounts | Part::KubernetesValidate | Part::CargoDeb => return None,
        })
    }
}

fn ensure_part(part: Part) -> Result<()> {
    if let Some((name, packages, optional)) = part.apt() {
        return step("setup", name, || apt(name, packages, optional));
    }
    match part {
        Part::Mounts => {
            for &(name, point, fstype, source) in MOUNTS {
                step("setup", name, || ensure_mount(point, fstype, source))?;
            }
            Ok(())
        }
        Part::KubernetesValidate => step(
            "setup",
            "kubernetes-validate",
            crate::fleet::ensure_kubernetes_validate,
        ),
        Part::CargoDeb => step("setup", "cargo-deb", crate::fleet::ensure_cargo_deb),
        _ => unreachable!("{part:?} is an apt step"),
    }
}

/// What every build needs: [`BUILD_TOOLS`], nightly's rust-src and bpf-linker (no root
/// required when it is all present).
pub fn toolchain() -> Result<()> {
    step("setup", "build tools", ensure_build_tools)?;
    step("setup", "rust-src (nightly)", || {
        let nightly = Nightly::query()?;
        ensure_rust_src(&nightly, &offline_dir(), true)
    })?;
    step("setup", "bpf-linker", ensure_bpf_linker)
}

fn ensure_build_tools() -> Result<String> {
    let mut missing: Vec<&'static str> = Vec::new();
    for &(tool, packages) in BUILD_TOOLS {
        if which(tool).is_none() {
            missing.extend(packages);
        }
    }
    let tools: Vec<&str> = BUILD_TOOLS.iter().map(|&(t, _)| t).collect();
    if missing.is_empty() {
        return Ok(format!("found {}", tools.join(" ")));
    }
    // `apt` only installs what dpkg does not already list.
    apt("build tools", &missing, false)
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

    use super::{Part, Purpose};

    fn packages(parts: &[Part]) -> Vec<&'static str> {
        parts
            .iter()
            .filter_map(|p| p.apt())
            .flat_map(|(_, list, _)| list.to_vec())
            .collect()
    }

    /// `cargo xtask setup` (all) sets up whatever any command does (the peer tracers only with
    /// `--bench`), and building or running needs nothing but the toolchain.
    #[test]
    fn setup_all_covers_every_purpose() {
        use clap::ValueEnum as _;
        let all = Purpose::All.parts();
        let all_packages = packages(all);
        for &purpose in Purpose::value_variants() {
            for &part in purpose.parts() {
                if part == Part::BenchPackages {
                    continue;
                }
                for p in packages(&[part]) {
                    assert!(all_packages.contains(&p), "{purpose:?}: {p}");
                }
                if part.apt().is_none() {
                    assert!(all.contains(&part), "{purpose:?}: {part:?}");
                }
            }
        }
        let compare = packages(&[Part::ComparePackages]);
        assert!(compare.iter().all(|p| all_packages.contains(p)));
        assert!(Purpose::Run.parts().is_empty());
        assert_eq!(Purpose::Test.parts(), all);
    }

    /// A fresh scratch directory for one test.
    pub fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
