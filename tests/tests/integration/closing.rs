//! Closing handshakes other than the plain four-way one: simultaneous close
//! (CLOSING) and half-close with shutdown(2).
//!
//! CLOSING needs a side to receive the peer's FIN while its own FIN is still
//! unacknowledged. On loopback a FIN arrives before the peer can close, so we
//! make it deterministic with nftables inside the namespace (NOTES §3): the
//! closing side's FINs are dropped on input until the peer's FIN has crossed
//! them, then the gate is lifted and the retransmitted FIN completes the close.
//! (NOTES drops only the first FIN with `limit rate 1/hour burst 1 packets`;
//! the gate does the same without relying on the peer closing before the
//! retransmission timer fires.)

use tcpstate_tests::states::*;
use tcpstate_tests::{Netns, Peer, Tracer};

const PORT: u16 = 10050;

/// Drops every FIN matching `selector` (`tcp sport 10050`, ...) on input.
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

fn lift_gate(ns: &Netns) {
    ns.nft("delete table inet tcpst_gate");
}

/// The server closes first but its FIN is lost; the client closes before it
/// is retransmitted. The server receives a FIN while in FIN_WAIT1: CLOSING.
#[test]
fn server_fin_lost_server_goes_through_closing() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();

    drop_fins(&ns, "tcp sport 10050");
    server.close();
    tracer.wait_for(conn.local.port(), conn.peer.port(), ESTABLISHED, FIN_WAIT1);
    client.close();
    tracer.wait_for(conn.local.port(), conn.peer.port(), FIN_WAIT1, CLOSING);
    lift_gate(&ns);
    tracer.wait_for(conn.local.port(), conn.peer.port(), CLOSING, CLOSE);
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(3);
    let t = tracer.stop();
    t.assert_path(
        "server end (its FIN lost, then the client's FIN arrives)",
        &t.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, FIN_WAIT1, CLOSING, CLOSE],
    );
    t.assert_path(
        "client end (its FIN acked before the server's FIN arrives)",
        &t.client_end(&client),
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_path("listener", &t.listener(PORT), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
}

/// The mirror: the client's FIN is lost, the client goes through CLOSING.
#[test]
fn client_fin_lost_client_goes_through_closing() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();

    drop_fins(&ns, "tcp dport 10050");
    client.close();
    tracer.wait_for(client.local.port(), PORT, ESTABLISHED, FIN_WAIT1);
    server.close();
    tracer.wait_for(client.local.port(), PORT, FIN_WAIT1, CLOSING);
    lift_gate(&ns);
    tracer.wait_for(client.local.port(), PORT, CLOSING, CLOSE);
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(3);
    let t = tracer.stop();
    t.assert_path(
        "client end (its FIN lost, then the server's FIN arrives)",
        &t.client_end(&client),
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, CLOSING, CLOSE],
    );
    t.assert_path(
        "server end (its FIN acked before the client's FIN arrives)",
        &t.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_path("listener", &t.listener(PORT), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
}

/// Simultaneous close with shutdown(SHUT_WR) instead of close(2): the
/// sockets stay owned by their processes (not orphaned) and the result is
/// the same.
#[test]
fn simultaneous_shutdown_goes_through_closing() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();

    drop_fins(&ns, "tcp sport 10050");
    server.cmd("shutdown wr");
    tracer.wait_for(conn.local.port(), conn.peer.port(), ESTABLISHED, FIN_WAIT1);
    client.cmd("shutdown wr");
    tracer.wait_for(conn.local.port(), conn.peer.port(), FIN_WAIT1, CLOSING);
    lift_gate(&ns);
    tracer.wait_for(conn.local.port(), conn.peer.port(), CLOSING, CLOSE);
    tracer.wait_for(client.local.port(), PORT, FIN_WAIT2, CLOSE);
    server.expect_reply("wait-eof", "eof 0");
    client.expect_reply("wait-eof", "eof 0");
    server.close();
    client.close();
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(3);
    let t = tracer.stop();
    t.assert_path(
        "server end",
        &t.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, FIN_WAIT1, CLOSING, CLOSE],
    );
    t.assert_path(
        "client end",
        &t.client_end(&client),
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_path("listener", &t.listener(PORT), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
}

/// Half-close: the client shuts down its sending side and keeps receiving.
/// It sits in FIN_WAIT2 (a full socket, still owned) while the server keeps
/// sending, and leaves it when the server's FIN arrives.
#[test]
fn half_close_then_data_then_close() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();

    client.cmd("shutdown wr");
    server.expect_reply("wait-eof", "eof 0");
    tracer.wait_for(client.local.port(), PORT, FIN_WAIT1, FIN_WAIT2);
    server.cmd("send 3000");
    client.expect_reply("recv 3000", "received 3000");
    let mid = tracer.snapshot();
    mid.assert_path(
        "client end, half-closed",
        &mid.client_end(&client),
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2],
    );
    server.close();
    client.expect_reply("wait-eof", "eof 0");
    client.close();
    server.expect_reply("close-listener", "listener-closed");

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
