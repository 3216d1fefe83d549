//! `--lifecycle`: one line per finished connection with its whole path and
//! the time spent in each state, e.g.
//!
//! ```text
//! SYN_SENT 0.041ms > ESTABLISHED 812.345ms > FIN_WAIT1 0.050ms > FIN_WAIT2 0.032ms > CLOSE
//! ```
//!
//! marked with the socket's role (client: active open, server: accepted,
//! listener) and how it closed (active, passive, simultaneous, abort).
//!
//! Histories are keyed by socket address; a socket finishes at `-> CLOSE`,
//! after which its address may be reused by a new socket. At most
//! `max_histories` are open at once: beyond that the oldest is evicted (and
//! counted). Unfinished ones are printed at exit, marked as such.
//! Times are differences of the kernel's event times, so exact.

use std::collections::{HashMap, VecDeque};

use super::{
    Render, buf,
    color::Palette,
    json,
    timefmt::{TimeFormat, TimeWriter},
};
use crate::{
    clock::WallClock,
    event::{Note, Source, Task, TcpEvent, TcpState},
};

/// Most states kept per history (a TCP socket normally goes through at most
/// 6); beyond, the oldest are dropped and the history marked incomplete.
pub const MAX_STEPS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Active open (connect).
    Client,
    /// Passive open (accepted from a listener).
    Server,
    Listener,
    /// Joined late: the start was not seen.
    Unknown,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
            Role::Listener => "listener",
            Role::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// Sent the first FIN (ESTABLISHED -> FIN_WAIT1).
    Active,
    /// Received the first FIN (ESTABLISHED -> CLOSE_WAIT).
    Passive,
    /// Both sent FIN before receiving the other's (FIN_WAIT1 -> CLOSING).
    Simultaneous,
    /// Straight to CLOSE from an open or opening state: reset, abortive
    /// close, refused or timed-out connect.
    Abort,
}

impl CloseKind {
    pub fn name(self) -> &'static str {
        match self {
            CloseKind::Active => "active",
            CloseKind::Passive => "passive",
            CloseKind::Simultaneous => "simultaneous",
            CloseKind::Abort => "abort",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Step {
    state: TcpState,
    /// When the socket entered the state (unknown for the first state of a
    /// history that joined late).
    enter_ns: Option<u64>,
    /// Events are missing before this step (lost, or not traced).
    gap_before: bool,
}

#[derive(Debug, Clone)]
struct History {
    seq: u64,
    /// `old` of the first event seen.
    origin: TcpState,
    late: bool,
    truncated: bool,
    steps: Vec<Step>,
    owner: Option<Task>,
    /// The latest event with a complete tuple (early events may lack ports).
    tuple: TcpEvent,
    last_ns: u64,
    /// On FIN_WAIT2/CLOSING -> CLOSE: whether the peer's FIN had arrived
    /// (the timewait socket taking over is in TIME_WAIT) or not (FIN_WAIT2).
    peer_fin: Option<bool>,
    /// How it ended (the row into CLOSE), and its data retransmits.
    reason: Option<crate::why::Reason>,
    data_retransmits: u32,
}

impl History {
    fn start(ev: &TcpEvent, seq: u64) -> Self {
        let mut h = History {
            seq,
            origin: ev.old,
            late: !matches!(ev.old, TcpState::Close | TcpState::Listen) || ev.note.is_some(),
            truncated: false,
            steps: Vec::with_capacity(6),
            owner: ev.owner,
            tuple: *ev,
            last_ns: ev.ts_ns,
            peer_fin: None,
            reason: None,
            data_retransmits: 0,
        };
        if ev.note == Some(Note::Snapshot) {
            // Already in `new` when tracing started; since when is unknown.
            h.steps.push(Step {
                state: ev.new,
                enter_ns: None,
                gap_before: false,
            });
        } else {
            if h.late {
                h.steps.push(Step {
                    state: ev.old,
                    enter_ns: ev.dwell_ns.map(|d| ev.ts_ns.saturating_sub(d)),
                    gap_before: false,
                });
            }
            h.steps.push(Step {
                state: ev.new,
                enter_ns: Some(ev.ts_ns),
                gap_before: false,
            });
        }
        h
    }

    fn last_state(&self) -> TcpState {
        self.steps.last().map_or(self.origin, |s| s.state)
    }

    fn push(&mut self, step: Step) {
        if self.steps.len() == MAX_STEPS {
            self.steps.remove(0);
            self.truncated = true;
        }
        self.steps.push(step);
    }

    fn add(&mut self, ev: &TcpEvent) {
        if ev.old != self.last_state() {
            self.push(Step {
                state: ev.old,
                enter_ns: ev.dwell_ns.map(|d| ev.ts_ns.saturating_sub(d)),
                gap_before: true,
            });
        }
        self.push(Step {
            state: ev.new,
            enter_ns: Some(ev.ts_ns),
            gap_before: false,
        });
        self.note(ev);
    }

    /// Keeps the latest owner and complete tuple.
    fn note(&mut self, ev: &TcpEvent) {
        if ev.owner.is_some() {
            self.owner = ev.owner;
        }
        if (ev.lport != 0 && ev.rport != 0) || (self.tuple.lport == 0 || self.tuple.rport == 0) {
            self.tuple = *ev;
        }
        self.last_ns = self.last_ns.max(ev.ts_ns);
        if ev.new == TcpState::Close {
            self.peer_fin = ev.peer_fin;
        }
        if ev.reason.is_some() {
            self.reason = ev.reason;
            self.data_retransmits = ev.data_retransmits;
        }
    }

    /// The state of the timewait socket that took over at CLOSE, if known.
    fn timewait(&self) -> Option<TcpState> {
        match self.peer_fin? {
            true => Some(TcpState::TimeWait),
            false => Some(TcpState::FinWait2),
        }
    }

    fn complete(&self) -> bool {
        !self.late && !self.truncated && !self.steps.iter().any(|s| s.gap_before)
    }

    fn role(&self) -> Role {
        if !self.late {
            match (self.origin, self.steps.first().map(|s| s.state)) {
                (TcpState::Close, Some(TcpState::SynSent)) => return Role::Client,
                (TcpState::Close, Some(TcpState::Listen)) => return Role::Listener,
                (TcpState::Listen, _) => return Role::Server,
                _ => {}
            }
        }
        let has = |st| self.steps.iter().any(|s| s.state == st);
        if has(TcpState::Listen) {
            Role::Listener
        } else if has(TcpState::SynSent) {
            Role::Client
        } else if has(TcpState::SynRecv) {
            Role::Server
        } else {
            Role::Unknown
        }
    }

    fn close_kind(&self) -> Option<CloseKind> {
        let has = |st| self.steps.iter().any(|s| s.state == st);
        let pairs = || self.steps.windows(2).map(|w| (w[0].state, w[1].state));
        if pairs().any(|p| p == (TcpState::FinWait1, TcpState::Closing)) {
            Some(CloseKind::Simultaneous)
        } else if has(TcpState::FinWait1) {
            Some(CloseKind::Active)
        } else if has(TcpState::CloseWait) {
            Some(CloseKind::Passive)
        } else if matches!(
            pairs().next_back(),
            Some((
                TcpState::Established | TcpState::SynSent | TcpState::SynRecv,
                TcpState::Close
            ))
        ) {
            Some(CloseKind::Abort)
        } else {
            None
        }
    }

    /// Time in each state: to the next state's entry, or to `end_ns` for the
    /// last state of an unfinished history; none for the final CLOSE.
    fn durations(&self, finished: bool, end_ns: u64) -> impl Iterator<Item = Option<u64>> + '_ {
        let n = self.steps.len();
        self.steps.iter().enumerate().map(move |(i, s)| {
            let next = if i + 1 < n {
                self.steps[i + 1].enter_ns
            } else if finished {
                None
            } else {
                Some(end_ns)
            };
            Some(next?.saturating_sub(s.enter_ns?))
        })
    }

    fn total(&self, end_ns: u64) -> Option<u64> {
        Some(end_ns.saturating_sub(self.steps.first()?.enter_ns?))
    }
}

/// How a history ended when it was printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Closed,
    Unfinished,
}

enum Format {
    Text { time: TimeWriter, palette: Palette },
    Json { time: TimeWriter },
}

/// A socket's identity before its address is known: snapshot rows come from
/// sock_diag, which does not give the kernel address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TupleKey {
    netns: u32,
    laddr: std::net::IpAddr,
    lport: u16,
    raddr: std::net::IpAddr,
    rport: u16,
}

impl TupleKey {
    fn of(ev: &TcpEvent) -> Self {
        TupleKey {
            netns: ev.netns,
            laddr: ev.laddr,
            lport: ev.lport,
            raddr: ev.raddr,
            rport: ev.rport,
        }
    }
}

pub struct Lifecycle {
    format: Format,
    open: HashMap<u64, History>,
    /// Sockets listed by the start-up snapshot and not seen since, by tuple.
    snapshots: HashMap<TupleKey, History>,
    /// Creation order, for evicting the oldest; may hold stale entries.
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
    max: usize,
    /// Histories dropped to stay within `max`.
    pub evicted: u64,
    now: fn() -> u64,
}

impl Lifecycle {
    /// Text lines; `time` as chosen by `-T`/`-t`.
    pub fn text(time: TimeWriter, palette: Palette, max: usize) -> Self {
        Self::with_format(Format::Text { time, palette }, max)
    }

    /// JSON Lines records of type `lifecycle` (docs/json.md).
    pub fn json(clock: WallClock, max: usize) -> Self {
        Self::with_format(
            Format::Json {
                time: TimeWriter::new(clock, TimeFormat::Rfc3339Utc),
            },
            max,
        )
    }

    fn with_format(format: Format, max: usize) -> Self {
        Lifecycle {
            format,
            open: HashMap::new(),
            snapshots: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            max: max.max(1),
            evicted: 0,
            now: crate::clock::boot_ns,
        }
    }

    /// Replaces the clock used for "time so far" of unfinished histories.
    pub fn with_now(mut self, now: fn() -> u64) -> Self {
        self.now = now;
        self
    }

    /// Open histories right now.
    pub fn open(&self) -> usize {
        self.open.len() + self.snapshots.len()
    }

    fn insert(&mut self, skaddr: u64, h: History) {
        while self.open.len() >= self.max {
            let Some((addr, seq)) = self.order.pop_front() else {
                break;
            };
            if self.open.get(&addr).is_some_and(|h| h.seq == seq) {
                self.open.remove(&addr);
                self.evicted += 1;
            }
        }
        self.order.push_back((skaddr, h.seq));
        if self.order.len() > 2 * self.max + 64 {
            let open = &self.open;
            self.order
                .retain(|(a, g)| open.get(a).is_some_and(|h| h.seq == *g));
        }
        self.open.insert(skaddr, h);
    }

    fn start(&mut self, ev: &TcpEvent, out: &mut Vec<u8>) {
        let h = History::start(ev, self.next_seq);
        self.next_seq += 1;
        if h.last_state() == TcpState::Close && ev.note.is_none() {
            self.emit(&h, End::Closed, h.last_ns, out);
        } else {
            self.insert(ev.skaddr, h);
        }
    }

    fn emit(&mut self, h: &History, end: End, end_ns: u64, out: &mut Vec<u8>) {
        match &mut self.format {
            Format::Text { time, palette } => write_text(h, end, end_ns, time, palette, out),
            Format::Json { time } => write_json(h, end, end_ns, time, out),
        }
    }
}

impl Render for Lifecycle {
    fn header(&self, out: &mut Vec<u8>) {
        if let Format::Text { time, .. } = &self.format {
            let (width, name) = time.format().column();
            buf::str_padded(out, name, width);
            out.push(b' ');
            for (name, width) in COLS {
                buf::str_padded(out, name, width);
                out.push(b' ');
            }
            out.extend_from_slice(b"PATH\n");
        }
    }

    fn event(&mut self, ev: &TcpEvent, out: &mut Vec<u8>) {
        if ev.source != Source::Tracepoint {
            // Only a snapshot row says where a socket's history starts; the
            // other notes are about request sockets, timewait sockets (which
            // come after the full socket's CLOSE) or are not transitions.
            // Timewait and request sockets listed by the snapshot are not
            // full sockets: the tracepoint never reports them.
            if ev.note == Some(Note::Snapshot)
                && !matches!(ev.new, TcpState::TimeWait | TcpState::NewSynRecv)
            {
                if self.snapshots.len() >= self.max {
                    self.evicted += 1;
                    return;
                }
                let h = History::start(ev, self.next_seq);
                self.next_seq += 1;
                self.snapshots.insert(TupleKey::of(ev), h);
            }
            return;
        }
        if !self.open.contains_key(&ev.skaddr) {
            match self.snapshots.remove(&TupleKey::of(ev)) {
                // First transition of a socket the snapshot listed.
                Some(h) if h.last_state() == ev.old => self.insert(ev.skaddr, h),
                _ => {
                    self.start(ev, out);
                    return;
                }
            }
        }
        let h = self.open.get_mut(&ev.skaddr).expect("present");
        if ev.old == TcpState::Close && h.last_state() != TcpState::Close {
            // A new socket at a reused address whose predecessor's CLOSE was
            // not seen: print the old one as unfinished.
            let old = self.open.remove(&ev.skaddr).expect("present");
            self.emit(&old, End::Unfinished, old.last_ns, out);
            self.start(ev, out);
            return;
        }
        h.add(ev);
        if ev.new == TcpState::Close {
            let h = self.open.remove(&ev.skaddr).expect("present");
            self.emit(&h, End::Closed, ev.ts_ns, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        let now = (self.now)();
        let mut rest: Vec<History> = self.open.drain().map(|(_, h)| h).collect();
        rest.extend(self.snapshots.drain().map(|(_, h)| h));
        rest.sort_by_key(|h| h.seq);
        for h in &rest {
            self.emit(h, End::Unfinished, now.max(h.last_ns), out);
        }
        self.order.clear();
        if self.evicted > 0 {
            eprintln!(
                "tcpstate: --lifecycle: {} connection histories evicted to stay within --max-histories {}",
                self.evicted, self.max
            );
        }
    }
}

const COLS: [(&str, usize); 7] = [
    ("PID", 7),
    ("COMM", 16),
    ("LOCAL", 21),
    ("REMOTE", 21),
    ("ROLE", 8),
    ("CLOSE", 12),
    ("TOTAL", 11),
];

fn endpoint(out: &mut Vec<u8>, addr: &std::net::IpAddr, port: u16) {
    if addr.is_ipv6() {
        out.push(b'[');
        buf::ip(out, addr);
        out.push(b']');
    } else {
        buf::ip(out, addr);
    }
    out.push(b':');
    buf::u64(out, port as u64);
}

fn write_text(
    h: &History,
    end: End,
    end_ns: u64,
    time: &mut TimeWriter,
    palette: &Palette,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    time.write(out, h.last_ns);
    buf::pad_from(out, start, time.format().column().0);
    out.push(b' ');
    match &h.owner {
        Some(o) => {
            let start = out.len();
            buf::u64(out, o.pid as u64);
            buf::pad_from(out, start, 7);
            out.push(b' ');
            buf::str_padded(out, &buf::comm(&o.comm), 16);
        }
        None => out.extend_from_slice(b"-       -               "),
    }
    out.push(b' ');
    let start = out.len();
    endpoint(out, &h.tuple.laddr, h.tuple.lport);
    buf::pad_from(out, start, 21);
    out.push(b' ');
    let start = out.len();
    endpoint(out, &h.tuple.raddr, h.tuple.rport);
    buf::pad_from(out, start, 21);
    out.push(b' ');
    buf::str_padded(out, h.role().name(), 8);
    out.push(b' ');
    buf::str_padded(out, h.close_kind().map_or("-", CloseKind::name), 12);
    out.push(b' ');
    let start = out.len();
    match h.total(end_ns) {
        Some(ns) => {
            buf::human_ns(out, ns);
            if end == End::Unfinished {
                out.push(b'+');
            }
        }
        None => out.push(b'?'),
    }
    buf::pad_from(out, start, 11);
    out.push(b' ');
    let finished = end == End::Closed;
    if h.late || h.truncated {
        out.extend_from_slice(b"... > ");
    }
    for (i, (step, dur)) in h
        .steps
        .iter()
        .zip(h.durations(finished, end_ns))
        .enumerate()
    {
        if i > 0 {
            out.extend_from_slice(if step.gap_before {
                b" > ... > "
            } else {
                b" > "
            });
        }
        palette.state(out, step.state, 0);
        let last = i + 1 == h.steps.len();
        if last && finished {
            break;
        }
        out.push(b' ');
        match dur {
            Some(ns) => buf::human_ns(out, ns),
            None => out.push(b'?'),
        }
        if last {
            out.push(b'+');
        }
    }
    if let (End::Closed, Some(tw)) = (end, h.timewait()) {
        let (on, off) = palette.dim();
        out.extend_from_slice(on.as_bytes());
        out.extend_from_slice(b" (then ");
        buf::state(out, tw);
        out.push(b')');
        out.extend_from_slice(off.as_bytes());
    }
    if end == End::Unfinished {
        let (on, off) = palette.dim();
        out.extend_from_slice(on.as_bytes());
        out.extend_from_slice(b" (unfinished)");
        out.extend_from_slice(off.as_bytes());
    }
    if let Some(r) = h.reason {
        use std::io::Write as _;
        let _ = write!(out, ": {r}");
        if h.data_retransmits > 0 {
            let _ = write!(out, ", {} data retransmits", h.data_retransmits);
        }
    }
    out.push(b'\n');
}

fn write_json(h: &History, end: End, end_ns: u64, time: &mut TimeWriter, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"schema\":");
    buf::u64(out, json::SCHEMA as u64);
    out.extend_from_slice(b",\"type\":\"lifecycle\",\"time\":\"");
    time.write(out, h.last_ns);
    out.extend_from_slice(b"\",\"time_ns\":");
    buf::u64(out, h.last_ns);
    json::key(out, "end");
    out.extend_from_slice(match end {
        End::Closed => b"\"closed\"",
        End::Unfinished => b"\"unfinished\"",
    });
    json::socket_fields(out, &h.tuple);
    json::owner_fields(out, h.owner.as_ref());
    json::tuple_fields(out, &h.tuple);
    json::key(out, "role");
    buf::json_str(out, h.role().name());
    json::key(out, "close");
    match h.close_kind() {
        Some(k) => buf::json_str(out, k.name()),
        None => out.extend_from_slice(b"null"),
    }
    json::key(out, "reason");
    match h.reason {
        Some(r) => buf::json_str(out, r.code()),
        None => out.extend_from_slice(b"null"),
    }
    if let Some(n) = h.reason.and_then(|r| r.reset_reason()) {
        json::key(out, "reset_reason");
        buf::json_str(out, n);
    }
    json::key(out, "data_retransmits");
    buf::u64(out, h.data_retransmits as u64);
    json::key(out, "timewait");
    match h.timewait() {
        Some(st) => json::state(out, st),
        None => out.extend_from_slice(b"null"),
    }
    json::key(out, "complete");
    out.extend_from_slice(if h.complete() { b"true" } else { b"false" });
    json::key(out, "start_ns");
    match h.steps.first().and_then(|s| s.enter_ns) {
        Some(ns) => buf::u64(out, ns),
        None => out.extend_from_slice(b"null"),
    }
    json::key(out, "ms");
    json::ms_or_null(out, h.total(end_ns));
    json::key(out, "path");
    out.push(b'[');
    for (i, (step, dur)) in h
        .steps
        .iter()
        .zip(h.durations(end == End::Closed, end_ns))
        .enumerate()
    {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"state\":");
        json::state(out, step.state);
        out.extend_from_slice(b",\"ms\":");
        json::ms_or_null(out, dur);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::raw_v4;
    use crate::event::{Source, TcpState::*};

    const START: u64 = 4_000_000_000;

    /// Events of one socket: `(ts_ns, old, new)`, with ports filled in from
    /// the second event on (the client's first event has local port 0).
    fn socket(
        skaddr: u64,
        owner: Option<u32>,
        steps: &[(u64, TcpState, TcpState)],
    ) -> Vec<TcpEvent> {
        let mut prev: Option<u64> = None;
        steps
            .iter()
            .enumerate()
            .map(|(i, &(ts, old, new))| {
                let mut ev = TcpEvent::from(&raw_v4());
                ev.skaddr = skaddr;
                ev.ts_ns = ts;
                ev.old = old;
                ev.new = new;
                ev.dwell_ns = prev.map(|p| ts - p);
                prev = Some(ts);
                ev.owner = owner.map(|pid| Task {
                    pid,
                    comm: *b"tcppeer\0\0\0\0\0\0\0\0\0",
                });
                if i == 0 {
                    ev.lport = 0;
                }
                ev
            })
            .collect()
    }

    fn client() -> Vec<TcpEvent> {
        socket(
            0xa0,
            Some(77),
            &[
                (START + 1_000_000_000, Close, SynSent),
                (START + 1_000_041_000, SynSent, Established),
                (START + 1_812_386_000, Established, FinWait1),
                (START + 1_812_436_000, FinWait1, FinWait2),
                (START + 1_812_468_000, FinWait2, Close),
            ],
        )
    }

    fn text() -> Lifecycle {
        let clock = WallClock::with_offset(1_764_000_000_000_000_000, START);
        Lifecycle::text(
            TimeWriter::new(clock, TimeFormat::SinceStart),
            Palette::new(false),
            100,
        )
        .with_now(|| START + 10_000_000_000)
    }

    fn json() -> Lifecycle {
        Lifecycle::json(
            WallClock::with_offset(1_764_000_000_000_000_000, START),
            100,
        )
        .with_now(|| START + 10_000_000_000)
    }

    fn run(l: &mut Lifecycle, events: &[TcpEvent], finish: bool) -> String {
        let mut out = Vec::new();
        for ev in events {
            l.event(ev, &mut out);
        }
        if finish {
            l.finish(&mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn golden_text_client_active_close() {
        let mut l = text();
        let mut events = client();
        events[4].peer_fin = Some(false);
        let mut out = Vec::new();
        l.header(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "TIME(s)      PID     COMM             LOCAL                 REMOTE                ROLE     CLOSE        TOTAL       PATH\n"
        );
        assert_eq!(
            run(&mut l, &events, true),
            "1.812468     77      tcppeer          127.0.0.1:10050       127.0.0.2:48008       client   active       812.468ms   \
             SYN_SENT 0.041ms > ESTABLISHED 812.345ms > FIN_WAIT1 0.050ms > FIN_WAIT2 0.032ms > CLOSE (then FIN_WAIT2)\n"
        );
    }

    #[test]
    fn golden_text_server_passive_and_listener_and_unfinished() {
        let mut events = socket(
            0xb0,
            Some(66),
            &[
                (START + 100, Close, Listen),
                (START + 9_000_000_000, Listen, Close),
            ],
        );
        events.extend(socket(
            0xc0,
            None,
            &[
                (START + 1_000_020_000, Listen, SynRecv),
                (START + 1_000_040_000, SynRecv, Established),
                (START + 1_812_400_000, Established, CloseWait),
                (START + 1_900_000_000, CloseWait, LastAck),
                (START + 1_900_050_000, LastAck, Close),
            ],
        ));
        events.extend(socket(
            0xd0,
            Some(77),
            &[
                (START + 2_000_000_000, Close, SynSent),
                (START + 2_000_100_000, SynSent, Established),
            ],
        ));
        events.sort_by_key(|e| e.ts_ns);
        let mut l = text();
        let out = run(&mut l, &events, true);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "1.900050     -       -                127.0.0.1:10050       127.0.0.2:48008       server   passive      900.030ms   \
                 SYN_RECV 0.020ms > ESTABLISHED 812.360ms > CLOSE_WAIT 87.600ms > LAST_ACK 0.050ms > CLOSE",
                "9.000000     66      tcppeer          127.0.0.1:10050       127.0.0.2:48008       listener -            9000.000ms  \
                 LISTEN 9000.000ms > CLOSE",
                "2.000100     77      tcppeer          127.0.0.1:10050       127.0.0.2:48008       client   -            8000.000ms+ \
                 SYN_SENT 0.100ms > ESTABLISHED 7999.900ms+ (unfinished)",
            ]
        );
        assert_eq!(l.open(), 0);
    }

    #[test]
    fn golden_json_record() {
        let mut l = json();
        let mut events = client();
        events[4].peer_fin = Some(true);
        let out = run(&mut l, &events, false);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "schema": 1,
                "type": "lifecycle",
                "time": "2025-11-24T16:00:05.812468Z",
                "time_ns": 5_812_468_000u64,
                "end": "closed",
                "skaddr": "0xa0",
                "netns": 4026531840u32,
                "family": "ipv4",
                "pid": 77,
                "comm": "tcppeer",
                "laddr": "127.0.0.1",
                "lport": 10050,
                "raddr": "127.0.0.2",
                "rport": 48008,
                "role": "client",
                "close": "active",
                "reason": null,
                "data_retransmits": 0,
                "timewait": "TIME_WAIT",
                "complete": true,
                "start_ns": 5_000_000_000u64,
                "ms": 812.468,
                "path": [
                    {"state": "SYN_SENT", "ms": 0.041},
                    {"state": "ESTABLISHED", "ms": 812.345},
                    {"state": "FIN_WAIT1", "ms": 0.05},
                    {"state": "FIN_WAIT2", "ms": 0.032},
                    {"state": "CLOSE", "ms": null}
                ]
            })
        );
    }

    #[test]
    fn simultaneous_abort_and_late_joiners() {
        let simul = socket(
            0x1,
            None,
            &[
                (START + 10, Established, FinWait1),
                (START + 20, FinWait1, Closing),
                (START + 30, Closing, Close),
            ],
        );
        let abort = socket(
            0x2,
            None,
            &[
                (START + 10, Close, SynSent),
                (START + 20, SynSent, Established),
                (START + 30, Established, Close),
            ],
        );
        let mut l = json();
        let out = run(&mut l, &[simul, abort].concat(), false);
        let recs: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs[0]["close"], "simultaneous");
        assert_eq!(recs[0]["role"], "unknown");
        assert_eq!(recs[0]["complete"], false);
        assert_eq!(recs[0]["start_ns"], serde_json::Value::Null);
        assert_eq!(
            recs[0]["path"][0],
            serde_json::json!({"state": "ESTABLISHED", "ms": null})
        );
        assert_eq!(recs[1]["close"], "abort");
        assert_eq!(recs[1]["timewait"], serde_json::Value::Null);
        assert_eq!(recs[1]["role"], "client");
        assert_eq!(recs[1]["complete"], true);
    }

    #[test]
    fn gaps_and_reused_addresses() {
        // FIN_WAIT1 -> FIN_WAIT2 was lost; then the address is reused.
        let mut evs = socket(
            0x5,
            None,
            &[
                (START + 10, Close, SynSent),
                (START + 20, SynSent, Established),
                (START + 30, Established, FinWait1),
            ],
        );
        let mut tail = socket(0x5, None, &[(START + 40, FinWait2, Close)]);
        tail[0].dwell_ns = Some(5);
        evs.extend(tail);
        evs.extend(socket(
            0x5,
            None,
            &[
                (START + 50, Close, SynSent),
                (START + 60, SynSent, Established),
            ],
        ));
        let mut l = text();
        let out = run(&mut l, &evs, false);
        assert!(
            out.ends_with("FIN_WAIT1 0.000ms > ... > FIN_WAIT2 0.000ms > CLOSE\n"),
            "{out}"
        );
        let mut again = socket(0x5, None, &[(START + 70, Close, SynSent)]);
        again[0].lport = 1;
        let out = run(&mut l, &again, false);
        assert!(out.contains("(unfinished)"), "{out}");
        assert_eq!(l.open(), 1);
    }

    #[test]
    fn snapshot_rows_start_histories_and_other_notes_are_ignored() {
        let mut snap = TcpEvent::from(&raw_v4());
        snap.skaddr = 0; // sock_diag does not give the kernel address
        snap.source = Source::SockDiag;
        snap.note = Some(Note::Snapshot);
        snap.old = Established;
        snap.new = Established;
        snap.dwell_ns = None;
        let mut stuck = snap;
        stuck.source = Source::Tracker;
        stuck.note = Some(Note::Stuck(1));
        let mut close = socket(
            0x9,
            None,
            &[
                (START + 5, Established, CloseWait),
                (START + 9, CloseWait, LastAck),
            ],
        );
        close.extend(socket(0x9, None, &[(START + 10, LastAck, Close)]));
        for e in &mut close {
            e.lport = 10050;
        }
        let mut other = snap;
        other.lport = 22;
        other.new = CloseWait;
        let mut timewait = snap;
        timewait.lport = 23;
        timewait.new = TimeWait;
        let mut l = text();
        let out = run(
            &mut l,
            &[&[snap, other, timewait, stuck][..], &close].concat(),
            true,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].ends_with(
                "unknown  passive      ?           ... > ESTABLISHED ? > CLOSE_WAIT 0.000ms > LAST_ACK 0.000ms > CLOSE"
            ),
            "{out}"
        );
        assert!(
            lines[1].ends_with("127.0.0.1:22          127.0.0.2:48008       unknown  passive      ?           ... > CLOSE_WAIT ?+ (unfinished)"),
            "{out}"
        );
    }

    #[test]
    fn bounded_with_evictions_counted() {
        let mut l = Lifecycle::json(WallClock::with_offset(0, 0), 3).with_now(|| 0);
        let mut evs = Vec::new();
        for i in 0..10u64 {
            evs.extend(socket(0x100 + i, None, &[(i, Close, SynSent)]));
        }
        run(&mut l, &evs, false);
        assert_eq!(l.open(), 3);
        assert_eq!(l.evicted, 7);
        assert!(l.order.len() <= 2 * 3 + 64);
        let out = run(&mut l, &[], true);
        let addrs: Vec<String> = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["skaddr"].to_string())
            .collect();
        assert_eq!(addrs, ["\"0x107\"", "\"0x108\"", "\"0x109\""]);
    }
}
