//! The seed article's experiments ("LINUX netstat连接状态解析及TCP状态转换"):
//! a server bound to INADDR_ANY:10050 and a client, both idle; Ctrl-C (SIGINT,
//! default disposition) to one of them while connected.
//!
//! The article reads `netstat`: the killed side shows `FIN_WAIT2 -` (no
//! process) and the survivor `CLOSE_WAIT`. The tracepoint tells more: the
//! killed side's full socket actually goes FIN_WAIT2->CLOSE as soon as its FIN
//! is acked, and what netstat keeps showing in FIN_WAIT2 is the timewait
//! socket that replaced it (NOTES §3). The survivor stays in CLOSE_WAIT until
//! it closes, and its FIN is then acked by that timewait socket.

use std::net::SocketAddr;

use tcpstate_tests::states::*;
use tcpstate_tests::{Netns, Peer, Tracer};

const PORT: u16 = 10050;

/// The `ss -tanpH` line of the socket `local` -> `peer`, as
/// `(state, has a process)`.
fn ss_state(ns: &Netns, local: SocketAddr, peer: SocketAddr) -> Option<(String, bool)> {
    let out = ns.exec(&["ss", "-tanpH"]);
    out.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 5 && f[3] == local.to_string() && f[4] == peer.to_string())
            .then(|| (f[0].to_string(), line.contains("tcppeer")))
    })
}

/// Server Ctrl-C while a client is connected: the server is the active closer.
#[test]
fn sigint_to_server_while_client_connected() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "0.0.0.0:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();

    server.sigint();
    tracer.wait_for(conn.local.port(), conn.peer.port(), FIN_WAIT2, CLOSE);
    tracer.wait_for(client.local.port(), PORT, ESTABLISHED, CLOSE_WAIT);

    // What the article saw with netstat.
    assert_eq!(
        ss_state(&ns, client.local, conn.local),
        Some(("CLOSE-WAIT".into(), true)),
        "the client should be in CLOSE-WAIT, owned by tcppeer"
    );
    assert_eq!(
        ss_state(&ns, conn.local, client.local),
        Some(("FIN-WAIT-2".into(), false)),
        "the killed server's end should show as FIN-WAIT-2 without a process"
    );

    // What the tracer saw meanwhile: the client is stuck in CLOSE_WAIT, the
    // server's full socket is already closed.
    let mid = tracer.snapshot();
    mid.assert_path(
        "client end, after the server's death",
        &mid.client_end(&client),
        &[CLOSE, SYN_SENT, ESTABLISHED, CLOSE_WAIT],
    );
    mid.assert_path(
        "server end, killed",
        &mid.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    mid.assert_path(
        "listener, killed",
        &mid.listener(PORT),
        &[CLOSE, LISTEN, CLOSE],
    );

    // The client finally closes; the server's timewait socket acks its FIN.
    client.close();
    tracer.wait_for(client.local.port(), PORT, LAST_ACK, CLOSE);
    let t = tracer.stop();
    t.assert_path(
        "client end",
        &t.client_end(&client),
        &[CLOSE, SYN_SENT, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE],
    );
    t.assert_path(
        "server end",
        &t.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_path("listener", &t.listener(PORT), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
}

/// The mirror case: client Ctrl-C; the client is the active closer and the
/// server stays in CLOSE_WAIT with its listener still open.
#[test]
fn sigint_to_client_while_connected() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "0.0.0.0:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();

    client.sigint();
    tracer.wait_for(client.local.port(), PORT, FIN_WAIT2, CLOSE);
    tracer.wait_for(conn.local.port(), conn.peer.port(), ESTABLISHED, CLOSE_WAIT);

    assert_eq!(
        ss_state(&ns, conn.local, client.local),
        Some(("CLOSE-WAIT".into(), true)),
        "the server's end should be in CLOSE-WAIT, owned by tcppeer"
    );
    assert_eq!(
        ss_state(&ns, client.local, conn.local),
        Some(("FIN-WAIT-2".into(), false)),
        "the killed client's end should show as FIN-WAIT-2 without a process"
    );

    let mid = tracer.snapshot();
    mid.assert_path(
        "client end, killed",
        &mid.client_end(&client),
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    mid.assert_path(
        "server end, after the client's death",
        &mid.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE_WAIT],
    );
    mid.assert_path(
        "listener, still open",
        &mid.listener(PORT),
        &[CLOSE, LISTEN],
    );

    server.close();
    server.expect_reply("close-listener", "listener-closed");
    tracer.wait_for(conn.local.port(), conn.peer.port(), LAST_ACK, CLOSE);
    tracer.wait_for_closes(3);
    let t = tracer.stop();
    t.assert_path(
        "client end",
        &t.client_end(&client),
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_path(
        "server end",
        &t.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE],
    );
    t.assert_path("listener", &t.listener(PORT), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
}
