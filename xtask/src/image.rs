//! `cargo xtask image [--tag TAG]`: setup (podman, buildah, runc), build, then an OCI image FROM scratch with the release
//! binary and the shared libraries it links (`deploy/image/build-image.sh`), offline: nothing
//! is pulled. Reports the image's size.

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::{build, fleet, util};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Image name (the DaemonSet in deploy/kubernetes runs localhost/tcpstate:latest).
    #[arg(long, default_value = "localhost/tcpstate:latest")]
    pub tag: String,
}

pub fn run(opts: &Options) -> Result<()> {
    crate::setup::ensure(crate::setup::Purpose::Image.parts())?;
    let bin = build::build_user(&[])?;
    let conf = fleet::containers_conf()?;
    let script = util::workspace_root().join("deploy/image/build-image.sh");
    let id = util::run_captured(
        Command::new(&script)
            .env("CONTAINERS_CONF", &conf)
            .arg(&opts.tag)
            .arg(format!("{}:/usr/bin/tcpstate", bin.display())),
    )?;
    let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    let size = util::run_captured(Command::new("podman").env("CONTAINERS_CONF", &conf).args([
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        &opts.tag,
    ]))?;
    let bytes: u64 = String::from_utf8_lossy(&size.stdout)
        .trim()
        .parse()
        .context("podman image inspect: size")?;
    println!(
        "image: {} ({}) {:.1} MB ({bytes} bytes): tcpstate and the libraries it links, FROM scratch",
        opts.tag,
        &id[..12.min(id.len())],
        bytes as f64 / 1e6
    );
    println!(
        "image: run it as the DaemonSet does: podman run --network=host --pid=host --cap-drop=all \
         --cap-add=BPF,PERFMON,SYS_ADMIN -v /sys/kernel/tracing:/sys/kernel/tracing:ro {} \
         --metrics=127.0.0.1:9979 --quiet",
        opts.tag
    );
    Ok(())
}
