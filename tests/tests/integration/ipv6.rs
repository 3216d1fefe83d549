//! IPv6: `::1` connections, IPv4 on an AF_INET6 socket (`::ffff:a.b.c.d`),
//! and the `-4` / `-6` family filters.

use tcpstate_tests::scenario::*;
use tcpstate_tests::{Event, Socket};

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

/// Asserts the families and addresses of `w`'s connection: the client end
/// is `client` (family, and the address of both ends as it sees them), the
/// server end `server`, and the listener listens on IPv6 `listener`.
fn assert_families(
    t: &Trace,
    w: &Connected,
    client: (&str, &str),
    server: (&str, &str),
    listener: &str,
) {
    let (family, addr) = client;
    assert_addresses(
        t,
        "client end",
        &t.client_end(&w.client),
        family,
        addr,
        addr,
    );
    let (family, addr) = server;
    assert_addresses(t, "server end", &t.server_end(&w.conn), family, addr, addr);
    assert!(
        t.listener(PORT)
            .events
            .iter()
            .all(|e| e.family == "ipv6" && e.laddr == listener),
        "the listener should be ipv6 {listener}\n{}",
        t.dump()
    );
}

#[test]
fn ipv6_loopback_open_and_close() {
    let mut w = Connected::open_in(Netns::new(), &[], "[::1]:10050", "[::1]:10050");
    w.client_closes_first();
    let t = w.close_listener_and_assert(paths::ACTIVE_CLOSER, paths::PASSIVE_CLOSER_SERVER);
    assert_families(&t, &w, ("ipv6", "::1"), ("ipv6", "::1"), "::1");
}

/// An IPv4 client accepted by a dual-stack `[::]` listener: the accepted
/// socket is AF_INET6 and shows IPv4-mapped addresses; the client is plain IPv4.
#[test]
fn ipv4_on_dual_stack_listener_shows_mapped_addresses() {
    let mut w = Connected::open_in(Netns::new(), &[], "[::]:10050", LOOPBACK);
    assert_eq!(
        w.conn.peer.to_string(),
        format!("[::ffff:127.0.0.1]:{}", w.client.local.port())
    );
    w.client_closes_first();
    let t = w.close_listener_and_assert(paths::ACTIVE_CLOSER, paths::PASSIVE_CLOSER_SERVER);
    assert_families(
        &t,
        &w,
        ("ipv4", "127.0.0.1"),
        ("ipv6", "::ffff:127.0.0.1"),
        "::",
    );
}

/// One IPv4 connection on port 10050 and one IPv6 connection on port 10060,
/// both opened and closed; returns each client and the server's view.
fn one_connection_per_family(ns: &Netns) -> Vec<(Peer, Accepted)> {
    ["127.0.0.1:10050", "[::1]:10060"]
        .into_iter()
        .map(|addr| closed_connection(ns, addr))
        .collect()
}

/// With `flag` (`-4` or `-6`), of one connection per family only the one
/// of `family` is shown, in full.
fn assert_family_filter(flag: &str, family: &str) {
    let ns = Netns::new();
    let mut tracer = Tracer::start(&ns, &[flag]);
    let conns = one_connection_per_family(&ns);
    // Both connections are over; stop() drains whatever is still pending.
    let t = tracer.stop_after_closes(3);
    let (client, conn) = &conns[usize::from(family == "ipv6")];
    t.assert_connection(
        client,
        paths::ACTIVE_CLOSER,
        conn,
        paths::PASSIVE_CLOSER_SERVER,
    );
    assert!(
        t.events.iter().all(|e| e.family == family),
        "{flag} must show only {family} sockets\n{}",
        t.dump()
    );
}

#[test]
fn family_filter_ipv4_only() {
    assert_family_filter("-4", "ipv4");
}

#[test]
fn family_filter_ipv6_only() {
    assert_family_filter("-6", "ipv6");
}
