//! Compiles the eBPF program (tcpstate-ebpf) for the bpf target with nightly
//! and bpf-linker, so `cargo build` produces a loader with its kernel program
//! embedded. `cargo xtask build` (any xtask command that builds) installs what
//! this needs.
//!
//! Quiet unless it fails: aya-build hands every line of the nested eBPF
//! build's output to cargo as a `cargo:warning`, so each build printed the
//! nested cargo's progress (`Compiling core ...`) as dozens of warnings. This
//! script runs aya-build in a child (itself again, with [`CHILD`] set), keeps
//! that output back, and passes on cargo's directives and any compiler
//! diagnostic; on failure it passes on everything, as aya-build printed it.
use std::process::Command;

/// Set in the child that does the work.
const CHILD: &str = "TCPSTATE_BUILD_RS_CHILD";

fn build_ebpf() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tcpstate-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tcpstate-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os(CHILD).is_some() {
        return build_ebpf();
    }
    let exe = std::env::current_exe()?;
    // The child inherits cargo's environment (OUT_DIR, CARGO_CFG_*, the
    // jobserver) and stdin; its stdout (cargo directives) and stderr are kept.
    let out = Command::new(&exe).env(CHILD, "1").output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // Everything, and the child's own error and exit status.
        print!("{stdout}");
        eprint!("{stderr}");
        std::process::exit(out.status.code().unwrap_or(1));
    }
    for line in stdout.lines() {
        match line.strip_prefix("cargo:warning=") {
            Some(message) if tcpstate_devsupport::cargo::is_status(message) => {}
            _ => println!("{line}"),
        }
    }
    eprint!("{stderr}");
    Ok(())
}
