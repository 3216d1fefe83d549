//! tcpstate as users run it: `tcpstate --port P` in the
//! root network namespace, no `--netns`, no `--json`, default text output
//! read the way a person reads it, started *after* the servers (and, where
//! the scenario says so, the connections) already exist. The servers live
//! in their own network namespace, as in a container.
//!
//! The tracer sees every namespace here, and so does libbpf-tools'
//! `tcpstates`: each test has its own port (23101-23111), used by nothing
//! else in the test suite.
//!
//! What the rows should say is in [`expect`], in one place; the opening (a
//! server in its namespace, then the tracer) is [`AsUsers`].

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use tcpstate_tests::scenario::{client_closes_first, ss_state};
use tcpstate_tests::user::{
    AsUsers, LONG, PyServer, SHORT, TextTrace, UserTracer, expect, py_clients,
};
use tcpstate_tests::{Netns, Peer};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The address of a listener in the text output: no remote end.
fn no_peer() -> SocketAddr {
    addr("0.0.0.0:0")
}

// ---------------------------------------------------------------------------
// Owners
// ---------------------------------------------------------------------------

/// A Python server listening and serving (one connection already served)
/// in its own namespace before the tracer starts; five clients connect
/// afterwards, each closing first. Every
/// server-side row (the listener's snapshot, each connection's five
/// transitions) names the server's pid and `python3`; every client row its
/// client.
#[test]
fn owners_of_a_server_started_before_the_tracer_in_its_own_namespace() {
    let mut w = AsUsers::start_in(Netns::new(), 23101, &[], |ns| {
        let server = PyServer::start(ns, "127.0.0.1", 23101);
        py_clients(ns, "127.0.0.1", 23101, 1, "close");
        server
    });

    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = w.client();
        c.cmd("send 100");
        c.close();
        clients.push(c);
    }
    w.wait_server_ends_closed(5);
    let t = w.tracer.stop();

    w.assert_server_owns(&t);
    for c in &clients {
        let s = c.remote.unwrap();
        t.assert_owner("client end", t.end(c.local, s), &[c.pid], "tcppeer");
        t.assert_end("server end", s, c.local, &expect::SERVER_END_CLIENT_CLOSED);
    }
    t.assert_every_server_end(w.port, &expect::SERVER_END_CLIENT_CLOSED);
    t.assert_end(
        "listener",
        addr("127.0.0.1:23101"),
        no_peer(),
        &[expect::SNAPSHOT_LISTEN],
    );
}

/// A prefork server: a Python master listens, then forks three workers that
/// all accept on that one listener; all before the tracer starts. Twelve
/// connections later, each printed one passive open, and every server-side
/// row names one of the server's four processes.
#[test]
fn prefork_server_rows_name_one_of_its_processes() {
    let mut w = AsUsers::start_in(Netns::new(), 23102, &[], |ns| {
        PyServer::prefork(ns, "127.0.0.1", 23102, 3)
    });
    assert_eq!(w.server.workers.len(), 3);

    w.py_clients(12);
    w.wait_server_ends_closed(12);
    let t = w.tracer.stop();

    w.assert_server_owns(&t);
    t.assert_server_ends_client_closed(w.port, 12);
}

// ---------------------------------------------------------------------------
// Half-open
// ---------------------------------------------------------------------------

/// The client's final ACK is lost twice (nftables in the server's
/// namespace): the server resends its SYN-ACK after ~1 s and ~3 s and the
/// third ACK completes the handshake. One row says the connection is
/// half-open (while ss shows SYN-RECV), dated at the first SYN-ACK; the
/// kernel's SYN_RECV -> ESTABLISHED then says how long it waited. No other
/// LISTEN -> SYN_RECV, no repeated SYN_RECV -> ESTABLISHED.
#[test]
fn half_open_with_a_lost_final_ack_then_completed() {
    let ns = Netns::new();
    ns.drop_acks("tcp dport 23103", Some(2));
    let mut w = AsUsers::tcppeer_in(ns, 23103, &[]);
    let mut client = w.client();
    let (s, c) = (client.remote.unwrap(), client.local);

    let mid = w.tracer.wait_row(SHORT, s, c, expect::HALF_OPEN);
    assert_eq!(ss_state(&w.ns, s, c).as_deref(), Some("SYN-RECV"));
    assert!(
        !mid.end(s, c).iter().any(|r| r.new == "ESTABLISHED"),
        "the server end is still half-open\n{}",
        mid.dump()
    );
    let conn = w.server.accept(); // once the third ACK got through
    assert_eq!((conn.local, conn.peer), (s, c));
    client_closes_first(&mut w.server, &mut client);
    w.tracer.wait_row(SHORT, s, c, "LAST_ACK -> CLOSE");
    let t = w.tracer.stop();

    let done = expect::completed_after(2);
    let rows = t.assert_end(
        "server end",
        s,
        c,
        &[
            expect::HALF_OPEN,
            &done,
            "ESTABLISHED -> CLOSE_WAIT",
            "CLOSE_WAIT -> LAST_ACK",
            "LAST_ACK -> CLOSE",
        ],
    );
    // Waited ~3 s in SYN_RECV, counted from the first SYN-ACK, which is
    // also the half-open row's time.
    t.assert_ms("time in SYN_RECV", &rows[1], 2800.0, 3700.0);
    let waited = rows[1].seconds() - rows[0].seconds();
    assert!(
        (waited * 1000.0 - rows[1].ms.unwrap()).abs() < 100.0,
        "the half-open row should be dated at the first SYN-ACK: {waited:.3} s between the rows, MS {:?}\n{}",
        rows[1].ms,
        t.dump()
    );
    t.assert_end("listener", s, no_peer(), &[expect::SNAPSHOT_LISTEN]);
    w.assert_server_owns(&t);
}

/// Every ACK of the client is dropped and the server's namespace allows one
/// SYN-ACK retransmit (resent at 1 s, given up at 3 s): the half-open
/// connection is reported, then reported expired, both naming the server.
#[test]
fn half_open_that_never_completes_expires() {
    let ns = Netns::new();
    ns.sysctl(&["net.ipv4.tcp_synack_retries=1"]);
    ns.drop_acks("tcp dport 23104", None);
    let mut w = AsUsers::tcppeer_in(ns, 23104, &[]);
    let mut client = w.client();
    let (s, c) = (client.remote.unwrap(), client.local);

    w.tracer.wait_row(SHORT, s, c, expect::HALF_OPEN);
    assert_eq!(ss_state(&w.ns, s, c).as_deref(), Some("SYN-RECV"));
    w.tracer.wait_row(LONG, s, c, expect::HALF_OPEN_EXPIRED);
    assert_eq!(ss_state(&w.ns, s, c), None, "the request socket is gone");
    client.expect_reply("abort", "aborted");
    w.server.expect_reply("close-listener", "listener-closed");
    w.tracer
        .wait_row(SHORT, s, no_peer(), expect::LISTENER_CLOSED);
    let t = w.tracer.stop();

    let rows = t.assert_end(
        "server end",
        s,
        c,
        &[expect::HALF_OPEN, expect::HALF_OPEN_EXPIRED],
    );
    t.assert_ms("half-open lifetime", &rows[1], 2900.0, 5500.0);
    t.assert_end(
        "listener",
        s,
        no_peer(),
        &[expect::SNAPSHOT_LISTEN, expect::LISTENER_CLOSED],
    );
    w.assert_server_owns(&t);
}

// ---------------------------------------------------------------------------
// Timewait
// ---------------------------------------------------------------------------

/// The rows of a client end whose peer closed first.
const CLIENT_END_SERVER_CLOSED: [&str; 4] = [
    "SYN_SENT -> ESTABLISHED",
    "ESTABLISHED -> CLOSE_WAIT",
    "CLOSE_WAIT -> LAST_ACK",
    "LAST_ACK -> CLOSE",
];

/// The server closes first, three times: shutdown(SHUT_WR), the client
/// reads the end of stream and closes, the server's FIN_WAIT2 gets the FIN
/// and a timewait socket takes over. Each connection prints exactly one
/// `is TIME_WAIT (timewait socket)` row, naming the server.
#[test]
fn timewait_socket_row_for_every_connection() {
    let mut w = AsUsers::tcppeer(23105, &[]);

    let mut ends = Vec::new();
    for _ in 0..3 {
        let (mut client, s, c) = w.connect();
        w.server.cmd("shutdown wr");
        client.expect_reply("wait-eof", "eof 0");
        w.tracer.wait_row(SHORT, s, c, "FIN_WAIT1 -> FIN_WAIT2");
        client.close();
        w.tracer.wait_row(SHORT, s, c, expect::TIMEWAIT_SOCKET);
        assert_eq!(ss_state(&w.ns, s, c).as_deref(), Some("TIME-WAIT"));
        w.server.expect_reply("wait-eof", "eof 0");
        w.server.close();
        ends.push((s, c, client));
    }
    let t = w.tracer.stop();

    for (s, c, client) in &ends {
        t.assert_end(
            "server end",
            *s,
            *c,
            &[
                expect::SYN_RECV,
                expect::ACCEPTED,
                "ESTABLISHED -> FIN_WAIT1",
                "FIN_WAIT1 -> FIN_WAIT2",
                "FIN_WAIT2 -> CLOSE",
                expect::TIMEWAIT_SOCKET,
            ],
        );
        t.assert_end("client end", *c, *s, &CLIENT_END_SERVER_CLOSED);
        t.assert_owner("client end", t.end(*c, *s), &[client.pid], "tcppeer");
    }
    assert_eq!(
        TextTrace::count_label(&t.rows, expect::TIMEWAIT_SOCKET),
        3,
        "{}",
        t.dump()
    );
    w.assert_server_owns(&t);
}

/// The client closes first with close(2): its socket is orphaned, so the
/// timewait socket that takes over is netstat's `FIN_WAIT2 -`; when the
/// server closes, it acks the server's FIN and is in TIME_WAIT.
#[test]
fn orphan_fin_wait2_then_time_wait() {
    let mut w = AsUsers::tcppeer(23106, &[]);
    let (mut client, s, c) = w.connect();

    client.close();
    w.server.expect_reply("wait-eof", "eof 0");
    w.tracer.wait_row(SHORT, c, s, expect::ORPHAN);
    assert_eq!(ss_state(&w.ns, c, s).as_deref(), Some("FIN-WAIT-2"));
    w.server.close();
    w.tracer.wait_row(SHORT, c, s, expect::ORPHAN_TO_TIME_WAIT);
    assert_eq!(ss_state(&w.ns, c, s).as_deref(), Some("TIME-WAIT"));
    w.tracer.wait_row(SHORT, s, c, "LAST_ACK -> CLOSE");
    let t = w.tracer.stop();

    t.assert_end(
        "client end",
        c,
        s,
        &[
            "SYN_SENT -> ESTABLISHED",
            "ESTABLISHED -> FIN_WAIT1",
            "FIN_WAIT1 -> FIN_WAIT2",
            "FIN_WAIT2 -> CLOSE",
            expect::ORPHAN,
            expect::ORPHAN_TO_TIME_WAIT,
        ],
    );
    t.assert_owner("client end", t.end(c, s), &[client.pid], "tcppeer");
    t.assert_end("server end", s, c, &expect::SERVER_END_CLIENT_CLOSED);
    w.assert_server_owns(&t);
}

// ---------------------------------------------------------------------------
// Stuck
// ---------------------------------------------------------------------------

/// `tcpstate --port P --stuck 2s`: the client closes, the server reads the
/// end of stream but does not close. After 2 s the server's CLOSE_WAIT is
/// flagged once, naming the server, which is the process that must close.
#[test]
fn stuck_close_wait_the_server_never_closes() {
    let mut w = AsUsers::tcppeer(23107, &["--stuck", "2s"]);
    let (mut client, s, c) = w.connect();

    let closed = Instant::now();
    client.close();
    w.server.expect_reply("wait-eof", "eof 0");
    w.tracer.wait_row(LONG, s, c, expect::STUCK_CLOSE_WAIT);
    let after = closed.elapsed();
    assert!(
        after >= Duration::from_millis(1900),
        "flagged after {after:?}"
    );
    assert_eq!(ss_state(&w.ns, s, c).as_deref(), Some("CLOSE-WAIT"));
    thread::sleep(Duration::from_millis(2500)); // flagged once only
    w.server.close();
    w.tracer.wait_row(SHORT, s, c, "LAST_ACK -> CLOSE");
    let t = w.tracer.stop();

    let rows = t.assert_end(
        "server end",
        s,
        c,
        &[
            expect::SYN_RECV,
            expect::ACCEPTED,
            "ESTABLISHED -> CLOSE_WAIT",
            expect::STUCK_CLOSE_WAIT,
            "CLOSE_WAIT -> LAST_ACK",
            "LAST_ACK -> CLOSE",
        ],
    );
    t.assert_ms("time stuck in CLOSE_WAIT", &rows[3], 2000.0, 4000.0);
    w.assert_server_owns(&t);
}

// ---------------------------------------------------------------------------
// Ctrl-C to a server with a client connected
// ---------------------------------------------------------------------------

/// A server killed with Ctrl-C while a client is connected, as a user does
/// it: a server on 0.0.0.0:P with a client connected, both already running;
/// then `tcpstate --port P`; then Ctrl-C to the server; later the client
/// closes. The snapshot shows the listener and both ends; the killed
/// server's socket closes and its orphan timewait socket (netstat's
/// `FIN_WAIT2 -`) is shown, then its TIME_WAIT once the client's FIN
/// arrives. Every server-side row names the server.
#[test]
fn seed_sigint_server_killed_while_a_client_is_connected() {
    let mut w = AsUsers::start_in(Netns::new(), 23108, &[], |ns| {
        let mut server = Peer::server(ns, "0.0.0.0:23108");
        let client = Peer::client(ns, "127.0.0.1:23108");
        let conn = server.accept();
        (server, client, conn)
    });
    let (server, client, conn) = &mut w.server;
    let (s, c) = (conn.local, conn.peer);
    let listener = addr("0.0.0.0:23108");
    w.tracer.wait_row(SHORT, s, c, expect::SNAPSHOT_ESTABLISHED);

    server.sigint();
    w.tracer.wait_row(SHORT, s, c, expect::ORPHAN);
    w.tracer.wait_row(SHORT, c, s, "ESTABLISHED -> CLOSE_WAIT");
    assert_eq!(ss_state(&w.ns, s, c).as_deref(), Some("FIN-WAIT-2"));
    assert_eq!(ss_state(&w.ns, c, s).as_deref(), Some("CLOSE-WAIT"));
    client.close();
    w.tracer.wait_row(SHORT, s, c, expect::ORPHAN_TO_TIME_WAIT);
    w.tracer.wait_row(SHORT, c, s, "LAST_ACK -> CLOSE");
    let t = w.tracer.stop();

    t.assert_end(
        "listener",
        listener,
        no_peer(),
        &[expect::SNAPSHOT_LISTEN, expect::LISTENER_CLOSED],
    );
    t.assert_end(
        "server end",
        s,
        c,
        &[
            expect::SNAPSHOT_ESTABLISHED,
            "ESTABLISHED -> FIN_WAIT1",
            "FIN_WAIT1 -> FIN_WAIT2",
            "FIN_WAIT2 -> CLOSE",
            expect::ORPHAN,
            expect::ORPHAN_TO_TIME_WAIT,
        ],
    );
    t.assert_end(
        "client end",
        c,
        s,
        &[
            expect::SNAPSHOT_ESTABLISHED,
            "ESTABLISHED -> CLOSE_WAIT",
            "CLOSE_WAIT -> LAST_ACK",
            "LAST_ACK -> CLOSE",
        ],
    );
    t.assert_owner(
        "server-side rows",
        t.server_side(w.port),
        &[server.pid],
        "tcppeer",
    );
    t.assert_owner("client end", t.end(c, s), &[client.pid], "tcppeer");
}

// ---------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------

/// A container started after the tracer: the namespace, its server and
/// three connections all come after `tcpstate --port P` started. The
/// listener's creation and every connection are shown once, with the
/// server as owner, and nothing is reported expired.
#[test]
fn server_in_a_namespace_created_after_the_tracer_started() {
    const P: u16 = 23109;
    let mut tracer = UserTracer::start(P, &[]);
    let ns = Netns::new();
    let mut server = PyServer::start(&ns, "127.0.0.1", P);
    py_clients(&ns, "127.0.0.1", P, 3, "close");
    tracer.wait_within(LONG, "3 server ends closed", |t| {
        t.count_server(P, "LAST_ACK -> CLOSE") == 3
    });
    thread::sleep(Duration::from_millis(2500)); // time for a false expiry
    let pid = server.pid;
    server.kill();
    let listener = addr("127.0.0.1:23109");
    tracer.wait_row(SHORT, listener, no_peer(), expect::LISTENER_CLOSED);
    let t = tracer.stop();

    t.assert_end(
        "listener",
        listener,
        no_peer(),
        &[expect::LISTEN, expect::LISTENER_CLOSED],
    );
    t.assert_server_ends_client_closed(P, 3);
    t.assert_no_expiry();
    t.assert_owner("server-side rows", t.server_side(P), &[pid], "python3");
}

/// 100 completed connections to a server in a non-root namespace, started
/// before the tracer: exactly 100 LISTEN -> SYN_RECV and 100
/// SYN_RECV -> ESTABLISHED server rows, and, 2.5 s after the last one,
/// still no expiry row.
#[test]
fn hundred_connections_one_passive_open_each_and_no_false_expiry() {
    let mut w = AsUsers::python(23110);

    w.py_clients(100);
    w.wait_server_ends_closed(100);
    thread::sleep(Duration::from_millis(2500)); // time for a false expiry
    let t = w.tracer.stop();

    let counts = (
        t.count_server(w.port, expect::SYN_RECV),
        t.count_server(w.port, expect::ACCEPTED),
    );
    assert_eq!(
        counts,
        (100, 100),
        "(LISTEN -> SYN_RECV, SYN_RECV -> ESTABLISHED) server rows for 100 connections\n{}",
        t.dump()
    );
    t.assert_server_ends_client_closed(w.port, 100);
    t.assert_no_expiry();
    w.assert_server_owns(&t);
}
