use which::which;

/// Rebuild when bpf-linker changes (it is the linker for the bpf target, so
/// cargo does not track it on its own), as aya-template does.
fn main() {
    let bpf_linker =
        which("bpf-linker").expect("bpf-linker not found on PATH: run `cargo xtask setup`");
    println!(
        "cargo:rerun-if-changed={}",
        bpf_linker.to_str().expect("bpf-linker path is not UTF-8")
    );
}
