//! What runs on this kernel: with default flags every program loads (the
//! state changes on the BTF tracepoint, the SYN-ACK and cause hooks beside
//! it), and `-v` names the hook in use and what the verifier did for each
//! program. Run natively and, by `cargo xtask vm-test`, on each kernel of
//! the matrix (Debian 12's 6.1, the 6.12 line), where older verifiers are
//! the binding limit.

use std::process::Stdio;

use tcpstate_tests::reliability::*;

/// `verified NAME: N instructions in T ms`: the count N, if the line is there.
fn verified(stderr: &str, program: &str) -> Option<u64> {
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("verified {program}: ")))?;
    let tail = line.split(&format!("verified {program}: ")).nth(1)?;
    tail.split_whitespace().next()?.parse().ok()
}

/// Starts `tcpstate -v ARGS`, waits until it traces, stops it: its stderr.
fn verbose_start(args: &[&str]) -> String {
    let mut all = vec!["-v"];
    all.extend_from_slice(args);
    let mut t = Background::start(&all, Stdio::null());
    t.wait_ready();
    t.stop();
    t.stderr()
}

#[test]
fn every_program_loads_with_default_flags() {
    let err = verbose_start(&["--port", "4242"]);
    assert!(
        !err.contains("refused by this kernel"),
        "a program was refused:\n{err}"
    );
    for line in [
        "attached to tp_btf/inet_sock_set_state",
        "attached the nested-run program to tp_btf/inet_sock_set_state",
        "attached to tp_btf/tcp_retransmit_synack",
        "attached to tp_btf/tcp_send_reset",
        "attached to tp_btf/tcp_receive_reset",
        "attached to tp_btf/inet_sk_error_report",
        "attached to tp_btf/tcp_retransmit_skb",
    ] {
        assert!(err.contains(line), "no `{line}` in:\n{err}");
    }
    // Far below the kernel's limit of 1,000,000, so a weaker verifier (or a
    // kernel whose code makes more paths) still has room.
    for program in ["inet_sock_set_state_btf", "inet_sock_set_state_nested"] {
        let n = verified(&err, program).unwrap_or_else(|| panic!("no count for {program}:\n{err}"));
        assert!(
            n < 100_000,
            "{program}: {n} instructions verified, too close to the limit"
        );
    }
}

#[test]
fn without_kernel_btf_the_classic_tracepoint_is_named() {
    let err = verbose_start(&["--no-kernel-btf", "--port", "4242"]);
    assert!(
        err.contains("attached to tracepoint sock:inet_sock_set_state"),
        "{err}"
    );
    assert!(err.contains("attached to tcp:tcp_retransmit_synack"), "{err}");
    assert!(verified(&err, "inet_sock_set_state").is_some(), "{err}");
    assert!(!err.contains("attached to tp_btf/"), "{err}");
}
