//! Sockets currently in each state, derived from the event stream: a
//! transition moves one socket from its old state to its new one. The
//! start-up snapshot seeds the counts with the sockets that already exist.
//! Without a snapshot (no port filter and no `--snapshot`) a socket that
//! predates tracing leaves a state it was never counted in: counts never go
//! below zero for it, so they read as "at least" until such sockets are gone.

use std::{collections::HashMap, hash::Hash};

use crate::event::TcpState;

#[derive(Debug)]
pub(crate) struct Occupancy<L> {
    counts: HashMap<(L, TcpState), i64>,
}

impl<L> Default for Occupancy<L> {
    fn default() -> Self {
        Occupancy {
            counts: HashMap::new(),
        }
    }
}

impl<L: Clone + Eq + Hash> Occupancy<L> {
    /// CLOSE is where sockets come from and go to: never counted.
    fn counted(state: TcpState) -> bool {
        !matches!(state, TcpState::Close | TcpState::Unknown(_))
    }

    /// A socket entered `state`; returns the new count to publish.
    pub(crate) fn enter(&mut self, labels: &L, state: TcpState) -> Option<i64> {
        if !Self::counted(state) {
            return None;
        }
        let c = self.counts.entry((labels.clone(), state)).or_default();
        *c += 1;
        Some(*c)
    }

    /// A socket left `state` (floored at zero, see the module comment).
    pub fn leave(&mut self, labels: &L, state: TcpState) -> Option<i64> {
        if !Self::counted(state) {
            return None;
        }
        let c = self.counts.entry((labels.clone(), state)).or_default();
        *c = (*c - 1).max(0);
        Some(*c)
    }

    /// A kernel transition: old -> new. The child of a listener is born in
    /// LISTEN -> SYN_RECV; the listener itself stays in LISTEN.
    pub fn transition(
        &mut self,
        labels: &L,
        old: TcpState,
        new: TcpState,
    ) -> [Option<(TcpState, i64)>; 2] {
        let left = if old == TcpState::Listen && new == TcpState::SynRecv {
            None
        } else {
            self.leave(labels, old).map(|c| (old, c))
        };
        [left, self.enter(labels, new).map(|c| (new, c))]
    }

    #[cfg(test)]
    pub fn get(&self, labels: &L, state: TcpState) -> i64 {
        self.counts
            .get(&(labels.clone(), state))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TcpState::*;

    #[test]
    fn one_loopback_connection_ends_where_it_started() {
        let mut o = Occupancy::<()>::default();
        o.transition(&(), Close, Listen);
        for (old, new) in [
            (Close, SynSent),
            (Listen, SynRecv),
            (SynSent, Established),
            (SynRecv, Established),
        ] {
            o.transition(&(), old, new);
        }
        assert_eq!(o.get(&(), Established), 2);
        assert_eq!(o.get(&(), Listen), 1, "the listener stays");
        for (old, new) in [
            (Established, FinWait1),
            (Established, CloseWait),
            (FinWait1, FinWait2),
            (CloseWait, LastAck),
            (FinWait2, Close),
            (LastAck, Close),
        ] {
            o.transition(&(), old, new);
        }
        for &st in TcpState::ALL {
            let want = if st == Listen { 1 } else { 0 };
            assert_eq!(o.get(&(), st), want, "{st}");
        }
    }

    #[test]
    fn sockets_from_before_tracing_never_make_counts_negative() {
        let mut o = Occupancy::<u16>::default();
        assert_eq!(
            o.transition(&80, Established, FinWait1)[0],
            Some((Established, 0))
        );
        assert_eq!(o.get(&80, Established), 0);
        o.enter(&80, Established); // seeded by the snapshot
        o.enter(&443, Established);
        o.leave(&80, Established);
        assert_eq!((o.get(&80, Established), o.get(&443, Established)), (0, 1));
    }
}
