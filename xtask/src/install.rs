//! `cargo xtask install [--prefix DIR]`: build, then copy the binary to `<prefix>/bin/tcpstate`.

use std::{fs, os::unix::fs::PermissionsExt as _, path::PathBuf};

use anyhow::{Context as _, Result};

use crate::build;

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Installation prefix; the binary goes to <PREFIX>/bin/tcpstate.
    #[arg(long, default_value = "/usr/local")]
    pub prefix: PathBuf,
}

pub fn run(opts: &Options) -> Result<()> {
    let bin = build::build()?;
    let dir = opts.prefix.join("bin");
    let dest = dir.join("tcpstate");
    fs::create_dir_all(&dir).with_context(|| {
        format!(
            "cannot create {} (run as root, or choose another --prefix)",
            dir.display()
        )
    })?;
    // Copy next to the destination, then rename: works while an old tcpstate is running.
    let tmp = dir.join(format!(".tcpstate.{}.tmp", std::process::id()));
    let copy = || -> Result<()> {
        fs::copy(&bin, &tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::rename(&tmp, &dest)?;
        Ok(())
    };
    if let Err(e) = copy() {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| {
            format!(
                "cannot install {} (run as root, or choose another --prefix)",
                dest.display()
            )
        });
    }
    println!("install: installed {}", dest.display());
    let on_path =
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d == dir));
    let name = if on_path {
        "tcpstate".to_string()
    } else {
        dest.display().to_string()
    };
    println!("install: run it as root, e.g. `sudo {name} --port 10050`");
    println!(
        "install: optional, for use without root: setcap cap_bpf,cap_perfmon+ep {}",
        dest.display()
    );
    Ok(())
}
