//! IPv6: `::1` connections, IPv4 on an AF_INET6 socket (`::ffff:a.b.c.d`),
//! and the `-4` / `-6` family filters.

use tcpstate_tests::states::*;
use tcpstate_tests::{Accepted, Event, Netns, Peer, Socket, Trace, Tracer};

/// Every event of `socket` has this family; the ones with a complete tuple
/// (both ports known) have these addresses.
fn assert_addresses(
    t: &Trace,
    what: &str,
    socket: &Socket,
    family: &str,
    laddr: &str,
    raddr: &str,
) {
    let complete = |e: &&Event| e.lport != 0 && e.rport != 0;
    let wrong: Vec<String> = socket
        .events
        .iter()
        .filter(|e| e.family != family || (complete(e) && (e.laddr != laddr || e.raddr != raddr)))
        .map(|e| format!("{} {} {} -> {}", e.transition(), e.family, e.laddr, e.raddr))
        .collect();
    assert!(
        wrong.is_empty(),
        "the {what} should be {family} {laddr} -> {raddr}, but:\n  {}\n{}",
        wrong.join("\n  "),
        t.dump()
    );
    assert!(
        socket.events.iter().any(|e| complete(&e)),
        "the {what} never shows a complete tuple\n{}",
        t.dump()
    );
}

#[test]
fn ipv6_loopback_open_and_close() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "[::1]:10050");
    let mut client = Peer::client(&ns, "[::1]:10050");
    let conn = server.accept();

    client.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(3);
    let t = tracer.stop();
    let client_end = t.client_end(&client);
    let server_end = t.server_end(&conn);
    let listener = t.listener(10050);
    t.assert_path(
        "client end",
        &client_end,
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_path(
        "server end",
        &server_end,
        &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE],
    );
    t.assert_path("listener", &listener, &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
    assert_addresses(&t, "client end", &client_end, "ipv6", "::1", "::1");
    assert_addresses(&t, "server end", &server_end, "ipv6", "::1", "::1");
    assert!(
        listener
            .events
            .iter()
            .all(|e| e.family == "ipv6" && e.laddr == "::1"),
        "the listener should be ipv6 ::1\n{}",
        t.dump()
    );
}

/// An IPv4 client accepted by a dual-stack `[::]` listener: the accepted
/// socket is AF_INET6 and shows IPv4-mapped addresses; the client is plain IPv4.
#[test]
fn ipv4_on_dual_stack_listener_shows_mapped_addresses() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "[::]:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();
    assert_eq!(
        conn.peer.to_string(),
        format!("[::ffff:127.0.0.1]:{}", client.local.port())
    );

    client.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(3);
    let t = tracer.stop();
    let client_end = t.client_end(&client);
    let server_end = t.server_end(&conn);
    let listener = t.listener(10050);
    t.assert_path(
        "client end",
        &client_end,
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_path(
        "server end",
        &server_end,
        &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE],
    );
    t.assert_path("listener", &listener, &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
    assert_addresses(
        &t,
        "client end",
        &client_end,
        "ipv4",
        "127.0.0.1",
        "127.0.0.1",
    );
    assert_addresses(
        &t,
        "server end",
        &server_end,
        "ipv6",
        "::ffff:127.0.0.1",
        "::ffff:127.0.0.1",
    );
    assert!(
        listener
            .events
            .iter()
            .all(|e| e.family == "ipv6" && e.laddr == "::"),
        "the listener should be ipv6 ::\n{}",
        t.dump()
    );
}

/// One IPv4 connection on port 10050 and one IPv6 connection on port 10060,
/// both opened and closed; returns each client and the server's view.
fn one_connection_per_family(ns: &Netns) -> Vec<(Peer, Accepted)> {
    let mut done = Vec::new();
    for addr in ["127.0.0.1:10050", "[::1]:10060"] {
        let mut server = Peer::server(ns, addr);
        let mut client = Peer::client(ns, addr);
        let conn = server.accept();
        client.close();
        server.expect_reply("wait-eof", "eof 0");
        server.close();
        server.expect_reply("close-listener", "listener-closed");
        done.push((client, conn));
    }
    done
}

/// Both ends and the listener of a connection, in full.
fn assert_connection(t: &Trace, client: &Peer, conn: &Accepted) {
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

#[test]
fn family_filter_ipv4_only() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &["-4"]);
    let conns = one_connection_per_family(&ns);
    // Both connections are over; stop() drains whatever is still pending.
    tracer.wait_for_closes(3);
    let t = tracer.stop();
    let (client, conn) = &conns[0];
    assert_connection(&t, client, conn);
    t.assert_socket_count(3);
    assert!(
        t.events.iter().all(|e| e.family == "ipv4"),
        "-4 must show only IPv4 sockets\n{}",
        t.dump()
    );
}

#[test]
fn family_filter_ipv6_only() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &["-6"]);
    let conns = one_connection_per_family(&ns);
    tracer.wait_for_closes(3);
    let t = tracer.stop();
    let (client, conn) = &conns[1];
    assert_connection(&t, client, conn);
    t.assert_socket_count(3);
    assert!(
        t.events.iter().all(|e| e.family == "ipv6"),
        "-6 must show only IPv6 sockets\n{}",
        t.dump()
    );
}
