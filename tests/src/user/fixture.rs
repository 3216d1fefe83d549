//! The openings and endings the scenarios "as users run it" share: a server
//! already listening in its own namespace (as in a container), then
//! `tcpstate --port P` started in the root namespace, as a user starts it on
//! a host whose services already run; and the checks on the server side's
//! rows.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::{PyServer, TextRow, TextTrace, UserTracer, expect, label_matches};
use crate::{Netns, Peer};

/// How long a row about a connection may take to show up.
pub const SHORT: Duration = Duration::from_secs(5);
/// How long rows of many connections, or of an expiry, may take.
pub const LONG: Duration = Duration::from_secs(10);

/// A scenario's world: a namespace, the `server` listening in it on
/// 127.0.0.1:`port` (with what the scenario made before tracing), and
/// `tcpstate --port P` started after all that.
pub struct AsUsers<S> {
    pub ns: Netns,
    pub port: u16,
    pub server: S,
    pub tracer: UserTracer,
}

impl<S> AsUsers<S> {
    /// `start_server` runs in `ns` (which the test may have prepared:
    /// sysctls, nftables rules), then the tracer starts with `extra`
    /// arguments.
    pub fn start_in(
        ns: Netns,
        port: u16,
        extra: &[&str],
        start_server: impl FnOnce(&Netns) -> S,
    ) -> Self {
        let server = start_server(&ns);
        let tracer = UserTracer::start(port, extra);
        AsUsers {
            ns,
            port,
            server,
            tracer,
        }
    }

    /// A `tcppeer` client connected to 127.0.0.1:`port`.
    pub fn client(&self) -> Peer {
        Peer::client(&self.ns, &format!("127.0.0.1:{}", self.port))
    }

    /// Waits until `n` server ends have closed (`LAST_ACK -> CLOSE`).
    pub fn wait_server_ends_closed(&self, n: usize) {
        self.tracer
            .wait_within(LONG, &format!("{n} server ends closed"), |t| {
                t.count_server(self.port, "LAST_ACK -> CLOSE") >= n
            });
    }
}

impl AsUsers<Peer> {
    /// A `tcppeer` server on 127.0.0.1:`port` in `ns`, then the tracer.
    pub fn tcppeer_in(ns: Netns, port: u16, extra: &[&str]) -> Self {
        AsUsers::start_in(ns, port, extra, |ns| {
            Peer::server(ns, &format!("127.0.0.1:{port}"))
        })
    }

    /// A `tcppeer` server on 127.0.0.1:`port` in a fresh namespace, then
    /// the tracer.
    pub fn tcppeer(port: u16, extra: &[&str]) -> Self {
        AsUsers::tcppeer_in(Netns::new(), port, extra)
    }

    /// A client connected and accepted: the client, the server end's
    /// address and the client end's.
    pub fn connect(&mut self) -> (Peer, SocketAddr, SocketAddr) {
        let client = self.client();
        let conn = self.server.accept();
        (client, conn.local, conn.peer)
    }

    /// Asserts that every server-side row names the `tcppeer` server.
    pub fn assert_server_owns(&self, t: &TextTrace) {
        t.assert_owner(
            "server-side rows",
            t.server_side(self.port),
            &[self.server.pid],
            "tcppeer",
        );
    }
}

impl AsUsers<PyServer> {
    /// A one-process Python server on 127.0.0.1:`port` in a fresh
    /// namespace, then the tracer.
    pub fn python(port: u16) -> Self {
        AsUsers::start_in(Netns::new(), port, &[], |ns| {
            PyServer::start(ns, "127.0.0.1", port)
        })
    }

    /// `count` connections from one Python client process, each closing
    /// first.
    pub fn py_clients(&self, count: usize) {
        super::py_clients(&self.ns, "127.0.0.1", self.port, count, "close");
    }

    /// Asserts that every server-side row names one of the server's
    /// processes and `python3`.
    pub fn assert_server_owns(&self, t: &TextTrace) {
        t.assert_owner(
            "server-side rows",
            t.server_side(self.port),
            &self.server.all_pids(),
            "python3",
        );
    }
}

impl TextTrace {
    /// The server ends of connections to `port` (rows with local port `port`
    /// and a remote port), per remote port, in output order.
    pub fn server_ends(&self, port: u16) -> BTreeMap<u16, Vec<&TextRow>> {
        let mut ends: BTreeMap<u16, Vec<&TextRow>> = BTreeMap::new();
        for r in self.server_side(port).into_iter().filter(|r| r.rport != 0) {
            ends.entry(r.rport).or_default().push(r);
        }
        ends
    }

    /// Asserts that every server end of `port` printed exactly `expected`.
    pub fn assert_every_server_end(&self, port: u16, expected: &[&str]) {
        let wrong: Vec<String> = self
            .server_ends(port)
            .into_iter()
            .filter(|(_, rows)| {
                rows.len() != expected.len()
                    || rows
                        .iter()
                        .zip(expected)
                        .any(|(r, e)| !label_matches(e, &r.label()))
            })
            .map(|(rport, rows)| {
                format!(
                    "remote port {rport}: {}",
                    rows.iter()
                        .map(|r| r.label())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "server ends on port {port} that did not print exactly [{}]:\n  {}\n{}",
            expected.join(", "),
            wrong.join("\n  "),
            self.dump()
        );
    }

    /// How many server-side rows of `port` make the transition `OLD -> NEW`,
    /// whatever their note: what a reader counting them gets.
    pub fn count_server(&self, port: u16, transition: &str) -> usize {
        self.server_side(port)
            .iter()
            .filter(|r| r.transition().as_deref() == Some(transition))
            .count()
    }

    /// Asserts that no row says something expired.
    pub fn assert_no_expiry(&self) {
        let expired: Vec<&str> = self
            .rows
            .iter()
            .filter(|r| expect::is_expiry(r))
            .map(|r| r.line.as_str())
            .collect();
        assert!(
            expired.is_empty(),
            "nothing expired here, yet:\n  {}\n{}",
            expired.join("\n  "),
            self.dump()
        );
    }

    /// Asserts `lo <= MS <= hi` on `row`.
    pub fn assert_ms(&self, what: &str, row: &TextRow, lo: f64, hi: f64) {
        match row.ms {
            Some(v) if (lo..=hi).contains(&v) => {}
            other => panic!(
                "{what}: MS should be between {lo} and {hi}, is {other:?}: {}\n{}",
                row.line,
                self.dump()
            ),
        }
    }

    /// Asserts that exactly `n` server ends of `port` printed rows, each
    /// exactly those of a connection the client closed first.
    pub fn assert_server_ends_client_closed(&self, port: u16, n: usize) {
        assert_eq!(self.server_ends(port).len(), n, "{}", self.dump());
        self.assert_every_server_end(port, &expect::SERVER_END_CLIENT_CLOSED);
    }
}
