//! The openings and endings most scenarios share, so that a test is its
//! specification: what it does to the connection and what it expects.
//!
//! ```ignore
//! let Connected { tracer, mut server, mut client, conn, .. } = Connected::loopback(&[]);
//! client.close();
//! server.expect_reply("wait-eof", "eof 0");
//! server.close();
//! let t = close_listener_and_stop(tracer, &mut server, 3);
//! t.assert_connection(&client, paths::ACTIVE_CLOSER, &conn, paths::PASSIVE_CLOSER_SERVER);
//! ```
//!
//! Every [`Peer`] and [`Tracer`] holds its [`Netns`], so a destructuring
//! that leaves the namespace out (`..`) does not delete it.

use std::net::SocketAddr;

use crate::states::*;
use crate::{Accepted, Netns, Peer, Trace, Tracer};

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

/// A fresh namespace, the tracer started first (`--json --netns NS` plus
/// the test's arguments), a server listening and one client connected to it,
/// accepted.
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
    /// Server on `listen`, client connected to `connect`.
    pub fn open(tracer_args: &[&str], listen: &str, connect: &str) -> Connected {
        let ns = Netns::new();
        Connected::open_in(ns, tracer_args, listen, connect)
    }

    /// Like [`Connected::open`] in a namespace the test prepared (sysctls,
    /// nftables rules).
    pub fn open_in(ns: Netns, tracer_args: &[&str], listen: &str, connect: &str) -> Connected {
        let tracer = Tracer::start(&ns, tracer_args);
        let mut server = Peer::server(&ns, listen);
        let client = Peer::client(&ns, connect);
        let conn = server.accept();
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
        Connected::open(tracer_args, "127.0.0.1:10050", "127.0.0.1:10050")
    }

    /// Server on 0.0.0.0:[`PORT`] (the seed article's), the client connected
    /// to 127.0.0.1.
    pub fn wildcard(tracer_args: &[&str]) -> Connected {
        Connected::open(tracer_args, "0.0.0.0:10050", "127.0.0.1:10050")
    }
}

/// The usual ending: the server closes its listener; once the tracer has
/// seen `closes` transitions into CLOSE, it is stopped.
pub fn close_listener_and_stop(tracer: Tracer, server: &mut Peer, closes: usize) -> Trace {
    server.expect_reply("close-listener", "listener-closed");
    tracer.wait_for_closes(closes);
    tracer.stop()
}

/// Both ends close with close(2), the client first; the server closes once
/// it has read EOF.
pub fn client_closes_first(server: &mut Peer, client: &mut Peer) {
    client.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
}

impl Trace {
    /// Asserts the trace is exactly one connection and its listener on
    /// [`PORT`]: the client end went through `client_path`, the server end
    /// through `server_path`, the listener CLOSE->LISTEN->CLOSE.
    pub fn assert_connection(
        &self,
        client: &Peer,
        client_path: &[&str],
        conn: &Accepted,
        server_path: &[&str],
    ) {
        self.assert_path("client end", &self.client_end(client), client_path);
        self.assert_path("server end", &self.server_end(conn), server_path);
        self.assert_path("listener", &self.listener(PORT), &[CLOSE, LISTEN, CLOSE]);
        self.assert_socket_count(3);
    }
}
