//! `cargo xtask soak [--connections N]`: the long version of the reliability soak:
//! setup, build the release binary, then run `tests/tests/integration/reliability_soak.rs` with
//! `TCPSTATE_SOAK_CONNECTIONS=N` (default 2 000 000; the test's own default, used by the
//! normal test run in CI, is 200 000). It prints the RSS after the warm-up and at the end, map occupancy
//! after the last close, and the event/loss accounting.

use anyhow::Result;

use crate::{build, setup, util};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Connections to run through the tracer (10 transitions each).
    #[arg(long, default_value_t = 2_000_000)]
    pub connections: u64,
}

pub fn run(opts: &Options) -> Result<()> {
    // What the end-to-end tests use (the soak is one of them).
    setup::ensure(&[setup::Part::TestPackages, setup::Part::Mounts])?;
    let bin = build::build_user(&["--bins"])?;
    util::run(
        util::cargo()
            .args([
                "test",
                "--release",
                "-p",
                "tcpstate-tests",
                "--test",
                "integration",
                "--",
                "reliability_soak::",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TCPSTATE_BIN", &bin)
            .env("TCPSTATE_SOAK_CONNECTIONS", opts.connections.to_string()),
    )
}
