//! `--stuck DURATION`: flags, once, a socket that stays in a state that only
//! the application or the peer can end — CLOSE_WAIT (the application never
//! called close()), FIN_WAIT2 (the peer never sent its FIN), LAST_ACK (the
//! peer never acked our FIN), SYN_SENT (the peer never answered) — for longer
//! than the threshold, with its owner and age.

use std::{collections::HashMap, time::Duration};

use super::{Emit, TupleKey};
use crate::event::{Note, Source, TcpEvent, TcpState};

pub(crate) fn watched(state: TcpState) -> bool {
    matches!(
        state,
        TcpState::CloseWait | TcpState::FinWait2 | TcpState::LastAck | TcpState::SynSent
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Addr(u64),
    /// Known only from the snapshot, until a kernel event names its address.
    Tuple(TupleKey),
}

struct Entry {
    ev: TcpEvent,
    since_ns: u64,
    flagged: bool,
}

pub struct Stuck {
    threshold_ns: u64,
    socks: HashMap<Key, Entry>,
    max: usize,
}

impl Stuck {
    pub fn new(threshold: Duration, max: usize) -> Self {
        Stuck {
            threshold_ns: threshold.as_nanos() as u64,
            socks: HashMap::new(),
            max,
        }
    }

    pub(crate) fn threshold_ns(&self) -> u64 {
        self.threshold_ns
    }

    fn watch(&mut self, key: Key, ev: &TcpEvent, since_ns: u64) {
        if self.socks.len() < self.max || self.socks.contains_key(&key) {
            self.socks.insert(
                key,
                Entry {
                    ev: *ev,
                    since_ns,
                    flagged: false,
                },
            );
        }
    }

    pub fn on_event(&mut self, ev: &TcpEvent) {
        self.socks.remove(&Key::Tuple(TupleKey::of(ev)));
        let key = Key::Addr(ev.skaddr);
        if watched(ev.new) {
            self.watch(key, ev, ev.ts_ns);
        } else {
            self.socks.remove(&key);
        }
    }

    /// A socket listed by the snapshot: its age counts from now (a lower
    /// bound; the snapshot cannot say when it entered the state).
    pub(crate) fn adopt(&mut self, ev: &TcpEvent) {
        // Timewait sockets are the timewait tracker's.
        if watched(ev.new) && ev.owner.is_some() {
            self.watch(Key::Tuple(TupleKey::of(ev)), ev, ev.ts_ns);
        }
    }

    pub fn tick(&mut self, now_ns: u64, emit: &mut Emit<'_>) {
        for e in self.socks.values_mut() {
            let age = now_ns.saturating_sub(e.since_ns);
            if !e.flagged && age >= self.threshold_ns {
                e.flagged = true;
                emit(&e.ev.derived(
                    Source::Tracker,
                    Note::Stuck(age),
                    e.ev.new,
                    e.ev.new,
                    now_ns,
                    Some(age),
                ));
            }
        }
    }
}
