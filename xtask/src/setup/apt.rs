//! Debian packages: what is installed (`dpkg-query`), and installing the missing ones.

use std::{
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, run_captured};

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
pub fn apt(step: &str, packages: &[&str], optional: bool) -> Result<String> {
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
    // Once per run: several steps may each find packages missing on a fresh machine.
    static UPDATED: AtomicBool = AtomicBool::new(false);
    if !UPDATED.load(Ordering::Relaxed) {
        run_captured(apt_get().args(["update", "-q"]))?;
        UPDATED.store(true, Ordering::Relaxed);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status() {
        for (status, installed) in [
            ("install ok installed", true),
            ("hold ok installed", true),
            ("deinstall ok config-files", false),
            ("unknown ok not-installed", false),
            ("", false),
        ] {
            assert_eq!(parse_dpkg_status(status), installed, "{status:?}");
        }
    }
}
