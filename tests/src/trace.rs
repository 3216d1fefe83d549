//! [`Trace`]: everything a [`crate::Tracer`] printed, its tracepoint events
//! grouped per socket life ([`Socket`]), with the assertions the scenarios
//! make on whole transition sequences.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::states::*;
use crate::{Accepted, Event, Peer};

/// The tracepoint events of one socket's life, in order. A socket address
/// that is reused after reaching CLOSE starts a new `Socket`.
#[derive(Debug, Clone)]
pub struct Socket {
    pub skaddr: String,
    pub events: Vec<Event>,
}

impl Socket {
    /// `["CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED", ...]`.
    pub fn transitions(&self) -> Vec<String> {
        self.events.iter().map(Event::transition).collect()
    }

    /// Whether any event of this socket has this local and remote port.
    pub fn has_ports(&self, lport: u16, rport: u16) -> bool {
        self.events
            .iter()
            .any(|e| e.lport == lport && e.rport == rport)
    }

    pub fn is_listener(&self) -> bool {
        self.events
            .first()
            .is_some_and(|e| e.oldstate == CLOSE && e.newstate == LISTEN)
    }

    pub fn last_state(&self) -> Option<&str> {
        self.events.last().map(|e| e.newstate.as_str())
    }

    fn dump(&self, out: &mut String) {
        let first = &self.events[0];
        let _ = writeln!(
            out,
            "  socket {} ({}, {} events):",
            self.skaddr,
            first.family,
            self.events.len()
        );
        for e in &self.events {
            let _ = writeln!(out, "    {}", e.row());
        }
    }
}

/// Turns a path of states into transitions:
/// `[CLOSE, LISTEN, CLOSE]` -> `["CLOSE->LISTEN", "LISTEN->CLOSE"]`.
pub fn path_to_transitions(path: &[&str]) -> Vec<String> {
    path.windows(2)
        .map(|w| format!("{}->{}", w[0], w[1]))
        .collect()
}

/// Everything a tracer printed.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Tracepoint events, in output order.
    pub events: Vec<Event>,
    /// Raw lines of other sources (ignored by these tests).
    pub other_sources: Vec<String>,
    /// Events of every source (tracepoint, synack_tracepoint, sock_diag,
    /// tracker), transitions and state rows, in output order.
    pub all: Vec<Event>,
    pub bad_lines: Vec<String>,
    pub stderr: String,
    pub(crate) args: Vec<String>,
    pub(crate) netns_inode: u64,
}

impl Trace {
    /// Nothing printed yet by `tcpstate ARGS` on the namespace `netns_inode`.
    pub(crate) fn empty(args: Vec<String>, netns_inode: u64) -> Trace {
        Trace {
            events: Vec::new(),
            other_sources: Vec::new(),
            all: Vec::new(),
            bad_lines: Vec::new(),
            stderr: String::new(),
            args,
            netns_inode,
        }
    }

    /// Events grouped per socket life, in order of first appearance.
    pub fn sockets(&self) -> Vec<Socket> {
        let mut sockets: Vec<Socket> = Vec::new();
        let mut current: HashMap<&str, usize> = HashMap::new();
        for e in &self.events {
            let live = current
                .get(e.skaddr.as_str())
                .copied()
                .filter(|&i| sockets[i].last_state() != Some(CLOSE));
            match live {
                Some(i) => sockets[i].events.push(e.clone()),
                None => {
                    current.insert(&e.skaddr, sockets.len());
                    sockets.push(Socket {
                        skaddr: e.skaddr.clone(),
                        events: vec![e.clone()],
                    });
                }
            }
        }
        sockets
    }

    /// The one socket matching `pred`; panics (showing the trace) if there
    /// is none or more than one.
    pub fn socket(&self, what: &str, pred: impl Fn(&Socket) -> bool) -> Socket {
        let mut found: Vec<Socket> = self.sockets().into_iter().filter(|s| pred(s)).collect();
        match found.len() {
            1 => found.remove(0),
            0 => panic!("no socket is the {what}\n{}", self.dump()),
            n => panic!(
                "{n} sockets look like the {what}, expected one\n{}",
                self.dump()
            ),
        }
    }

    /// The listening socket on `port`.
    pub fn listener(&self, port: u16) -> Socket {
        self.socket(&format!("listener on port {port}"), |s| {
            s.is_listener() && s.events.iter().any(|e| e.lport == port)
        })
    }

    /// The connection end whose local address is `local` and remote `remote`.
    pub fn end(&self, what: &str, local: SocketAddr, remote: SocketAddr) -> Socket {
        self.socket(&format!("{what} ({local} -> {remote})"), |s| {
            !s.is_listener() && s.has_ports(local.port(), remote.port())
        })
    }

    /// The client end of a connection made by `client`.
    pub fn client_end(&self, client: &Peer) -> Socket {
        let remote = client.remote.expect("a client peer");
        self.end("client end", client.local, remote)
    }

    /// The server end (accepted child) of a connection.
    pub fn server_end(&self, accepted: &Accepted) -> Socket {
        self.end("server end", accepted.local, accepted.peer)
    }

    /// Asserts that `socket` went exactly through `path`, e.g.
    /// `[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE]`.
    pub fn assert_path(&self, what: &str, socket: &Socket, path: &[&str]) {
        let expected = path_to_transitions(path);
        let actual = socket.transitions();
        if expected != actual {
            panic!(
                "the {what} (socket {}) made the wrong transitions\n  expected: {}\n  actual:   {}\n{}",
                socket.skaddr,
                expected.join(", "),
                actual.join(", "),
                self.dump()
            );
        }
    }

    /// Asserts that exactly `n` sockets appear in the trace.
    pub fn assert_socket_count(&self, n: usize) {
        let found = self.sockets().len();
        assert!(
            found == n,
            "expected exactly {n} sockets in the trace, found {found}\n{}",
            self.dump()
        );
    }

    /// Checks what must hold of every event whatever the scenario: a state
    /// row (`kind: "state"`, never from the tracepoint) has oldstate ==
    /// newstate and a transition has not, each source with its own notes;
    /// schema 1, the test's namespace, a known family and state names, a
    /// chain of transitions per socket in time order, and `ms` null exactly on
    /// a socket's first event (but a folded half-open child's
    /// SYN_RECV->ESTABLISHED) and a finite non-negative number after it.
    pub fn assert_invariants(&self) {
        let known = [
            CLOSE,
            SYN_SENT,
            SYN_RECV,
            ESTABLISHED,
            FIN_WAIT1,
            FIN_WAIT2,
            CLOSE_WAIT,
            LAST_ACK,
            LISTEN,
            CLOSING,
            TIME_WAIT,
            NEW_SYN_RECV,
        ];
        let mut problems = Vec::new();
        for e in &self.all {
            let state_row = match e.kind.as_str() {
                "state" => true,
                "transition" => false,
                other => {
                    problems.push(format!("kind {other:?}: {}", e.row()));
                    continue;
                }
            };
            if state_row != (e.oldstate == e.newstate) {
                problems.push(format!(
                    "a state row has oldstate == newstate, a transition does not: {}",
                    e.labelled()
                ));
            }
            if state_row && e.source == "tracepoint" {
                problems.push(format!("the tracepoint printed a state row: {}", e.row()));
            }
            let notes: &[&str] = if state_row {
                &["snapshot", "timewait-socket", "stuck"]
            } else {
                &[
                    "half-open",
                    "half-open-expired",
                    "timewait",
                    "timewait-expired",
                ]
            };
            match &e.note {
                None if e.source == "tracepoint" => {}
                Some(n) if e.source != "tracepoint" && notes.contains(&n.as_str()) => {}
                _ => problems.push(format!("unexpected source/note: {}", e.labelled())),
            }
        }
        for e in &self.events {
            if e.schema != 1 {
                problems.push(format!("schema {} in {}", e.schema, e.row()));
            }
            if e.netns != self.netns_inode {
                problems.push(format!(
                    "netns {} is not the test's namespace {}: {}",
                    e.netns,
                    self.netns_inode,
                    e.row()
                ));
            }
            if e.family != "ipv4" && e.family != "ipv6" {
                problems.push(format!("family {:?}: {}", e.family, e.row()));
            }
            for s in [&e.oldstate, &e.newstate] {
                if !known.contains(&s.as_str()) {
                    problems.push(format!("unknown state {s:?}: {}", e.row()));
                }
            }
            if !e.skaddr.starts_with("0x") || e.skaddr.len() < 3 {
                problems.push(format!("skaddr {:?} is not hexadecimal", e.skaddr));
            }
        }
        for s in self.sockets() {
            for (i, e) in s.events.iter().enumerate() {
                // A lingering half-open connection's child: its LISTEN->SYN_RECV
                // is folded into the `half-open` row, its SYN_RECV->ESTABLISHED
                // counts from the first SYN-ACK.
                let folded = e.oldstate == SYN_RECV && e.retransmits.is_some_and(|n| n > 0);
                if i == 0 && !folded {
                    if e.ms.is_some() {
                        problems.push(format!(
                            "ms should be null on socket {}'s first event: {}",
                            s.skaddr,
                            e.row()
                        ));
                    }
                    continue;
                }
                match e.ms {
                    Some(ms) if ms.is_finite() && ms >= 0.0 => {}
                    other => problems.push(format!(
                        "ms should be a non-negative number, is {other:?}: {}",
                        e.row()
                    )),
                }
                let Some(prev) = i.checked_sub(1).map(|p| &s.events[p]) else {
                    continue;
                };
                if prev.newstate != e.oldstate {
                    problems.push(format!(
                        "socket {} goes to {} then leaves {}",
                        s.skaddr, prev.newstate, e.oldstate
                    ));
                }
                if e.time_ns < prev.time_ns {
                    problems.push(format!(
                        "socket {}: time goes backwards: {}",
                        s.skaddr,
                        e.row()
                    ));
                }
            }
        }
        assert!(
            problems.is_empty(),
            "invariants violated:\n  {}\n{}",
            problems.join("\n  "),
            self.dump()
        );
    }

    /// The events of every source ([`Trace::all`]) of one connection end:
    /// local address `local`, remote `remote`; in output order.
    pub fn end_events(&self, local: SocketAddr, remote: SocketAddr) -> Vec<&Event> {
        self.all
            .iter()
            .filter(|e| e.local() == Some(local) && e.remote() == Some(remote))
            .collect()
    }

    /// Every event of every source in output order, plus the tracer's
    /// stderr: for failure messages of tests about non-tracepoint events.
    pub fn dump_all(&self) -> String {
        let mut out = format!(
            "--- output of `tcpstate {}`: {} events, {} from the tracepoint ---\n",
            self.args.join(" "),
            self.all.len(),
            self.events.len()
        );
        for e in &self.all {
            let extra = match (e.retransmits, e.age_ms, e.peer_fin) {
                (Some(n), _, _) => format!(" retransmits={n}"),
                (_, Some(a), _) => format!(" age_ms={a:.3}"),
                (_, _, Some(f)) => format!(" peer_fin={f}"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  {} {} [{}]{extra}",
                e.row(),
                e.skaddr,
                e.note
                    .as_ref()
                    .map_or(e.source.clone(), |n| format!("{}/{n}", e.source))
            );
        }
        for b in &self.bad_lines {
            let _ = writeln!(out, "  BAD LINE: {b}");
        }
        let _ = write!(out, "--- tracer stderr ---\n{}--- end ---", self.stderr);
        out
    }

    /// Every event, per socket, plus the tracer's stderr: for failure messages.
    pub fn dump(&self) -> String {
        let mut out = format!(
            "--- trace of `tcpstate {}`: {} tracepoint events ---\n",
            self.args.join(" "),
            self.events.len()
        );
        for s in self.sockets() {
            s.dump(&mut out);
        }
        if !self.other_sources.is_empty() {
            let _ = writeln!(
                out,
                "  ({} lines of other sources)",
                self.other_sources.len()
            );
        }
        for b in &self.bad_lines {
            let _ = writeln!(out, "  BAD LINE: {b}");
        }
        let _ = write!(out, "--- tracer stderr ---\n{}--- end ---", self.stderr);
        out
    }
}
