//! `bpf-linker`, built with `cargo install` against nightly's own libLLVM (the one rustc
//! itself links, so the linker and the compiler agree on the LLVM version).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail};

use super::{NIGHTLY, rust_src::Nightly};
use crate::util::{self, run_captured, which};

pub const BPF_LINKER_VERSION: &str = "0.13.0";

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

pub fn ensure_bpf_linker() -> Result<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::tests::scratch;

    #[test]
    fn bpf_linker_versions() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.13.0\n").as_deref(),
            Some("0.13.0")
        );
        assert_eq!(parse_bpf_linker_version("something 0.13.0"), None);
        assert_eq!(parse_bpf_linker_version(""), None);
        // Same major.minor as BPF_LINKER_VERSION, any patch.
        for (version, ok) in [
            ("0.13.0", true),
            ("0.13.2", true),
            ("0.130.0", false),
            ("0.12.1", false),
            ("0.14.0", false),
        ] {
            assert_eq!(bpf_linker_version_ok(version), ok, "{version}");
        }
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
}
