//! `cargo xtask <command>`: developer and CI tasks for tcpstate (alias in .cargo/config.toml).
//!
//! Every command sets up what it uses first (see `setup`): building and running need only the
//! toolchain parts; the test, kernel-matrix, benchmark and fleet parts are installed by the
//! commands that use them. Each step installs only what is missing.

mod bench;
mod build;
mod compare;
mod deb;
mod dist;
mod fleet;
mod fuzz;
mod image;
mod install;
mod run;
mod setup;
mod soak;
mod test;
mod util;
mod vm;

use clap::Parser;

/// The command line is one subcommand and its options.
#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Set up, build, run, test and install tcpstate"
)]
enum Command {
    /// Install everything building and testing needs (nightly rust-src, bpf-linker, Debian
    /// packages, fleet tools) and mount tracefs and bpffs; only what is missing.
    /// `--for run|test|bench|image|deb|vm`: only what that purpose needs.
    Setup(setup::Options),
    /// Setup (toolchain only), then build only the eBPF object (nightly, bpfel-unknown-none)
    /// and report its path and size.
    BuildEbpf,
    /// Setup (toolchain only), then build the release binary target/release/tcpstate.
    Build,
    /// Setup (toolchain only), build, then run target/release/tcpstate with the arguments
    /// after `--`.
    Run(run::Options),
    /// Setup (everything the tests use), build, run all tests against the release binary, the
    /// kernel matrix (vm-test), then fmt and clippy. `--fast`: unit tests only, no root.
    Test(test::Options),
    /// Setup (toolchain only), build, then copy the binary to <PREFIX>/bin/tcpstate.
    Install(install::Options),
    /// Setup (with the peer tracers), build, then measure how much tcpstate and its peers slow
    /// a connect/close workload; writes bench-results/latest.md. `--smoke`: short CI check.
    Bench(bench::Options),
    /// Count the connections `ss` polling catches in SYN_RECV, FIN_WAIT1, CLOSING and LAST_ACK
    /// during a burst, against tcpstate; writes bench-results/polling.md.
    Compare(compare::Options),
    /// Bounded cargo-fuzz run of every target in fuzz/ (installs cargo-fuzz if missing).
    Fuzz(fuzz::Options),
    /// The long reliability soak: 2M connections through the tracer (RSS and maps flat).
    Soak(soak::Options),
    /// Build, then write the binary, man page and shell completions under target/dist.
    Dist(dist::Options),
    /// Setup (podman, buildah, runc), build, then an OCI image FROM scratch (podman, offline)
    /// and its size.
    Image(image::Options),
    /// Setup (cargo-deb, dpkg-dev), build, then a Debian package (cargo-deb) in target/debian.
    Deb(deb::Options),
    /// Boot a Debian kernel (6.1, 6.12) under QEMU and run one command there, in the host's
    /// file system; its output and exit status are the command's.
    VmRun(vm::RunOptions),
    /// The kernel matrix: build, then run a subset of the end-to-end tests in QEMU guests of
    /// Debian's 6.1 and 6.12 kernels against the host's release binary.
    VmTest(vm::TestOptions),
}

fn main() -> std::process::ExitCode {
    let result = match &Command::parse() {
        Command::Setup(opts) => setup::run(opts),
        Command::BuildEbpf => build::build_ebpf(),
        Command::Build => build::build().map(drop),
        Command::Run(opts) => run::run(opts),
        Command::Test(opts) => test::run(opts),
        Command::Install(opts) => install::run(opts),
        Command::Bench(opts) => bench::run(opts),
        Command::Compare(opts) => compare::run(opts),
        Command::Fuzz(opts) => fuzz::run(opts),
        Command::Soak(opts) => soak::run(opts),
        Command::Dist(opts) => dist::run(opts),
        Command::Image(opts) => image::run(opts),
        Command::Deb(opts) => deb::run(opts),
        Command::VmRun(opts) => vm::vm_run(opts),
        Command::VmTest(opts) => vm::run_matrix(opts),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
