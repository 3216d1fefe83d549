//! nightly's `rust-src` (the eBPF crate is built with `-Z build-std=core`): rustup first,
//! else the offline tarball in `<repo>/../shared/toolchain/`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::NIGHTLY;
use crate::util::{self, run_captured};

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
    util::workspace_root().join("../shared/toolchain")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::tests::scratch;

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
