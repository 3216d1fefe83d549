//! Half-open connections: request sockets waiting for the client's final
//! ACK. The state tracepoint never shows them (TCP_NEW_SYN_RECV is not
//! emitted); the sock_ops program reports their creation, the SYN-ACK
//! tracepoint their retransmits, the child socket's first transitions their
//! completion, and a targeted sock_diag lookup their expiry.

use std::collections::HashMap;

use super::{Counters, Emit, TupleKey, budgeted_lookup};
use crate::{
    diag::Diag,
    event::{Note, Source, TcpEvent, TcpState},
};

const CHECK_EVERY_NS: u64 = 1_000_000_000;

struct Pending {
    created: TcpEvent,
    retransmits: u32,
    next_check_ns: u64,
}

pub struct HalfOpen {
    pending: HashMap<TupleKey, Pending>,
    max: usize,
}

impl HalfOpen {
    pub fn new(max: usize) -> Self {
        HalfOpen {
            pending: HashMap::new(),
            max,
        }
    }

    fn track(&mut self, ev: &TcpEvent, counters: &mut Counters) {
        if self.pending.len() >= self.max {
            counters.untracked += 1;
            return;
        }
        self.pending.insert(
            TupleKey::of(ev),
            Pending {
                created: *ev,
                retransmits: 0,
                next_check_ns: ev.ts_ns + CHECK_EVERY_NS,
            },
        );
    }

    /// A request socket was created: report it as netstat's SYN_RECV.
    pub fn created(&mut self, ev: &TcpEvent, counters: &mut Counters) -> Option<TcpEvent> {
        let e = ev.derived(
            Source::SockOps,
            Note::HalfOpen,
            TcpState::Listen,
            TcpState::SynRecv,
            ev.ts_ns,
            None,
        );
        self.track(&e, counters);
        Some(e)
    }

    /// Follows a request socket found by the start-up snapshot.
    pub fn adopt(&mut self, ev: &TcpEvent, counters: &mut Counters) {
        self.track(ev, counters);
    }

    /// Its SYN-ACK was resent: the client's ACK has not arrived.
    pub fn synack_retransmit(&mut self, ev: &TcpEvent) -> TcpEvent {
        let (n, waited, owner) = match self.pending.get_mut(&TupleKey::of(ev)) {
            Some(p) => {
                p.retransmits += 1;
                (
                    p.retransmits,
                    Some(ev.ts_ns.saturating_sub(p.created.ts_ns)),
                    // The kernel knows no owner when the listener predates
                    // tracing; the snapshot may have found it.
                    ev.owner.or(p.created.owner),
                )
            }
            // Created before tracing started: count from here.
            None => (1, None, ev.owner),
        };
        let ev = TcpEvent { owner, ..*ev };
        ev.derived(
            Source::SynackTracepoint,
            Note::SynackRetransmit(n),
            TcpState::SynRecv,
            TcpState::SynRecv,
            ev.ts_ns,
            waited,
        )
    }

    /// The full (child) socket appeared: the handshake completed.
    pub fn completed(&mut self, ev: &TcpEvent) -> Option<TcpEvent> {
        let p = self.pending.remove(&TupleKey::of(ev))?;
        let mut e = p.created.derived(
            Source::Tracker,
            Note::HalfOpenCompleted,
            TcpState::SynRecv,
            TcpState::Established,
            ev.ts_ns,
            Some(ev.ts_ns.saturating_sub(p.created.ts_ns)),
        );
        if e.owner.is_none() {
            e.owner = ev.owner;
        }
        Some(e)
    }

    /// Checks due request sockets: gone without a child means expired (the
    /// client never ACKed, or it was reset).
    pub fn tick(
        &mut self,
        now_ns: u64,
        diag: &mut Diag,
        budget: &mut usize,
        counters: &mut Counters,
        emit: &mut Emit<'_>,
    ) {
        let due: Vec<TupleKey> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_check_ns <= now_ns)
            .map(|(k, _)| *k)
            .take(*budget)
            .collect();
        for key in due {
            let Some(found) = budgeted_lookup(diag, &key, budget, counters) else {
                self.pending.remove(&key);
                continue;
            };
            match found {
                Some(s) if s.state == TcpState::SynRecv => {
                    if let Some(p) = self.pending.get_mut(&key) {
                        p.next_check_ns = now_ns + CHECK_EVERY_NS;
                    }
                }
                other => {
                    let p = self.pending.remove(&key).expect("due key is pending");
                    let (note, new) = match other {
                        // Completed while its child's events were filtered out.
                        Some(s) => (Note::HalfOpenCompleted, s.state),
                        None => (Note::HalfOpenExpired, TcpState::Close),
                    };
                    emit(&p.created.derived(
                        Source::SockDiag,
                        note,
                        TcpState::SynRecv,
                        new,
                        now_ns,
                        Some(now_ns.saturating_sub(p.created.ts_ns)),
                    ));
                }
            }
        }
    }
}
