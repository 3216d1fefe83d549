//! Decoding ring-buffer records into typed events. The byte layout is
//! `tcpstate_common::Event`, defined once for both sides.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use tcpstate_common as common;

pub use common::{Hook, TcpState};

/// Parses a state name as the CLI accepts it: case-insensitive, with `-`
/// or `_`, and the netstat/ss spellings (`FIN_WAIT_1`, `SYN-RECV`, `CLOSED`).
pub(crate) fn parse_state(s: &str) -> Option<TcpState> {
    let norm: String = s
        .trim()
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let norm = match norm.as_str() {
        "CLOSED" => "CLOSE",
        "SYNRCVD" => "SYNRECV",
        other => other,
    };
    TcpState::ALL
        .iter()
        .copied()
        .find(|st| st.name().replace('_', "") == norm)
}

/// Where an event came from. Only `Tracepoint` is a transition the kernel
/// reported; other sources are labelled so nothing synthesized passes as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `inet_sock_set_state` (BTF or classic tracepoint): a transition the
    /// kernel made.
    Tracepoint,
    /// `tcp:tcp_retransmit_synack`: a half-open connection's SYN-ACK was resent.
    SynackTracepoint,
    /// A NETLINK_SOCK_DIAG answer (snapshot, TIME_WAIT, request-socket expiry).
    SockDiag,
    /// tcpstate's own bookkeeping (e.g. a socket flagged as stuck).
    Tracker,
    /// A cause hook (reset sent/received, socket error, retransmit): not a
    /// row; the enricher folds it into the socket's CLOSE row.
    Cause(Cause),
    Unknown(u8),
}

impl Source {
    /// The source a kernel record names (`Event::source`).
    pub(crate) fn of_hook(hook: Hook) -> Source {
        match hook {
            Hook::Tracepoint => Source::Tracepoint,
            Hook::Synack => Source::SynackTracepoint,
            Hook::ResetSent => Source::Cause(Cause::ResetSent),
            Hook::ResetReceived => Source::Cause(Cause::ResetReceived),
            Hook::SockError => Source::Cause(Cause::SockError),
            Hook::Retransmit => Source::Cause(Cause::Retransmit),
            Hook::Unknown(other) => Source::Unknown(other),
        }
    }

    /// As JSON and CSV name it; the kernel's sources by their [`Hook`]
    /// names (defined once, in tcpstate-common).
    pub fn name(self) -> &'static str {
        match self {
            Source::Tracepoint => Hook::Tracepoint.name(),
            Source::SynackTracepoint => Hook::Synack.name(),
            Source::SockDiag => "sock_diag",
            Source::Tracker => "tracker",
            Source::Cause(_) => "cause",
            Source::Unknown(_) => "unknown",
        }
    }
}

/// What a cause hook's event (`Hook::ResetSent` ...) explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    ResetSent,
    ResetReceived,
    SockError,
    Retransmit,
}

/// What a non-tracepoint event means, beyond its states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// Listed by the start-up snapshot: the socket already existed in `new`
    /// (a state row, not a transition).
    Snapshot,
    /// A half-open connection (request socket, netstat's SYN_RECV) whose
    /// SYN-ACK had to be resent: its LISTEN->SYN_RECV, dated when the first
    /// SYN-ACK went out. The count is the retransmit that revealed it.
    HalfOpen(u32),
    /// The request socket is gone without a child socket: the kernel
    /// dropped it (SYN-ACK retransmits exhausted, or reset). The count is
    /// the SYN-ACK retransmits seen.
    HalfOpenExpired(u32),
    /// A timewait socket took over the closed full socket (a state row);
    /// `new` is its substate: TIME_WAIT, or FIN_WAIT2 for an orphan awaiting
    /// the peer's FIN.
    TimeWaitSocket,
    /// The timewait socket's substate changed (FIN_WAIT2 -> TIME_WAIT).
    TimeWait,
    /// The timewait socket expired.
    TimeWaitExpired,
    /// The timewait socket was ended early by a new connection on the same
    /// tuple (`tcp_tw_reuse`, or a SYN the timewait socket accepted).
    TimeWaitReused,
    /// The socket stayed in `new` longer than `--stuck` (age in ns; a state
    /// row).
    Stuck(u64),
}

impl Note {
    pub fn name(self) -> &'static str {
        match self {
            Note::Snapshot => "snapshot",
            Note::HalfOpen(_) => "half-open",
            Note::HalfOpenExpired(_) => "half-open-expired",
            Note::TimeWaitSocket => "timewait-socket",
            Note::TimeWait => "timewait",
            Note::TimeWaitExpired => "timewait-expired",
            Note::TimeWaitReused => "timewait-reused",
            Note::Stuck(_) => "stuck",
        }
    }

    /// Rows that report a state a socket is in, not a change of state: shown
    /// as `is STATE`, never as `OLD -> NEW`.
    pub(crate) fn is_state_row(self) -> bool {
        matches!(self, Note::Snapshot | Note::TimeWaitSocket | Note::Stuck(_))
    }
}

/// The note as a person reads it; `new` is the row's new state.
pub(crate) struct NoteText<'a>(pub &'a TcpEvent);

impl fmt::Display for NoteText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ev = self.0;
        match ev.note {
            Some(Note::HalfOpen(n)) => write!(f, "half-open, SYN-ACK retransmit #{n}"),
            Some(Note::HalfOpenExpired(n)) => {
                write!(f, "half-open expired after {n} SYN-ACK retransmit")?;
                f.write_str(if n == 1 { "" } else { "s" })
            }
            Some(Note::TimeWaitSocket) if ev.new == TcpState::FinWait2 => {
                f.write_str("timewait socket, orphan")
            }
            Some(Note::TimeWaitSocket) => f.write_str("timewait socket"),
            Some(Note::TimeWaitExpired) => f.write_str("timewait expired"),
            Some(Note::TimeWaitReused) => f.write_str("timewait reused by a new connection"),
            Some(Note::Stuck(ns)) => write!(f, "stuck for {:.1}s", ns as f64 / 1e9),
            Some(other) => f.write_str(other.name()),
            // The client's rows count its SYNs, the server's its SYN-ACKs.
            None if ev.retransmits > 0 => {
                let what = if ev.old == TcpState::SynSent {
                    "SYN"
                } else {
                    "SYN-ACK"
                };
                let s = if ev.retransmits == 1 { "" } else { "s" };
                write!(f, "after {} {what} retransmit{s}", ev.retransmits)
            }
            None => Ok(()),
        }
    }
}

impl NoteText<'_> {
    /// Whether there is anything to show.
    pub fn is_empty(&self) -> bool {
        self.0.note.is_none() && self.0.retransmits == 0
    }
}

/// A process: pid (thread-group id) and raw `comm` bytes. Show `comm` only
/// through [`crate::comm::sanitize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Task {
    pub pid: u32,
    pub comm: [u8; common::COMM_LEN],
}

impl Task {
    /// tcpstate's own process.
    pub(crate) fn current() -> Task {
        let mut comm = [0u8; common::COMM_LEN];
        comm[..8].copy_from_slice(b"tcpstate");
        Task {
            pid: std::process::id(),
            comm,
        }
    }
}

/// One decoded event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TcpEvent {
    /// Kernel time of the change (CLOCK_BOOTTIME ns).
    pub ts_ns: u64,
    pub skaddr: u64,
    /// Time spent in `old`, when known.
    pub dwell_ns: Option<u64>,
    /// The socket's cgroup-v2 id from the kernel (`Event::cgroup_id`): kept
    /// by the socket after its process exits. 0 when unknown.
    pub cgroup_id: u64,
    /// The socket's owner, when known.
    pub owner: Option<Task>,
    /// The task on CPU when the kernel made the change (often not the owner).
    pub on_cpu: Task,
    pub netns: u32,
    pub family: u16,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    pub old: TcpState,
    pub new: TcpState,
    pub source: Source,
    /// Held back in the kernel until the socket matched the filter.
    pub replayed: bool,
    /// Set on events that are not plain kernel transitions.
    pub note: Option<Note>,
    /// On FIN_WAIT2->CLOSE and CLOSING->CLOSE: whether the peer's FIN had
    /// arrived (the timewait socket is in TIME_WAIT) or not (an orphaned
    /// FIN_WAIT2), when the kernel could tell.
    pub peer_fin: Option<bool>,
    /// SYN-ACK retransmits: on a SYN-ACK event, which retransmit it is; on a
    /// connection's SYN_RECV->ESTABLISHED, how many it took (0 otherwise).
    pub retransmits: u32,
    /// Cause events: the kernel's reset reason or errno (`Event::detail`).
    pub detail: u8,
    /// On rows into CLOSE (and expiry rows): how the connection ended.
    pub reason: Option<crate::reason::Reason>,
    /// On rows into CLOSE: data segments retransmitted over the connection.
    pub data_retransmits: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Short { len: usize, expected: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { len, expected } => {
                write!(f, "ring-buffer record of {len} bytes, expected {expected}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

fn addr(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == common::AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*raw))
    } else {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    }
}

/// Reads the raw record. Bytes beyond the struct are ignored (a future
/// producer may append fields); fewer is an error.
pub(crate) fn decode_raw(bytes: &[u8]) -> Result<common::Event, DecodeError> {
    let expected = std::mem::size_of::<common::Event>();
    if bytes.len() < expected {
        return Err(DecodeError::Short {
            len: bytes.len(),
            expected,
        });
    }
    // SAFETY: length checked; Event is plain old data (any bit pattern valid);
    // read_unaligned copes with any alignment of the slice.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<common::Event>()) })
}

impl From<&common::Event> for TcpEvent {
    fn from(e: &common::Event) -> Self {
        TcpEvent {
            ts_ns: e.ts_ns,
            skaddr: e.skaddr,
            dwell_ns: (e.dwell_ns != common::DWELL_UNKNOWN).then_some(e.dwell_ns),
            cgroup_id: e.cgroup_id,
            owner: (e.owner_pid != common::OWNER_UNKNOWN).then_some(Task {
                pid: e.owner_pid,
                comm: e.owner_comm,
            }),
            on_cpu: Task {
                pid: e.cpu_pid,
                comm: e.cpu_comm,
            },
            netns: e.netns,
            family: e.family,
            laddr: addr(e.family, &e.saddr),
            lport: e.sport,
            raddr: addr(e.family, &e.daddr),
            rport: e.dport,
            old: TcpState::from_raw(e.oldstate),
            new: TcpState::from_raw(e.newstate),
            source: Source::of_hook(Hook::from_raw(e.source)),
            replayed: e.flags & common::flag::REPLAYED != 0,
            note: None,
            peer_fin: (e.flags & common::flag::FIN_KNOWN != 0)
                .then_some(e.flags & common::flag::FIN_RECEIVED != 0),
            retransmits: e.retransmits as u32,
            detail: e.detail,
            reason: None,
            data_retransmits: 0,
        }
    }
}

pub fn decode(bytes: &[u8]) -> Result<TcpEvent, DecodeError> {
    decode_raw(bytes).map(|e| TcpEvent::from(&e))
}

impl TcpEvent {
    pub fn local(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.laddr, self.lport)
    }

    pub fn remote(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.raddr, self.rport)
    }

    /// A copy that is not a kernel transition: `source`, `note`, states and
    /// time replaced, `dwell_ns` as given.
    pub fn derived(
        &self,
        source: Source,
        note: Note,
        old: TcpState,
        new: TcpState,
        ts_ns: u64,
        dwell_ns: Option<u64>,
    ) -> TcpEvent {
        // Found by tcpstate's own lookups or timers, not while the kernel ran
        // some task: the on-CPU task is tcpstate itself.
        let on_cpu = if source == Source::SockDiag || matches!(note, Note::Stuck(_)) {
            Task::current()
        } else {
            self.on_cpu
        };
        TcpEvent {
            source,
            note: Some(note),
            old,
            new,
            ts_ns,
            dwell_ns,
            on_cpu,
            replayed: false,
            peer_fin: None,
            retransmits: 0,
            reason: None,
            data_retransmits: 0,
            ..*self
        }
    }

    /// A state row (`is STATE`), not a transition.
    pub(crate) fn is_state_row(&self) -> bool {
        self.note.is_some_and(Note::is_state_row)
    }

    pub(crate) fn family_name(&self) -> &'static str {
        match self.family {
            common::AF_INET => "ipv4",
            common::AF_INET6 => "ipv6",
            _ => "unknown",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A raw event as the kernel would send it, for decoder and renderer tests.
    pub(crate) fn raw_v4() -> common::Event {
        let mut e = common::Event::ZERO;
        e.ts_ns = 5_000_000_000;
        e.skaddr = 0xffff_8880_1234_5678;
        e.dwell_ns = 1_234_567;
        e.owner_pid = 4242;
        e.owner_comm[..6].copy_from_slice(b"server");
        e.cpu_pid = 0;
        e.cpu_comm[..9].copy_from_slice(b"swapper/1");
        e.netns = 4026531840;
        e.sport = 10050;
        e.dport = 48008;
        e.family = common::AF_INET;
        e.oldstate = TcpState::Established.raw();
        e.newstate = TcpState::FinWait1.raw();
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        e
    }

    /// [`raw_v4`] as an IPv6 connection between `local` and `remote`.
    pub(crate) fn raw_v6(local: &str, remote: &str) -> common::Event {
        let mut e = raw_v4();
        e.family = common::AF_INET6;
        e.saddr = local.parse::<Ipv6Addr>().unwrap().octets();
        e.daddr = remote.parse::<Ipv6Addr>().unwrap().octets();
        e
    }

    /// [`raw_v4`] with neither its owner nor its time in the old state known.
    pub(crate) fn raw_unknowns() -> common::Event {
        let mut e = raw_v4();
        e.owner_pid = common::OWNER_UNKNOWN;
        e.dwell_ns = common::DWELL_UNKNOWN;
        e
    }

    pub(crate) fn bytes_of(e: &common::Event) -> Vec<u8> {
        // SAFETY: Event is repr(C) plain data.
        unsafe {
            std::slice::from_raw_parts(
                (e as *const common::Event).cast::<u8>(),
                std::mem::size_of::<common::Event>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_an_ipv4_transition() {
        let ev = decode(&bytes_of(&raw_v4())).unwrap();
        assert_eq!(ev.old, TcpState::Established);
        assert_eq!(ev.new, TcpState::FinWait1);
        assert_eq!(ev.laddr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(ev.raddr, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!((ev.lport, ev.rport), (10050, 48008));
        assert_eq!(ev.dwell_ns, Some(1_234_567));
        assert_eq!(ev.owner.unwrap().pid, 4242);
        assert_eq!(ev.on_cpu.pid, 0);
        assert_eq!(ev.source, Source::Tracepoint);
        assert!(!ev.replayed);
    }

    #[test]
    fn unknown_dwell_and_owner_are_none_not_zero() {
        let mut raw = raw_v4();
        raw.dwell_ns = common::DWELL_UNKNOWN;
        raw.owner_pid = common::OWNER_UNKNOWN;
        let ev = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(ev.dwell_ns, None);
        assert_eq!(ev.owner, None);
    }

    #[test]
    fn decodes_ipv6_and_v4_mapped() {
        let mut raw = raw_v4();
        raw.family = common::AF_INET6;
        raw.saddr = "::1".parse::<Ipv6Addr>().unwrap().octets();
        raw.daddr = "::ffff:127.0.0.1".parse::<Ipv6Addr>().unwrap().octets();
        let ev = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(ev.laddr.to_string(), "::1");
        assert_eq!(ev.raddr.to_string(), "::ffff:127.0.0.1");
        assert_eq!(ev.family_name(), "ipv6");
    }

    #[test]
    fn short_record_is_an_error() {
        let b = bytes_of(&raw_v4());
        assert_eq!(
            decode(&b[..50]),
            Err(DecodeError::Short {
                len: 50,
                expected: 120
            })
        );
    }

    #[test]
    fn unknown_state_values_survive() {
        let mut raw = raw_v4();
        raw.newstate = 99;
        let ev = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(ev.new, TcpState::Unknown(99));
        assert_eq!(ev.new.to_string(), "UNKNOWN(99)");
    }

    #[test]
    fn state_names_parse_in_netstat_and_ss_spellings() {
        assert_eq!(parse_state("fin-wait-1"), Some(TcpState::FinWait1));
        assert_eq!(parse_state("FIN_WAIT1"), Some(TcpState::FinWait1));
        assert_eq!(parse_state("syn-recv"), Some(TcpState::SynRecv));
        assert_eq!(parse_state("SYN_RCVD"), Some(TcpState::SynRecv));
        assert_eq!(parse_state("closed"), Some(TcpState::Close));
        assert_eq!(parse_state("close-wait"), Some(TcpState::CloseWait));
        assert_eq!(parse_state("bogus"), None);
    }
}
