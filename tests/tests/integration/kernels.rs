//! What runs on this kernel: with default flags every program loads (the
//! state changes on the BTF tracepoint, the SYN-ACK and cause hooks beside
//! it), and `-v` names the hook in use and what the verifier did for each
//! program. Run natively and, by `cargo xtask vm-test`, on each kernel of
//! the matrix (Debian 12's 6.1, the 6.12 line), where older verifiers are
//! the binding limit. Also a `--metrics` scrape on real traffic (ports 23302-23303).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use tcpstate_common::names;
use tcpstate_tests::Netns;
use tcpstate_tests::process::poll;
use tcpstate_tests::reliability::*;
use tcpstate_tests::scaled;
use tcpstate_tests::user::{PyServer, UserTracer, expect, py_clients};

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
    let err = t.stderr();
    // Shown with --nocapture: the kernel matrix keeps it (hook in use, verifier counts).
    eprintln!("tcpstate -v {}:\n{err}", args.join(" "));
    err
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
    for program in [names::BTF_PROGRAM, names::NESTED_PROGRAM] {
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
    assert!(
        err.contains("attached to tcp:tcp_retransmit_synack"),
        "{err}"
    );
    assert!(verified(&err, names::CLASSIC_PROGRAM).is_some(), "{err}");
    assert!(!err.contains("attached to tp_btf/"), "{err}");
}

/// `--metrics` beside the text output: after 3 connections to a filtered port, a scrape of
/// /metrics counts their opens and closes under that port's label.
#[test]
fn metrics_scrape_counts_the_connections() {
    const P: u16 = 23302;
    const METRICS: &str = "127.0.0.1:23303";
    let ns = Netns::new();
    let mut server = PyServer::start(&ns, "127.0.0.1", P);
    let mut tracer = UserTracer::start(P, &["--metrics", METRICS]);
    py_clients(&ns, "127.0.0.1", P, 3, "close");
    tracer.wait_within(Duration::from_secs(10), "3 server ends closed", |t| {
        t.server_side(P)
            .iter()
            .filter(|r| r.rport != 0 && expect::is_kernel(r) && r.new == "CLOSE")
            .count()
            == 3
    });
    // The exporter reads the counters the rows came from; allow it a moment.
    let series = format!(
        "tcpstate_transitions_total{{old_state=\"SYN_SENT\",new_state=\"ESTABLISHED\",port=\"{P}\"}}"
    );
    let body = poll(Duration::from_secs(10), Duration::from_millis(200), || {
        let body = scrape(METRICS).ok()?;
        (value(&body, &series)? >= 3.0).then_some(body)
    })
    .unwrap_or_else(|| {
        panic!(
            "no `{series} >= 3` in the scrape:\n{}",
            scrape(METRICS).unwrap_or_else(|e| e.to_string())
        )
    });
    for state in ["LISTEN", "SYN_RECV", "ESTABLISHED", "FIN_WAIT1", "LAST_ACK"] {
        assert!(
            body.contains(&format!("state=\"{state}\"")),
            "no series for {state}:\n{body}"
        );
    }
    server.kill();
    tracer.stop();
}

/// One plain HTTP/1.0 GET of /metrics (the text format 0.0.4).
pub(crate) fn scrape(addr: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(scaled(Duration::from_secs(5))))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The value of the sample whose name and labels start with `series` (labels in the order
/// the exporter writes them may carry more after ours: match the prefix up to `}`).
pub(crate) fn value(body: &str, series: &str) -> Option<f64> {
    let (name, labels) = series.split_once('{')?;
    let labels = labels.trim_end_matches('}');
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split_once('{').is_some_and(|(n, rest)| {
                n == name && labels.split(',').all(|lab| rest.contains(lab))
            })
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
