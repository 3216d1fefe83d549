//! Opening and closing a loopback connection: the 10 transitions of its two
//! ends, plus the listener's 2.

use tcpstate_tests::scenario::*;

/// The client opens and closes first; the server closes after reading EOF.
#[test]
fn client_closes_first() {
    let mut w = Connected::loopback(&[]);
    w.client_closes_first();
    let t = w.close_listener_and_stop(3);
    // Client: active open, active close; server: passive open, passive close.
    w.assert_paths(&t, paths::ACTIVE_CLOSER, paths::PASSIVE_CLOSER_SERVER);
}

/// The server closes first: the roles of active and passive closer swap.
#[test]
fn server_closes_first() {
    let mut w = Connected::loopback(&[]);
    w.server_closes_first();
    w.close_listener_and_assert(paths::PASSIVE_CLOSER, paths::ACTIVE_CLOSER_SERVER);
}

/// Data exchanged both ways changes nothing: still 5 transitions per end.
#[test]
fn data_transfer_adds_no_transitions() {
    let mut w = Connected::loopback(&[]);
    w.client.cmd("send 100000");
    w.server.expect_reply("recv 100000", "received 100000");
    w.server.cmd("send 5000");
    w.client.expect_reply("recv 5000", "received 5000");
    w.client_closes_first();
    w.close_listener_and_assert(paths::ACTIVE_CLOSER, paths::PASSIVE_CLOSER_SERVER);
}

/// A listener that never accepts anything: CLOSE->LISTEN, LISTEN->CLOSE.
#[test]
fn listener_alone() {
    let ns = Netns::new();
    let mut tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, LOOPBACK);
    server.expect_reply("close-listener", "listener-closed");

    let t = tracer.stop_after_closes(1);
    t.assert_path("listener", &t.listener(PORT), paths::LISTENER);
    t.assert_socket_count(1);
}

/// A process that exits with its sockets open: the kernel closes them, with
/// the same transitions as close(2).
#[test]
fn exit_closes_listener_and_connection() {
    let mut w = Connected::loopback(&[]);
    w.client.exit();
    w.server.expect_reply("wait-eof", "eof 0");
    w.server.exit();

    let t = w.tracer.stop_after_closes(3);
    w.assert_paths(&t, paths::ACTIVE_CLOSER, paths::PASSIVE_CLOSER_SERVER);
}

/// Without kernel BTF (as on a kernel built without it) tcpstate carries
/// the changes on the classic tracepoint: the same rows, both ends.
#[test]
fn without_kernel_btf_the_classic_tracepoint_gives_the_same_rows() {
    let mut w = Connected::loopback(&["--no-kernel-btf"]);
    w.client_closes_first();
    let t = w.close_listener_and_stop(3);
    w.assert_paths(&t, paths::ACTIVE_CLOSER, paths::PASSIVE_CLOSER_SERVER);
}
