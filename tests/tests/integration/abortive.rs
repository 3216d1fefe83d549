//! Abortive closes: a RST instead of the FIN handshake takes both ends from
//! ESTABLISHED straight to CLOSE. Plus a connection refused by a closed port.

use tcpstate_tests::scenario::*;
use tcpstate_tests::states::*;

/// `closer` closes with 100 bytes it has not read (sent by the other end)
/// in its receive queue: that sends a RST (RFC 2525); the other end reads
/// the reset, then closes. Both ends are reset, then the listener closes.
fn close_with_unread_data(closer: Side) {
    let mut w = Connected::loopback(&[]);
    let (closer, other) = match closer {
        Side::Server => (&mut w.server, &mut w.client),
        Side::Client => (&mut w.client, &mut w.server),
    };
    other.cmd("send 100");
    closer.expect_reply("wait-unread 100", "unread 100");
    closer.close();
    other.expect_reply("wait-eof", "error wait-eof: ConnectionReset");
    other.close();
    w.close_listener_and_assert(paths::RESET, paths::RESET_SERVER);
}

#[test]
fn server_close_with_unread_data_resets_both_ends() {
    close_with_unread_data(Side::Server);
}

/// The mirror: the client closes with unread data.
#[test]
fn client_close_with_unread_data_resets_both_ends() {
    close_with_unread_data(Side::Client);
}

/// SO_LINGER with a zero timeout makes close(2) send a RST, no data needed.
#[test]
fn so_linger_zero_resets_both_ends() {
    let mut w = Connected::loopback(&[]);
    w.client.expect_reply("abort", "aborted");
    w.server
        .expect_reply("wait-eof", "error wait-eof: ConnectionReset");
    w.server.close();
    w.close_listener_and_assert(paths::RESET, paths::RESET_SERVER);
}

/// Connecting to a port nobody listens on: the SYN is answered by a RST.
#[test]
fn connection_refused() {
    let ns = Netns::new();
    let mut tracer = Tracer::start(&ns, &[]);
    let reply = Peer::client_failing(&ns, LOOPBACK);
    assert!(
        reply.contains("ConnectionRefused"),
        "connect should be refused, got {reply:?}"
    );

    let t = tracer.stop_after_closes(1);
    let client = t.socket("refused client", |s| {
        s.events.iter().all(|e| e.rport == PORT)
    });
    t.assert_path("refused client", &client, &[CLOSE, SYN_SENT, CLOSE]);
    t.assert_socket_count(1);
}
