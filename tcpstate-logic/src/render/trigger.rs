//! `--trigger STATE` / `--trigger OLD->NEW`: keep each socket's events in
//! memory and print them only for sockets that reach the trigger; after that,
//! the socket's further events are printed as they come. Wraps any renderer
//! (text, CSV, JSON, lifecycle).
//!
//! Memory is bounded: at most `max_sockets` sockets are held (the oldest is
//! evicted beyond, and counted), each with at most [`MAX_EVENTS`] events.

use std::collections::{HashMap, VecDeque};

use super::Render;
use crate::event::{Source, TcpEvent, TcpState};

/// Most events held per socket until it triggers (the oldest are dropped).
pub(crate) const MAX_EVENTS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerSpec {
    /// Any event that puts the socket in this state (including snapshot and
    /// timewait rows).
    State(TcpState),
    /// Exactly this kernel transition.
    Transition(TcpState, TcpState),
}

impl TriggerSpec {
    pub fn matches(&self, ev: &TcpEvent) -> bool {
        match *self {
            TriggerSpec::State(s) => ev.new == s,
            TriggerSpec::Transition(o, n) => {
                ev.source == Source::Tracepoint && ev.old == o && ev.new == n
            }
        }
    }
}

impl std::fmt::Display for TriggerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TriggerSpec::State(s) => write!(f, "{s}"),
            TriggerSpec::Transition(o, n) => write!(f, "{o}->{n}"),
        }
    }
}

/// Parses `CLOSING`, `close-wait`, `FIN_WAIT1->CLOSING` (`>` alone works
/// too); state names as [`crate::event::parse_state`] accepts them.
pub fn parse_spec(s: &str) -> Result<TriggerSpec, String> {
    let state = |name: &str| {
        crate::event::parse_state(name).ok_or_else(|| {
            format!(
                "`{}` is not a TCP state (e.g. ESTABLISHED, CLOSE_WAIT, FIN_WAIT1, CLOSING)",
                name.trim()
            )
        })
    };
    let split = s.split_once("->").or_else(|| s.split_once('>'));
    match split {
        Some((old, new)) => {
            let (old, new) = (state(old)?, state(new)?);
            if !crate::machine::possible(old, new) {
                let next: Vec<&str> = crate::machine::next_states(old)
                    .iter()
                    .map(|s| s.name())
                    .collect();
                return Err(format!(
                    "the kernel never makes {old}->{new} (from {old} it goes to {}); \
                     to match a state however it is reached, give the state alone",
                    if next.is_empty() {
                        "nothing: no full socket is reported in it".to_string()
                    } else {
                        next.join(", ")
                    }
                ));
            }
            Ok(TriggerSpec::Transition(old, new))
        }
        None => Ok(TriggerSpec::State(state(s)?)),
    }
}

enum Entry {
    /// Not triggered yet: its events so far.
    Held { seq: u64, events: Vec<TcpEvent> },
    /// Triggered: events go straight through.
    Live { seq: u64 },
}

impl Entry {
    fn seq(&self) -> u64 {
        match self {
            Entry::Held { seq, .. } | Entry::Live { seq } => *seq,
        }
    }
}

pub(crate) struct Trigger {
    inner: Box<dyn Render>,
    specs: Vec<TriggerSpec>,
    sockets: HashMap<u64, Entry>,
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
    max: usize,
    /// Sockets dropped to stay within `max`.
    pub evicted: u64,
    /// Events dropped from sockets holding more than [`MAX_EVENTS`].
    pub dropped_events: u64,
    /// Sockets that reached the trigger.
    pub triggered: u64,
    /// The history of the socket that closed last, untriggered: the
    /// timewait row that follows a CLOSE (same address) may still trigger it.
    last_closed: Option<(u64, Vec<TcpEvent>)>,
}

impl Trigger {
    pub fn new(inner: Box<dyn Render>, specs: Vec<TriggerSpec>, max_sockets: usize) -> Self {
        Trigger {
            inner,
            specs,
            sockets: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            max: max_sockets.max(1),
            evicted: 0,
            dropped_events: 0,
            triggered: 0,
            last_closed: None,
        }
    }

    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.sockets.len()
    }

    fn insert(&mut self, skaddr: u64, entry: Entry) {
        while self.sockets.len() >= self.max {
            let Some((addr, seq)) = self.order.pop_front() else {
                break;
            };
            if self.sockets.get(&addr).is_some_and(|e| e.seq() == seq) {
                self.sockets.remove(&addr);
                self.evicted += 1;
            }
        }
        self.order.push_back((skaddr, entry.seq()));
        if self.order.len() > 2 * self.max + 64 {
            let sockets = &self.sockets;
            self.order
                .retain(|(a, g)| sockets.get(a).is_some_and(|e| e.seq() == *g));
        }
        self.sockets.insert(skaddr, entry);
    }
}

/// Whether this event ends the socket's life at this address.
fn ends(ev: &TcpEvent) -> bool {
    ev.source == Source::Tracepoint && ev.new == TcpState::Close
}

impl Render for Trigger {
    fn header(&self, out: &mut Vec<u8>) {
        self.inner.header(out);
    }

    fn event(&mut self, ev: &TcpEvent, out: &mut Vec<u8>) {
        let hit = self.specs.iter().any(|s| s.matches(ev));
        if self
            .last_closed
            .as_ref()
            .is_some_and(|(a, _)| *a != ev.skaddr)
        {
            self.last_closed = None;
        }
        if ev.skaddr == 0 {
            // Snapshot rows (sock_diag gives no kernel address): on their own.
            if hit {
                self.triggered += 1;
                self.inner.event(ev, out);
            }
            return;
        }
        match self.sockets.get_mut(&ev.skaddr) {
            Some(Entry::Live { .. }) => {
                self.inner.event(ev, out);
                if ends(ev) {
                    self.sockets.remove(&ev.skaddr);
                }
            }
            Some(Entry::Held { seq, events }) => {
                if hit {
                    let seq = *seq;
                    let held = std::mem::take(events);
                    for e in &held {
                        self.inner.event(e, out);
                    }
                    self.inner.event(ev, out);
                    self.triggered += 1;
                    if ends(ev) {
                        self.sockets.remove(&ev.skaddr);
                    } else {
                        self.sockets.insert(ev.skaddr, Entry::Live { seq });
                    }
                } else if ends(ev) {
                    if let Some(Entry::Held { mut events, .. }) = self.sockets.remove(&ev.skaddr) {
                        events.push(*ev);
                        self.last_closed = Some((ev.skaddr, events));
                    }
                } else {
                    if events.len() == MAX_EVENTS {
                        events.remove(0);
                        self.dropped_events += 1;
                    }
                    events.push(*ev);
                }
            }
            None if ev.source != Source::Tracepoint
                && self
                    .last_closed
                    .as_ref()
                    .is_some_and(|(a, _)| *a == ev.skaddr) =>
            {
                // A row about the socket that just closed (its timewait).
                let (_, held) = self.last_closed.take().expect("checked");
                if hit {
                    self.triggered += 1;
                    for e in &held {
                        self.inner.event(e, out);
                    }
                    self.inner.event(ev, out);
                }
            }
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                // Only kernel transitions start a history: rows about
                // sockets not seen (timewait, stuck) stand alone.
                let tracepoint = ev.source == Source::Tracepoint;
                if hit {
                    self.triggered += 1;
                    self.inner.event(ev, out);
                    if tracepoint && !ends(ev) {
                        self.insert(ev.skaddr, Entry::Live { seq });
                    }
                } else if tracepoint && !ends(ev) {
                    let mut events = Vec::with_capacity(8);
                    events.push(*ev);
                    self.insert(ev.skaddr, Entry::Held { seq, events });
                }
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>, notes: &mut Vec<String>) {
        self.inner.finish(out, notes);
        if self.evicted > 0 || self.dropped_events > 0 {
            notes.push(format!(
                "--trigger: {} socket histories evicted (limit --max-histories {}), {} events dropped from long histories",
                self.evicted, self.max, self.dropped_events
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Note, TcpState::*, tests::raw_v4};

    /// Records what reaches the inner renderer.
    struct Spy(std::rc::Rc<std::cell::RefCell<Vec<(u64, TcpState, TcpState)>>>);

    impl Render for Spy {
        fn header(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(b"HEADER\n");
        }
        fn event(&mut self, ev: &TcpEvent, _out: &mut Vec<u8>) {
            self.0.borrow_mut().push((ev.skaddr, ev.old, ev.new));
        }
    }

    fn ev(skaddr: u64, old: TcpState, new: TcpState) -> TcpEvent {
        let mut e = TcpEvent::from(&raw_v4());
        e.skaddr = skaddr;
        e.old = old;
        e.new = new;
        e
    }

    type Seen = std::rc::Rc<std::cell::RefCell<Vec<(u64, TcpState, TcpState)>>>;

    fn trigger(specs: &[&str], max: usize) -> (Trigger, Seen) {
        let seen = Seen::default();
        let specs = specs.iter().map(|s| parse_spec(s).unwrap()).collect();
        (Trigger::new(Box::new(Spy(seen.clone())), specs, max), seen)
    }

    /// One event per step along `states`.
    fn path(skaddr: u64, states: &[TcpState]) -> Vec<TcpEvent> {
        states.windows(2).map(|w| ev(skaddr, w[0], w[1])).collect()
    }

    fn closing_path(skaddr: u64) -> Vec<TcpEvent> {
        path(
            skaddr,
            &[Listen, SynRecv, Established, FinWait1, Closing, Close],
        )
    }

    fn plain_path(skaddr: u64) -> Vec<TcpEvent> {
        path(
            skaddr,
            &[Close, SynSent, Established, FinWait1, FinWait2, Close],
        )
    }

    #[test]
    fn specs_parse_states_and_transitions() {
        assert_eq!(parse_spec("CLOSING"), Ok(TriggerSpec::State(Closing)));
        assert_eq!(parse_spec("close-wait"), Ok(TriggerSpec::State(CloseWait)));
        assert_eq!(
            parse_spec("FIN_WAIT1->CLOSING"),
            Ok(TriggerSpec::Transition(FinWait1, Closing))
        );
        assert_eq!(
            parse_spec("established > close"),
            Ok(TriggerSpec::Transition(Established, Close))
        );
        assert!(parse_spec("OPEN").unwrap_err().contains("not a TCP state"));
        assert!(parse_spec("CLOSING->").is_err());
        for never in [
            "CLOSE->CLOSE",
            "TIME_WAIT->CLOSE",
            "ESTABLISHED->LISTEN",
            "LAST_ACK->FIN_WAIT1",
        ] {
            let e = parse_spec(never).unwrap_err();
            assert!(e.contains("never makes"), "{never}: {e}");
        }
        assert_eq!(
            parse_spec("FIN_WAIT1->CLOSING").unwrap().to_string(),
            "FIN_WAIT1->CLOSING"
        );
    }

    #[test]
    fn prints_the_whole_history_of_triggered_sockets_only() {
        let (mut t, seen) = trigger(&["CLOSING"], 100);
        let mut out = Vec::new();
        t.header(&mut out);
        assert_eq!(out, b"HEADER\n");
        let mut evs = Vec::new();
        // Interleave a plain socket with a CLOSING one.
        for (a, b) in plain_path(1).into_iter().zip(closing_path(2)) {
            evs.push(a);
            evs.push(b);
        }
        for e in &evs {
            t.event(e, &mut out);
        }
        let seen = seen.borrow();
        assert_eq!(
            *seen,
            closing_path(2)
                .iter()
                .map(|e| (2, e.old, e.new))
                .collect::<Vec<_>>()
        );
        assert_eq!(t.held(), 0, "closed sockets are forgotten");
        assert_eq!(t.triggered, 1);
    }

    /// How many of `events` a trigger on `specs` lets through.
    fn passed(specs: &[&str], events: &[TcpEvent]) -> usize {
        let (mut t, seen) = trigger(specs, 100);
        for e in events {
            t.event(e, &mut Vec::new());
        }
        seen.borrow().len()
    }

    #[test]
    fn transition_triggers_and_later_events_pass_through() {
        assert_eq!(passed(&["ESTABLISHED->FIN_WAIT1"], &plain_path(7)), 5);
        assert_eq!(passed(&["ESTABLISHED->CLOSE_WAIT"], &plain_path(7)), 0);
    }

    #[test]
    fn state_triggers_match_notes_but_transitions_do_not() {
        let mut tw = ev(3, FinWait2, TimeWait);
        tw.source = Source::SockDiag;
        tw.note = Some(Note::TimeWait);
        assert_eq!(passed(&["TIME_WAIT"], &[tw]), 1);
        // The kernel never makes it (the timewait socket's row is ours), so
        // as a transition it is refused rather than matching nothing.
        assert!(parse_spec("FIN_WAIT2->TIME_WAIT").is_err());
    }

    #[test]
    fn a_timewait_row_after_close_triggers_the_closed_history() {
        let (mut t, seen) = trigger(&["TIME_WAIT"], 100);
        let mut out = Vec::new();
        for e in plain_path(9) {
            t.event(&e, &mut out);
        }
        assert!(seen.borrow().is_empty());
        let mut tw = ev(9, FinWait2, TimeWait);
        tw.source = Source::Tracker;
        tw.note = Some(Note::TimeWait);
        t.event(&tw, &mut out);
        assert_eq!(
            seen.borrow().len(),
            6,
            "the 5 transitions and the timewait row"
        );
        // Only once, and only right after the close.
        t.event(&tw, &mut out);
        assert_eq!(seen.borrow().len(), 7);
        let mut reused = plain_path(9);
        reused.extend([ev(10, Close, SynSent), tw]);
        assert_eq!(
            passed(&["TIME_WAIT"], &reused),
            1,
            "history dropped, the row alone"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let (mut t, seen) = trigger(&["CLOSING"], 10);
        let mut out = Vec::new();
        for a in 1..=1000 {
            t.event(&ev(a, Close, SynSent), &mut out);
        }
        assert_eq!(t.held(), 10);
        assert_eq!(t.evicted, 990);
        assert!(t.order.len() <= 2 * 10 + 64);
        for _ in 0..(MAX_EVENTS * 2) {
            t.event(&ev(999, Established, Established), &mut out);
        }
        t.event(&ev(999, FinWait1, Closing), &mut out);
        assert_eq!(seen.borrow().len(), MAX_EVENTS + 1);
        assert_eq!(t.dropped_events, MAX_EVENTS as u64 + 1);
    }
}
