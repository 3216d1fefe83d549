//! Abortive closes: a RST instead of the FIN handshake takes both ends from
//! ESTABLISHED straight to CLOSE. Plus a connection refused by a closed port.

use tcpstate_tests::states::*;
use tcpstate_tests::{Netns, Peer, Tracer};

const PORT: u16 = 10050;

/// close(2) with unread data in the receive queue sends a RST (RFC 2525).
#[test]
fn server_close_with_unread_data_resets_both_ends() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();

    client.cmd("send 100");
    server.expect_reply("wait-unread 100", "unread 100");
    server.close();
    client.expect_reply("wait-eof", "error wait-eof: ConnectionReset");
    client.close();
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(3);
    let t = tracer.stop();
    t.assert_path(
        "server end (closed with unread data)",
        &t.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE],
    );
    t.assert_path(
        "client end (reset)",
        &t.client_end(&client),
        &[CLOSE, SYN_SENT, ESTABLISHED, CLOSE],
    );
    t.assert_path("listener", &t.listener(PORT), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
}

/// The mirror: the client closes with unread data.
#[test]
fn client_close_with_unread_data_resets_both_ends() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();

    server.cmd("send 100");
    client.expect_reply("wait-unread 100", "unread 100");
    client.close();
    server.expect_reply("wait-eof", "error wait-eof: ConnectionReset");
    server.close();
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(3);
    let t = tracer.stop();
    t.assert_path(
        "client end (closed with unread data)",
        &t.client_end(&client),
        &[CLOSE, SYN_SENT, ESTABLISHED, CLOSE],
    );
    t.assert_path(
        "server end (reset)",
        &t.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE],
    );
    t.assert_path("listener", &t.listener(PORT), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
}

/// SO_LINGER with a zero timeout makes close(2) send a RST, no data needed.
#[test]
fn so_linger_zero_resets_both_ends() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();

    client.expect_reply("abort", "aborted");
    server.expect_reply("wait-eof", "error wait-eof: ConnectionReset");
    server.close();
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(3);
    let t = tracer.stop();
    t.assert_path(
        "client end (SO_LINGER 0)",
        &t.client_end(&client),
        &[CLOSE, SYN_SENT, ESTABLISHED, CLOSE],
    );
    t.assert_path(
        "server end (reset)",
        &t.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE],
    );
    t.assert_path("listener", &t.listener(PORT), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
}

/// Connecting to a port nobody listens on: the SYN is answered by a RST.
#[test]
fn connection_refused() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let reply = Peer::client_failing(&ns, "127.0.0.1:10050");
    assert!(
        reply.contains("ConnectionRefused"),
        "connect should be refused, got {reply:?}"
    );

    tracer.wait_for_closes(1);
    let t = tracer.stop();
    let client = t.socket("refused client", |s| {
        s.events.iter().all(|e| e.rport == PORT)
    });
    t.assert_path("refused client", &client, &[CLOSE, SYN_SENT, CLOSE]);
    t.assert_socket_count(1);
}
