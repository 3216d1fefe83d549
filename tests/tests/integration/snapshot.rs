//! The start-up snapshot: with a port filter (or `--snapshot`) tcpstate
//! first lists the sockets that already exist on the filtered ports, as
//! `ss -tanp` would: state rows (`kind: "state"`, `source: "sock_diag"`,
//! note `snapshot`, oldstate == newstate == the current state) with the
//! owning process (none for timewait sockets, which no process holds; a
//! request socket's is its listener's).

use std::net::SocketAddr;
use std::time::Duration;

use tcpstate_tests::beyond::*;

/// `(local, remote, state, pid)` of every snapshot event, sorted.
fn snapshot_rows(t: &Trace) -> Vec<(SocketAddr, SocketAddr, String, Option<u32>)> {
    let mut rows: Vec<_> = t
        .all
        .iter()
        .filter(|e| e.note.as_deref() == Some("snapshot"))
        .map(|e| {
            assert_eq!(e.source, "sock_diag", "{}", e.row());
            assert!(e.is_state_row(), "{}", e.row());
            assert_eq!(e.oldstate, e.newstate, "{}", e.row());
            assert_eq!(
                e.comm.is_some(),
                e.pid.is_some(),
                "pid and comm go together: {}",
                e.row()
            );
            if e.pid.is_some() {
                assert_eq!(e.comm.as_deref(), Some("tcppeer"), "{}", e.row());
            }
            (
                e.local().unwrap(),
                e.remote().unwrap(),
                e.newstate.clone(),
                e.pid,
            )
        })
        .collect();
    rows.sort();
    rows
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A listener, an established connection (both ends) and a TIME_WAIT left by
/// an earlier connection, all made before the tracer starts; plus a socket
/// on another port that the filter leaves out. The snapshot comes first and
/// lists exactly the four sockets on the port, each with its owner; the
/// established connection's later transitions follow.
#[test]
fn snapshot_lists_existing_sockets_with_their_owners() {
    let ns = Netns::new();
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    // An earlier connection, closed: its client end is left in TIME_WAIT.
    let mut old = Peer::client(&ns, "127.0.0.1:10050");
    server.accept();
    old.cmd("shutdown wr");
    server.expect_reply("wait-eof", "eof 0");
    server_closes_first(&mut server, &mut old);
    let old_local = old.local;
    // The live connection.
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();
    let (s, c) = (conn.local, conn.peer);
    // Elsewhere: not on the filtered port.
    let mut other = Peer::server(&ns, "127.0.0.1:10051");
    let mut other_client = Peer::client(&ns, "127.0.0.1:10051");
    other.accept();

    let mut tracer = Tracer::start(&ns, &["--port", "10050"]);
    // The snapshot is printed before anything else (stdout may reach us
    // after the ready line on stderr).
    tracer.wait_within(Duration::from_secs(5), "the snapshot", |t| {
        snapshot_rows(t).len() >= 4
    });
    let start = tracer.snapshot();
    assert_eq!(
        snapshot_rows(&start),
        vec![
            (old_local, s, TIME_WAIT.to_string(), None),
            (s, addr("0.0.0.0:0"), LISTEN.to_string(), Some(server.pid)),
            (s, c, ESTABLISHED.to_string(), Some(server.pid)),
            (c, s, ESTABLISHED.to_string(), Some(client.pid)),
        ]
        .tap_sort(),
        "{}",
        start.dump_all()
    );
    assert_eq!(start.all.len(), 4, "{}", start.dump_all());

    client_closes_first_to_time_wait(&tracer, &mut server, &mut client);
    server.expect_reply("close-listener", "listener-closed");
    tracer.wait_for(PORT, 0, LISTEN, CLOSE);
    other_client.close();
    let t = tracer.stop();
    assert!(
        t.all[..4]
            .iter()
            .all(|e| e.note.as_deref() == Some("snapshot")),
        "the snapshot should come first\n{}",
        t.dump_all()
    );

    let srv = assert_end(
        &t,
        "server end",
        s,
        c,
        &rows(&[&["sock_diag/snapshot is ESTABLISHED"], PASSIVE_CLOSE]),
    );
    assert_owner(&t, "server end, snapshot", &srv[0], server.pid);
    // close() runs in the owner's context: the kernel side learns it there.
    assert_owner(&t, "server end, close()", &srv[2], server.pid);
    let cli = assert_end(
        &t,
        "client end",
        c,
        s,
        &rows(&[
            &["sock_diag/snapshot is ESTABLISHED"],
            ACTIVE_CLOSE,
            ORPHAN_THEN_TIME_WAIT,
        ]),
    );
    assert_owner(&t, "client end, snapshot", &cli[0], client.pid);
    assert_owner(&t, "client end, close()", &cli[1], client.pid);
    assert_end(
        &t,
        "listener",
        s,
        addr("0.0.0.0:0"),
        &["sock_diag/snapshot is LISTEN", "tracepoint LISTEN->CLOSE"],
    );
    // The earlier connection's TIME_WAIT: listed, then nothing (it lasts 60 s).
    assert_end(
        &t,
        "earlier connection's TIME_WAIT",
        old_local,
        s,
        &["sock_diag/snapshot is TIME_WAIT"],
    );
    assert!(
        t.all.iter().all(|e| e.lport == PORT || e.rport == PORT),
        "only port {PORT} should be traced\n{}",
        t.dump_all()
    );
}

/// `--no-snapshot` with a port filter: no snapshot, only what happens next.
#[test]
fn no_snapshot_lists_nothing() {
    let mut before = Established::loopback();
    let mut tracer = Tracer::start(&before.ns, &["--port", "10050", "--no-snapshot"]);
    before.client.exit();
    before.server.exit();
    let t = tracer.stop_after_closes(3);
    assert!(
        t.all.iter().all(|e| e.note.as_deref() != Some("snapshot")),
        "{}",
        t.dump_all()
    );
}

/// Request sockets are listed too (credited to their listener's owner, as
/// the kernel side credits accepted sockets), and followed: a half-open
/// connection that was already waiting when the tracer started is reported
/// expired when the server gives up on it (tcp_synack_retries=1: ~3 s).
#[test]
fn snapshot_lists_a_half_open_connection_and_follows_it() {
    let ns = Netns::new();
    ns.sysctl(&["net.ipv4.tcp_synack_retries=1"]);
    // Every ACK to 127.0.0.2:10050 is dropped: connections made to that
    // address stay half-open on the server's side.
    ns.drop_acks("ip daddr 127.0.0.2 tcp dport 10050", None);
    let server = Peer::server(&ns, "0.0.0.0:10050");
    let client = Peer::client(&ns, "127.0.0.2:10050");
    let (s, c) = (addr("127.0.0.2:10050"), client.local);
    assert_eq!(ss_state(&ns, s, c).as_deref(), Some("SYN-RECV"));

    let mut tracer = Tracer::start(&ns, &["--port", "10050"]);
    wait_end(
        &tracer,
        8,
        s,
        c,
        "sock_diag/half-open-expired SYN_RECV->CLOSE",
    );
    let t = tracer.stop();
    assert_eq!(
        snapshot_rows(&t),
        vec![
            (s, c, SYN_RECV.to_string(), Some(server.pid)),
            (c, s, ESTABLISHED.to_string(), Some(client.pid)),
            (
                addr("0.0.0.0:10050"),
                addr("0.0.0.0:0"),
                LISTEN.to_string(),
                Some(server.pid)
            ),
        ]
        .tap_sort(),
        "{}",
        t.dump_all()
    );
    // The snapshot's row is the request socket's only row until the
    // expiry: listed, it is not announced again at its SYN-ACK retransmit
    // (at ~1 s, before or after the tracer started).
    let snap = "sock_diag/snapshot is SYN_RECV";
    let expired = "sock_diag/half-open-expired SYN_RECV->CLOSE";
    let request = assert_end(&t, "request socket", s, c, &[snap, expired]);
    for e in &request {
        assert_owner(&t, "request socket's row", e, server.pid);
    }
    t.assert_invariants();
}

trait TapSort {
    fn tap_sort(self) -> Self;
}

impl<T: Ord> TapSort for Vec<T> {
    fn tap_sort(mut self) -> Self {
        self.sort();
        self
    }
}
