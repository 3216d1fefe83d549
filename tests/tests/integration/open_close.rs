//! Opening and closing a loopback connection: the 10 transitions of its two
//! ends, plus the listener's 2 (NOTES §3).

use tcpstate_tests::states::*;
use tcpstate_tests::{Netns, Peer, Tracer};

const PORT: u16 = 10050;

/// The client opens and closes first; the server closes after reading EOF.
#[test]
fn client_closes_first() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();

    client.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(3);
    let t = tracer.stop();
    t.assert_path(
        "client end (active open, active close)",
        &t.client_end(&client),
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_path(
        "server end (passive open, passive close)",
        &t.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE],
    );
    t.assert_path("listener", &t.listener(PORT), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
}

/// The server closes first: the roles of active and passive closer swap.
#[test]
fn server_closes_first() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();

    server.close();
    client.expect_reply("wait-eof", "eof 0");
    client.close();
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(3);
    let t = tracer.stop();
    t.assert_path(
        "client end (active open, passive close)",
        &t.client_end(&client),
        &[CLOSE, SYN_SENT, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE],
    );
    t.assert_path(
        "server end (passive open, active close)",
        &t.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_path("listener", &t.listener(PORT), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
}

/// Data exchanged both ways changes nothing: still 5 transitions per end.
#[test]
fn data_transfer_adds_no_transitions() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();

    client.cmd("send 100000");
    server.expect_reply("recv 100000", "received 100000");
    server.cmd("send 5000");
    client.expect_reply("recv 5000", "received 5000");
    client.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
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

/// A listener that never accepts anything: CLOSE->LISTEN, LISTEN->CLOSE.
#[test]
fn listener_alone() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(1);
    let t = tracer.stop();
    t.assert_path("listener", &t.listener(PORT), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(1);
}

/// A process that exits with its sockets open: the kernel closes them, with
/// the same transitions as close(2).
#[test]
fn exit_closes_listener_and_connection() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();

    client.exit();
    server.expect_reply("wait-eof", "eof 0");
    server.exit();

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
