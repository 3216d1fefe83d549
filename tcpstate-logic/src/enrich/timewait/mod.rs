//! TIME_WAIT and orphaned FIN_WAIT2. When a full socket ends with
//! FIN_WAIT2->CLOSE or CLOSING->CLOSE, a timewait socket takes over the
//! tuple: in substate TIME_WAIT when the peer's FIN had arrived, or
//! FIN_WAIT2 when the socket was closed before it did (netstat's
//! `FIN_WAIT2 -`: it waits for the peer's FIN without any process). The
//! kernel side reads which from the socket's SOCK_DONE flag; later changes
//! (the FIN arriving, expiry) are found by dumping the timewait sockets of
//! a namespace, once per check for all the sockets followed there, so a
//! storm of connections costs one dump per second, not one lookup each.

use std::collections::{HashMap, HashSet};

use super::{Counters, Dumped, Dumps, Emit, TupleKey, table::Wanted};
use crate::event::{Note, Source, Task, TcpEvent, TcpState};

/// TCP_TIMEWAIT_LEN: a timewait socket in TIME_WAIT lives 60 s.
const TIMEWAIT_LEN_NS: u64 = 60_000_000_000;
/// How often an orphaned FIN_WAIT2 is looked at for the peer's FIN, and an
/// overdue TIME_WAIT for its expiry.
const RECHECK_NS: u64 = 1_000_000_000;

/// One followed timewait socket: what is needed to print its rows, small
/// because a busy server has tens of thousands (key and value 64 bytes).
struct Tw {
    /// Index into [`Owners`].
    owner: u32,
    /// The full socket's cgroup id (`TcpEvent::cgroup_id`).
    cgroup_id: u64,
    family: u16,
    substate: TcpState,
    flagged_stuck: bool,
    since_ns: u64,
    due_ns: u64,
}

/// A tuple in 40 bytes (a `SocketAddr` pair takes 64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TwKey {
    netns: u32,
    lport: u16,
    rport: u16,
    laddr: [u8; 16],
    raddr: [u8; 16],
}

fn octets(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&v4.octets());
            a
        }
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

fn ip(octets: [u8; 16], family: u16) -> std::net::IpAddr {
    if family == tcpstate_common::AF_INET6 {
        std::net::IpAddr::V6(octets.into())
    } else {
        std::net::IpAddr::V4([octets[0], octets[1], octets[2], octets[3]].into())
    }
}

impl TwKey {
    fn of(k: &TupleKey) -> Self {
        TwKey {
            netns: k.netns,
            lport: k.local.port(),
            rport: k.remote.port(),
            laddr: octets(k.local.ip()),
            raddr: octets(k.remote.ip()),
        }
    }

    fn dumped(netns: u32, local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Self {
        Self::of(&TupleKey {
            netns,
            local,
            remote,
        })
    }
}

/// Owners of followed sockets, each stored once (a storm's sockets mostly
/// share one owner), so an entry holds a 4-byte index instead of 24 bytes.
#[derive(Default)]
struct Owners {
    tasks: Vec<Task>,
    index: HashMap<Task, u32>,
}

/// Index of "no owner".
const NO_OWNER: u32 = u32::MAX;
/// Most distinct owners kept; beyond, rows name none.
const MAX_OWNERS: usize = 65_536;

impl Owners {
    fn id(&mut self, owner: Option<Task>) -> u32 {
        let Some(t) = owner else {
            return NO_OWNER;
        };
        if let Some(&i) = self.index.get(&t) {
            return i;
        }
        if self.tasks.len() >= MAX_OWNERS {
            return NO_OWNER;
        }
        let i = self.tasks.len() as u32;
        self.tasks.push(t);
        self.index.insert(t, i);
        i
    }

    fn get(&self, id: u32) -> Option<Task> {
        self.tasks.get(id as usize).copied()
    }
}

pub struct TimeWait {
    socks: HashMap<TwKey, Tw>,
    owners: Owners,
    max: usize,
    /// When each namespace was last dumped: at most one dump per namespace
    /// per RECHECK_NS, however many of its sockets fall due in between (a
    /// storm makes some due at every tick).
    last_dump_ns: HashMap<u32, u64>,
}

impl TimeWait {
    pub fn new(max: usize) -> Self {
        TimeWait {
            socks: HashMap::new(),
            owners: Owners::default(),
            max,
            last_dump_ns: HashMap::new(),
        }
    }

    #[cfg(test)]
    fn followed(&self) -> usize {
        self.socks.len()
    }

    fn due(substate: TcpState, since_ns: u64) -> u64 {
        if substate == TcpState::TimeWait {
            since_ns + TIMEWAIT_LEN_NS
        } else {
            since_ns + RECHECK_NS
        }
    }

    fn follow(&mut self, ev: &TcpEvent, counters: &mut Counters) {
        if self.socks.len() >= self.max {
            counters.untracked += 1;
            return;
        }
        if self.socks.is_empty() {
            // Nothing refers to the owners any more: start afresh.
            self.owners = Owners::default();
        }
        let owner = self.owners.id(ev.owner);
        self.socks.insert(
            TwKey::of(&TupleKey::of(ev)),
            Tw {
                owner,
                cgroup_id: ev.cgroup_id,
                family: ev.family,
                substate: ev.new,
                flagged_stuck: false,
                since_ns: ev.ts_ns,
                due_ns: Self::due(ev.new, ev.ts_ns),
            },
        );
    }

    /// The full socket closed from FIN_WAIT2 or CLOSING: report the timewait
    /// socket that takes over (a state row), as netstat would list it.
    pub(crate) fn handover(&mut self, ev: &TcpEvent, counters: &mut Counters) -> Option<TcpEvent> {
        let substate = match (ev.old, ev.peer_fin) {
            (TcpState::Closing, _) | (_, Some(true)) => TcpState::TimeWait,
            (_, Some(false)) => TcpState::FinWait2,
            // The kernel could not tell (no BTF offset): don't guess.
            (_, None) => return None,
        };
        let e = ev.derived(
            Source::Tracker,
            Note::TimeWaitSocket,
            substate,
            substate,
            ev.ts_ns,
            None,
        );
        self.follow(&e, counters);
        Some(e)
    }

    /// Follows a timewait socket found by the start-up snapshot.
    pub(crate) fn adopt(&mut self, ev: &TcpEvent, counters: &mut Counters) {
        self.follow(ev, counters);
    }

    /// A new connection on a followed tuple (its SYN_SENT->ESTABLISHED or
    /// LISTEN->SYN_RECV): the kernel ended the timewait socket to let it in
    /// (`tcp_tw_reuse`, on by default for loopback, or a SYN the timewait
    /// socket accepted). Without this, a storm that reuses ports would leave
    /// the old timewait socket's end unreported.
    pub(crate) fn reused(&mut self, ev: &TcpEvent) -> Option<TcpEvent> {
        let key = TwKey::of(&TupleKey::of(ev));
        let tw = self.socks.remove(&key)?;
        Some(Self::row(
            &self.owners,
            &key,
            &tw,
            Source::Tracker,
            Note::TimeWaitReused,
            (tw.substate, TcpState::Close),
            ev.ts_ns,
        ))
    }

    /// The peer (local, traced) finished LAST_ACK->CLOSE: the ACK of its FIN
    /// came from our orphaned FIN_WAIT2, which sends it as it moves to
    /// TIME_WAIT. That is the transition, at the peer's event time: no dump
    /// needed (a dump a second later may already find the tuple reused).
    pub(crate) fn peer_closed(&mut self, ev: &TcpEvent) -> Option<TcpEvent> {
        let key = TwKey::of(&TupleKey::of(ev).reversed());
        let tw = self.socks.get_mut(&key)?;
        if tw.substate != TcpState::FinWait2 {
            return None;
        }
        let row = Self::row(
            &self.owners,
            &key,
            tw,
            Source::Tracker,
            Note::TimeWait,
            (TcpState::FinWait2, TcpState::TimeWait),
            ev.ts_ns,
        );
        tw.substate = TcpState::TimeWait;
        tw.since_ns = ev.ts_ns;
        tw.due_ns = Self::due(TcpState::TimeWait, ev.ts_ns);
        Some(row)
    }

    fn row(
        owners: &Owners,
        key: &TwKey,
        tw: &Tw,
        source: Source,
        note: Note,
        (old, new): (TcpState, TcpState),
        now_ns: u64,
    ) -> TcpEvent {
        let on_cpu = Task::current();
        TcpEvent {
            ts_ns: now_ns,
            skaddr: 0,
            dwell_ns: Some(now_ns.saturating_sub(tw.since_ns)),
            cgroup_id: tw.cgroup_id,
            owner: owners.get(tw.owner),
            on_cpu,
            netns: key.netns,
            family: tw.family,
            laddr: ip(key.laddr, tw.family),
            lport: key.lport,
            raddr: ip(key.raddr, tw.family),
            rport: key.rport,
            old,
            new,
            source,
            replayed: false,
            note: Some(note),
            peer_fin: None,
            retransmits: 0,
            detail: 0,
            reason: None,
            data_retransmits: 0,
        }
    }

    /// Dumps the timewait sockets of every namespace where a followed one
    /// is due, and settles all followed sockets of those namespaces: a new
    /// substate is a transition, a missing socket has expired.
    pub(crate) fn tick(&mut self, now_ns: u64, dumps: &mut Dumps<'_>, emit: &mut Emit<'_>) {
        let namespaces: HashSet<u32> = self
            .socks
            .iter()
            .filter(|(_, t)| t.due_ns <= now_ns)
            .map(|(k, _)| k.netns)
            .filter(|ns| {
                self.last_dump_ns
                    .get(ns)
                    .is_none_or(|t| now_ns.saturating_sub(*t) >= RECHECK_NS)
            })
            .collect();
        self.last_dump_ns
            .retain(|_, t| now_ns.saturating_sub(*t) < RECHECK_NS);
        for netns in namespaces {
            self.last_dump_ns.insert(netns, now_ns);
            let live: HashMap<TwKey, TcpState> = match dumps.dump(netns, Wanted::TimeWait) {
                // Timewait sockets have no inode; a full socket on the
                // tuple is a new connection that reused it.
                Dumped::Sockets(socks) => socks
                    .into_iter()
                    .filter(|s| s.inode == 0)
                    .map(|s| (TwKey::dumped(netns, s.local, s.remote), s.state))
                    .collect(),
                Dumped::Failed => continue,
                Dumped::Gone => {
                    self.socks.retain(|k, _| k.netns != netns);
                    continue;
                }
            };
            let mut gone = Vec::new();
            let owners = &self.owners;
            for (k, tw) in self.socks.iter_mut().filter(|(k, _)| k.netns == netns) {
                match live.get(k) {
                    // A timewait socket never goes back from TIME_WAIT: this
                    // is a newer connection on the same tuple, whose events
                    // are still on their way (they end this one as reused).
                    Some(&TcpState::FinWait2) if tw.substate == TcpState::TimeWait => {}
                    Some(&state) if state != tw.substate => {
                        emit(&Self::row(
                            owners,
                            k,
                            tw,
                            Source::SockDiag,
                            Note::TimeWait,
                            (tw.substate, state),
                            now_ns,
                        ));
                        tw.substate = state;
                        tw.since_ns = now_ns;
                        tw.due_ns = Self::due(state, now_ns);
                    }
                    Some(_) => {
                        if tw.due_ns <= now_ns {
                            tw.due_ns = now_ns + RECHECK_NS;
                        }
                    }
                    None => {
                        emit(&Self::row(
                            owners,
                            k,
                            tw,
                            Source::SockDiag,
                            Note::TimeWaitExpired,
                            (tw.substate, TcpState::Close),
                            now_ns,
                        ));
                        gone.push(*k);
                    }
                }
            }
            for k in gone {
                self.socks.remove(&k);
            }
        }
    }

    /// Orphaned FIN_WAIT2 sockets waiting longer than the threshold: the peer
    /// never sent its FIN.
    pub(crate) fn flag_stuck(&mut self, now_ns: u64, threshold_ns: u64, emit: &mut Emit<'_>) {
        for (k, tw) in self.socks.iter_mut() {
            let age = now_ns.saturating_sub(tw.since_ns);
            if tw.substate == TcpState::FinWait2 && !tw.flagged_stuck && age >= threshold_ns {
                tw.flagged_stuck = true;
                emit(&Self::row(
                    &self.owners,
                    k,
                    tw,
                    Source::Tracker,
                    Note::Stuck(age),
                    (TcpState::FinWait2, TcpState::FinWait2),
                    now_ns,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests;
