//! Half-open connections (issue #3): the request socket that exists between
//! the server receiving a SYN and the client's final ACK. netstat lists it
//! as SYN_RECV; the state tracepoint never shows it (TCP_NEW_SYN_RECV is not
//! emitted), so tcpstate reports it from its sock_ops program (creation), the
//! SYN-ACK retransmit tracepoint, the child socket's first transition
//! (completion) and a targeted sock_diag lookup every second (expiry).
//!
//! The client's final ACK is dropped with nftables inside the namespace. On
//! Linux the client's connect() returns as soon as the SYN-ACK arrives, so
//! the client sits in ESTABLISHED while the server still has only a request
//! socket, and resends its ACK whenever the server resends its SYN-ACK
//! (after 1 s, then 2 s more, ...).

mod beyond_util;

use std::time::Duration;

use beyond_util::*;

/// Drops the first `n` pure ACKs sent to the server's port (the client's
/// final handshake ACK and its repetitions), then lets everything through.
fn drop_first_acks(ns: &Netns, n: u32) {
    ns.nft(&format!(
        "table inet tcpst_ack {{
            chain input {{
                type filter hook input priority 0; policy accept;
                tcp dport {PORT} tcp flags & (syn|ack|fin|rst) == ack limit rate 1/hour burst {n} packets counter drop
            }}
        }}"
    ));
}

/// Drops every pure ACK (and data segment) sent to the server's port.
fn drop_all_acks(ns: &Netns) {
    ns.nft(&format!(
        "table inet tcpst_ack {{
            chain input {{
                type filter hook input priority 0; policy accept;
                tcp dport {PORT} tcp flags & (syn|ack|fin|rst) == ack counter drop
            }}
        }}"
    ));
}

/// The client's final ACK is lost twice: the server resends its SYN-ACK
/// after ~1 s and ~3 s, the client's third ACK completes the handshake. The
/// whole time, the server's end is a request socket in SYN_RECV (ss agrees),
/// reported as half-open and then completed after the ~3 s it waited.
#[test]
fn lost_final_ack_shows_half_open_until_completion() {
    let ns = Netns::new();
    drop_first_acks(&ns, 2);
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let (c, s) = (client.local, server_side(&client));

    // Half-open: the client thinks it is connected, the server has only a
    // request socket, and tcpstate says so.
    wait_end(
        &tracer,
        Duration::from_secs(5),
        s,
        c,
        "sock_ops/half-open LISTEN->SYN_RECV",
    );
    assert_eq!(ss_state(&ns, s, c).as_deref(), Some("SYN-RECV"));
    assert_eq!(ss_state(&ns, c, s).as_deref(), Some("ESTAB"));
    let mid = tracer.snapshot();
    assert!(
        !labels(&end_events(&mid, s, c))
            .iter()
            .any(|l| l.contains("ESTABLISHED")),
        "the server's end should still be half-open\n{}",
        mid.dump_all()
    );

    // accept() returns once the third ACK got through.
    let conn = server.accept();
    assert_eq!((conn.local, conn.peer), (s, c));
    // The client closes first; the server closes once its ACK of the
    // client's FIN has been seen (else that ACK may ride on the server's FIN
    // and the client's orphaned FIN_WAIT2 is never visible).
    client.close();
    server.expect_reply("wait-eof", "eof 0");
    tracer.wait_for(c.port(), PORT, FIN_WAIT2, CLOSE);
    server.close();
    wait_end(
        &tracer,
        Duration::from_secs(5),
        c,
        s,
        "sock_diag/timewait FIN_WAIT2->TIME_WAIT",
    );
    let t = stop(tracer);

    let srv = assert_end(
        &t,
        "server end",
        s,
        c,
        &[
            "sock_ops/half-open LISTEN->SYN_RECV",
            "synack_tracepoint/synack-retransmit SYN_RECV->SYN_RECV",
            "synack_tracepoint/synack-retransmit SYN_RECV->SYN_RECV",
            "tracepoint LISTEN->SYN_RECV",
            "tracker/half-open-completed SYN_RECV->ESTABLISHED",
            "tracepoint SYN_RECV->ESTABLISHED",
            "tracepoint ESTABLISHED->CLOSE_WAIT",
            "tracepoint CLOSE_WAIT->LAST_ACK",
            "tracepoint LAST_ACK->CLOSE",
        ],
    );
    // The request socket has no address of its own to show: it belongs to
    // the listener, whose owner is the server.
    for e in &srv[..5] {
        assert_owner(&t, "half-open event", e, server.pid);
    }
    let (r1, r2) = (&srv[1], &srv[2]);
    assert_eq!((r1.retransmits, r2.retransmits), (Some(1), Some(2)));
    // SYN-ACK timer: 1 s, then doubled.
    assert_ms(&t, "first SYN-ACK retransmit", r1.ms, 900.0, 1500.0);
    assert_ms(&t, "second SYN-ACK retransmit", r2.ms, 2800.0, 3600.0);
    let done = &srv[4];
    assert_ms(&t, "half-open-completed", done.ms, r2.ms.unwrap(), 3700.0);

    assert_end(
        &t,
        "client end",
        c,
        s,
        &[
            "tracepoint CLOSE->SYN_SENT",
            "tracepoint SYN_SENT->ESTABLISHED",
            "tracepoint ESTABLISHED->FIN_WAIT1",
            "tracepoint FIN_WAIT1->FIN_WAIT2",
            "tracepoint FIN_WAIT2->CLOSE",
            "tracker/timewait FIN_WAIT2->FIN_WAIT2",
            "sock_diag/timewait FIN_WAIT2->TIME_WAIT",
        ],
    );
    t.assert_invariants();
}

/// Every ACK of the client is dropped and the server gives up after one
/// SYN-ACK retransmit (tcp_synack_retries=1: resend at 1 s, give up at 3 s).
/// The request socket disappears without a child: half-open-expired.
#[test]
fn half_open_that_never_completes_expires() {
    let ns = Netns::new();
    sysctl(&ns, "net.ipv4.tcp_synack_retries=1");
    drop_all_acks(&ns);
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let (c, s) = (client.local, server_side(&client));

    wait_end(
        &tracer,
        Duration::from_secs(5),
        s,
        c,
        "sock_ops/half-open LISTEN->SYN_RECV",
    );
    assert_eq!(ss_state(&ns, s, c).as_deref(), Some("SYN-RECV"));
    wait_end(
        &tracer,
        Duration::from_secs(8),
        s,
        c,
        "sock_diag/half-open-expired SYN_RECV->CLOSE",
    );
    assert_eq!(
        ss_state(&ns, s, c),
        None,
        "the request socket should be gone"
    );
    // Nothing was ever accepted: the listener's queue is empty.
    client.expect_reply("abort", "aborted");
    server.expect_reply("close-listener", "listener-closed");
    tracer.wait_for_closes(2);
    let t = stop(tracer);

    let srv = assert_end(
        &t,
        "server end",
        s,
        c,
        &[
            "sock_ops/half-open LISTEN->SYN_RECV",
            "synack_tracepoint/synack-retransmit SYN_RECV->SYN_RECV",
            "sock_diag/half-open-expired SYN_RECV->CLOSE",
        ],
    );
    for e in &srv {
        assert_owner(&t, "half-open event", e, server.pid);
    }
    assert_eq!(srv[1].retransmits, Some(1));
    assert_ms(&t, "SYN-ACK retransmit", srv[1].ms, 900.0, 1500.0);
    // Expired at ~3 s, seen by the next once-a-second lookup.
    assert_ms(&t, "half-open-expired", srv[2].ms, 2900.0, 5500.0);

    assert_end(
        &t,
        "client end",
        c,
        s,
        &[
            "tracepoint CLOSE->SYN_SENT",
            "tracepoint SYN_SENT->ESTABLISHED",
            "tracepoint ESTABLISHED->CLOSE",
        ],
    );
    t.assert_path("listener", &t.listener(PORT), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(2);
    t.assert_invariants();
}
