//! `cargo xtask setup [--bench]`: installs what building and testing tcpstate needs on a fresh
//! Debian 12 machine, idempotently: every step first looks, installs only what is missing, and
//! prints one line saying what it found or did.
//!
//! 1. nightly's `rust-src` (for `-Z build-std=core`): rustup, else the offline tarball in
//!    `<repo>/../shared/toolchain/`.
//! 2. `bpf-linker` 0.13, built with `cargo install` against nightly's own libLLVM.
//! 3. Debian packages used by the tests ([`TEST_PACKAGES`]), and with `--bench` the peer
//!    tracers the benchmark compares against ([`BENCH_PACKAGES`]).
//! 4. tracefs at /sys/kernel/tracing and bpffs at /sys/fs/bpf.
//! 5. The fleet parts (image, package, manifests, their tests): see [`crate::fleet`].

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::util::{self, run_captured, secs, step, which};

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

pub const BPF_LINKER_VERSION: &str = "0.13.0";

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
// nightly rust-src

/// What we need to know about the installed nightly toolchain.
pub struct Nightly {
    pub sysroot: PathBuf,
    /// `commit-date` from `rustc -vV`, e.g. `2026-05-19`; names the offline tarball.
    pub commit_date: String,
}

impl Nightly {
    pub fn query() -> Result<Self> {
        let sysroot = nightly_rustc(&["--print", "sysroot"])?;
        let version = nightly_rustc(&["-vV"])?;
        let commit_date = version
            .lines()
            .find_map(|l| l.strip_prefix("commit-date: "))
            .unwrap_or("unknown")
            .trim()
            .to_string();
        Ok(Self {
            sysroot: PathBuf::from(sysroot.trim()),
            commit_date,
        })
    }
}

/// Runs `rustc +nightly <args>` and returns its stdout.
fn nightly_rustc(args: &[&str]) -> Result<String> {
    let out = Command::new("rustc")
        .arg(format!("+{NIGHTLY}"))
        .args(args)
        .output()
        .context("cannot run `rustc` (is rustup installed and on PATH?)")?;
    if !out.status.success() {
        bail!(
            "the `{NIGHTLY}` toolchain is not usable (see `rustup toolchain list`); the eBPF \
             crate is built with it:\n{}",
            util::tail(&out, 10)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `<repo>/../shared/toolchain`: offline copies for machines that cannot reach the Rust dist
/// server.
pub fn offline_dir() -> PathBuf {
    util::repo_root().join("../shared/toolchain")
}

pub fn rust_src_present(sysroot: &Path) -> bool {
    sysroot
        .join("lib/rustlib/src/rust/library/core/src/lib.rs")
        .is_file()
}

pub fn rust_src_tarball_name(commit_date: &str) -> String {
    format!("rust-src-{NIGHTLY}-{commit_date}.src-only.tar.xz")
}

/// The offline tarball for nightly's `commit_date`; failing that, the only
/// `rust-src-nightly-*.src-only.tar.xz` there is.
pub fn find_rust_src_tarball(offline_dir: &Path, commit_date: &str) -> Option<PathBuf> {
    let exact = offline_dir.join(rust_src_tarball_name(commit_date));
    if exact.is_file() {
        return Some(exact);
    }
    let prefix = format!("rust-src-{NIGHTLY}-");
    let mut found: Vec<PathBuf> = fs::read_dir(offline_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".src-only.tar.xz")
        })
        .map(|e| e.path())
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

/// rustup's `error:` line and its innermost cause, e.g. `error: component download failed
/// for rust-src: Connection refused (os error 111)`.
pub fn rustup_error_summary(stderr: &str) -> String {
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("rustup failed")
        .trim();
    let cause = stderr
        .lines()
        .take_while(|l| !l.starts_with("Stack backtrace"))
        .filter_map(|l| {
            let (n, rest) = l.trim().split_once(": ")?;
            n.parse::<u32>().ok().map(|_| rest.trim())
        })
        .last();
    match cause {
        Some(c) => format!("{error}: {c}"),
        None => error.to_string(),
    }
}

/// Makes sure nightly's sysroot holds rust-src: rustup first (if `try_rustup`), then the offline
/// tarball for this exact nightly from `offline_dir`.
pub fn ensure_rust_src(nightly: &Nightly, offline_dir: &Path, try_rustup: bool) -> Result<String> {
    let sysroot = &nightly.sysroot;
    if rust_src_present(sysroot) {
        return Ok(format!("present in {}", sysroot.display()));
    }
    let rustup_error = if try_rustup {
        let mut cmd = Command::new("rustup");
        cmd.args(["component", "add", "rust-src", "--toolchain", NIGHTLY])
            .env("RUST_BACKTRACE", "0");
        match cmd.output() {
            Ok(out) if out.status.success() && rust_src_present(sysroot) => {
                return Ok(format!("installed with `{}`", util::display(&cmd)));
            }
            Ok(out) if out.status.success() => {
                "rustup says it is installed, but library/core is missing".to_string()
            }
            Ok(out) => rustup_error_summary(&String::from_utf8_lossy(&out.stderr)),
            Err(e) => format!("cannot run rustup: {e}"),
        }
    } else {
        "not tried".to_string()
    };
    let Some(tarball) = find_rust_src_tarball(offline_dir, &nightly.commit_date) else {
        bail!(
            "rust-src is missing for {NIGHTLY} ({}); `rustup component add rust-src --toolchain \
             {NIGHTLY}` failed ({rustup_error}), and there is no offline copy at {}",
            sysroot.display(),
            offline_dir
                .join(rust_src_tarball_name(&nightly.commit_date))
                .display()
        );
    };
    extract_rust_src(&tarball, sysroot)?;
    if !rust_src_present(sysroot) {
        bail!(
            "unpacked {} but {} still has no library/core",
            tarball.display(),
            sysroot.display()
        );
    }
    Ok(format!(
        "rustup failed ({rustup_error}); unpacked offline copy {} into {}",
        tarball.display(),
        sysroot.display()
    ))
}

/// The tarball holds `src/rust/...`, i.e. the contents of `<sysroot>/lib/rustlib`.
pub fn extract_rust_src(tarball: &Path, sysroot: &Path) -> Result<()> {
    let dest = sysroot.join("lib/rustlib");
    fs::create_dir_all(&dest).with_context(|| format!("cannot create {}", dest.display()))?;
    run_captured(
        Command::new("tar")
            .arg("-C")
            .arg(&dest)
            .args(["--no-same-owner", "-xJf"])
            .arg(tarball),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// bpf-linker

/// The version `bpf-linker --version` reports, if it runs.
pub fn bpf_linker_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_bpf_linker_version(&String::from_utf8_lossy(&out.stdout))
}

/// `bpf-linker 0.13.0` -> `0.13.0`.
pub fn parse_bpf_linker_version(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    (words.next()? == "bpf-linker").then_some(())?;
    words.next().map(str::to_string)
}

/// Same major.minor as [`BPF_LINKER_VERSION`].
pub fn bpf_linker_version_ok(version: &str) -> bool {
    let want = BPF_LINKER_VERSION.rsplit_once('.').map_or("", |(mm, _)| mm);
    version
        .strip_prefix(want)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Where `cargo install` puts binaries: `$CARGO_INSTALL_ROOT/bin`, `$CARGO_HOME/bin` or
/// `~/.cargo/bin`.
pub fn cargo_bin_dir() -> PathBuf {
    let env = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("CARGO_INSTALL_ROOT")
        .or_else(|| env("CARGO_HOME"))
        .or_else(|| env("HOME").map(|h| h.join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// Finds rustc's own shared LLVM in `<sysroot>/lib`: `libLLVM-22-rust-1.97.0-nightly.so` gives
/// (`LLVM-22-rust-1.97.0-nightly`, 22).
pub fn find_llvm_dylib(libdir: &Path) -> Result<(String, u32)> {
    let entries =
        fs::read_dir(libdir).with_context(|| format!("cannot list {}", libdir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|f| Some(f.strip_prefix("lib")?.strip_suffix(".so")?.to_string()))
        .filter(|n| n.starts_with("LLVM-"))
        .collect();
    names.sort();
    let name = names
        .pop()
        .ok_or_else(|| anyhow!("no libLLVM-*.so in {}", libdir.display()))?;
    let major = name["LLVM-".len()..]
        .split(['-', '.'])
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| anyhow!("cannot read the LLVM major version from lib{name}.so"))?;
    Ok((name, major))
}

fn ensure_bpf_linker() -> Result<String> {
    let on_path = which("bpf-linker");
    let reason = match &on_path {
        Some(p) => match bpf_linker_version(p) {
            Some(v) if bpf_linker_version_ok(&v) => {
                return Ok(format!("found {v} at {}", p.display()));
            }
            Some(v) => format!("{} is version {v}", p.display()),
            None => format!("{} does not run", p.display()),
        },
        None => "not on PATH".to_string(),
    };
    let installed = cargo_bin_dir().join("bpf-linker");
    if on_path.as_deref() != Some(installed.as_path())
        && let Some(v) = bpf_linker_version(&installed).filter(|v| bpf_linker_version_ok(v))
    {
        util::prepend_path(installed.parent().expect("has a parent"))?;
        return Ok(format!(
            "found {v} at {} ({reason}; put its directory first on PATH)",
            installed.display()
        ));
    }

    let nightly = Nightly::query()?;
    let libdir = nightly.sysroot.join("lib");
    let (llvm, major) = find_llvm_dylib(&libdir)?;
    let mut cmd = util::cargo();
    cmd.args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--force",
        "--no-default-features",
        "--features",
        &format!("llvm-{major},no-llvm-linking"),
    ]);
    let libdir = libdir.display();
    cmd.env(
        "RUSTFLAGS",
        format!("-L native={libdir} -l dylib={llvm} -C link-arg=-Wl,-rpath,{libdir}"),
    )
    .env_remove("CARGO_ENCODED_RUSTFLAGS");
    println!(
        "setup: bpf-linker: {reason}; building it against {NIGHTLY}'s lib{llvm}.so (about a \
         minute): {}",
        util::display(&cmd)
    );
    run_captured(&mut cmd)?;
    let version = bpf_linker_version(&installed)
        .ok_or_else(|| anyhow!("{} does not run after cargo install", installed.display()))?;
    if !bpf_linker_version_ok(&version) {
        bail!("{} is {version} after cargo install", installed.display());
    }
    if which("bpf-linker").as_deref() != Some(installed.as_path()) {
        util::prepend_path(installed.parent().expect("has a parent"))?;
    }
    Ok(format!("installed {version} at {}", installed.display()))
}

// ---------------------------------------------------------------------------------------------
// Debian packages

pub fn dpkg_installed(package: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .context("cannot run dpkg-query: this setup expects Debian 12")?;
    Ok(out.status.success() && parse_dpkg_status(&String::from_utf8_lossy(&out.stdout)))
}

/// `install ok installed` (want, error flag, state) means installed.
pub fn parse_dpkg_status(status: &str) -> bool {
    status.split_whitespace().last() == Some("installed")
        && status.split_whitespace().next() != Some("deinstall")
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn apt_install(packages: &[&str]) -> Result<()> {
    run_captured(
        apt_get()
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages),
    )
    .map(drop)
}

/// Installs the missing ones of `packages`. With `optional`, a package apt cannot install is
/// reported in the step's line instead of failing the step.
fn apt(step: &str, packages: &[&str], optional: bool) -> Result<String> {
    let mut missing = Vec::new();
    for &p in packages {
        if !dpkg_installed(p)? {
            missing.push(p);
        }
    }
    if missing.is_empty() {
        return Ok(format!("already installed: {}", packages.join(" ")));
    }
    if !util::is_root() {
        bail!(
            "missing Debian packages: {m}; run this as root, or first: apt-get install -y \
             --no-install-recommends {m}",
            m = missing.join(" ")
        );
    }
    println!(
        "setup: {step}: missing {}; running apt-get update and install",
        missing.join(" ")
    );
    run_captured(apt_get().args(["update", "-q"]))?;
    let mut skipped = Vec::new();
    if let Err(e) = apt_install(&missing) {
        if !optional {
            return Err(e);
        }
        // Try one by one so one unavailable peer does not block the others.
        for &p in &missing {
            if apt_install(&[p]).is_err() {
                skipped.push(p);
            }
        }
    }
    let mut still = Vec::new();
    for &p in &missing {
        if !skipped.contains(&p) && !dpkg_installed(p)? {
            still.push(p);
        }
    }
    if !still.is_empty() {
        bail!("apt-get did not install: {}", still.join(" "));
    }
    let done: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|p| !skipped.contains(p))
        .collect();
    let mut parts = Vec::new();
    if !done.is_empty() {
        parts.push(format!("installed {}", done.join(" ")));
    }
    if !skipped.is_empty() {
        parts.push(format!(
            "could not install (optional, skipped): {}",
            skipped.join(" ")
        ));
    }
    Ok(parts.join("; "))
}

// ---------------------------------------------------------------------------------------------
// kernel filesystems

/// Whether `/proc/self/mounts`-style `text` has `fstype` mounted at `point`.
pub fn is_mounted(mounts: &str, point: &str, fstype: &str) -> bool {
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_src, mnt, fs) = (f.next(), f.next(), f.next());
        mnt == Some(point) && fs == Some(fstype)
    })
}

fn mounted(point: &str, fstype: &str) -> Result<bool> {
    let mounts =
        fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    Ok(is_mounted(&mounts, point, fstype))
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
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn bpf_linker_versions() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.13.0\n").as_deref(),
            Some("0.13.0")
        );
        assert_eq!(parse_bpf_linker_version("something 0.13.0"), None);
        assert_eq!(parse_bpf_linker_version(""), None);
        assert!(bpf_linker_version_ok("0.13.0"));
        assert!(bpf_linker_version_ok("0.13.2"));
        assert!(!bpf_linker_version_ok("0.130.0"));
        assert!(!bpf_linker_version_ok("0.12.1"));
        assert!(!bpf_linker_version_ok("0.14.0"));
    }

    #[test]
    fn dpkg_status() {
        assert!(parse_dpkg_status("install ok installed"));
        assert!(parse_dpkg_status("hold ok installed"));
        assert!(!parse_dpkg_status("deinstall ok config-files"));
        assert!(!parse_dpkg_status("unknown ok not-installed"));
        assert!(!parse_dpkg_status(""));
    }

    #[test]
    fn rustup_errors() {
        let stderr = "info: downloading component rust-src\ninfo: rolling back changes\n\
            error: component download failed for rust-src\n\nCaused by:\n    0: partially \
            downloaded file was kept\n    6: Connection refused (os error 111)\n\n\
            Stack backtrace:\n   0: <E as anyhow>::ext\n  15: <unknown>\n";
        assert_eq!(
            rustup_error_summary(stderr),
            "error: component download failed for rust-src: Connection refused (os error 111)"
        );
        assert_eq!(rustup_error_summary("garbage"), "rustup failed");
    }

    #[test]
    fn mounts() {
        let text = "sysfs /sys sysfs rw 0 0\nnodev /sys/kernel/tracing tracefs rw,relatime 0 0\n";
        assert!(is_mounted(text, "/sys/kernel/tracing", "tracefs"));
        assert!(!is_mounted(text, "/sys/fs/bpf", "bpf"));
        assert!(!is_mounted(text, "/sys", "tracefs"));
    }

    #[test]
    fn llvm_dylib_name() {
        let dir = scratch("llvm");
        for f in [
            "libLLVM-22-rust-1.97.0-nightly.so",
            "libLLVM.so.22.1-rust-1.97.0-nightly",
            "librustc_driver-b5a965480ee51f9a.so",
        ] {
            fs::write(dir.join(f), "").unwrap();
        }
        let (name, major) = find_llvm_dylib(&dir).unwrap();
        assert_eq!((name.as_str(), major), ("LLVM-22-rust-1.97.0-nightly", 22));
        fs::remove_file(dir.join("libLLVM-22-rust-1.97.0-nightly.so")).unwrap();
        assert!(find_llvm_dylib(&dir).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rust_src_detection_and_missing_tarball() {
        let dir = scratch("rust-src");
        let nightly = Nightly {
            sysroot: dir.join("sysroot"),
            commit_date: "1999-01-01".into(),
        };
        assert!(!rust_src_present(&nightly.sysroot));
        let err = ensure_rust_src(&nightly, &dir, false).unwrap_err();
        assert!(err.to_string().contains("no offline copy"), "{err}");
        let core = nightly
            .sysroot
            .join("lib/rustlib/src/rust/library/core/src");
        fs::create_dir_all(&core).unwrap();
        fs::write(core.join("lib.rs"), "").unwrap();
        let msg = ensure_rust_src(&nightly, &dir, false).unwrap();
        assert!(msg.starts_with("present"), "{msg}");
        // The offline tarball: exact commit date first, else the only candidate.
        assert_eq!(find_rust_src_tarball(&dir, "1999-01-01"), None);
        let other = dir.join(rust_src_tarball_name("1999-01-02"));
        fs::write(&other, "").unwrap();
        assert_eq!(find_rust_src_tarball(&dir, "1999-01-01"), Some(other));
        let exact = dir.join(rust_src_tarball_name("1999-01-01"));
        fs::write(&exact, "").unwrap();
        assert_eq!(find_rust_src_tarball(&dir, "1999-01-01"), Some(exact));
        fs::write(dir.join(rust_src_tarball_name("1999-01-03")), "").unwrap();
        assert!(find_rust_src_tarball(&dir, "1999-01-04").is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Unpacks the real offline tarball into a scratch sysroot (a few seconds; needs
    /// `<repo>/../shared/toolchain`): `cargo test -p xtask -- --ignored`.
    #[test]
    #[ignore = "unpacks the offline rust-src tarball (slow)"]
    fn rust_src_offline_fallback() {
        let nightly = Nightly::query().unwrap();
        let tarball = offline_dir().join(rust_src_tarball_name(&nightly.commit_date));
        assert!(tarball.is_file(), "{} missing", tarball.display());
        let dir = scratch("fallback");
        let scratch_nightly = Nightly {
            sysroot: dir.join("sysroot"),
            commit_date: nightly.commit_date,
        };
        let msg = ensure_rust_src(&scratch_nightly, &offline_dir(), false).unwrap();
        assert!(msg.contains("unpacked offline copy"), "{msg}");
        assert!(rust_src_present(&scratch_nightly.sysroot));
        fs::remove_dir_all(&dir).unwrap();
    }
}
