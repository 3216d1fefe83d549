//! Closing handshakes other than the plain four-way one: simultaneous close
//! (CLOSING) and half-close with shutdown(2).
//!
//! CLOSING needs a side to receive the peer's FIN while its own FIN is still
//! unacknowledged. On loopback a FIN arrives before the peer can close, so we
//! make it deterministic with nftables inside the namespace: the
//! closing side's FINs are dropped on input until the peer's FIN has crossed
//! them, then the gate is lifted and the retransmitted FIN completes the close.
//! (Dropping only the first FIN, `limit rate 1/hour burst 1 packets`, would
//! rely on the peer closing before the retransmission timer fires.)

use tcpstate_tests::scenario::*;
use tcpstate_tests::states::*;

/// A client end that closed first and went through CLOSING.
const CLOSING_CLIENT: &[&str] = &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, CLOSING, CLOSE];
/// A server end that closed first and went through CLOSING.
const CLOSING_SERVER: &[&str] = &[LISTEN, SYN_RECV, ESTABLISHED, FIN_WAIT1, CLOSING, CLOSE];

/// The server closes first but its FIN is lost; the client closes before it
/// is retransmitted. The server receives a FIN while in FIN_WAIT1: CLOSING.
/// The client's FIN was acked before the server's FIN arrived: FIN_WAIT2.
#[test]
fn server_fin_lost_server_goes_through_closing() {
    let mut w = Connected::loopback(&[]);
    w.fins_cross(Side::Server, "close");
    w.close_listener_and_assert(paths::ACTIVE_CLOSER, CLOSING_SERVER);
}

/// The mirror: the client's FIN is lost, the client goes through CLOSING.
#[test]
fn client_fin_lost_client_goes_through_closing() {
    let mut w = Connected::loopback(&[]);
    w.fins_cross(Side::Client, "close");
    w.close_listener_and_assert(CLOSING_CLIENT, paths::ACTIVE_CLOSER_SERVER);
}

/// Simultaneous close with shutdown(SHUT_WR) instead of close(2): the
/// sockets stay owned by their processes (not orphaned) and the result is
/// the same.
#[test]
fn simultaneous_shutdown_goes_through_closing() {
    let mut w = Connected::loopback(&[]);
    w.simultaneous_shutdown();
    w.close_listener_and_assert(paths::ACTIVE_CLOSER, CLOSING_SERVER);
}

/// Half-close: the client shuts down its sending side and keeps receiving.
/// It sits in FIN_WAIT2 (a full socket, still owned) while the server keeps
/// sending, and leaves it when the server's FIN arrives.
#[test]
fn half_close_then_data_then_close() {
    let mut w = Connected::loopback(&[]);
    w.client.cmd("shutdown wr");
    w.server.expect_reply("wait-eof", "eof 0");
    w.tracer.wait_for(w.c.port(), PORT, FIN_WAIT1, FIN_WAIT2);
    w.server.cmd("send 3000");
    w.client.expect_reply("recv 3000", "received 3000");
    let mid = w.tracer.snapshot();
    mid.assert_path(
        "client end, half-closed",
        &mid.client_end(&w.client),
        &paths::ACTIVE_CLOSER[..5],
    );
    w.server_closes_first();
    w.close_listener_and_assert(paths::ACTIVE_CLOSER, paths::PASSIVE_CLOSER_SERVER);
}
