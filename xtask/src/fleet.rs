//! Setup of the fleet parts (issue 12): what `cargo xtask image`, `cargo xtask deb` and the
//! fleet tests (`tests/tests/integration/fleet.rs`) need, installed idempotently like the rest of
//! setup, and only by the commands that use them (see [`crate::setup::Purpose`]).
//!
//! - Debian packages [`FLEET_PACKAGES`] (all of them for the tests): podman, buildah and runc
//!   (crun refuses this machine kind's hybrid cgroup layout; [`IMAGE_PACKAGES`], what
//!   `xtask image` needs), catatonit (pods' infra image), Prometheus and promtool, python3-yaml
//!   and pip, dpkg-dev ([`DEB_PACKAGES`], for `xtask deb`);
//! - `kubernetes-validate` from PyPI (validates manifests offline against bundled schemas);
//! - `cargo-deb` from crates.io.

use std::process::Command;

use anyhow::{Result, bail};

use crate::util::{self, run_captured, which};

/// What `cargo xtask image` runs: podman (which builds with buildah's code) and runc.
pub const IMAGE_PACKAGES: &[&str] = &["podman", "buildah", "runc"];

/// What `cargo deb` runs besides itself: dpkg-shlibdeps (the package's `$auto` depends).
pub const DEB_PACKAGES: &[&str] = &["dpkg-dev"];

/// Everything the fleet tests use (a superset of [`IMAGE_PACKAGES`] and [`DEB_PACKAGES`]).
pub const FLEET_PACKAGES: &[&str] = &[
    "podman",
    "buildah",
    "runc",
    // `podman pod create` builds its infra (pause) image from it, offline.
    "catatonit",
    "prometheus",
    "python3-yaml",
    "python3-pip",
    "dpkg-dev",
];

pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// `kubernetes-validate`, where pip puts it.
pub fn kubernetes_validate() -> Option<std::path::PathBuf> {
    which("kubernetes-validate").or_else(|| {
        let p = std::path::PathBuf::from("/usr/local/bin/kubernetes-validate");
        p.exists().then_some(p)
    })
}

pub fn ensure_kubernetes_validate() -> Result<String> {
    if let Some(p) = kubernetes_validate() {
        return Ok(format!("found {}", p.display()));
    }
    // Debian 12's pip refuses to touch the system's Python (PEP 668) without the flag; this
    // is a CI machine, and the package has no Debian counterpart.
    let pip = |extra: &[&str]| {
        run_captured(
            Command::new("python3")
                .args(["-m", "pip", "install", "-q"])
                .args(extra)
                .arg("kubernetes-validate"),
        )
    };
    if pip(&["--break-system-packages"]).is_err() {
        pip(&[])?;
    }
    match kubernetes_validate() {
        Some(p) => Ok(format!("installed {}", p.display())),
        None => bail!("pip installed kubernetes-validate but it is not on PATH"),
    }
}

pub fn ensure_cargo_deb() -> Result<String> {
    let bin = crate::setup::cargo_bin_dir().join("cargo-deb");
    if util::is_executable(&bin) || which("cargo-deb").is_some() {
        return Ok("found cargo-deb".into());
    }
    run_captured(util::cargo().args([
        "install",
        &format!("cargo-deb@{CARGO_DEB_VERSION}"),
        "--locked",
    ]))?;
    Ok(format!("installed cargo-deb {CARGO_DEB_VERSION}"))
}

/// The containers.conf this machine kind needs: the container runtimes (crun, runc) may not
/// raise RLIMIT_NOFILE in this sandbox, so no default ulimits. Written under target/, pointed at by
/// `CONTAINERS_CONF` for every podman command xtask runs.
pub fn containers_conf() -> Result<std::path::PathBuf> {
    let path = util::target_dir().join("containers.conf");
    if !path.exists() {
        std::fs::create_dir_all(util::target_dir())?;
        std::fs::write(&path, "[containers]\ndefault_ulimits = []\n")?;
    }
    Ok(path)
}
