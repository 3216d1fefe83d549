//! Half-open connections: request sockets waiting for the client's final
//! ACK (netstat's SYN_RECV). The state tracepoint never shows them
//! (TCP_NEW_SYN_RECV is set by a plain store), and following every request
//! socket would cost every connection on the machine. So a half-open
//! connection becomes visible when it lingers: at its first SYN-ACK
//! retransmit, reported with the time of its first SYN-ACK. Then:
//! - the row printed for it *is* the connection's `LISTEN -> SYN_RECV`,
//!   dated when the first SYN-ACK went out;
//! - when the client's ACK finally arrives, the kernel's child socket makes
//!   its own `LISTEN -> SYN_RECV`, which is folded into that row (not shown
//!   again), and its `SYN_RECV -> ESTABLISHED` gets the wait since the first
//!   SYN-ACK and the retransmit count;
//! - a request socket that disappears without a child was dropped by the
//!   kernel: `SYN_RECV -> CLOSE (half-open expired)`, found by one dump of
//!   request sockets per namespace per check.

use std::collections::{HashMap, HashSet};

use super::{Counters, Dumped, Dumps, Emit, TupleKey, table::Wanted};
use crate::event::{Note, Source, TcpEvent, TcpState};

/// How often followed request sockets are checked.
const CHECK_EVERY_NS: u64 = 1_000_000_000;
/// Checks in a row that must miss a request socket before it counts as
/// dropped: its child's creation may still sit in the ring buffer at the
/// first miss.
const MISSES_TO_EXPIRE: u32 = 2;
/// A completed connection whose ESTABLISHED never came (the child died in
/// SYN_RECV) is forgotten after this.
const FORGET_AFTER_NS: u64 = 300_000_000_000;

struct Pending {
    /// The row printed for it (tuple, owner, first SYN-ACK time).
    row: TcpEvent,
    retransmits: u32,
    misses: u32,
    /// The child socket exists: waiting only for its ESTABLISHED.
    completed: bool,
}

/// What to do with a kernel `LISTEN -> SYN_RECV` of a child socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildRow {
    Show,
    /// Already shown as the half-open row.
    Folded,
}

pub struct HalfOpen {
    pending: HashMap<TupleKey, Pending>,
    /// Child sockets in SYN_RECV (created, not yet ESTABLISHED). A SYN-ACK
    /// retransmit for one of them (TCP Fast Open creates the child at the
    /// SYN) is not a half-open connection of its own.
    children: HashSet<TupleKey>,
    max: usize,
    next_check_ns: u64,
}

impl HalfOpen {
    pub fn new(max: usize) -> Self {
        HalfOpen {
            pending: HashMap::new(),
            children: HashSet::new(),
            max,
            next_check_ns: 0,
        }
    }

    fn track(&mut self, row: TcpEvent, retransmits: u32, counters: &mut Counters) -> bool {
        if self.pending.len() >= self.max {
            counters.untracked += 1;
            return false;
        }
        self.pending.insert(
            TupleKey::of(&row),
            Pending {
                row,
                retransmits,
                misses: 0,
                completed: false,
            },
        );
        true
    }

    /// A SYN-ACK was retransmitted (`ev.dwell_ns`: time since the first
    /// one). The first retransmit of a connection not seen before gives its
    /// `LISTEN -> SYN_RECV` row; later ones only count.
    pub(crate) fn synack_retransmit(
        &mut self,
        ev: &TcpEvent,
        counters: &mut Counters,
    ) -> Option<TcpEvent> {
        let key = TupleKey::of(ev);
        if self.children.contains(&key) {
            return None;
        }
        if let Some(p) = self.pending.get_mut(&key) {
            p.retransmits = p.retransmits.max(ev.retransmits);
            return None;
        }
        let first_synack = ev.ts_ns.saturating_sub(ev.dwell_ns.unwrap_or(0));
        let row = ev.derived(
            Source::SynackTracepoint,
            Note::HalfOpen(ev.retransmits),
            TcpState::Listen,
            TcpState::SynRecv,
            first_synack,
            None,
        );
        self.track(row, ev.retransmits, counters);
        Some(row)
    }

    /// Follows a request socket the start-up snapshot found (its row is the
    /// snapshot's).
    pub(crate) fn adopt(&mut self, ev: &TcpEvent, counters: &mut Counters) {
        self.track(*ev, 0, counters);
    }

    /// A child socket's kernel `LISTEN -> SYN_RECV`.
    pub(crate) fn child_created(&mut self, ev: &TcpEvent) -> ChildRow {
        let key = TupleKey::of(ev);
        match self.pending.get_mut(&key) {
            Some(p) if p.row.note != Some(Note::Snapshot) => {
                p.completed = true;
                ChildRow::Folded
            }
            Some(p) => {
                // Listed by the snapshot: its LISTEN -> SYN_RECV was never
                // shown, so the kernel's is.
                p.completed = true;
                ChildRow::Show
            }
            None => {
                if self.children.len() < self.max {
                    self.children.insert(key);
                }
                ChildRow::Show
            }
        }
    }

    /// A child socket left SYN_RECV. For a connection followed as half-open,
    /// returns the row with its wait counted from the first SYN-ACK and its
    /// retransmit count.
    pub(crate) fn child_left_syn_recv(&mut self, ev: &TcpEvent) -> Option<TcpEvent> {
        let key = TupleKey::of(ev);
        self.children.remove(&key);
        let p = self.pending.remove(&key)?;
        let mut e = *ev;
        if p.row.note != Some(Note::Snapshot) {
            e.dwell_ns = Some(ev.ts_ns.saturating_sub(p.row.ts_ns));
        }
        e.retransmits = p.retransmits;
        if e.owner.is_none() {
            e.owner = p.row.owner;
        }
        Some(e)
    }

    /// Looks for the followed request sockets (one dump per namespace): one
    /// missing from consecutive checks, with no child, was dropped.
    pub(crate) fn tick(&mut self, now_ns: u64, dumps: &mut Dumps<'_>, emit: &mut Emit<'_>) {
        if now_ns < self.next_check_ns || self.pending.is_empty() {
            return;
        }
        self.next_check_ns = now_ns + CHECK_EVERY_NS;
        self.pending
            .retain(|_, p| !(p.completed && now_ns.saturating_sub(p.row.ts_ns) > FORGET_AFTER_NS));
        let mut namespaces: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.completed)
            .map(|(k, _)| k.netns)
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        for netns in namespaces {
            let live: HashSet<TupleKey> = match dumps.dump(netns, Wanted::RequestSockets) {
                Dumped::Sockets(socks) => socks
                    .iter()
                    .map(|s| TupleKey {
                        netns,
                        local: s.local,
                        remote: s.remote,
                    })
                    .collect(),
                Dumped::Failed => continue,
                Dumped::Gone => {
                    self.pending.retain(|k, _| k.netns != netns);
                    continue;
                }
            };
            let mut expired = Vec::new();
            for (k, p) in self.pending.iter_mut() {
                if k.netns != netns || p.completed {
                    continue;
                }
                if live.contains(k) {
                    p.misses = 0;
                } else {
                    p.misses += 1;
                    if p.misses >= MISSES_TO_EXPIRE {
                        expired.push(*k);
                    }
                }
            }
            for k in expired {
                let p = self.pending.remove(&k).expect("expired key is pending");
                emit(&p.row.derived(
                    Source::SockDiag,
                    Note::HalfOpenExpired(p.retransmits),
                    TcpState::SynRecv,
                    TcpState::Close,
                    now_ns,
                    Some(now_ns.saturating_sub(p.row.ts_ns)),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::table::fake::{FakeTable, sock};
    use crate::event::tests::raw_v4;

    const NS: u32 = 4026531840;

    fn ev(old: TcpState, new: TcpState, ts_ns: u64) -> TcpEvent {
        let mut e = TcpEvent::from(&raw_v4());
        e.old = old;
        e.new = new;
        e.ts_ns = ts_ns;
        e.netns = NS;
        e
    }

    fn retransmit(ts_ns: u64, since_first_ns: u64, n: u32) -> TcpEvent {
        let mut e = ev(TcpState::SynRecv, TcpState::SynRecv, ts_ns);
        e.source = Source::SynackTracepoint;
        e.dwell_ns = Some(since_first_ns);
        e.retransmits = n;
        e
    }

    fn run_tick(h: &mut HalfOpen, now: u64, table: &mut FakeTable) -> Vec<TcpEvent> {
        let mut out = Vec::new();
        h.tick(
            now,
            &mut Dumps {
                table,
                counters: &mut Counters::default(),
            },
            &mut |e| out.push(*e),
        );
        out
    }

    #[test]
    fn the_first_retransmit_gives_one_listen_to_syn_recv_dated_at_the_first_synack() {
        let mut h = HalfOpen::new(16);
        let mut c = Counters::default();
        let row = h
            .synack_retransmit(&retransmit(2_000_000_000, 1_000_000_000, 1), &mut c)
            .unwrap();
        assert_eq!((row.old, row.new), (TcpState::Listen, TcpState::SynRecv));
        assert_eq!(row.ts_ns, 1_000_000_000);
        assert_eq!(row.note, Some(Note::HalfOpen(1)));
        assert_eq!(row.source, Source::SynackTracepoint);
        // The second retransmit only counts.
        assert!(
            h.synack_retransmit(&retransmit(4_000_000_000, 3_000_000_000, 2), &mut c)
                .is_none()
        );
    }

    #[test]
    fn a_completed_half_open_folds_the_childs_row_and_times_syn_recv_from_the_first_synack() {
        let mut h = HalfOpen::new(16);
        let mut c = Counters::default();
        h.synack_retransmit(&retransmit(2_000_000_000, 1_000_000_000, 1), &mut c);
        h.synack_retransmit(&retransmit(4_000_000_000, 3_000_000_000, 2), &mut c);
        let child = ev(TcpState::Listen, TcpState::SynRecv, 4_500_000_000);
        assert_eq!(h.child_created(&child), ChildRow::Folded);
        let mut est = ev(TcpState::SynRecv, TcpState::Established, 4_500_010_000);
        est.dwell_ns = Some(10_000);
        let est = h.child_left_syn_recv(&est).unwrap();
        assert_eq!(est.dwell_ns, Some(3_500_010_000));
        assert_eq!(est.retransmits, 2);
        // Nothing left to expire.
        let mut t = FakeTable::default();
        assert!(run_tick(&mut h, 10_000_000_000, &mut t).is_empty());
        assert!(t.dumps.is_empty());
    }

    #[test]
    fn a_prompt_connection_is_shown_as_the_kernel_made_it() {
        let mut h = HalfOpen::new(16);
        let child = ev(TcpState::Listen, TcpState::SynRecv, 1_000);
        assert_eq!(h.child_created(&child), ChildRow::Show);
        let est = ev(TcpState::SynRecv, TcpState::Established, 2_000);
        assert_eq!(h.child_left_syn_recv(&est), None);
        assert!(h.children.is_empty());
    }

    #[test]
    fn a_retransmit_for_a_fast_open_child_is_not_a_half_open_connection() {
        let mut h = HalfOpen::new(16);
        let mut c = Counters::default();
        h.child_created(&ev(TcpState::Listen, TcpState::SynRecv, 1_000));
        assert!(
            h.synack_retransmit(&retransmit(1_000_000_000, 999_999_000, 1), &mut c)
                .is_none()
        );
    }

    #[test]
    fn expiry_needs_two_misses_and_no_child() {
        let mut h = HalfOpen::new(16);
        let mut c = Counters::default();
        let row = h
            .synack_retransmit(&retransmit(2_000_000_000, 1_000_000_000, 1), &mut c)
            .unwrap();
        let mut t = FakeTable::default();
        t.socks.insert(
            NS,
            vec![sock(
                TcpState::SynRecv,
                &row.local().to_string(),
                &row.remote().to_string(),
                0,
            )],
        );
        assert!(run_tick(&mut h, 3_000_000_000, &mut t).is_empty());
        t.socks.clear();
        assert!(run_tick(&mut h, 4_000_000_000, &mut t).is_empty());
        let out = run_tick(&mut h, 5_000_000_000, &mut t);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].old, out[0].new),
            (TcpState::SynRecv, TcpState::Close)
        );
        assert_eq!(out[0].note, Some(Note::HalfOpenExpired(1)));
        assert_eq!(out[0].dwell_ns, Some(4_000_000_000));
        assert_eq!(t.dumps, vec![(NS, Wanted::RequestSockets); 3]);
    }

    #[test]
    fn a_child_between_two_misses_is_a_completion_not_an_expiry() {
        let mut h = HalfOpen::new(16);
        let mut c = Counters::default();
        h.synack_retransmit(&retransmit(2_000_000_000, 1_000_000_000, 1), &mut c);
        let mut t = FakeTable::default();
        assert!(run_tick(&mut h, 3_000_000_000, &mut t).is_empty());
        h.child_created(&ev(TcpState::Listen, TcpState::SynRecv, 3_100_000_000));
        assert!(run_tick(&mut h, 4_000_000_000, &mut t).is_empty());
    }
}
