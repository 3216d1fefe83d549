//! Cargo's own output, as the eBPF build passes it on (tcpstate-user's build
//! script and `cargo xtask build-ebpf` both keep only what is not progress).

/// A cargo progress line (`   Compiling x v1`, `    Finished ...`): one capitalised word
/// right-aligned in 12 columns, then a space. Diagnostics never look like that.
pub fn is_status(line: &str) -> bool {
    let Some((head, rest)) = line.split_at_checked(12) else {
        return false;
    };
    let word = head.trim_start();
    head.starts_with(' ')
        && rest.starts_with(' ')
        && word.starts_with(|c: char| c.is_ascii_uppercase())
        && word.chars().all(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cargo_status_lines() {
        for (line, status) in [
            ("   Compiling tcpstate-ebpf v0.1.0 (/x/tcpstate-ebpf)", true),
            (
                "    Finished `release` profile [optimized] target(s) in 0.1s",
                true,
            ),
            (
                "    Blocking waiting for file lock on build directory",
                true,
            ),
            (" Downloading crates ...", true),
            ("warning: unused variable: `x`", false),
            ("  --> src/main.rs:3:5", false),
            ("   |", false),
            (
                "    = note: `#[warn(unused_variables)]` on by default",
                false,
            ),
            ("12 |     let x = 1;", false),
            ("error: could not compile `tcpstate-ebpf`", false),
            ("", false),
        ] {
            assert_eq!(super::is_status(line), status, "{line:?}");
        }
    }
}
