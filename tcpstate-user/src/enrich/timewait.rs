//! TIME_WAIT and orphaned FIN_WAIT2. When a full socket ends with
//! FIN_WAIT2->CLOSE or CLOSING->CLOSE, a timewait socket takes over the
//! tuple: in substate TIME_WAIT when the peer's FIN had arrived, or FIN_WAIT2
//! when the socket was closed before it did (the seed article's `FIN_WAIT2 -`:
//! it waits for the peer's FIN without any process). The kernel side reads
//! which from the socket (`sk_shutdown`); later changes (the FIN arriving,
//! expiry) are seen with targeted sock_diag lookups, triggered by the peer's
//! own events when the peer is local, else on a timer.

use std::collections::HashMap;

use super::{Counters, Emit, TupleKey, budgeted_lookup};
use crate::{
    diag::Diag,
    event::{Note, Source, TcpEvent, TcpState},
};

/// TCP_TIMEWAIT_LEN: a timewait socket in TIME_WAIT lives 60 s.
const TIMEWAIT_LEN_NS: u64 = 60_000_000_000;
/// How often an orphaned FIN_WAIT2 is looked at for the peer's FIN.
const ORPHAN_CHECK_NS: u64 = 1_000_000_000;
/// After the expected expiry, how often to look again.
const EXPIRY_RECHECK_NS: u64 = 1_000_000_000;

struct Tw {
    /// The event that reported the timewait socket (carries owner, tuple).
    ev: TcpEvent,
    substate: TcpState,
    since_ns: u64,
    next_check_ns: u64,
    flagged_stuck: bool,
}

pub struct TimeWait {
    socks: HashMap<TupleKey, Tw>,
    max: usize,
}

impl TimeWait {
    pub fn new(max: usize) -> Self {
        TimeWait {
            socks: HashMap::new(),
            max,
        }
    }

    fn next_check(substate: TcpState, since_ns: u64) -> u64 {
        if substate == TcpState::TimeWait {
            since_ns + TIMEWAIT_LEN_NS
        } else {
            since_ns + ORPHAN_CHECK_NS
        }
    }

    fn follow(&mut self, ev: TcpEvent, counters: &mut Counters) {
        if self.socks.len() >= self.max {
            counters.untracked += 1;
            return;
        }
        self.socks.insert(
            TupleKey::of(&ev),
            Tw {
                substate: ev.new,
                since_ns: ev.ts_ns,
                next_check_ns: Self::next_check(ev.new, ev.ts_ns),
                flagged_stuck: false,
                ev,
            },
        );
    }

    /// The full socket closed from FIN_WAIT2 or CLOSING: report the timewait
    /// socket that takes over, as netstat would list it.
    pub fn handover(&mut self, ev: &TcpEvent, counters: &mut Counters) -> Option<TcpEvent> {
        let substate = match (ev.old, ev.peer_fin) {
            (TcpState::Closing, _) | (_, Some(true)) => TcpState::TimeWait,
            (_, Some(false)) => TcpState::FinWait2,
            // The kernel could not tell (no BTF offset): don't guess.
            (_, None) => return None,
        };
        let e = ev.derived(
            Source::Tracker,
            Note::TimeWait,
            ev.old,
            substate,
            ev.ts_ns,
            None,
        );
        self.follow(e, counters);
        Some(e)
    }

    /// Follows a timewait socket found by the start-up snapshot.
    pub fn adopt(&mut self, ev: &TcpEvent, counters: &mut Counters) {
        self.follow(*ev, counters);
    }

    /// The peer (local, traced) finished LAST_ACK->CLOSE: its FIN reached our
    /// timewait socket, which is now in TIME_WAIT. Check it at the next tick.
    pub fn peer_closed(&mut self, ev: &TcpEvent) {
        if let Some(tw) = self.socks.get_mut(&TupleKey::of(ev).reversed())
            && tw.substate == TcpState::FinWait2
        {
            tw.next_check_ns = 0;
        }
    }

    pub fn tick(
        &mut self,
        now_ns: u64,
        diag: &mut Diag,
        budget: &mut usize,
        counters: &mut Counters,
        emit: &mut Emit<'_>,
    ) {
        let mut due: Vec<(u64, TupleKey)> = self
            .socks
            .iter()
            .filter(|(_, t)| t.next_check_ns <= now_ns)
            .map(|(k, t)| (t.next_check_ns, *k))
            .collect();
        due.sort_unstable_by_key(|(t, _)| *t);
        for (_, key) in due.into_iter().take(*budget) {
            let Some(found) = budgeted_lookup(diag, &key, budget, counters) else {
                self.socks.remove(&key);
                continue;
            };
            let tw = self.socks.get_mut(&key).expect("due key is followed");
            match found {
                // Still a timewait socket (no inode), same or new substate.
                Some(s)
                    if s.inode == 0
                        && matches!(s.state, TcpState::TimeWait | TcpState::FinWait2) =>
                {
                    if s.state != tw.substate {
                        let e = tw.ev.derived(
                            Source::SockDiag,
                            Note::TimeWait,
                            tw.substate,
                            s.state,
                            now_ns,
                            Some(now_ns.saturating_sub(tw.since_ns)),
                        );
                        emit(&e);
                        tw.substate = s.state;
                        tw.since_ns = now_ns;
                        tw.ev = e;
                        tw.next_check_ns = Self::next_check(s.state, now_ns);
                    } else {
                        tw.next_check_ns = now_ns
                            + if tw.substate == TcpState::TimeWait {
                                EXPIRY_RECHECK_NS
                            } else {
                                ORPHAN_CHECK_NS
                            };
                    }
                }
                // Gone (or the tuple reused by a new connection): expired.
                _ => {
                    let tw = self.socks.remove(&key).expect("due key is followed");
                    emit(&tw.ev.derived(
                        Source::SockDiag,
                        Note::TimeWaitExpired,
                        tw.substate,
                        TcpState::Close,
                        now_ns,
                        Some(now_ns.saturating_sub(tw.since_ns)),
                    ));
                }
            }
        }
    }

    /// Orphaned FIN_WAIT2 sockets waiting longer than the threshold: the peer
    /// never sent its FIN.
    pub fn flag_stuck(&mut self, now_ns: u64, threshold_ns: u64, emit: &mut Emit<'_>) {
        for tw in self.socks.values_mut() {
            let age = now_ns.saturating_sub(tw.since_ns);
            if tw.substate == TcpState::FinWait2 && !tw.flagged_stuck && age >= threshold_ns {
                tw.flagged_stuck = true;
                emit(&tw.ev.derived(
                    Source::Tracker,
                    Note::Stuck(age),
                    TcpState::FinWait2,
                    TcpState::FinWait2,
                    now_ns,
                    Some(age),
                ));
            }
        }
    }
}
