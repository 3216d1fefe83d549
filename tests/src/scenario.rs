//! The openings and endings most scenarios share, so that a test is its
//! specification: what it does to the connection and what it expects.
//!
//! ```ignore
//! let mut w = Connected::loopback(&[]);
//! w.client_closes_first();
//! let t = w.close_listener_and_stop(3);
//! w.assert_paths(&t, paths::ACTIVE_CLOSER, paths::PASSIVE_CLOSER_SERVER);
//! ```

use std::net::SocketAddr;

use crate::states::*;
pub use crate::{Accepted, Netns, Peer, Socket, Trace, Tracer};

/// The port the scenarios' servers listen on (each test has its own namespace).
pub const PORT: u16 = 10050;

/// Whole paths of states, for [`Trace::assert_path`].
pub mod paths {
    use crate::states::*;

    /// A client that closes first.
    pub const ACTIVE_CLOSER: &[&str] = &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE];
    /// A client whose peer closes first.
    pub const PASSIVE_CLOSER: &[&str] =
        &[CLOSE, SYN_SENT, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE];
    /// A client reset (or resetting) while established.
    pub const RESET: &[&str] = &[CLOSE, SYN_SENT, ESTABLISHED, CLOSE];
    /// A server end whose peer closes first.
    pub const PASSIVE_CLOSER_SERVER: &[&str] =
        &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE];
    /// A server end that closes first.
    pub const ACTIVE_CLOSER_SERVER: &[&str] =
        &[LISTEN, SYN_RECV, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE];
    /// A server end reset (or resetting) while established.
    pub const RESET_SERVER: &[&str] = &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE];
    /// A listener opened and closed.
    pub const LISTENER: &[&str] = &[CLOSE, LISTEN, CLOSE];
}

/// A scenario's world: a fresh namespace, the tracer started first
/// (`--json --netns NS` plus the test's arguments), a server listening and
/// one client connected to it, accepted.
pub struct Connected {
    pub ns: Netns,
    pub tracer: Tracer,
    pub server: Peer,
    pub client: Peer,
    /// Both addresses of the accepted connection, as the server sees them.
    pub conn: Accepted,
    /// The server end's address (`conn.local`).
    pub s: SocketAddr,
    /// The client end's address (`conn.peer`).
    pub c: SocketAddr,
}

impl Connected {
    /// Server on `listen`, client connected to `connect`, in `ns` (which the
    /// test may have prepared: sysctls, nftables rules).
    pub fn open_in(ns: Netns, tracer_args: &[&str], listen: &str, connect: &str) -> Connected {
        let tracer = Tracer::start(&ns, tracer_args);
        let Established {
            ns,
            server,
            client,
            conn,
        } = Established::open_in(ns, listen, connect);
        Connected {
            ns,
            tracer,
            server,
            client,
            conn,
            s: conn.local,
            c: conn.peer,
        }
    }

    /// Server on 127.0.0.1:[`PORT`], the client connected to it.
    pub fn loopback(tracer_args: &[&str]) -> Connected {
        Connected::open_in(Netns::new(), tracer_args, LOOPBACK, LOOPBACK)
    }

    /// Server on 0.0.0.0:[`PORT`] (bound to every address), the client connected
    /// to 127.0.0.1.
    pub fn wildcard(tracer_args: &[&str]) -> Connected {
        Connected::open_in(Netns::new(), tracer_args, "0.0.0.0:10050", LOOPBACK)
    }

    /// Both ends close with close(2), the client first; the server once it
    /// has read EOF.
    pub fn client_closes_first(&mut self) {
        client_closes_first(&mut self.server, &mut self.client);
    }

    /// Both ends close with close(2), the server first; the client once it
    /// has read EOF.
    pub fn server_closes_first(&mut self) {
        server_closes_first(&mut self.server, &mut self.client);
    }

    /// A simultaneous close made deterministic: `first`'s FINs are dropped
    /// on input, it closes with `how` (`close`, `shutdown wr`), then the
    /// other end does; once `first` has received the other's FIN in
    /// FIN_WAIT1 (CLOSING), its FINs go through again and it reaches CLOSE.
    pub fn fins_cross(&mut self, first: Side, how: &str) {
        let (selector, ports, first, second) = match first {
            Side::Server => (
                "tcp sport 10050",
                (self.s.port(), self.c.port()),
                &mut self.server,
                &mut self.client,
            ),
            Side::Client => (
                "tcp dport 10050",
                (self.c.port(), self.s.port()),
                &mut self.client,
                &mut self.server,
            ),
        };
        self.ns.drop_fins(selector);
        first.cmd(how);
        self.tracer
            .wait_for(ports.0, ports.1, ESTABLISHED, FIN_WAIT1);
        second.cmd(how);
        self.tracer.wait_for(ports.0, ports.1, FIN_WAIT1, CLOSING);
        self.ns.lift_fin_gate();
        self.tracer.wait_for(ports.0, ports.1, CLOSING, CLOSE);
    }

    /// A simultaneous close with shutdown(SHUT_WR) ([`Connected::fins_cross`],
    /// the server's FIN held back): both ends reach CLOSE, then each reads
    /// the other's end of stream and closes its socket.
    pub fn simultaneous_shutdown(&mut self) {
        self.fins_cross(Side::Server, "shutdown wr");
        self.tracer
            .wait_for(self.c.port(), self.s.port(), FIN_WAIT2, CLOSE);
        self.server.expect_reply("wait-eof", "eof 0");
        self.client.expect_reply("wait-eof", "eof 0");
        self.server.close();
        self.client.close();
    }

    /// The usual ending: the server closes its listener; once the tracer has
    /// seen `closes` transitions into CLOSE, it is stopped.
    pub fn close_listener_and_stop(&mut self, closes: usize) -> Trace {
        self.server
            .expect_reply("close-listener", "listener-closed");
        self.tracer.stop_after_closes(closes)
    }

    /// Asserts the trace is exactly this connection and its listener: the
    /// client end went through `client_path`, the server end through
    /// `server_path`, the listener CLOSE->LISTEN->CLOSE.
    pub fn assert_paths(&self, t: &Trace, client_path: &[&str], server_path: &[&str]) {
        t.assert_connection(&self.client, client_path, &self.conn, server_path);
    }

    /// Asserts what `t`, taken while the scenario runs, shows so far: the
    /// client end went through `client_path`, the server end through
    /// `server_path`, the listener through `listener_path`.
    pub fn assert_paths_so_far(
        &self,
        t: &Trace,
        client_path: &[&str],
        server_path: &[&str],
        listener_path: &[&str],
    ) {
        t.assert_path("client end", &t.client_end(&self.client), client_path);
        t.assert_path("server end", &t.server_end(&self.conn), server_path);
        t.assert_path("listener", &t.listener(self.s.port()), listener_path);
    }

    /// The usual ending and its check: closes the listener, stops the
    /// tracer once the three sockets are closed, and asserts the trace is
    /// exactly this connection (the client end through `client_path`, the
    /// server end through `server_path`) and its listener. Returns the
    /// trace for further checks.
    pub fn close_listener_and_assert(
        &mut self,
        client_path: &[&str],
        server_path: &[&str],
    ) -> Trace {
        let t = self.close_listener_and_stop(3);
        self.assert_paths(&t, client_path, server_path);
        t
    }
}

impl Trace {
    /// Asserts the trace is exactly one connection and its listener: the
    /// client end went through `client_path`, the server end through
    /// `server_path`, the listener CLOSE->LISTEN->CLOSE.
    pub fn assert_connection(
        &self,
        client: &Peer,
        client_path: &[&str],
        conn: &Accepted,
        server_path: &[&str],
    ) {
        self.assert_path("client end", &self.client_end(client), client_path);
        self.assert_path("server end", &self.server_end(conn), server_path);
        let listener = self.listener(conn.local.port());
        self.assert_path("listener", &listener, paths::LISTENER);
        self.assert_socket_count(3);
    }
}

/// A connection made before any tracer runs: a server listening on
/// `listen` and a client connected to `connect`, accepted.
pub struct Established {
    pub ns: Netns,
    pub server: Peer,
    pub client: Peer,
    pub conn: Accepted,
}

impl Established {
    /// In `ns`, which the test may have prepared.
    pub fn open_in(ns: Netns, listen: &str, connect: &str) -> Established {
        let mut server = Peer::server(&ns, listen);
        let client = Peer::client(&ns, connect);
        let conn = server.accept();
        Established {
            ns,
            server,
            client,
            conn,
        }
    }

    /// Server on 127.0.0.1:[`PORT`] in a fresh namespace, the client
    /// connected to it.
    pub fn loopback() -> Established {
        Established::open_in(Netns::new(), LOOPBACK, LOOPBACK)
    }
}

/// A whole connection to `addr` in `ns`: a server listens, a client
/// connects, the client closes first, then the server, then the listener.
/// Returns the client and the server's view of the connection.
pub fn closed_connection(ns: &Netns, addr: &str) -> (Peer, Accepted) {
    let mut server = Peer::server(ns, addr);
    let mut client = Peer::client(ns, addr);
    let conn = server.accept();
    client_closes_first(&mut server, &mut client);
    server.expect_reply("close-listener", "listener-closed");
    (client, conn)
}

/// Both ends close with close(2), the server first; the client once it has
/// read EOF.
pub fn server_closes_first(server: &mut Peer, client: &mut Peer) {
    server.close();
    client.expect_reply("wait-eof", "eof 0");
    client.close();
}

/// Both ends close with close(2), the client first; the server once it has
/// read EOF.
pub fn client_closes_first(server: &mut Peer, client: &mut Peer) {
    client.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
}

/// Two clients of one server on [`LOOPBACK`], one connection closed by each
/// side: the server closes the second (its current one), the first client
/// closes its own; then the server closes its listener.
pub struct TwoClients {
    pub server: Peer,
    pub first: Peer,
    pub first_conn: Accepted,
    pub second: Peer,
    pub second_conn: Accepted,
}

impl TwoClients {
    pub fn run(ns: &Netns) -> TwoClients {
        let mut server = Peer::server(ns, LOOPBACK);
        let mut first = Peer::client(ns, LOOPBACK);
        let first_conn = server.accept();
        let mut second = Peer::client(ns, LOOPBACK);
        let second_conn = server.accept();
        server_closes_first(&mut server, &mut second);
        client_closes_first(&mut server, &mut first);
        server.expect_reply("close-listener", "listener-closed");
        TwoClients {
            server,
            first,
            first_conn,
            second,
            second_conn,
        }
    }

    /// Asserts the paths of the five sockets (both ends of both
    /// connections, the listener) and returns them with their owners' pids.
    pub fn assert_paths(&self, t: &Trace) -> Vec<(&'static str, Socket, u32)> {
        let server = self.server.pid;
        let ends = [
            (
                "first client end",
                t.client_end(&self.first),
                self.first.pid,
                paths::ACTIVE_CLOSER,
            ),
            (
                "second client end",
                t.client_end(&self.second),
                self.second.pid,
                paths::PASSIVE_CLOSER,
            ),
            (
                "first server end",
                t.server_end(&self.first_conn),
                server,
                paths::PASSIVE_CLOSER_SERVER,
            ),
            (
                "second server end",
                t.server_end(&self.second_conn),
                server,
                paths::ACTIVE_CLOSER_SERVER,
            ),
            ("listener", t.listener(PORT), server, paths::LISTENER),
        ];
        ends.into_iter()
            .map(|(what, socket, pid, path)| {
                t.assert_path(what, &socket, path);
                (what, socket, pid)
            })
            .collect()
    }
}

/// The `ss -tanH` state of the socket `local` -> `remote` (`SYN-RECV`, ...).
pub fn ss_state(ns: &Netns, local: SocketAddr, remote: SocketAddr) -> Option<String> {
    ns.ss().lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 5 && f[3] == local.to_string() && f[4] == remote.to_string())
            .then(|| f[0].to_string())
    })
}

/// One end of the connection.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    Server,
    Client,
}

/// 127.0.0.1:[`PORT`].
pub const LOOPBACK: &str = "127.0.0.1:10050";
