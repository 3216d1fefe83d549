//! Attaches to each row into CLOSE how the connection ended. Cause events
//! (resets, socket errors, retransmits) are kept per socket address until the
//! socket closes. Some causes come just *after* the CLOSE they explain: a
//! local abort (close() with unread data, SO_LINGER 0) moves the socket to
//! CLOSE and then sends its reset, and a timeout reports ETIMEDOUT after
//! `tcp_done()`. Such a CLOSE row is held until that cause arrives (the
//! kernel emits it in the same call, microseconds later) or, failing that,
//! for two enrich ticks (at least 100 ms), then shown with what is known.

use std::collections::HashMap;

use crate::{
    event::{Cause, Note, Source, TcpEvent, TcpState},
    reason::{Causes, Reason, RstReasons},
};

/// Ticks a CLOSE row waits for a cause reported after it.
const HOLD_TICKS: u64 = 2;

pub struct Why {
    names: RstReasons,
    causes: HashMap<u64, Causes>,
    held: HashMap<u64, (TcpEvent, Causes, u64)>,
    ticks: u64,
    max: usize,
}

/// What to do with a kernel transition after [`Why::on_transition`].
pub(crate) enum Next {
    Emit(TcpEvent),
    Held,
}

impl Why {
    pub fn new(names: RstReasons, max: usize) -> Self {
        Why {
            names,
            causes: HashMap::new(),
            held: HashMap::new(),
            ticks: 0,
            max,
        }
    }

    fn add(&self, c: &mut Causes, ev: &TcpEvent) {
        let Source::Cause(kind) = ev.source else {
            return;
        };
        match kind {
            Cause::ResetSent => {
                let name = (ev.detail != tcpstate_common::DETAIL_NONE)
                    .then(|| self.names.name(ev.detail))
                    .flatten();
                c.reset_sent = Some(name);
            }
            Cause::ResetReceived => c.reset_received = true,
            Cause::SockError if ev.detail != tcpstate_common::DETAIL_NONE && ev.detail != 0 => {
                c.error = Some(ev.detail)
            }
            Cause::SockError => {}
            Cause::Retransmit if ev.new == TcpState::SynSent => c.syn_retransmits += 1,
            Cause::Retransmit => c.data_retransmits += 1,
        }
    }

    /// A cause event. Returns a held CLOSE row it completes, to emit.
    pub(crate) fn on_cause(&mut self, ev: &TcpEvent) -> Option<TcpEvent> {
        if let Some((row, mut c, since)) = self.held.remove(&ev.skaddr) {
            self.add(&mut c, ev);
            if c.settled(row.old) {
                return Some(finish(row, &c));
            }
            self.held.insert(ev.skaddr, (row, c, since));
            return None;
        }
        // Reported after a CLOSE already shown (e.g. the ECONNREFUSED after
        // the reset that explained it): nothing left to explain.
        if ev.new == TcpState::Close {
            return None;
        }
        if !self.causes.contains_key(&ev.skaddr) && self.causes.len() >= self.max {
            return None;
        }
        let mut c = self.causes.remove(&ev.skaddr).unwrap_or_default();
        self.add(&mut c, ev);
        self.causes.insert(ev.skaddr, c);
        None
    }

    /// A kernel transition: annotated, or held (see the module comment).
    /// `release` gets a held row of the same address first (a reused
    /// address: the old socket is long gone).
    pub(crate) fn on_transition(
        &mut self,
        ev: &TcpEvent,
        release: &mut dyn FnMut(TcpEvent),
    ) -> Next {
        let mut ev = *ev;
        if let Some((row, c, _)) = self.held.remove(&ev.skaddr) {
            release(finish(row, &c));
        }
        if ev.old == TcpState::Close {
            // A new socket at this address: causes of an old one are stale.
            self.causes.remove(&ev.skaddr);
            return Next::Emit(ev);
        }
        if ev.old == TcpState::SynSent
            && let Some(c) = self.causes.get(&ev.skaddr)
        {
            ev.retransmits = c.syn_retransmits;
        }
        if ev.new != TcpState::Close {
            return Next::Emit(ev);
        }
        let c = self.causes.remove(&ev.skaddr).unwrap_or_default();
        if c.settled(ev.old) || ev.skaddr == 0 {
            return Next::Emit(finish(ev, &c));
        }
        self.held.insert(ev.skaddr, (ev, c, self.ticks));
        Next::Held
    }

    /// Rows whose wait is over.
    pub fn tick(&mut self, release: &mut dyn FnMut(TcpEvent)) {
        self.ticks += 1;
        let due: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, (_, _, since))| self.ticks - since >= HOLD_TICKS)
            .map(|(k, _)| *k)
            .collect();
        let mut rows: Vec<TcpEvent> = due
            .into_iter()
            .filter_map(|k| self.held.remove(&k))
            .map(|(row, c, _)| finish(row, &c))
            .collect();
        rows.sort_by_key(|r| r.ts_ns);
        for r in rows {
            release(r);
        }
    }

    /// Every held row (tracing stops).
    pub fn flush(&mut self, release: &mut dyn FnMut(TcpEvent)) {
        self.ticks += HOLD_TICKS;
        self.tick(release);
    }
}

fn finish(mut row: TcpEvent, c: &Causes) -> TcpEvent {
    row.reason = Some(Reason::of(row.old, c));
    if row.old == TcpState::SynSent {
        row.retransmits = c.syn_retransmits;
    }
    row.data_retransmits = c.data_retransmits;
    row
}

/// The reason on rows tcpstate derives for sockets the state tracepoint
/// does not show (timewait and request sockets) when they end.
pub(crate) fn annotate_expiry(ev: &mut TcpEvent) {
    ev.reason = match ev.note {
        Some(Note::TimeWaitExpired) if ev.old == TcpState::FinWait2 => Some(Reason::OrphanTimeout),
        Some(Note::TimeWaitExpired) => Some(Reason::TimeWaitExpired),
        Some(Note::HalfOpenExpired(_)) => Some(Reason::HalfOpenExpired),
        _ => ev.reason,
    };
}
