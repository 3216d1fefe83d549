//! `cargo xtask dist [--out DIR]`: build, then lay out what a package ships:
//! the binary, the man page and shell completions, all generated from the
//! clap definition by the binary itself (`tcpstate --man`,
//! `tcpstate --completions SHELL`, hidden flags).
//!
//! ```text
//! target/dist/bin/tcpstate
//! target/dist/share/man/man8/tcpstate.8
//! target/dist/share/bash-completion/completions/tcpstate
//! target/dist/share/zsh/site-functions/_tcpstate
//! target/dist/share/fish/vendor_completions.d/tcpstate.fish
//! ```

use std::{fs, os::unix::fs::PermissionsExt as _, path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::{build, util};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Where to lay the files out (default: target/dist).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(opts: &Options) -> Result<()> {
    let bin = build::build()?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| util::target_dir().join("dist"));
    let generated = |args: &[&str]| -> Result<Vec<u8>> {
        Ok(util::run_captured(Command::new(&bin).args(args))?.stdout)
    };
    let files: Vec<(PathBuf, Vec<u8>, u32)> = vec![
        (PathBuf::from("bin/tcpstate"), fs::read(&bin)?, 0o755),
        (
            PathBuf::from("share/man/man8/tcpstate.8"),
            generated(&["--man"])?,
            0o644,
        ),
        (
            PathBuf::from("share/bash-completion/completions/tcpstate"),
            generated(&["--completions", "bash"])?,
            0o644,
        ),
        (
            PathBuf::from("share/zsh/site-functions/_tcpstate"),
            generated(&["--completions", "zsh"])?,
            0o644,
        ),
        (
            PathBuf::from("share/fish/vendor_completions.d/tcpstate.fish"),
            generated(&["--completions", "fish"])?,
            0o644,
        ),
    ];
    for (rel, bytes, mode) in files {
        let path = out.join(&rel);
        let dir = path.parent().expect("a file in a directory");
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        println!("dist: {} ({} bytes)", path.display(), bytes.len());
    }
    println!(
        "dist: try `man {}`",
        out.join("share/man/man8/tcpstate.8").display()
    );
    Ok(())
}
