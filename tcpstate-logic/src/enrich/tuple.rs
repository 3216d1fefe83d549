//! Child sockets whose `LISTEN -> SYN_RECV` carries their listener's tuple.
//!
//! On some kernels (6.1 and 6.12 among them) `inet_csk_clone_lock()` sets a
//! new child socket's state to SYN_RECV while the child is still a copy of
//! its listener: the state change then shows the listener's addresses and a
//! remote port of 0 (`0.0.0.0 0`), and only afterwards are the request's
//! addresses copied in. Newer kernels copy them first. Either way the
//! child's next change (`SYN_RECV -> ESTABLISHED`, moments later while the
//! same ACK is processed) has the real tuple, so a row with an incomplete
//! tuple is held until then and completed from it. Nothing else of the row
//! changes: the transition, its time and its owner are the kernel's.

use std::collections::HashMap;

use crate::event::{Source, TcpEvent, TcpState};

/// A held row whose socket sends nothing more is shown as it is after this
/// (the child's next change normally follows within microseconds).
const RELEASE_AFTER_NS: u64 = 500_000_000;

/// What [`Tuples::hold`] did.
#[derive(Debug)]
pub(crate) enum Hold {
    Held,
    /// Held; the row it replaced (same socket address) is shown as it is.
    Replaced(TcpEvent),
    /// The table is full: show the row as it is.
    Full,
}

pub(crate) struct Tuples {
    /// By socket address: the held row and when it was held (boot ns).
    held: HashMap<u64, (TcpEvent, u64)>,
    max: usize,
}

/// A child's first row that still has its listener's tuple.
pub(crate) fn incomplete(ev: &TcpEvent) -> bool {
    ev.source == Source::Tracepoint
        && ev.old == TcpState::Listen
        && ev.new == TcpState::SynRecv
        && ev.rport == 0
}

impl Tuples {
    pub fn new(max: usize) -> Self {
        Tuples {
            held: HashMap::new(),
            max,
        }
    }

    /// Holds `ev` (an [`incomplete`] row) until its socket's next change.
    pub fn hold(&mut self, ev: &TcpEvent, now_ns: u64) -> Hold {
        if self.held.len() >= self.max && !self.held.contains_key(&ev.skaddr) {
            return Hold::Full;
        }
        match self.held.insert(ev.skaddr, (*ev, now_ns)) {
            // A second incomplete row for one address: the first socket is
            // gone (its memory reused) without a further change.
            Some((first, _)) => Hold::Replaced(first),
            None => Hold::Held,
        }
    }

    /// The held row of `next`'s socket, completed with `next`'s tuple.
    pub(crate) fn complete(&mut self, next: &TcpEvent) -> Option<TcpEvent> {
        if self.held.is_empty() || next.source != Source::Tracepoint {
            return None;
        }
        let (mut row, _) = self.held.remove(&next.skaddr)?;
        if next.rport != 0 && next.lport == row.lport && next.family == row.family {
            row.laddr = next.laddr;
            row.raddr = next.raddr;
            row.rport = next.rport;
        }
        Some(row)
    }

    /// Rows held longer than their next change can take, oldest first.
    pub(crate) fn expired(&mut self, now_ns: u64) -> Vec<TcpEvent> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<(u64, TcpEvent)> = Vec::new();
        self.held.retain(|_, (ev, at)| {
            let keep = now_ns.saturating_sub(*at) < RELEASE_AFTER_NS;
            if !keep {
                out.push((ev.ts_ns, *ev));
            }
            keep
        });
        out.sort_by_key(|(ts, _)| *ts);
        out.into_iter().map(|(_, ev)| ev).collect()
    }

    /// Tracing stops: every held row, oldest first.
    pub fn drain(&mut self) -> Vec<TcpEvent> {
        self.expired(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::event::tests::raw_v4;

    fn ev(skaddr: u64, old: TcpState, new: TcpState, raddr: [u8; 4], rport: u16) -> TcpEvent {
        let mut e = TcpEvent::from(&raw_v4());
        e.skaddr = skaddr;
        e.old = old;
        e.new = new;
        e.lport = 10050;
        e.laddr = IpAddr::V4(if rport == 0 {
            Ipv4Addr::UNSPECIFIED
        } else {
            Ipv4Addr::LOCALHOST
        });
        e.raddr = IpAddr::V4(raddr.into());
        e.rport = rport;
        e
    }

    #[test]
    fn a_listener_tuple_is_completed_from_the_next_change() {
        let first = ev(7, TcpState::Listen, TcpState::SynRecv, [0; 4], 0);
        assert!(incomplete(&first));
        let mut t = Tuples::new(16);
        assert!(matches!(t.hold(&first, 0), Hold::Held));
        let next = ev(
            7,
            TcpState::SynRecv,
            TcpState::Established,
            [127, 0, 0, 1],
            45516,
        );
        let row = t.complete(&next).expect("held row");
        assert_eq!((row.old, row.new), (TcpState::Listen, TcpState::SynRecv));
        assert_eq!(row.rport, 45516);
        assert_eq!(row.raddr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(row.laddr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(row.ts_ns, first.ts_ns);
        assert!(t.drain().is_empty());
    }

    #[test]
    fn a_complete_tuple_is_not_held() {
        let row = ev(
            7,
            TcpState::Listen,
            TcpState::SynRecv,
            [127, 0, 0, 1],
            45516,
        );
        assert!(!incomplete(&row));
    }

    #[test]
    fn another_socket_does_not_complete_it() {
        let mut t = Tuples::new(16);
        t.hold(&ev(7, TcpState::Listen, TcpState::SynRecv, [0; 4], 0), 0);
        let other = ev(
            8,
            TcpState::SynRecv,
            TcpState::Established,
            [127, 0, 0, 1],
            1,
        );
        assert!(t.complete(&other).is_none());
        assert!(t.expired(RELEASE_AFTER_NS - 1).is_empty());
        let out = t.expired(RELEASE_AFTER_NS);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rport, 0, "shown as the kernel gave it");
    }

    #[test]
    fn a_full_table_shows_rows_at_once() {
        let mut t = Tuples::new(1);
        let first = ev(1, TcpState::Listen, TcpState::SynRecv, [0; 4], 0);
        assert!(matches!(t.hold(&first, 0), Hold::Held));
        let second = ev(2, TcpState::Listen, TcpState::SynRecv, [0; 4], 0);
        assert!(matches!(t.hold(&second, 0), Hold::Full));
    }

    #[test]
    fn a_reused_address_releases_the_first_row() {
        let mut t = Tuples::new(16);
        let mut a = ev(7, TcpState::Listen, TcpState::SynRecv, [0; 4], 0);
        a.ts_ns = 1;
        let mut b = a;
        b.ts_ns = 2;
        t.hold(&a, 10);
        let Hold::Replaced(first) = t.hold(&b, 20) else {
            panic!("the first row is released");
        };
        assert_eq!(first.ts_ns, 1);
        let next = ev(
            7,
            TcpState::SynRecv,
            TcpState::Established,
            [127, 0, 0, 1],
            9,
        );
        assert_eq!(t.complete(&next).unwrap().ts_ns, 2);
    }
}
