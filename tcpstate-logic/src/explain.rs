//! `--explain`: after each row, one plain sentence of what it means for
//! *this* connection, the way a person reading netstat would explain the
//! state to a colleague. Built only from what tcpstate knows: the socket's role and owner
//! as seen in earlier rows, which end closed first, the reason it ended,
//! and timers read from the kernel's sysctls. The model (facts per socket)
//! is kept apart from the wording ([`sentence`]).

use std::collections::HashMap;

use crate::{
    comm,
    event::{Note, TcpEvent, TcpState},
    reason::Reason,
};

/// Kernel timers the sentences quote, read from `/proc/sys/net/ipv4` of
/// tcpstate's own network namespace: they are quoted only for sockets of
/// that namespace (another namespace has its own values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sysctls {
    pub netns: u32,
    pub fin_timeout: Option<u32>,
    pub syn_retries: Option<u32>,
    pub synack_retries: Option<u32>,
}

impl Sysctls {
    pub fn read() -> Sysctls {
        let get = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        let netns = std::fs::metadata("/proc/self/ns/net")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m) as u32)
            .unwrap_or(0);
        Sysctls {
            netns,
            fin_timeout: get("tcp_fin_timeout"),
            syn_retries: get("tcp_syn_retries"),
            synack_retries: get("tcp_synack_retries"),
        }
    }
}

/// What earlier rows told about a socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    pub role: Role,
    /// Which end sent the first FIN, once known.
    pub closer: Option<Closer>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    #[default]
    Unknown,
    /// Connected out (CLOSE -> SYN_SENT).
    Client,
    /// Accepted from a listener.
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closer {
    ThisEnd,
    Peer,
    Both,
}

/// Keeps [`Facts`] per socket and writes the sentence after each row.
pub(crate) struct Explainer {
    sysctls: Sysctls,
    facts: HashMap<u64, Facts>,
    max: usize,
}

impl Explainer {
    pub fn new(sysctls: Sysctls, max: usize) -> Self {
        Explainer {
            sysctls,
            facts: HashMap::new(),
            max,
        }
    }

    /// Updates the facts with `ev` and appends its sentence line.
    pub fn line(&mut self, ev: &TcpEvent, out: &mut Vec<u8>) {
        let mut f = if ev.skaddr != 0 {
            self.facts.get(&ev.skaddr).copied().unwrap_or_default()
        } else {
            Facts::default()
        };
        learn(&mut f, ev);
        let s = sentence(ev, &f, &self.sysctls);
        if ev.skaddr != 0 {
            if ev.new == TcpState::Close {
                self.facts.remove(&ev.skaddr);
            } else if self.facts.len() < self.max || self.facts.contains_key(&ev.skaddr) {
                self.facts.insert(ev.skaddr, f);
            }
        }
        out.extend_from_slice(b"    # ");
        out.extend_from_slice(s.as_bytes());
        out.push(b'\n');
    }
}

/// What this row adds to the socket's facts.
pub(crate) fn learn(f: &mut Facts, ev: &TcpEvent) {
    use TcpState::*;
    match (ev.old, ev.new) {
        (Close, SynSent) | (SynSent, _) => f.role = Role::Client,
        (Listen, SynRecv) | (SynRecv, _) => f.role = Role::Server,
        (Established, FinWait1) => f.closer = Some(Closer::ThisEnd),
        (Established, CloseWait) => f.closer = Some(Closer::Peer),
        (FinWait1, Closing) => f.closer = Some(Closer::Both),
        (_, LastAck) if f.closer.is_none() => f.closer = Some(Closer::Peer),
        (_, FinWait2 | TimeWait) if f.closer.is_none() => f.closer = Some(Closer::ThisEnd),
        _ => {}
    }
}

fn owner(ev: &TcpEvent) -> String {
    match ev.owner {
        Some(o) => format!("{}, pid {}", comm::sanitize(&o.comm), o.pid),
        None => "owner unknown".to_string(),
    }
}

fn secs(v: Option<u32>, own_ns: bool) -> String {
    match v {
        Some(v) if own_ns => format!(" ({v} s)"),
        _ => String::new(),
    }
}

fn plural(n: u32, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// The sentence for one row.
pub fn sentence(ev: &TcpEvent, f: &Facts, sys: &Sysctls) -> String {
    use TcpState::*;
    let own_ns = ev.netns == sys.netns && sys.netns != 0;
    let app = format!("its application ({})", owner(ev));
    let peer = format!("{}:{}", ev.raddr, ev.rport);
    if let Some(r) = ev.reason {
        return ended(ev, r, f, sys, own_ns, &app, &peer);
    }
    match ev.note {
        Some(Note::Snapshot) => {
            return format!("the socket was already {} when tracing started", ev.new);
        }
        Some(Note::Stuck(ns)) => {
            return format!(
                "still {} after {:.1} s; {}",
                ev.new,
                ns as f64 / 1e9,
                match ev.new {
                    CloseWait =>
                        format!("the peer closed long ago and {app} has not called close()"),
                    FinWait2 =>
                        "the peer has acknowledged this end's FIN but not sent its own".into(),
                    SynSent => format!("the SYN to {peer} gets no answer"),
                    _ => "the connection is waiting for the peer".into(),
                }
            );
        }
        Some(Note::TimeWaitSocket | Note::TimeWait) if ev.new == FinWait2 => {
            return format!(
                "the owner is gone (orphan); the kernel alone waits up to tcp_fin_timeout{} for the peer's FIN",
                secs(sys.fin_timeout, own_ns)
            );
        }
        Some(Note::TimeWaitSocket | Note::TimeWait) => {
            return "both FINs are exchanged and this end closed first, so the kernel keeps the \
                    connection in TIME_WAIT for 60 s to absorb late segments"
                .into();
        }
        Some(Note::HalfOpen(n)) => {
            return format!(
                "the client at {peer} has not answered the SYN-ACK of {app}'s listener; it was resent {} (tcp_synack_retries{})",
                plural(n, "time"),
                secs(sys.synack_retries, own_ns).replace(" s)", ")")
            );
        }
        _ => {}
    }
    match (ev.old, ev.new) {
        (Close, SynSent) => format!(
            "{} called connect() to {peer}; the SYN is out, waiting for the SYN-ACK",
            owner(ev)
        ),
        (Close, Listen) => format!("{} listens on port {}", owner(ev), ev.lport),
        (Listen, SynRecv) => format!(
            "a client at {peer} is connecting to the listener of {}",
            owner(ev)
        ),
        (SynSent, Established) if ev.retransmits > 0 => format!(
            "the peer answered only after {}; connect() of {} succeeded",
            plural(ev.retransmits, "SYN retransmit"),
            owner(ev)
        ),
        (SynSent, Established) => format!(
            "the peer answered the SYN; connect() of {} succeeded",
            owner(ev)
        ),
        (SynRecv, Established) => format!(
            "the handshake with {peer} is complete; the connection waits for {app} to accept() it"
        ),
        (Established, FinWait1) => format!(
            "{} closed first; its FIN is on the way to the peer",
            owner(ev)
        ),
        (FinWait1, FinWait2) => {
            "the peer acknowledged this end's FIN; it may still send data until it closes too"
                .into()
        }
        (FinWait1, Closing) => {
            "both ends closed at the same time: the peer's FIN crossed this end's".into()
        }
        (Established, CloseWait) => {
            format!("the peer closed first; this end waits for {app} to call close()")
        }
        (CloseWait, LastAck) => format!(
            "{} closed its end too; waiting for the peer to acknowledge this end's FIN",
            owner(ev)
        ),
        (SynRecv, FinWait1) => format!(
            "{} closed before the handshake finished; its FIN is on the way",
            owner(ev)
        ),
        (old, new) => {
            let who = match f.closer {
                Some(Closer::ThisEnd) => "this end closed first",
                Some(Closer::Peer) => "the peer closed first",
                Some(Closer::Both) => "both ends closed at once",
                None => "who closed first is not known",
            };
            format!("{old} to {new}; {who}")
        }
    }
}

/// The sentence for a row that ends the connection.
fn ended(
    ev: &TcpEvent,
    r: Reason,
    f: &Facts,
    sys: &Sysctls,
    own_ns: bool,
    app: &str,
    peer: &str,
) -> String {
    let o = owner(ev);
    match r {
        Reason::ActiveClose => match ev.peer_fin {
            Some(false) => format!(
                "this end closed first and {o} no longer holds the socket; the kernel keeps an orphan FIN_WAIT2 for up to tcp_fin_timeout{}",
                secs(sys.fin_timeout, own_ns)
            ),
            _ => "both FINs are exchanged; this end closed first, so a timewait socket keeps TIME_WAIT for 60 s".into(),
        },
        Reason::PassiveClose => format!("the peer acknowledged the last FIN; the peer closed first, so TIME_WAIT is kept at {peer}, not here"),
        Reason::SimultaneousClose => "both ends closed at once; this end also keeps TIME_WAIT".into(),
        Reason::Refused => format!(
            "nothing listens at {peer}: the peer answered the SYN with a reset, and connect() of {o} fails with ECONNREFUSED"
        ),
        Reason::ConnectTimeout => format!(
            "no answer from {peer} after {} (tcp_syn_retries{}); connect() of {o} fails with ETIMEDOUT",
            plural(ev.retransmits, "SYN retransmit"),
            sys.syn_retries.filter(|_| own_ns).map_or(String::new(), |v| format!(" = {v}"))
        ),
        Reason::ResetReceived => format!("the peer reset the connection; {app} gets ECONNRESET on its next call"),
        Reason::ResetSent(Some("TCP_ABORT_ON_CLOSE")) => format!(
            "{o} closed the socket with unread data, so the kernel reset the connection instead of closing it (TCP_ABORT_ON_CLOSE)"
        ),
        Reason::ResetSent(Some("TCP_ABORT_ON_LINGER")) => format!(
            "{o} closed with SO_LINGER set to 0, so the kernel reset the connection instead of closing it (TCP_ABORT_ON_LINGER)"
        ),
        Reason::ResetSent(Some(n)) => format!("this end reset the connection to {peer} (kernel reason {n})"),
        Reason::ResetSent(None) => format!("this end reset the connection to {peer} (this kernel gives no reason)"),
        Reason::KeepaliveTimeout => format!(
            "{peer} stopped answering keepalive probes, so the kernel reset the connection; {app} gets ETIMEDOUT"
        ),
        Reason::RetransmitTimeout => format!(
            "data to {peer} went unacknowledged through every retransmission{}; the kernel dropped the connection and {app} gets ETIMEDOUT",
            if ev.data_retransmits > 0 { format!(" ({})", plural(ev.data_retransmits, "retransmit")) } else { String::new() }
        ),
        Reason::Error(e) => format!("the connection failed with error {e}; {app} is told so"),
        Reason::Aborted if ev.old == TcpState::SynSent => format!("{o} gave up on connecting to {peer} before an answer came"),
        Reason::Aborted => format!("{o} dropped the connection without a reset or a FIN exchange"),
        Reason::ListenerClosed => format!("{o} closed its listening socket on port {}", ev.lport),
        Reason::OrphanTimeout => format!(
            "the peer never sent its FIN within tcp_fin_timeout{}; the kernel dropped the orphaned connection",
            secs(sys.fin_timeout, own_ns)
        ),
        Reason::TimeWaitExpired => format!(
            "TIME_WAIT is over; the port pair with {peer} can be used again{}",
            match f.closer { Some(Closer::Peer) => " (odd: the peer closed first)", _ => "" }
        ),
        Reason::HalfOpenExpired => format!("the client at {peer} never completed the handshake; the listener gave up on it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Task, tests::raw_v4};

    fn ev(old: TcpState, new: TcpState) -> TcpEvent {
        let mut e = TcpEvent::from(&raw_v4());
        e.old = old;
        e.new = new;
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"python3");
        e.owner = Some(Task { pid: 812, comm });
        e
    }

    #[test]
    fn close_wait_names_the_application_that_must_close() {
        let e = ev(TcpState::Established, TcpState::CloseWait);
        let mut f = Facts::default();
        learn(&mut f, &e);
        assert_eq!(f.closer, Some(Closer::Peer));
        assert_eq!(
            sentence(&e, &f, &Sysctls::default()),
            "the peer closed first; this end waits for its application (python3, pid 812) to call close()"
        );
    }

    #[test]
    fn orphan_quotes_fin_timeout_only_in_its_own_namespace() {
        let mut e = ev(TcpState::FinWait2, TcpState::FinWait2);
        e.note = Some(Note::TimeWaitSocket);
        let sys = Sysctls {
            netns: e.netns,
            fin_timeout: Some(60),
            ..Default::default()
        };
        assert!(
            sentence(&e, &Facts::default(), &sys)
                .ends_with("up to tcp_fin_timeout (60 s) for the peer's FIN")
        );
        let other = Sysctls {
            netns: e.netns + 1,
            ..sys
        };
        assert!(
            sentence(&e, &Facts::default(), &other)
                .ends_with("up to tcp_fin_timeout for the peer's FIN")
        );
    }

    #[test]
    fn ended_connections_say_why() {
        let mut e = ev(TcpState::SynSent, TcpState::Close);
        e.reason = Some(Reason::ConnectTimeout);
        e.retransmits = 1;
        let sys = Sysctls {
            netns: e.netns,
            syn_retries: Some(1),
            ..Default::default()
        };
        assert_eq!(
            sentence(&e, &Facts::default(), &sys),
            "no answer from 127.0.0.2:48008 after 1 SYN retransmit (tcp_syn_retries = 1); connect() of python3, pid 812 fails with ETIMEDOUT"
        );
        let mut e = ev(TcpState::Established, TcpState::Close);
        e.reason = Some(Reason::ResetSent(Some("TCP_ABORT_ON_CLOSE")));
        assert!(
            sentence(&e, &Facts::default(), &sys)
                .starts_with("python3, pid 812 closed the socket with unread data")
        );
    }
}
