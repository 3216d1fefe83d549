//! What `--top` knows, apart from any screen: sockets per state, listeners'
//! health, who holds sockets in the states only an application or a peer can
//! end, TIME_WAIT pressure on the ephemeral ports, failed connects and
//! resets. Fed the same rows as every printer ([`Model::event`]) and, every
//! second, what sock_diag dumps say ([`Model::sampled`]); pure, so every
//! count and ranking is unit-tested without a kernel.
//!
//! Counts come from the start-up snapshot plus events, and each dump
//! replaces them with the kernel's own numbers, so they never drift (lost
//! events, sockets closed in a way no row shows).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::{IpAddr, SocketAddr},
};

use super::rate::Rate;
use crate::{
    diag::DiagDetail,
    enrich::{ListenKey, TupleKey, stuck},
    event::{Note, Source, Task, TcpEvent, TcpState},
    reason::Reason,
};

/// The states the States pane shows, in a connection's order. SYN_RECV is
/// the half-open connections (request sockets): a full socket is in it for
/// microseconds only.
pub(crate) const STATES: [TcpState; 10] = [
    TcpState::Listen,
    TcpState::Established,
    TcpState::SynSent,
    TcpState::SynRecv,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::TimeWait,
    TcpState::CloseWait,
    TcpState::LastAck,
    TcpState::Closing,
];

/// Per-state arrays are indexed by the kernel's state number (1..=12).
const NSTATES: usize = 16;

/// Most keys each table holds (destinations, reset reasons, held sockets,
/// listeners' rates): beyond it new ones are counted in
/// [`Model::untracked`], so a flood of distinct peers costs bounded memory.
pub(crate) const MAX_KEYS: usize = 65_536;

/// Most TIME_WAIT destinations ranked (the pane shows the top ones).
pub const TOP_DESTINATIONS: usize = 64;

/// A destination as the ephemeral port range sees it: a local address
/// connecting to one remote address and port, in one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Dest {
    pub netns: u32,
    pub local: IpAddr,
    pub remote: SocketAddr,
}

/// `net.ipv4.ip_local_port_range` of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    /// Parses the sysctl's text, `32768\t60999`.
    pub fn parse(text: &str) -> Option<PortRange> {
        let mut it = text.split_whitespace().map(str::parse::<u16>);
        let (Some(Ok(low)), Some(Ok(high)), None) = (it.next(), it.next(), it.next()) else {
            return None;
        };
        (low <= high).then_some(PortRange { low, high })
    }

    pub fn size(self) -> u32 {
        u32::from(self.high - self.low) + 1
    }

    pub fn contains(self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

/// One listening socket as the last dump showed it, with its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenerSample {
    pub key: ListenKey,
    /// The socket's inode: tells two listeners of one key apart
    /// (SO_REUSEPORT), and a listener from the one that replaced it.
    pub inode: u32,
    /// The listener's cgroup id (`INET_DIAG_CGROUP_ID`), 0 if unknown.
    pub cgroup_id: u64,
    pub addr: IpAddr,
    pub owner: Option<Task>,
    pub container: Option<String>,
    /// Accept queue now, and its limit (the backlog).
    pub queue: u32,
    pub limit: u32,
    /// `sk_drops`: connections dropped at this listener (queue overflows
    /// among them), since it was created.
    pub drops: Option<u32>,
}

/// What one round of dumps found, for [`Model::sampled`].
#[derive(Debug, Default)]
pub(crate) struct Sample {
    /// Listeners in scope (filters applied).
    pub listeners: Vec<ListenerSample>,
    /// Every socket of each namespace read, filters applied; `None` when
    /// the dumps cannot stand for what the filters select (a container
    /// filter: request and timewait sockets have no owner), and the counts
    /// then come from the rows alone.
    pub sockets: Option<Vec<(u32, DiagDetail)>>,
    /// Namespaces whose dump failed this time: what they held is kept.
    pub failed: Vec<u32>,
    pub port_ranges: HashMap<u32, PortRange>,
}

/// Events per second into one listener.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListenerRates {
    /// Handshakes completed (`SYN_RECV -> ESTABLISHED`): connections that
    /// joined the accept queue.
    pub accepts: Rate,
    pub synack_retransmits: Rate,
    /// Resets sent by its connections, and connects refused at its port.
    pub resets: Rate,
}

/// A socket in a state only its application or its peer can end.
#[derive(Debug, Clone)]
struct Held {
    tuple: TupleKey,
    state: TcpState,
    since_ns: u64,
    owner: Option<Task>,
    container: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum HeldKey {
    Addr(u64),
    /// Known from sock_diag only (snapshot rows, timewait sockets).
    Tuple(TupleKey),
}

/// Owners holding sockets in one state: a Holders row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HolderRow {
    pub owner: Option<Task>,
    pub container: Option<String>,
    pub state: TcpState,
    pub count: u64,
    pub oldest_ns: u64,
}

/// A Pressure row: TIME_WAIT sockets of one destination against the
/// namespace's ephemeral ports.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PressureRow {
    pub dest: Dest,
    pub timewait: u64,
    pub range: Option<PortRange>,
}

impl PressureRow {
    /// The share of the port range in use, when the range is known.
    pub(crate) fn share(&self) -> Option<f64> {
        self.range
            .map(|r| self.timewait as f64 / f64::from(r.size()))
    }

    /// More than half of the range held by one destination: new connects to
    /// it are close to failing with EADDRNOTAVAIL.
    pub(crate) fn warn(&self) -> bool {
        self.share().is_some_and(|s| s > 0.5)
    }
}

/// How a connect failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ConnectFailure {
    Refused,
    TimedOut,
}

impl ConnectFailure {
    pub fn name(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::TimedOut => "timed out",
        }
    }
}

/// What the Listeners pane shows per listener.
#[derive(Debug, Clone)]
pub(crate) struct ListenerRow<'a> {
    pub sample: &'a ListenerSample,
    pub half_open: u64,
    pub rates: Option<&'a ListenerRates>,
}

/// Counts per state, indexed by state number.
type Counts = [u64; NSTATES];

pub(crate) struct Model {
    start_sec: u64,
    now_ns: u64,
    counts: Counts,
    entries: Vec<Rate>,
    /// `counts` at each second, the last minute and a bit.
    history: VecDeque<(u64, Counts)>,
    listeners: Vec<ListenerSample>,
    rates: HashMap<ListenKey, ListenerRates>,
    /// Request sockets per listener, from the last dump.
    half_open: HashMap<ListenKey, u64>,
    held: HashMap<HeldKey, Held>,
    timewait: HashMap<Dest, u64>,
    port_ranges: HashMap<u32, PortRange>,
    connects: HashMap<(ConnectFailure, u32, SocketAddr), Rate>,
    resets: HashMap<String, Rate>,
    /// Keys not kept because a table was full ([`MAX_KEYS`]).
    pub untracked: u64,
}

fn sec_of(ns: u64) -> u64 {
    ns / 1_000_000_000
}

fn idx(s: TcpState) -> usize {
    (s.raw() as usize).min(NSTATES - 1)
}

/// Adds to `map[key]` unless the map is full of other keys.
fn bump<'m, K: std::hash::Hash + Eq, V: Default>(
    map: &'m mut HashMap<K, V>,
    key: K,
    untracked: &mut u64,
) -> Option<&'m mut V> {
    if map.len() >= MAX_KEYS && !map.contains_key(&key) {
        *untracked += 1;
        return None;
    }
    Some(map.entry(key).or_default())
}

impl Model {
    pub fn new(now_ns: u64) -> Self {
        Model {
            start_sec: sec_of(now_ns),
            now_ns,
            counts: [0; NSTATES],
            entries: vec![Rate::default(); NSTATES],
            history: VecDeque::new(),
            listeners: Vec::new(),
            rates: HashMap::new(),
            half_open: HashMap::new(),
            held: HashMap::new(),
            timewait: HashMap::new(),
            port_ranges: HashMap::new(),
            connects: HashMap::new(),
            resets: HashMap::new(),
            untracked: 0,
        }
    }

    /// One row, as every printer gets it; `container`: its owner's.
    pub fn event(&mut self, ev: &TcpEvent, container: Option<&str>) {
        if matches!(ev.note, Some(Note::Stuck(_))) || matches!(ev.source, Source::Cause(_)) {
            // A socket already counted, flagged again; causes are folded
            // into their CLOSE rows by the enricher.
            return;
        }
        let sec = sec_of(ev.ts_ns);
        let is_new_socket = matches!(ev.note, Some(Note::Snapshot | Note::TimeWaitSocket));
        // A LISTEN -> SYN_RECV is a new request or child socket: the listener
        // stays.
        let leaves_old = !is_new_socket
            && ev.old != TcpState::Close
            && !(ev.old == TcpState::Listen && ev.new != TcpState::Close);
        if leaves_old {
            let c = &mut self.counts[idx(ev.old)];
            *c = c.saturating_sub(1);
        }
        if ev.new != TcpState::Close {
            self.counts[idx(ev.new)] += 1;
            if ev.note != Some(Note::Snapshot) {
                self.entries[idx(ev.new)].add(sec, 1);
            }
        }
        self.listener_rates(ev, sec);
        self.hold(ev, container);
        self.count_timewait(ev, leaves_old);
        self.failures(ev, sec);
    }

    fn listener_rates(&mut self, ev: &TcpEvent, sec: u64) {
        let key = ListenKey {
            netns: ev.netns,
            port: ev.lport,
            family: ev.family,
        };
        let u = &mut self.untracked;
        match (ev.old, ev.new, ev.note) {
            (TcpState::SynRecv, TcpState::Established, None) => {
                if let Some(r) = bump(&mut self.rates, key, u) {
                    r.accepts.add(sec, 1);
                    // The half-open row counted the first retransmit.
                    r.synack_retransmits
                        .add(sec, ev.retransmits.saturating_sub(1));
                }
            }
            (_, _, Some(Note::HalfOpen(n))) => {
                if let Some(r) = bump(&mut self.rates, key, u) {
                    r.synack_retransmits.add(sec, n);
                }
            }
            (_, _, Some(Note::HalfOpenExpired(n))) => {
                if let Some(r) = bump(&mut self.rates, key, u) {
                    r.synack_retransmits.add(sec, n.saturating_sub(1));
                }
            }
            (_, TcpState::Close, _) => match ev.reason {
                Some(Reason::ResetSent(_)) => {
                    if let Some(r) = bump(&mut self.rates, key, u) {
                        r.resets.add(sec, 1);
                    }
                }
                // Refused at the remote port: against that port's listener
                // when it is one of ours (a loopback or same-namespace peer).
                Some(Reason::Refused) => {
                    let at = ListenKey {
                        port: ev.rport,
                        ..key
                    };
                    if self.listeners.iter().any(|l| l.key == at)
                        && let Some(r) = bump(&mut self.rates, at, u)
                    {
                        r.resets.add(sec, 1);
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn hold(&mut self, ev: &TcpEvent, container: Option<&str>) {
        let tuple = TupleKey::of(ev);
        let from_diag = matches!(
            ev.note,
            Some(Note::Snapshot | Note::TimeWaitSocket | Note::TimeWait)
        ) || matches!(ev.note, Some(Note::TimeWaitExpired | Note::TimeWaitReused));
        let key = if from_diag {
            HeldKey::Tuple(tuple)
        } else {
            self.held.remove(&HeldKey::Tuple(tuple));
            HeldKey::Addr(ev.skaddr)
        };
        if stuck::watched(ev.new) && (ev.source == Source::Tracepoint || from_diag) {
            if self.held.len() >= MAX_KEYS && !self.held.contains_key(&key) {
                self.untracked += 1;
                return;
            }
            let since_ns = match self.held.get(&key) {
                Some(h) if h.state == ev.new => h.since_ns,
                _ => ev.ts_ns,
            };
            self.held.insert(
                key,
                Held {
                    tuple,
                    state: ev.new,
                    since_ns,
                    owner: ev.owner,
                    container: container.map(str::to_string),
                },
            );
        } else {
            self.held.remove(&key);
        }
    }

    /// Whether a local port is one `connect()` picks from the range (where
    /// the range is unknown, every port is).
    fn ephemeral(&self, netns: u32, port: u16) -> bool {
        self.port_ranges
            .get(&netns)
            .is_none_or(|r| r.contains(port))
    }

    fn count_timewait(&mut self, ev: &TcpEvent, leaves_old: bool) {
        if !self.ephemeral(ev.netns, ev.lport) {
            return;
        }
        let dest = Dest {
            netns: ev.netns,
            local: ev.laddr,
            remote: ev.remote(),
        };
        if ev.new == TcpState::TimeWait && !(leaves_old && ev.old == TcpState::TimeWait) {
            if let Some(n) = bump(&mut self.timewait, dest, &mut self.untracked) {
                *n += 1;
            }
        } else if leaves_old
            && ev.old == TcpState::TimeWait
            && let Some(n) = self.timewait.get_mut(&dest)
        {
            *n -= 1;
            if *n == 0 {
                self.timewait.remove(&dest);
            }
        }
    }

    fn failures(&mut self, ev: &TcpEvent, sec: u64) {
        if ev.new != TcpState::Close {
            return;
        }
        let failure = match ev.reason {
            Some(Reason::Refused) => Some(ConnectFailure::Refused),
            Some(Reason::ConnectTimeout) => Some(ConnectFailure::TimedOut),
            _ => None,
        };
        if let Some(f) = failure
            && let Some(r) = bump(
                &mut self.connects,
                (f, ev.netns, ev.remote()),
                &mut self.untracked,
            )
        {
            r.add(sec, 1);
        }
        let reset = match ev.reason {
            Some(Reason::ResetSent(Some(name))) => Some(format!("sent {name}")),
            Some(Reason::ResetSent(None)) => Some("sent".to_string()),
            Some(Reason::ResetReceived) => Some("received".to_string()),
            Some(Reason::Refused) => Some("connect refused".to_string()),
            _ => None,
        };
        if let Some(reason) = reset
            && let Some(r) = bump(&mut self.resets, reason, &mut self.untracked)
        {
            r.add(sec, 1);
        }
    }

    /// What the dumps found: listeners replace the last ones; when the
    /// dumps stand for the filters, the per-state counts, TIME_WAIT per
    /// destination and the held sockets are corrected to them.
    pub(crate) fn sampled(&mut self, s: Sample) {
        self.port_ranges.extend(s.port_ranges);
        self.listeners = s.listeners;
        let Some(sockets) = s.sockets else {
            return;
        };
        let failed: HashSet<u32> = s.failed.iter().copied().collect();
        let mut counts: Counts = [0; NSTATES];
        let mut timewait: HashMap<Dest, u64> = HashMap::new();
        let mut half_open: HashMap<ListenKey, u64> = HashMap::new();
        let mut watched: HashSet<TupleKey> = HashSet::new();
        for (netns, d) in &sockets {
            let s = &d.sock;
            counts[idx(s.state)] += 1;
            match s.state {
                TcpState::TimeWait if self.ephemeral(*netns, s.local.port()) => {
                    let dest = Dest {
                        netns: *netns,
                        local: s.local.ip(),
                        remote: s.remote,
                    };
                    if timewait.len() < MAX_KEYS || timewait.contains_key(&dest) {
                        *timewait.entry(dest).or_default() += 1;
                    }
                }
                TcpState::SynRecv => {
                    let key = ListenKey {
                        netns: *netns,
                        port: s.local.port(),
                        family: s.family,
                    };
                    *half_open.entry(key).or_default() += 1;
                }
                _ => {}
            }
            if stuck::watched(s.state) {
                watched.insert(TupleKey {
                    netns: *netns,
                    local: s.local,
                    remote: s.remote,
                });
            }
        }
        // Counts are corrected only from a complete round: a namespace
        // whose dump failed keeps what the rows said of it.
        if failed.is_empty() {
            self.counts = counts;
            self.timewait = timewait;
            self.half_open = half_open;
        }
        self.held
            .retain(|_, h| failed.contains(&h.tuple.netns) || watched.contains(&h.tuple));
    }

    /// The clock moves on (every second): the one-minute history.
    pub fn tick(&mut self, now_ns: u64) {
        self.now_ns = now_ns;
        let sec = sec_of(now_ns);
        if self.history.back().is_none_or(|(s, _)| *s < sec) {
            self.history.push_back((sec, self.counts));
        }
        while self.history.front().is_some_and(|(s, _)| s + 60 < sec) {
            self.history.pop_front();
        }
    }

    fn now_sec(&self) -> u64 {
        sec_of(self.now_ns)
    }

    /// Sockets in `state` now.
    pub fn count(&self, state: TcpState) -> u64 {
        self.counts[idx(state)]
    }

    /// Entries into `state` per second.
    pub(crate) fn entries_per_sec(&self, state: TcpState) -> f64 {
        self.entries[idx(state)].per_sec(self.now_sec(), self.start_sec)
    }

    /// The change of `state`'s count over the last minute (since tracing
    /// started, if that is less).
    pub fn change(&self, state: TcpState) -> i64 {
        let then = self.history.front().map_or(0, |(_, c)| c[idx(state)]);
        self.count(state) as i64 - then as i64
    }

    pub fn listeners(&self) -> Vec<ListenerRow<'_>> {
        self.listeners
            .iter()
            .map(|l| ListenerRow {
                sample: l,
                half_open: self.half_open.get(&l.key).copied().unwrap_or(0),
                rates: self.rates.get(&l.key),
            })
            .collect()
    }

    /// `/s` of a listener's rate.
    pub(crate) fn per_sec(&self, r: &Rate) -> f64 {
        r.per_sec(self.now_sec(), self.start_sec)
    }

    /// Held sockets grouped by owner, container and state; oldest first.
    pub(crate) fn holders(&self) -> Vec<HolderRow> {
        let mut groups: HashMap<(Option<u32>, Option<&str>, TcpState), HolderRow> = HashMap::new();
        for h in self.held.values() {
            let key = (h.owner.map(|t| t.pid), h.container.as_deref(), h.state);
            let age = self.now_ns.saturating_sub(h.since_ns);
            let row = groups.entry(key).or_insert_with(|| HolderRow {
                owner: h.owner,
                container: h.container.clone(),
                state: h.state,
                count: 0,
                oldest_ns: 0,
            });
            row.count += 1;
            row.oldest_ns = row.oldest_ns.max(age);
        }
        let mut rows: Vec<HolderRow> = groups.into_values().collect();
        rows.sort_by(|a, b| {
            b.oldest_ns
                .cmp(&a.oldest_ns)
                .then(b.count.cmp(&a.count))
                .then(a.owner.map(|t| t.pid).cmp(&b.owner.map(|t| t.pid)))
        });
        rows
    }

    /// TIME_WAIT per destination, most first, the top
    /// [`TOP_DESTINATIONS`]. Only sockets on an ephemeral port count
    /// against the range; where the range is unknown, all do.
    pub fn pressure(&self) -> Vec<PressureRow> {
        let mut rows: Vec<PressureRow> = self
            .timewait
            .iter()
            .map(|(d, n)| PressureRow {
                dest: *d,
                timewait: *n,
                range: self.port_ranges.get(&d.netns).copied(),
            })
            .collect();
        rows.sort_by(|a, b| b.timewait.cmp(&a.timewait).then(a.dest.cmp(&b.dest)));
        rows.truncate(TOP_DESTINATIONS);
        rows
    }

    /// Failed connects per destination: (how, netns, destination, count,
    /// per second), most first.
    pub(crate) fn connect_failures(&self) -> Vec<(ConnectFailure, u32, SocketAddr, u64, f64)> {
        let mut rows: Vec<_> = self
            .connects
            .iter()
            .map(|((f, ns, dest), r)| (*f, *ns, *dest, r.total, self.per_sec(r)))
            .collect();
        rows.sort_by(|a, b| b.3.cmp(&a.3).then((a.0, a.1, a.2).cmp(&(b.0, b.1, b.2))));
        rows
    }

    /// Resets per reason: (reason, count, per second), most first.
    pub fn resets(&self) -> Vec<(&str, u64, f64)> {
        let mut rows: Vec<_> = self
            .resets
            .iter()
            .map(|(k, r)| (k.as_str(), r.total, self.per_sec(r)))
            .collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        rows
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
pub(crate) mod tests;
