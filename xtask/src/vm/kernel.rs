//! The guest kernels: Debian's own packages, fetched with `apt-get download` into
//! `target/vm/kernels/` and unpacked there with `dpkg-deb -x` (the host's /boot is never
//! touched). Idempotent: an unpacked package is used as it is, so a second run downloads
//! nothing and needs no network (`rm -rf target/vm/kernels` to pick up a newer release).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, run_captured};

/// One kernel line the matrix boots.
#[derive(Clone, Copy, Debug)]
pub struct Line {
    /// What `--kernel` takes: `6.1`, `6.12`.
    pub name: &'static str,
    /// Why this line is in the matrix (printed in `--help`-like summaries).
    pub why: &'static str,
    /// Does a package name (`linux-image-...-amd64`) belong to this line, and what is its
    /// sort key (the Debian ABI number or the stable patch level)?
    pub matches: fn(&str) -> Option<u32>,
}

/// The kernels CI boots. Only the generic `-amd64` flavour: it builds 9p and overlay as
/// modules, which the initramfs needs to use the host's file system (the `-cloud-amd64` one has
/// no 9p at all).
pub const LINES: &[Line] = &[
    Line {
        name: "6.1",
        why: "Debian 12's own kernel (6.1 LTS): the oldest verifier the programs must pass",
        matches: |p| {
            p.strip_prefix("linux-image-6.1.0-")?
                .strip_suffix("-amd64")?
                .parse()
                .ok()
        },
    },
    Line {
        name: "6.12",
        why: "Debian 13's line (6.12 LTS), in Debian 12's security updates",
        matches: |p| {
            p.strip_prefix("linux-image-6.12.")?
                .strip_suffix("+deb12-amd64")?
                .parse()
                .ok()
        },
    },
];

pub fn line(name: &str) -> Result<Line> {
    LINES
        .iter()
        .copied()
        .find(|l| l.name == name)
        .with_context(|| {
            let names: Vec<&str> = LINES.iter().map(|l| l.name).collect();
            format!(
                "unknown kernel {name:?}: the matrix has {}",
                names.join(", ")
            )
        })
}

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub line: Line,
    /// `6.1.0-57-amd64`: the `uname -r` of the guest, the name of its modules directory.
    pub release: String,
    /// The package's root: `boot/`, `lib/modules/<release>/`.
    pub root: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }
    pub fn modules(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

pub fn cache_dir() -> PathBuf {
    util::target_dir().join("vm").join("kernels")
}

/// The newest unpacked package of `line` in the cache, else the newest apt offers, downloaded
/// and unpacked. Returns it and a line saying what was done.
pub fn ensure(line: Line) -> Result<(Kernel, String)> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    if let Some(k) = newest_unpacked(line, &cache)? {
        return Ok((k, "cached".into()));
    }
    let package = newest_available(line)?;
    let deb = download(&package, &cache)?;
    let dir = cache.join(&package);
    let partial = cache.join(format!("{package}.partial"));
    let _ = fs::remove_dir_all(&partial);
    run_captured(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    // Renamed only once complete, so an interrupted unpack is never taken for a good one.
    fs::rename(&partial, &dir)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), dir.display()))?;
    let _ = fs::remove_file(&deb);
    let k = unpacked(line, &dir)?;
    Ok((k, format!("downloaded and unpacked {package}")))
}

fn newest_unpacked(line: Line, cache: &Path) -> Result<Option<Kernel>> {
    let mut best: Option<(u32, PathBuf)> = None;
    for entry in fs::read_dir(cache).with_context(|| format!("cannot read {}", cache.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(key) = (line.matches)(name)
            && path.is_dir()
            && best.as_ref().is_none_or(|(k, _)| key > *k)
        {
            best = Some((key, path));
        }
    }
    best.map(|(_, dir)| unpacked(line, &dir)).transpose()
}

/// Reads the release from the unpacked `boot/vmlinuz-<release>`.
fn unpacked(line: Line, dir: &Path) -> Result<Kernel> {
    let boot = dir.join("boot");
    for entry in fs::read_dir(&boot).with_context(|| format!("cannot read {}", boot.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            let k = Kernel {
                line,
                release: release.to_string(),
                root: dir.to_path_buf(),
            };
            // The package ships no modules.dep: its postinst runs depmod. Ours runs on the
            // unpacked tree, for the initramfs's module order and the guest's modprobe.
            if !k.modules().join("modules.dep").is_file() {
                run_captured(Command::new("depmod").arg("-b").arg(dir).arg(release))
                    .context("cannot index the package's modules")?;
            }
            return Ok(k);
        }
    }
    bail!("no vmlinuz-* in {}", boot.display())
}

/// The newest `linux-image-*` of this line in apt's lists (`apt-get update` first if none is
/// listed, as on a fresh machine).
fn newest_available(line: Line) -> Result<String> {
    let find = || -> Result<Option<String>> {
        let out = run_captured(Command::new("apt-cache").args([
            "search",
            "--names-only",
            "^linux-image-6\\.[0-9.+a-z-]*-amd64$",
        ]))?;
        Ok(pick_newest(line, &String::from_utf8_lossy(&out.stdout)))
    };
    if let Some(p) = find()? {
        return Ok(p);
    }
    run_captured(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    find()?.with_context(|| {
        format!(
            "apt offers no kernel package of the {} line (linux-image-*-amd64)",
            line.name
        )
    })
}

/// From `apt-cache search` output (`NAME - description` lines), the newest package of `line`.
pub fn pick_newest(line: Line, search: &str) -> Option<String> {
    search
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| (line.matches)(name).map(|k| (k, name)))
        .max_by_key(|(k, _)| *k)
        .map(|(_, name)| name.to_string())
}

fn download(package: &str, cache: &Path) -> Result<PathBuf> {
    // apt-get download writes into the current directory; as root it drops to the _apt user
    // for the fetch, which must be able to write there, hence a world-writable scratch dir.
    let dl = cache.join("download");
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl)?;
    set_mode(&dl, 0o777)?;
    run_captured(
        Command::new("apt-get")
            .current_dir(&dl)
            .args(["download", "-q", package]),
    )?;
    for entry in fs::read_dir(&dl)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            let dest = cache.join(path.file_name().unwrap_or_default());
            fs::rename(&path, &dest)?;
            let _ = fs::remove_dir_all(&dl);
            return Ok(dest);
        }
    }
    bail!(
        "apt-get download {package} left no .deb in {}",
        dl.display()
    )
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_of_each_line() {
        let search = "linux-image-6.1.0-9-amd64 - Linux 6.1\n\
                      linux-image-6.1.0-57-amd64 - Linux 6.1\n\
                      linux-image-6.1.0-57-cloud-amd64 - Linux 6.1\n\
                      linux-image-6.12.9+deb12-amd64 - Linux 6.12\n\
                      linux-image-6.12.118+deb12-amd64 - Linux 6.12\n\
                      linux-image-6.12.118+deb12-rt-amd64 - Linux 6.12\n";
        assert_eq!(
            pick_newest(LINES[0], search).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(
            pick_newest(LINES[1], search).as_deref(),
            Some("linux-image-6.12.118+deb12-amd64")
        );
    }
}
