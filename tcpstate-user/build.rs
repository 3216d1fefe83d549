//! Compiles the eBPF program (tcpstate-ebpf) for the bpf target with nightly
//! and bpf-linker, so `cargo build` produces a loader with its kernel program
//! embedded. `cargo xtask setup` installs what this needs.
fn main() -> anyhow::Result<()> {
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
