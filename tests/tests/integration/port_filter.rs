//! Port filters. `--port P` matches a connection by either end, so both ends
//! are shown in full: the client's CLOSE->SYN_SENT (local port still 0) and the
//! server child's LISTEN->SYN_RECV (tuple possibly incomplete) included.
//! Traffic on other ports of the same namespace is not shown at all.

use tcpstate_tests::states::*;
use tcpstate_tests::{Accepted, Netns, Peer, Trace, Tracer};

/// A full connection to `port`: client closes first, then the server, then
/// the listener. Returns the client and the server's view of the connection.
fn connection(ns: &Netns, port: u16) -> (Peer, Accepted) {
    let addr = format!("127.0.0.1:{port}");
    let mut server = Peer::server(ns, &addr);
    let mut client = Peer::client(ns, &addr);
    let conn = server.accept();
    client.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
    server.expect_reply("close-listener", "listener-closed");
    (client, conn)
}

fn assert_nothing_on_port(t: &Trace, port: u16) {
    let leaked: Vec<String> = t
        .events
        .iter()
        .filter(|e| e.lport == port || e.rport == port)
        .map(|e| {
            format!(
                "{} {}:{} -> {}:{}",
                e.transition(),
                e.laddr,
                e.lport,
                e.raddr,
                e.rport
            )
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "nothing on port {port} should be shown, got:\n  {}\n{}",
        leaked.join("\n  "),
        t.dump()
    );
}

#[test]
fn port_shows_both_ends_and_the_listener_in_full() {
    let ns = Netns::new();
    let mut tracer = Tracer::start(&ns, &["--port", "10050"]);
    // Other ports first, so that anything leaking from them is out before
    // the traffic we wait for.
    connection(&ns, 10051);
    connection(&ns, 10049);
    let (client, conn) = connection(&ns, 10050);

    tracer.wait_for_closes(3);
    let t = tracer.stop();
    let client_end = t.client_end(&client);
    t.assert_path(
        "client end (all 5, CLOSE->SYN_SENT with local port 0 included)",
        &client_end,
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    assert_eq!(
        (client_end.events[0].lport, client_end.events[0].rport),
        (0, 10050),
        "the client's CLOSE->SYN_SENT precedes the choice of its local port\n{}",
        t.dump()
    );
    t.assert_path(
        "server end (all 5, LISTEN->SYN_RECV included)",
        &t.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE],
    );
    t.assert_path("listener", &t.listener(10050), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
    assert_eq!(
        t.events.len(),
        12,
        "10 transitions + the listener's 2\n{}",
        t.dump()
    );
    assert_nothing_on_port(&t, 10051);
    assert_nothing_on_port(&t, 10049);
}

/// The port filter keeps following sockets whatever side the port is on:
/// two connections to the port, one closed by each side.
#[test]
fn port_follows_every_connection_on_the_port() {
    let ns = Netns::new();
    let mut tracer = Tracer::start(&ns, &["--port", "10050"]);
    connection(&ns, 10051);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut first = Peer::client(&ns, "127.0.0.1:10050");
    let first_conn = server.accept();
    let mut second = Peer::client(&ns, "127.0.0.1:10050");
    let second_conn = server.accept();
    // The server closes the second connection (current), then the client of
    // the first one closes.
    server.close();
    second.expect_reply("wait-eof", "eof 0");
    second.close();
    first.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(5);
    let t = tracer.stop();
    t.assert_path(
        "first client end",
        &t.client_end(&first),
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_path(
        "first server end",
        &t.server_end(&first_conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE],
    );
    t.assert_path(
        "second client end",
        &t.client_end(&second),
        &[CLOSE, SYN_SENT, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE],
    );
    t.assert_path(
        "second server end",
        &t.server_end(&second_conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_path("listener", &t.listener(10050), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(5);
    assert_nothing_on_port(&t, 10051);
}

/// `--lport P`: only sockets whose local port is P, i.e. the server side
/// (listener and accepted socket), in full.
#[test]
fn lport_shows_the_server_side_only() {
    let ns = Netns::new();
    let mut tracer = Tracer::start(&ns, &["--lport", "10050"]);
    connection(&ns, 10051);
    let (_client, conn) = connection(&ns, 10050);

    tracer.wait_for_closes(2);
    let t = tracer.stop();
    t.assert_path(
        "server end",
        &t.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE],
    );
    t.assert_path("listener", &t.listener(10050), &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(2);
    assert_nothing_on_port(&t, 10051);
}

/// `--rport P`: only sockets whose remote port is P, i.e. the client side,
/// in full (its first event, with local port 0, included).
#[test]
fn rport_shows_the_client_side_only() {
    let ns = Netns::new();
    let mut tracer = Tracer::start(&ns, &["--rport", "10050"]);
    connection(&ns, 10051);
    let (client, _conn) = connection(&ns, 10050);

    tracer.wait_for_closes(1);
    let t = tracer.stop();
    t.assert_path(
        "client end",
        &t.client_end(&client),
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_socket_count(1);
    assert_nothing_on_port(&t, 10051);
}

/// `--port` is repeatable: connections on either port, nothing else.
#[test]
fn repeated_port_options_add_up() {
    let ns = Netns::new();
    let mut tracer = Tracer::start(&ns, &["--port", "10050", "--port", "10051"]);
    connection(&ns, 10052);
    let (first, first_conn) = connection(&ns, 10050);
    let (second, second_conn) = connection(&ns, 10051);

    tracer.wait_for_closes(6);
    let t = tracer.stop();
    for (client, conn) in [(&first, &first_conn), (&second, &second_conn)] {
        t.assert_path(
            "client end",
            &t.client_end(client),
            &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
        );
        t.assert_path(
            "server end",
            &t.server_end(conn),
            &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE],
        );
        t.assert_path(
            "listener",
            &t.listener(conn.local.port()),
            &[CLOSE, LISTEN, CLOSE],
        );
    }
    t.assert_socket_count(6);
    assert_nothing_on_port(&t, 10052);
}
