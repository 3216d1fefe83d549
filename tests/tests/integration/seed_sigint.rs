//! Ctrl-C to one end of an idle connection, as netstat tutorials show it:
//! a server bound to INADDR_ANY:10050 and a client, both idle; Ctrl-C (SIGINT,
//! default disposition) to one of them while connected.
//!
//! Read with `netstat`, the killed side shows `FIN_WAIT2 -` (no
//! process) and the survivor `CLOSE_WAIT`. The tracepoint tells more: the
//! killed side's full socket actually goes FIN_WAIT2->CLOSE as soon as its FIN
//! is acked, and what netstat keeps showing in FIN_WAIT2 is the timewait
//! socket that replaced it. The survivor stays in CLOSE_WAIT until
//! it closes, and its FIN is then acked by that timewait socket.

use std::net::SocketAddr;

use tcpstate_tests::scenario::*;
use tcpstate_tests::states::*;

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

/// Ctrl-C to the `killed` end of `w`'s connection. Once the kernel has
/// closed the killed end's socket and the survivor is in CLOSE_WAIT, checks
/// what netstat shows meanwhile (the survivor in CLOSE-WAIT with its
/// process, the killed end in FIN-WAIT-2 without one) and returns what the
/// tracer saw so far.
fn sigint(w: &mut Connected, killed: Side) -> Trace {
    let (dead, k, o, (dead_name, survivor_name)) = match killed {
        Side::Server => (&mut w.server, w.s, w.c, ("server", "client")),
        Side::Client => (&mut w.client, w.c, w.s, ("client", "server")),
    };
    dead.sigint();
    w.tracer.wait_for(k.port(), o.port(), FIN_WAIT2, CLOSE);
    w.tracer
        .wait_for(o.port(), k.port(), ESTABLISHED, CLOSE_WAIT);
    assert_eq!(
        ss_state(&w.ns, o, k),
        Some(("CLOSE-WAIT".into(), true)),
        "the {survivor_name}'s end should be in CLOSE-WAIT, owned by tcppeer"
    );
    assert_eq!(
        ss_state(&w.ns, k, o),
        Some(("FIN-WAIT-2".into(), false)),
        "the killed {dead_name}'s end should show as FIN-WAIT-2 without a process"
    );
    w.tracer.snapshot()
}

/// Server Ctrl-C while a client is connected: the server is the active closer.
#[test]
fn sigint_to_server_while_client_connected() {
    let mut w = Connected::wildcard(&[]);
    let c = w.c;

    // What the tracer saw meanwhile: the client is stuck in CLOSE_WAIT, the
    // server's full socket is already closed, and so is its listener.
    let mid = sigint(&mut w, Side::Server);
    w.assert_paths_so_far(
        &mid,
        &paths::PASSIVE_CLOSER[..4],
        paths::ACTIVE_CLOSER_SERVER,
        paths::LISTENER,
    );

    // The client finally closes; the server's timewait socket acks its FIN.
    w.client.close();
    w.tracer.wait_for(c.port(), PORT, LAST_ACK, CLOSE);
    let t = w.tracer.stop();
    w.assert_paths(&t, paths::PASSIVE_CLOSER, paths::ACTIVE_CLOSER_SERVER);
}

/// The mirror case: client Ctrl-C; the client is the active closer and the
/// server stays in CLOSE_WAIT with its listener still open.
#[test]
fn sigint_to_client_while_connected() {
    let mut w = Connected::wildcard(&[]);
    let (s, c) = (w.s, w.c);

    let mid = sigint(&mut w, Side::Client);
    w.assert_paths_so_far(
        &mid,
        paths::ACTIVE_CLOSER,
        &paths::PASSIVE_CLOSER_SERVER[..4],
        &paths::LISTENER[..2],
    );

    w.server.close();
    w.server.expect_reply("close-listener", "listener-closed");
    w.tracer.wait_for(s.port(), c.port(), LAST_ACK, CLOSE);
    let t = w.tracer.stop_after_closes(3);
    w.assert_paths(&t, paths::ACTIVE_CLOSER, paths::PASSIVE_CLOSER_SERVER);
}
