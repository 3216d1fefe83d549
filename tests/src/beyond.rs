//! Helpers for the tests of what tcpstate reports beyond the state
//! tracepoint: lingering half-open connections, timewait sockets, the
//! start-up snapshot and `--stuck`. Those rows come from other sources
//! (`synack_tracepoint`, `sock_diag`, `tracker`) and carry no socket address
//! of a full socket, so a connection end is identified by its tuple: the
//! tracepoint events of the sockets that had that tuple, plus the rows of
//! other sources with that tuple, in the tracer's output order. Each row is
//! compared by its label (`source[/note] OLD->NEW`, or `source/note is STATE`
//! for a state row).

use std::net::SocketAddr;
use std::time::Duration;

pub use crate::Event;
pub use crate::scenario::*;
pub use crate::states::*;

/// A client's active open.
pub const OPENED: &[&str] = &[
    "tracepoint CLOSE->SYN_SENT",
    "tracepoint SYN_SENT->ESTABLISHED",
];
/// A prompt passive open: exactly the kernel's two rows.
pub const ACCEPTED: &[&str] = &[
    "tracepoint LISTEN->SYN_RECV",
    "tracepoint SYN_RECV->ESTABLISHED",
];
/// The end that closes first, up to its full socket's CLOSE (a timewait
/// socket takes over).
pub const ACTIVE_CLOSE: &[&str] = &[
    "tracepoint ESTABLISHED->FIN_WAIT1",
    "tracepoint FIN_WAIT1->FIN_WAIT2",
    "tracepoint FIN_WAIT2->CLOSE",
];
/// The end whose peer closes first.
pub const PASSIVE_CLOSE: &[&str] = &[
    "tracepoint ESTABLISHED->CLOSE_WAIT",
    "tracepoint CLOSE_WAIT->LAST_ACK",
    "tracepoint LAST_ACK->CLOSE",
];
/// The timewait socket of an orphan (closed before the peer's FIN came),
/// then the peer's FIN arriving. The peer is local (loopback): its
/// LAST_ACK->CLOSE says the orphan acked its FIN, so the tracker moves the
/// orphan to TIME_WAIT at once, without waiting for a dump.
pub const ORPHAN_THEN_TIME_WAIT: &[&str] = &[
    "tracker/timewait-socket is FIN_WAIT2",
    "tracker/timewait FIN_WAIT2->TIME_WAIT",
];
/// A timewait socket that took over in TIME_WAIT (the peer's FIN had
/// arrived).
pub const TIME_WAIT_SOCKET: &[&str] = &["tracker/timewait-socket is TIME_WAIT"];

/// That timewait socket, then its expiry (TCP_TIMEWAIT_LEN, 60 s).
pub const TIME_WAIT_EXPIRED: &[&str] = &[
    "tracker/timewait-socket is TIME_WAIT",
    "sock_diag/timewait-expired TIME_WAIT->CLOSE",
];

/// An orphan's timewait socket in FIN_WAIT2 (closed before the peer's FIN
/// came), then its expiry (tcp_fin_timeout) without the peer's FIN.
pub const ORPHAN_EXPIRED: &[&str] = &[
    "tracker/timewait-socket is FIN_WAIT2",
    "sock_diag/timewait-expired FIN_WAIT2->CLOSE",
];

/// The rows of `parts`, one after the other.
pub fn rows<'a>(parts: &[&[&'a str]]) -> Vec<&'a str> {
    parts.concat()
}

/// The events of one connection end (`local` -> `remote`), every source, in
/// output order: the tracepoint events of the socket lives that had this
/// tuple (including a client's CLOSE->SYN_SENT, whose local port is still 0)
/// and the other sources' events with this tuple.
pub fn end_events(t: &Trace, local: SocketAddr, remote: SocketAddr) -> Vec<Event> {
    let lives: Vec<Vec<Event>> = t
        .sockets()
        .into_iter()
        .filter(|s| {
            s.events
                .iter()
                .any(|e| e.local() == Some(local) && e.remote() == Some(remote))
        })
        .map(|s| s.events)
        .collect();
    let in_lives = |e: &Event| {
        lives.iter().flatten().any(|s| {
            s.skaddr == e.skaddr
                && s.time_ns == e.time_ns
                && s.oldstate == e.oldstate
                && s.newstate == e.newstate
        })
    };
    t.all
        .iter()
        .filter(|e| {
            if e.source == "tracepoint" {
                in_lives(e)
            } else {
                e.local() == Some(local) && e.remote() == Some(remote)
            }
        })
        .cloned()
        .collect()
}

/// The label of each event ([`Event::labelled`]).
pub fn labels(events: &[Event]) -> Vec<String> {
    events.iter().map(Event::labelled).collect()
}

/// Asserts that the end `local` -> `remote` produced exactly `expected`
/// (a label each) and returns its events for further checks.
pub fn assert_end(
    t: &Trace,
    what: &str,
    local: SocketAddr,
    remote: SocketAddr,
    expected: &[&str],
) -> Vec<Event> {
    let events = end_events(t, local, remote);
    let actual = labels(&events);
    if actual != expected {
        panic!(
            "the {what} ({local} -> {remote}) produced the wrong events\n  expected:\n    {}\n  actual:\n    {}\n{}",
            expected.join("\n    "),
            actual.join("\n    "),
            t.dump_all()
        );
    }
    events
}

/// The single event with this label among `events`.
pub fn the<'a>(t: &Trace, events: &'a [Event], label: &str) -> &'a Event {
    let found: Vec<&Event> = events.iter().filter(|e| e.labelled() == label).collect();
    match found.as_slice() {
        [one] => one,
        _ => panic!(
            "expected exactly one `{label}` event, found {}\n{}",
            found.len(),
            t.dump_all()
        ),
    }
}

/// Asserts `lo <= ms <= hi` for an event's `ms` (or `age_ms`).
pub fn assert_ms(t: &Trace, what: &str, ms: Option<f64>, lo: f64, hi: f64) {
    match ms {
        Some(v) if (lo..=hi).contains(&v) => {}
        other => panic!(
            "{what}: expected between {lo} and {hi} ms, got {other:?}\n{}",
            t.dump_all()
        ),
    }
}

/// Asserts that an event names the owner `pid` (`comm` tcppeer).
pub fn assert_owner(t: &Trace, what: &str, e: &Event, pid: u32) {
    if e.pid != Some(pid) || e.comm.as_deref() != Some("tcppeer") {
        panic!(
            "{what}: expected pid {pid}/tcppeer, got {:?}/{:?}: {}\n{}",
            e.pid,
            e.comm,
            e.row(),
            t.dump_all()
        );
    }
}

/// Waits up to `secs` seconds until the end `local` -> `remote` has an
/// event labelled `label`.
pub fn wait_end(tracer: &Tracer, secs: u64, local: SocketAddr, remote: SocketAddr, label: &str) {
    tracer.wait_within(
        Duration::from_secs(secs),
        &format!("`{label}` on {local} -> {remote}"),
        |t| {
            end_events(t, local, remote)
                .iter()
                .any(|e| e.labelled() == label)
        },
    );
}

/// The server's address of the connection a client made (the server's
/// listening address may be a wildcard).
pub fn server_side(client: &Peer) -> SocketAddr {
    client.remote.expect("a client peer")
}

/// The client closes first with close(2) and the server once it has read
/// EOF; waits until the client's orphan is in TIME_WAIT. The server closes
/// only after its ACK of the client's FIN has been seen: else that ACK may
/// ride on the server's FIN and the client's orphaned FIN_WAIT2 is never
/// visible.
pub fn client_closes_first_to_time_wait(tracer: &Tracer, server: &mut Peer, client: &mut Peer) {
    let (c, s) = (client.local, server_side(client));
    client.close();
    server.expect_reply("wait-eof", "eof 0");
    tracer.wait_for(c.port(), s.port(), FIN_WAIT2, CLOSE);
    server.close();
    wait_end(tracer, 5, c, s, ORPHAN_THEN_TIME_WAIT[1]);
}

/// Asserts that each of `events` names the owner `pid` (`comm` tcppeer).
pub fn assert_owners(t: &Trace, what: &str, events: &[Event], pid: u32) {
    for e in events {
        assert_owner(t, what, e, pid);
    }
}

impl Connected {
    /// Asserts that the client end produced exactly the rows of `parts`, one
    /// part after the other ([`rows`]); returns its events.
    pub fn assert_client_end(&self, t: &Trace, parts: &[&[&str]]) -> Vec<Event> {
        assert_end(t, "client end", self.c, self.s, &rows(parts))
    }

    /// Asserts that the server end produced exactly the rows of `parts`;
    /// returns its events.
    pub fn assert_server_end(&self, t: &Trace, parts: &[&[&str]]) -> Vec<Event> {
        assert_end(t, "server end", self.s, self.c, &rows(parts))
    }
}
