//! `cargo xtask run -- <tcpstate args>`: setup, build, then replace this process with
//! target/release/tcpstate (so Ctrl-C and the exit status are the tracer's own).

use std::{ffi::OsString, os::unix::process::CommandExt as _, process::Command};

use anyhow::{Context as _, Result};

use crate::{build, util};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Arguments for tcpstate, after `--` (e.g. `-- --port 10050`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

pub fn run(opts: &Options) -> Result<()> {
    let bin = build::build()?;
    if !util::is_root() {
        eprintln!(
            "xtask: warning: not root; tcpstate needs root (or CAP_BPF and CAP_PERFMON) to load \
             its eBPF program"
        );
    }
    let mut cmd = Command::new(&bin);
    cmd.args(&opts.args);
    println!("xtask: exec {}", util::display(&cmd));
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot exec {}", bin.display()))
}
