//! TIME_WAIT and orphaned FIN_WAIT2. When a full socket ends with
//! FIN_WAIT2->CLOSE or CLOSING->CLOSE, a timewait socket takes over its
//! tuple; the tracepoint shows only the CLOSE. tcpstate then prints a state
//! row for the timewait socket (`tracker`, note `timewait-socket`,
//! `is STATE`) in the substate netstat would list: TIME_WAIT when the peer's
//! FIN had arrived, FIN_WAIT2 when the socket was closed before it did (an
//! orphan: netstat's `FIN_WAIT2 -`, as after Ctrl-C to a connected server).
//! Later changes come from dumping the namespace's timewait sockets: the
//! orphan reaching TIME_WAIT when the peer's FIN arrives (`timewait`), and
//! the timewait socket's expiry (`timewait-expired`).
//!
//! One test here waits for a real TIME_WAIT to expire and takes 60-65 s:
//! `slow_time_wait_expires_after_60s` (TCP_TIMEWAIT_LEN is not tunable). It
//! runs in parallel with the others.

use tcpstate_tests::beyond::*;

/// Ctrl-C to a server with a client connected: the killed server's socket goes
/// FIN_WAIT2->CLOSE at once and its timewait socket waits, without a
/// process, for the client's FIN (`is FIN_WAIT2`, owner the server that
/// closed it). When the client finally closes, that orphan acks the
/// client's FIN and is in TIME_WAIT (FIN_WAIT2->TIME_WAIT).
#[test]
fn seed_sigint_server_orphan_in_fin_wait2_then_time_wait() {
    let mut w = Connected::wildcard(&[]);
    let (s, c) = (w.s, w.c);

    w.server.sigint();
    wait_end(&w.tracer, 5, s, c, "tracker/timewait-socket is FIN_WAIT2");
    w.tracer.wait_for(c.port(), PORT, ESTABLISHED, CLOSE_WAIT);
    // What netstat shows meanwhile.
    assert_eq!(ss_state(&w.ns, s, c).as_deref(), Some("FIN-WAIT-2"));
    assert_eq!(ss_state(&w.ns, c, s).as_deref(), Some("CLOSE-WAIT"));

    w.client.close();
    wait_end(&w.tracer, 5, s, c, "tracker/timewait FIN_WAIT2->TIME_WAIT");
    assert_eq!(ss_state(&w.ns, s, c).as_deref(), Some("TIME-WAIT"));
    let t = w.tracer.stop();

    let srv = w.assert_server_end(&t, &[ACCEPTED, ACTIVE_CLOSE, ORPHAN_THEN_TIME_WAIT]);
    assert_eq!(srv[4].peer_fin, Some(false), "{}", srv[4].row());
    assert_owners(
        &t,
        "timewait row of the killed server",
        &srv[5..],
        w.server.pid,
    );
    assert_eq!(srv[5].time_ns, srv[4].time_ns);
    // The orphan waited from the handover until the client's FIN arrived.
    assert!(srv[6].time_ns > srv[5].time_ns);

    w.assert_client_end(&t, &[OPENED, PASSIVE_CLOSE]);
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
    ns.sysctl(&["net.ipv4.tcp_fin_timeout=1"]);
    let mut w = Connected::open_in(ns, &[], "0.0.0.0:10050", LOOPBACK);
    let (s, c) = (w.s, w.c);

    w.server.sigint();
    wait_end(
        &w.tracer,
        5,
        s,
        c,
        "sock_diag/timewait-expired FIN_WAIT2->CLOSE",
    );
    assert_eq!(ss_state(&w.ns, s, c), None, "the orphan should be gone");
    assert_eq!(ss_state(&w.ns, c, s).as_deref(), Some("CLOSE-WAIT"));

    w.client.close();
    w.tracer.wait_for(c.port(), PORT, LAST_ACK, CLOSE);
    let t = w.tracer.stop();

    let srv = w.assert_server_end(&t, &[ACCEPTED, ACTIVE_CLOSE, ORPHAN_EXPIRED]);
    assert_owners(
        &t,
        "timewait row of the killed server",
        &srv[5..],
        w.server.pid,
    );
    // Lifetime tcp_fin_timeout (1 s), seen by the next once-a-second check.
    assert_ms(&t, "orphan lifetime", srv[6].ms, 900.0, 2600.0);

    w.assert_client_end(&t, &[OPENED, PASSIVE_CLOSE]);
    t.assert_socket_count(3);
    t.assert_invariants();
}

/// An ordinary active close with close(2): the client's socket is orphaned
/// as soon as it closes, so its timewait socket starts in FIN_WAIT2 and is
/// in TIME_WAIT once the server's FIN arrives.
#[test]
fn active_close_with_close_orphan_then_time_wait() {
    let mut w = Connected::loopback(&[]);
    client_closes_first_to_time_wait(&w.tracer, &mut w.server, &mut w.client);
    assert_client_closed_first(&mut w, false, ORPHAN_THEN_TIME_WAIT);
}

/// The end of a connection the client closed first, once its timewait
/// socket is in TIME_WAIT (ss agrees): the listener closes, then the client
/// end must have gone through the open, the active close (its full
/// socket's CLOSE saying whether the server's FIN had come: `peer_fin`)
/// and `timewait`, the rows of its timewait socket, all owned by the client;
/// the server end through a passive close.
fn assert_client_closed_first(w: &mut Connected, peer_fin: bool, timewait: &[&str]) {
    assert_eq!(ss_state(&w.ns, w.c, w.s).as_deref(), Some("TIME-WAIT"));
    let t = w.close_listener_and_stop(3);
    let cli = w.assert_client_end(&t, &[OPENED, ACTIVE_CLOSE, timewait]);
    assert_eq!(cli[4].peer_fin, Some(peer_fin), "{}", cli[4].row());
    assert_owners(&t, "client's timewait row", &cli[5..], w.client.pid);
    w.assert_server_end(&t, &[ACCEPTED, PASSIVE_CLOSE]);
    t.assert_socket_count(3);
    t.assert_invariants();
}

/// The client half-closes (shutdown(SHUT_WR)), the server closes, the client
/// reads EOF and closes: its full socket was still owned when the server's
/// FIN arrived.
fn client_shuts_down_then_both_close(w: &mut Connected) {
    w.client.cmd("shutdown wr");
    w.server.expect_reply("wait-eof", "eof 0");
    w.tracer.wait_for(w.c.port(), PORT, FIN_WAIT1, FIN_WAIT2);
    w.server_closes_first();
}

/// Active close with shutdown(SHUT_WR), waiting for the server's FIN, then
/// close(2): the client's full socket hands over to a timewait socket that
/// is in TIME_WAIT from the start.
#[test]
fn active_close_with_shutdown_goes_to_time_wait_directly() {
    let mut w = Connected::loopback(&[]);
    client_shuts_down_then_both_close(&mut w);
    w.tracer.wait_for(w.c.port(), PORT, FIN_WAIT2, CLOSE);
    assert_client_closed_first(&mut w, true, TIME_WAIT_SOCKET);
}

/// SLOW (60-65 s): a TIME_WAIT lasts TCP_TIMEWAIT_LEN, 60 s, then the
/// timewait socket is gone and tcpstate says so (timewait-expired).
#[test]
fn slow_time_wait_expires_after_60s() {
    let mut w = Connected::loopback(&[]);
    let (s, c) = (w.s, w.c);

    client_shuts_down_then_both_close(&mut w);
    wait_end(&w.tracer, 5, c, s, "tracker/timewait-socket is TIME_WAIT");
    assert_eq!(ss_state(&w.ns, c, s).as_deref(), Some("TIME-WAIT"));
    wait_end(
        &w.tracer,
        80,
        c,
        s,
        "sock_diag/timewait-expired TIME_WAIT->CLOSE",
    );
    assert_eq!(ss_state(&w.ns, c, s), None, "the TIME_WAIT should be gone");
    let t = w.tracer.stop();

    let cli = w.assert_client_end(&t, &[OPENED, ACTIVE_CLOSE, TIME_WAIT_EXPIRED]);
    assert_owners(&t, "client's timewait row", &cli[5..], w.client.pid);
    // The kernel's timer wheel fires a 60 s timer up to ~4 s late (its
    // granularity at that range), then the next once-a-second check sees it.
    assert_ms(&t, "TIME_WAIT lifetime", cli[6].ms, 59_900.0, 66_500.0);
    t.assert_invariants();
}

/// Simultaneous close with close(2), the server's FIN lost until the
/// client's FIN crossed it: the server goes CLOSING->CLOSE and its timewait
/// socket is in TIME_WAIT; the client's FIN was acked first, so its orphan
/// waits in FIN_WAIT2 until the server's retransmitted FIN arrives, then is
/// in TIME_WAIT too.
#[test]
fn simultaneous_close_closing_to_time_wait() {
    let mut w = Connected::loopback(&[]);
    let (s, c) = (w.s, w.c);

    w.fins_cross(Side::Server, "close");
    wait_end(&w.tracer, 10, s, c, "tracker/timewait-socket is TIME_WAIT");
    wait_end(
        &w.tracer,
        5,
        c,
        s,
        "sock_diag/timewait FIN_WAIT2->TIME_WAIT",
    );
    assert_eq!(ss_state(&w.ns, s, c).as_deref(), Some("TIME-WAIT"));
    assert_eq!(ss_state(&w.ns, c, s).as_deref(), Some("TIME-WAIT"));
    let t = w.tracer.stop();

    let srv = w.assert_server_end(&t, &[ACCEPTED, CLOSING_TO_TIME_WAIT]);
    assert_owner(&t, "server's timewait row", &srv[5], w.server.pid);
    let cli = w.assert_client_end(&t, &[OPENED, ACTIVE_CLOSE, ORPHAN_THEN_PEER_FIN]);
    assert_owners(&t, "client's timewait row", &cli[5..], w.client.pid);
    t.assert_invariants();
}

/// The client's orphan in a simultaneous close: the server's retransmitted
/// FIN reaches it while the server goes CLOSING->CLOSE (no LAST_ACK to go
/// by), so a dump of the namespace's timewait sockets finds it in TIME_WAIT.
const ORPHAN_THEN_PEER_FIN: &[&str] = &[
    "tracker/timewait-socket is FIN_WAIT2",
    "sock_diag/timewait FIN_WAIT2->TIME_WAIT",
];

/// The server end of a simultaneous close: FIN_WAIT1, CLOSING, then a
/// timewait socket in TIME_WAIT.
const CLOSING_TO_TIME_WAIT: &[&str] = &[
    "tracepoint ESTABLISHED->FIN_WAIT1",
    "tracepoint FIN_WAIT1->CLOSING",
    "tracepoint CLOSING->CLOSE",
    "tracker/timewait-socket is TIME_WAIT",
];

/// Simultaneous close with shutdown(SHUT_WR): both full sockets are still
/// owned; the server's timewait socket is in TIME_WAIT after CLOSING, the
/// client's (the server's FIN arrived while it was in FIN_WAIT2) too.
#[test]
fn simultaneous_shutdown_closing_to_time_wait() {
    let mut w = Connected::loopback(&[]);
    w.simultaneous_shutdown();
    let t = w.close_listener_and_stop(3);

    let srv = w.assert_server_end(&t, &[ACCEPTED, CLOSING_TO_TIME_WAIT]);
    assert_owner(&t, "server's timewait row", &srv[5], w.server.pid);
    let cli = w.assert_client_end(&t, &[OPENED, ACTIVE_CLOSE, TIME_WAIT_SOCKET]);
    assert_eq!(cli[4].peer_fin, Some(true), "{}", cli[4].row());
    assert_owner(&t, "client's timewait row", &cli[5], w.client.pid);
    t.assert_invariants();
}
