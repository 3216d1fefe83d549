//! TIME_WAIT and orphaned FIN_WAIT2 (issue #3). When a full socket ends
//! with FIN_WAIT2->CLOSE or CLOSING->CLOSE, a timewait socket takes over its
//! tuple; the tracepoint shows only the CLOSE. tcpstate reports the timewait
//! socket (`tracker`, note `timewait`) in the substate netstat would list:
//! TIME_WAIT when the peer's FIN had arrived, FIN_WAIT2 when the socket was
//! closed before it did (an orphan: netstat's `FIN_WAIT2 -`, the seed
//! article's server Ctrl-C case). Later changes come from targeted sock_diag
//! lookups: the orphan reaching TIME_WAIT when the peer's FIN arrives, and
//! the timewait socket's expiry (`timewait-expired`).
//!
//! One test here waits for a real TIME_WAIT to expire and takes 60-65 s:
//! `slow_time_wait_expires_after_60s` (TCP_TIMEWAIT_LEN is not tunable). It
//! runs in parallel with the others.

mod beyond_util;

use std::time::Duration;

use beyond_util::*;

/// The start of every accepted connection's server end: the request socket
/// (half-open), then the child socket the tracepoint shows.
const ACCEPTED: [&str; 4] = [
    "sock_ops/half-open LISTEN->SYN_RECV",
    "tracepoint LISTEN->SYN_RECV",
    "tracker/half-open-completed SYN_RECV->ESTABLISHED",
    "tracepoint SYN_RECV->ESTABLISHED",
];

/// `ACCEPTED` followed by `rest`.
fn accepted_then(rest: &[&'static str]) -> Vec<&'static str> {
    ACCEPTED.iter().chain(rest).copied().collect()
}

/// The seed article's server Ctrl-C: the killed server's socket goes
/// FIN_WAIT2->CLOSE at once and its timewait socket waits, without a
/// process, for the client's FIN (tracker: FIN_WAIT2->FIN_WAIT2, owner the
/// server that closed it). When the client finally closes, that orphan acks
/// the client's FIN and is in TIME_WAIT (sock_diag: FIN_WAIT2->TIME_WAIT).
#[test]
fn seed_sigint_server_orphan_in_fin_wait2_then_time_wait() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "0.0.0.0:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();
    let (s, c) = (conn.local, conn.peer);

    server.sigint();
    wait_end(
        &tracer,
        Duration::from_secs(5),
        s,
        c,
        "tracker/timewait FIN_WAIT2->FIN_WAIT2",
    );
    tracer.wait_for(c.port(), PORT, ESTABLISHED, CLOSE_WAIT);
    // What netstat shows meanwhile.
    assert_eq!(ss_state(&ns, s, c).as_deref(), Some("FIN-WAIT-2"));
    assert_eq!(ss_state(&ns, c, s).as_deref(), Some("CLOSE-WAIT"));

    client.close();
    wait_end(
        &tracer,
        Duration::from_secs(5),
        s,
        c,
        "sock_diag/timewait FIN_WAIT2->TIME_WAIT",
    );
    assert_eq!(ss_state(&ns, s, c).as_deref(), Some("TIME-WAIT"));
    let t = stop(tracer);

    let srv = assert_end(
        &t,
        "server end",
        s,
        c,
        &accepted_then(&[
            "tracepoint ESTABLISHED->FIN_WAIT1",
            "tracepoint FIN_WAIT1->FIN_WAIT2",
            "tracepoint FIN_WAIT2->CLOSE",
            "tracker/timewait FIN_WAIT2->FIN_WAIT2",
            "sock_diag/timewait FIN_WAIT2->TIME_WAIT",
        ]),
    );
    assert_eq!(srv[6].peer_fin, Some(false), "{}", srv[6].row());
    for e in &srv[7..] {
        assert_owner(&t, "timewait event of the killed server", e, server.pid);
    }
    assert_eq!(srv[7].time_ns, srv[6].time_ns);
    // The orphan waited from the handover until the client's FIN arrived.
    assert!(srv[8].time_ns > srv[7].time_ns);

    assert_end(
        &t,
        "client end",
        c,
        s,
        &[
            "tracepoint CLOSE->SYN_SENT",
            "tracepoint SYN_SENT->ESTABLISHED",
            "tracepoint ESTABLISHED->CLOSE_WAIT",
            "tracepoint CLOSE_WAIT->LAST_ACK",
            "tracepoint LAST_ACK->CLOSE",
        ],
    );
    t.assert_path("listener", &t.listener(PORT), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
    t.assert_invariants();
}

/// The same, but the client never closes and the namespace's
/// tcp_fin_timeout is 1 s: the orphan expires (timewait-expired) while the
/// client still sits in CLOSE_WAIT. The client's late FIN then finds no
/// socket and is answered with a reset.
#[test]
fn seed_sigint_server_orphan_expires_after_fin_timeout() {
    let ns = Netns::new();
    sysctl(&ns, "net.ipv4.tcp_fin_timeout=1");
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "0.0.0.0:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();
    let (s, c) = (conn.local, conn.peer);

    server.sigint();
    wait_end(
        &tracer,
        Duration::from_secs(5),
        s,
        c,
        "sock_diag/timewait-expired FIN_WAIT2->CLOSE",
    );
    assert_eq!(ss_state(&ns, s, c), None, "the orphan should be gone");
    assert_eq!(ss_state(&ns, c, s).as_deref(), Some("CLOSE-WAIT"));

    client.close();
    tracer.wait_for(c.port(), PORT, LAST_ACK, CLOSE);
    let t = stop(tracer);

    let srv = assert_end(
        &t,
        "server end",
        s,
        c,
        &accepted_then(&[
            "tracepoint ESTABLISHED->FIN_WAIT1",
            "tracepoint FIN_WAIT1->FIN_WAIT2",
            "tracepoint FIN_WAIT2->CLOSE",
            "tracker/timewait FIN_WAIT2->FIN_WAIT2",
            "sock_diag/timewait-expired FIN_WAIT2->CLOSE",
        ]),
    );
    for e in &srv[7..] {
        assert_owner(&t, "timewait event of the killed server", e, server.pid);
    }
    // Lifetime tcp_fin_timeout (1 s), seen by the next once-a-second lookup.
    assert_ms(&t, "orphan lifetime", srv[8].ms, 900.0, 2600.0);

    assert_end(
        &t,
        "client end",
        c,
        s,
        &[
            "tracepoint CLOSE->SYN_SENT",
            "tracepoint SYN_SENT->ESTABLISHED",
            "tracepoint ESTABLISHED->CLOSE_WAIT",
            "tracepoint CLOSE_WAIT->LAST_ACK",
            "tracepoint LAST_ACK->CLOSE",
        ],
    );
    t.assert_socket_count(3);
    t.assert_invariants();
}

/// An ordinary active close with close(2): the client's socket is orphaned
/// as soon as it closes, so its timewait socket starts in FIN_WAIT2 and is
/// in TIME_WAIT once the server's FIN arrives.
#[test]
fn active_close_with_close_orphan_then_time_wait() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();
    let (s, c) = (conn.local, conn.peer);

    client.close();
    server.expect_reply("wait-eof", "eof 0");
    // Let the server's ACK of the client's FIN arrive on its own, before
    // the server's FIN (which would otherwise carry it).
    tracer.wait_for(c.port(), PORT, FIN_WAIT2, CLOSE);
    server.close();
    wait_end(
        &tracer,
        Duration::from_secs(5),
        c,
        s,
        "sock_diag/timewait FIN_WAIT2->TIME_WAIT",
    );
    assert_eq!(ss_state(&ns, c, s).as_deref(), Some("TIME-WAIT"));
    server.expect_reply("close-listener", "listener-closed");
    tracer.wait_for_closes(3);
    let t = stop(tracer);

    let cli = assert_end(
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
    assert_eq!(cli[4].peer_fin, Some(false), "{}", cli[4].row());
    for e in &cli[5..] {
        assert_owner(&t, "client's timewait event", e, client.pid);
    }
    assert_end(
        &t,
        "server end",
        s,
        c,
        &accepted_then(&[
            "tracepoint ESTABLISHED->CLOSE_WAIT",
            "tracepoint CLOSE_WAIT->LAST_ACK",
            "tracepoint LAST_ACK->CLOSE",
        ]),
    );
    t.assert_socket_count(3);
    t.assert_invariants();
}

/// Active close with shutdown(SHUT_WR), waiting for the server's FIN, then
/// close(2): the client's full socket is still owned when the server's FIN
/// arrives, so it hands over to a timewait socket directly in TIME_WAIT.
#[test]
fn active_close_with_shutdown_goes_to_time_wait_directly() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();
    let (s, c) = (conn.local, conn.peer);

    client.cmd("shutdown wr");
    server.expect_reply("wait-eof", "eof 0");
    tracer.wait_for(c.port(), PORT, FIN_WAIT1, FIN_WAIT2);
    server.close();
    client.expect_reply("wait-eof", "eof 0");
    tracer.wait_for(c.port(), PORT, FIN_WAIT2, CLOSE);
    client.close();
    assert_eq!(ss_state(&ns, c, s).as_deref(), Some("TIME-WAIT"));
    server.expect_reply("close-listener", "listener-closed");
    tracer.wait_for_closes(3);
    let t = stop(tracer);

    let cli = assert_end(
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
            "tracker/timewait FIN_WAIT2->TIME_WAIT",
        ],
    );
    assert_eq!(cli[4].peer_fin, Some(true), "{}", cli[4].row());
    assert_owner(&t, "client's timewait event", &cli[5], client.pid);
    assert_end(
        &t,
        "server end",
        s,
        c,
        &accepted_then(&[
            "tracepoint ESTABLISHED->CLOSE_WAIT",
            "tracepoint CLOSE_WAIT->LAST_ACK",
            "tracepoint LAST_ACK->CLOSE",
        ]),
    );
    t.assert_socket_count(3);
    t.assert_invariants();
}

/// SLOW (60-65 s): a TIME_WAIT lasts TCP_TIMEWAIT_LEN, 60 s, then the
/// timewait socket is gone and tcpstate says so (timewait-expired).
#[test]
fn slow_time_wait_expires_after_60s() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();
    let (s, c) = (conn.local, conn.peer);

    client.cmd("shutdown wr");
    server.expect_reply("wait-eof", "eof 0");
    tracer.wait_for(c.port(), PORT, FIN_WAIT1, FIN_WAIT2);
    server.close();
    client.expect_reply("wait-eof", "eof 0");
    client.close();
    wait_end(
        &tracer,
        Duration::from_secs(5),
        c,
        s,
        "tracker/timewait FIN_WAIT2->TIME_WAIT",
    );
    assert_eq!(ss_state(&ns, c, s).as_deref(), Some("TIME-WAIT"));
    wait_end(
        &tracer,
        Duration::from_secs(80),
        c,
        s,
        "sock_diag/timewait-expired TIME_WAIT->CLOSE",
    );
    assert_eq!(ss_state(&ns, c, s), None, "the TIME_WAIT should be gone");
    let t = stop(tracer);

    let cli = assert_end(
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
            "tracker/timewait FIN_WAIT2->TIME_WAIT",
            "sock_diag/timewait-expired TIME_WAIT->CLOSE",
        ],
    );
    for e in &cli[5..] {
        assert_owner(&t, "client's timewait event", e, client.pid);
    }
    // The kernel's timer wheel fires a 60 s timer up to ~4 s late (its
    // granularity at that range), then the next once-a-second lookup sees it.
    assert_ms(&t, "TIME_WAIT lifetime", cli[6].ms, 59_900.0, 66_500.0);
    t.assert_invariants();
}

/// Drops every FIN matching `selector` on input (see closing.rs).
fn drop_fins(ns: &Netns, selector: &str) {
    ns.nft(&format!(
        "table inet tcpst_gate {{
            chain input {{
                type filter hook input priority 0; policy accept;
                {selector} tcp flags & fin == fin counter drop
            }}
        }}"
    ));
}

/// Simultaneous close with close(2), the server's FIN lost until the
/// client's FIN crossed it (closing.rs): the server goes CLOSING->CLOSE and
/// its timewait socket is in TIME_WAIT (CLOSING->TIME_WAIT); the client's
/// FIN was acked first, so its orphan waits in FIN_WAIT2 until the server's
/// retransmitted FIN arrives, then is in TIME_WAIT too.
#[test]
fn simultaneous_close_closing_to_time_wait() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();
    let (s, c) = (conn.local, conn.peer);

    drop_fins(&ns, "tcp sport 10050");
    server.close();
    tracer.wait_for(s.port(), c.port(), ESTABLISHED, FIN_WAIT1);
    client.close();
    tracer.wait_for(s.port(), c.port(), FIN_WAIT1, CLOSING);
    ns.nft("delete table inet tcpst_gate");
    wait_end(
        &tracer,
        Duration::from_secs(10),
        s,
        c,
        "tracker/timewait CLOSING->TIME_WAIT",
    );
    wait_end(
        &tracer,
        Duration::from_secs(5),
        c,
        s,
        "sock_diag/timewait FIN_WAIT2->TIME_WAIT",
    );
    assert_eq!(ss_state(&ns, s, c).as_deref(), Some("TIME-WAIT"));
    assert_eq!(ss_state(&ns, c, s).as_deref(), Some("TIME-WAIT"));
    let t = stop(tracer);

    let srv = assert_end(
        &t,
        "server end",
        s,
        c,
        &accepted_then(&[
            "tracepoint ESTABLISHED->FIN_WAIT1",
            "tracepoint FIN_WAIT1->CLOSING",
            "tracepoint CLOSING->CLOSE",
            "tracker/timewait CLOSING->TIME_WAIT",
        ]),
    );
    assert_owner(&t, "server's timewait event", &srv[7], server.pid);
    let cli = assert_end(
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
    for e in &cli[5..] {
        assert_owner(&t, "client's timewait event", e, client.pid);
    }
    t.assert_invariants();
}

/// Simultaneous close with shutdown(SHUT_WR): both full sockets are still
/// owned; the server's goes CLOSING->TIME_WAIT, the client's (the server's
/// FIN arrived while it was in FIN_WAIT2) FIN_WAIT2->TIME_WAIT directly.
#[test]
fn simultaneous_shutdown_closing_to_time_wait() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();
    let (s, c) = (conn.local, conn.peer);

    drop_fins(&ns, "tcp sport 10050");
    server.cmd("shutdown wr");
    tracer.wait_for(s.port(), c.port(), ESTABLISHED, FIN_WAIT1);
    client.cmd("shutdown wr");
    tracer.wait_for(s.port(), c.port(), FIN_WAIT1, CLOSING);
    ns.nft("delete table inet tcpst_gate");
    tracer.wait_for(s.port(), c.port(), CLOSING, CLOSE);
    tracer.wait_for(c.port(), PORT, FIN_WAIT2, CLOSE);
    server.expect_reply("wait-eof", "eof 0");
    client.expect_reply("wait-eof", "eof 0");
    server.close();
    client.close();
    server.expect_reply("close-listener", "listener-closed");
    tracer.wait_for_closes(3);
    let t = stop(tracer);

    let srv = assert_end(
        &t,
        "server end",
        s,
        c,
        &accepted_then(&[
            "tracepoint ESTABLISHED->FIN_WAIT1",
            "tracepoint FIN_WAIT1->CLOSING",
            "tracepoint CLOSING->CLOSE",
            "tracker/timewait CLOSING->TIME_WAIT",
        ]),
    );
    assert_owner(&t, "server's timewait event", &srv[7], server.pid);
    let cli = assert_end(
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
            "tracker/timewait FIN_WAIT2->TIME_WAIT",
        ],
    );
    assert_eq!(cli[4].peer_fin, Some(true), "{}", cli[4].row());
    assert_owner(&t, "client's timewait event", &cli[5], client.pid);
    t.assert_invariants();
}
