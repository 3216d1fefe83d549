//! State changes missing between a socket's rows. Each kernel row says the
//! state it left, so a row whose old state is not the state the socket's
//! previous row entered proves that changes in between never arrived; and a
//! socket address reused by a new socket (its first row) while the old one
//! had not reached CLOSE proves the old one's last changes never arrived.
//! Such changes are lost even when no counter of the kernel's saw them go
//! (a run the kernel never made, under heavy nesting of state changes on a
//! CPU, shows in no skip counter), so they are counted here and reported
//! with the losses. Which path the socket took in between is not known, so
//! a gap counts the changes of the orderly path ([`orderly_steps`]): the
//! one every connection takes unless it is reset or aborted, and the same
//! length for an active and a passive close.

use std::collections::HashMap;

use crate::event::{Source, TcpEvent, TcpState};

/// Sockets followed at once for this check (a socket leaves at its CLOSE).
const MAX_FOLLOWED: usize = 65_536;

#[derive(Debug, Clone)]
pub struct Gaps {
    /// The state each followed socket entered with its last row.
    last: HashMap<u64, TcpState>,
    max: usize,
    /// State changes that never arrived, counted along the orderly path.
    pub found: u64,
}

impl Default for Gaps {
    fn default() -> Self {
        Gaps::new(MAX_FOLLOWED)
    }
}

impl Gaps {
    pub fn new(max: usize) -> Self {
        Gaps {
            last: HashMap::new(),
            max,
            found: 0,
        }
    }

    /// Looks at one decoded kernel row, in ring-buffer order (one socket's
    /// rows arrive in the order the kernel made them).
    pub(crate) fn observe(&mut self, ev: &TcpEvent) {
        if ev.source != Source::Tracepoint {
            return;
        }
        let birth = ev.old == TcpState::Close
            || (ev.old == TcpState::Listen && ev.new == TcpState::SynRecv);
        if let Some(&prev) = self.last.get(&ev.skaddr) {
            let target = if birth { TcpState::Close } else { ev.old };
            if prev != target {
                self.found += orderly_steps(prev, target);
            }
        }
        if ev.new == TcpState::Close {
            self.last.remove(&ev.skaddr);
        } else if self.last.len() < self.max || self.last.contains_key(&ev.skaddr) {
            self.last.insert(ev.skaddr, ev.new);
        }
    }
}

/// The changes an orderly connection makes from one state to the next: no
/// reset, abort or timeout (those go straight to CLOSE).
fn orderly_next(from: TcpState) -> &'static [TcpState] {
    use TcpState::*;
    match from {
        // A child's LISTEN -> SYN_RECV is the child's own first row (a
        // birth), not a change of the listener.
        Close => &[SynSent, Listen],
        Listen => &[Close],
        SynSent | SynRecv => &[Established],
        Established => &[FinWait1, CloseWait],
        FinWait1 => &[FinWait2, Closing],
        FinWait2 | Closing | LastAck => &[Close],
        CloseWait => &[LastAck],
        TimeWait | NewSynRecv | Unknown(_) => &[],
    }
}

/// How many changes the orderly path takes from `from` to `to` (at least
/// one: `from` != `to` proves one went missing).
fn orderly_steps(from: TcpState, to: TcpState) -> u64 {
    let mut frontier = vec![from];
    for steps in 1..=8 {
        // A socket's life ends at CLOSE: a path never goes through it.
        let next: Vec<TcpState> = frontier
            .iter()
            .filter(|s| steps == 1 || **s != TcpState::Close)
            .flat_map(|s| orderly_next(*s).iter().copied())
            .collect();
        if next.contains(&to) {
            return steps;
        }
        frontier = next;
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::raw_v4;
    use TcpState::*;

    fn ev(skaddr: u64, old: TcpState, new: TcpState) -> TcpEvent {
        let mut e = TcpEvent::from(&raw_v4());
        e.skaddr = skaddr;
        e.old = old;
        e.new = new;
        e
    }

    fn run(rows: &[(u64, TcpState, TcpState)]) -> u64 {
        let mut g = Gaps::new(16);
        for &(sk, o, n) in rows {
            g.observe(&ev(sk, o, n));
        }
        g.found
    }

    #[test]
    fn a_whole_connection_has_no_gap() {
        let rows = [
            (1, Close, SynSent),
            (1, SynSent, Established),
            (1, Established, FinWait1),
            (1, FinWait1, FinWait2),
            (1, FinWait2, Close),
            (1, Close, SynSent),
        ];
        assert_eq!(run(&rows), 0);
    }

    #[test]
    fn an_address_reused_before_close_is_a_gap() {
        // FIN_WAIT1 -> FIN_WAIT2 -> CLOSE never arrived: two changes.
        let rows = [
            (1, Established, FinWait1),
            (1, Close, SynSent),
            (1, SynSent, Established),
        ];
        assert_eq!(run(&rows), 2);
    }

    #[test]
    fn a_row_that_does_not_leave_the_last_state_is_a_gap() {
        let rows = [(1, Established, FinWait1), (1, FinWait2, Close)];
        assert_eq!(run(&rows), 1);
    }

    #[test]
    fn active_and_passive_closes_are_as_long() {
        assert_eq!(orderly_steps(Established, Close), 3);
        assert_eq!(orderly_steps(SynRecv, Close), 4);
        assert_eq!(orderly_steps(CloseWait, Close), 2);
        assert_eq!(orderly_steps(Listen, Close), 1);
        // Nothing orderly leads there: still one change missing.
        assert_eq!(orderly_steps(FinWait2, Established), 1);
    }

    #[test]
    fn sockets_met_mid_life_and_other_sources_are_not_gaps() {
        let mut g = Gaps::new(16);
        g.observe(&ev(1, FinWait2, Close));
        let mut tw = ev(1, Established, TimeWait);
        tw.source = Source::SockDiag;
        g.observe(&tw);
        let child = ev(2, Listen, SynRecv);
        g.observe(&child);
        g.observe(&ev(2, SynRecv, Established));
        assert_eq!(g.found, 0);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut g = Gaps::new(1);
        g.observe(&ev(1, Close, SynSent));
        g.observe(&ev(2, Close, SynSent));
        assert_eq!(g.last.len(), 1);
    }
}
