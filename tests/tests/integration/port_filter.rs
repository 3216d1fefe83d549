//! Port filters. `--port P` matches a connection by either end, so both ends
//! are shown in full: the client's CLOSE->SYN_SENT (local port still 0) and the
//! server child's LISTEN->SYN_RECV (tuple possibly incomplete) included.
//! Traffic on other ports of the same namespace is not shown at all.

use tcpstate_tests::scenario::*;

/// A whole connection to 127.0.0.1:`port` ([`closed_connection`]).
fn connection(ns: &Netns, port: u16) -> (Peer, Accepted) {
    closed_connection(ns, &format!("127.0.0.1:{port}"))
}

/// A fresh namespace and the tracer started in it with `filter`; then a
/// full connection on each of the `hidden` ports, which the filter must not
/// show (made first, so that anything leaking from them is out before the
/// traffic the test waits for).
fn filtered(filter: &[&str], hidden: &[u16]) -> (Netns, Tracer) {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, filter);
    for &port in hidden {
        connection(&ns, port);
    }
    (ns, tracer)
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
    let (ns, mut tracer) = filtered(&["--port", "10050"], &[10051, 10049]);
    let (client, conn) = connection(&ns, 10050);

    let t = tracer.stop_after_closes(3);
    // All 5 of each end: the client's CLOSE->SYN_SENT with local port 0, the
    // server's LISTEN->SYN_RECV.
    t.assert_connection(
        &client,
        paths::ACTIVE_CLOSER,
        &conn,
        paths::PASSIVE_CLOSER_SERVER,
    );
    let client_end = t.client_end(&client);
    assert_eq!(
        (client_end.events[0].lport, client_end.events[0].rport),
        (0, 10050),
        "the client's CLOSE->SYN_SENT precedes the choice of its local port\n{}",
        t.dump()
    );
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
    let (ns, mut tracer) = filtered(&["--port", "10050"], &[10051]);
    let two = TwoClients::run(&ns);
    let t = tracer.stop_after_closes(5);
    two.assert_paths(&t);
    t.assert_socket_count(5);
    assert_nothing_on_port(&t, 10051);
}

/// The tracer with `filter`; a whole connection on port 10051, then one on
/// 10050. Returns the trace once `closes` sockets have closed, the 10050
/// client and the server's view of its connection.
fn one_connection_beside_10051(filter: &[&str], closes: usize) -> (Trace, Peer, Accepted) {
    let (ns, mut tracer) = filtered(filter, &[10051]);
    let (client, conn) = connection(&ns, 10050);
    (tracer.stop_after_closes(closes), client, conn)
}

/// `--lport P`: only sockets whose local port is P, i.e. the server side
/// (listener and accepted socket), in full.
#[test]
fn lport_shows_the_server_side_only() {
    let (t, _client, conn) = one_connection_beside_10051(&["--lport", "10050"], 2);
    t.assert_path(
        "server end",
        &t.server_end(&conn),
        paths::PASSIVE_CLOSER_SERVER,
    );
    t.assert_path("listener", &t.listener(PORT), paths::LISTENER);
    t.assert_socket_count(2);
    assert_nothing_on_port(&t, 10051);
}

/// `--rport P`: only sockets whose remote port is P, i.e. the client side,
/// in full (its first event, with local port 0, included).
#[test]
fn rport_shows_the_client_side_only() {
    let (t, client, _conn) = one_connection_beside_10051(&["--rport", "10050"], 1);
    t.assert_path("client end", &t.client_end(&client), paths::ACTIVE_CLOSER);
    t.assert_socket_count(1);
    assert_nothing_on_port(&t, 10051);
}

/// `--port` is repeatable: connections on either port, nothing else.
#[test]
fn repeated_port_options_add_up() {
    let (ns, mut tracer) = filtered(&["--port", "10050", "--port", "10051"], &[10052]);
    let (first, first_conn) = connection(&ns, 10050);
    let (second, second_conn) = connection(&ns, 10051);

    let t = tracer.stop_after_closes(6);
    for (client, conn) in [(&first, &first_conn), (&second, &second_conn)] {
        t.assert_path("client end", &t.client_end(client), paths::ACTIVE_CLOSER);
        t.assert_path(
            "server end",
            &t.server_end(conn),
            paths::PASSIVE_CLOSER_SERVER,
        );
        t.assert_path("listener", &t.listener(conn.local.port()), paths::LISTENER);
    }
    t.assert_socket_count(6);
    assert_nothing_on_port(&t, 10052);
}
