//! The model behind `--lifecycle`: one socket's history (its states with the
//! time spent in each), its role and how it closed. Printers in
//! [`super::write`] only format what this decides.

use crate::event::{Note, Task, TcpEvent, TcpState};

/// Most states kept per history (a TCP socket normally goes through at most
/// 6); beyond, the oldest are dropped and the history marked incomplete.
pub(crate) const MAX_STEPS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Active open (connect).
    Client,
    /// Passive open (accepted from a listener).
    Server,
    Listener,
    /// Joined late: the start was not seen.
    Unknown,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
            Role::Listener => "listener",
            Role::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseKind {
    /// Sent the first FIN (ESTABLISHED -> FIN_WAIT1).
    Active,
    /// Received the first FIN (ESTABLISHED -> CLOSE_WAIT).
    Passive,
    /// Both sent FIN before receiving the other's (FIN_WAIT1 -> CLOSING).
    Simultaneous,
    /// Straight to CLOSE from an open or opening state: reset, abortive
    /// close, refused or timed-out connect.
    Abort,
}

impl CloseKind {
    pub fn name(self) -> &'static str {
        match self {
            CloseKind::Active => "active",
            CloseKind::Passive => "passive",
            CloseKind::Simultaneous => "simultaneous",
            CloseKind::Abort => "abort",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    pub(super) state: TcpState,
    /// When the socket entered the state (unknown for the first state of a
    /// history that joined late).
    pub(super) enter_ns: Option<u64>,
    /// Events are missing before this step (lost, or not traced).
    pub(super) gap_before: bool,
}

#[derive(Debug, Clone)]
pub(super) struct History {
    pub(super) seq: u64,
    /// `old` of the first event seen.
    pub(super) origin: TcpState,
    pub(super) late: bool,
    pub(super) truncated: bool,
    pub(super) steps: Vec<Step>,
    pub(super) owner: Option<Task>,
    /// The latest event with a complete tuple (early events may lack ports).
    pub(super) tuple: TcpEvent,
    pub(super) last_ns: u64,
    /// On FIN_WAIT2/CLOSING -> CLOSE: whether the peer's FIN had arrived
    /// (the timewait socket taking over is in TIME_WAIT) or not (FIN_WAIT2).
    pub(super) peer_fin: Option<bool>,
    /// How it ended (the row into CLOSE), and its data retransmits.
    pub(super) reason: Option<crate::reason::Reason>,
    pub(super) data_retransmits: u32,
}

impl History {
    pub(super) fn start(ev: &TcpEvent, seq: u64) -> Self {
        let mut h = History {
            seq,
            origin: ev.old,
            late: !matches!(ev.old, TcpState::Close | TcpState::Listen) || ev.note.is_some(),
            truncated: false,
            steps: Vec::with_capacity(6),
            owner: ev.owner,
            tuple: *ev,
            last_ns: ev.ts_ns,
            peer_fin: None,
            reason: None,
            data_retransmits: 0,
        };
        if ev.note == Some(Note::Snapshot) {
            // Already in `new` when tracing started; since when is unknown.
            h.steps.push(Step {
                state: ev.new,
                enter_ns: None,
                gap_before: false,
            });
        } else {
            if h.late {
                h.steps.push(Step {
                    state: ev.old,
                    enter_ns: ev.dwell_ns.map(|d| ev.ts_ns.saturating_sub(d)),
                    gap_before: false,
                });
            }
            h.steps.push(Step {
                state: ev.new,
                enter_ns: Some(ev.ts_ns),
                gap_before: false,
            });
        }
        h
    }

    pub(super) fn last_state(&self) -> TcpState {
        self.steps.last().map_or(self.origin, |s| s.state)
    }

    pub(super) fn push(&mut self, step: Step) {
        if self.steps.len() == MAX_STEPS {
            self.steps.remove(0);
            self.truncated = true;
        }
        self.steps.push(step);
    }

    pub(super) fn add(&mut self, ev: &TcpEvent) {
        if ev.old != self.last_state() {
            self.push(Step {
                state: ev.old,
                enter_ns: ev.dwell_ns.map(|d| ev.ts_ns.saturating_sub(d)),
                gap_before: true,
            });
        }
        self.push(Step {
            state: ev.new,
            enter_ns: Some(ev.ts_ns),
            gap_before: false,
        });
        self.note(ev);
    }

    /// Keeps the latest owner and complete tuple.
    pub(super) fn note(&mut self, ev: &TcpEvent) {
        if ev.owner.is_some() {
            self.owner = ev.owner;
        }
        if (ev.lport != 0 && ev.rport != 0) || (self.tuple.lport == 0 || self.tuple.rport == 0) {
            self.tuple = *ev;
        }
        self.last_ns = self.last_ns.max(ev.ts_ns);
        if ev.new == TcpState::Close {
            self.peer_fin = ev.peer_fin;
        }
        if ev.reason.is_some() {
            self.reason = ev.reason;
            self.data_retransmits = ev.data_retransmits;
        }
    }

    /// The state of the timewait socket that took over at CLOSE, if known.
    pub(super) fn timewait(&self) -> Option<TcpState> {
        match self.peer_fin? {
            true => Some(TcpState::TimeWait),
            false => Some(TcpState::FinWait2),
        }
    }

    pub(super) fn complete(&self) -> bool {
        !self.late && !self.truncated && !self.steps.iter().any(|s| s.gap_before)
    }

    pub(super) fn role(&self) -> Role {
        if !self.late {
            match (self.origin, self.steps.first().map(|s| s.state)) {
                (TcpState::Close, Some(TcpState::SynSent)) => return Role::Client,
                (TcpState::Close, Some(TcpState::Listen)) => return Role::Listener,
                (TcpState::Listen, _) => return Role::Server,
                _ => {}
            }
        }
        let has = |st| self.steps.iter().any(|s| s.state == st);
        if has(TcpState::Listen) {
            Role::Listener
        } else if has(TcpState::SynSent) {
            Role::Client
        } else if has(TcpState::SynRecv) {
            Role::Server
        } else {
            Role::Unknown
        }
    }

    pub(super) fn close_kind(&self) -> Option<CloseKind> {
        let has = |st| self.steps.iter().any(|s| s.state == st);
        let pairs = || self.steps.windows(2).map(|w| (w[0].state, w[1].state));
        if pairs().any(|p| p == (TcpState::FinWait1, TcpState::Closing)) {
            Some(CloseKind::Simultaneous)
        } else if has(TcpState::FinWait1) {
            Some(CloseKind::Active)
        } else if has(TcpState::CloseWait) {
            Some(CloseKind::Passive)
        } else if matches!(
            pairs().next_back(),
            Some((
                TcpState::Established | TcpState::SynSent | TcpState::SynRecv,
                TcpState::Close
            ))
        ) {
            Some(CloseKind::Abort)
        } else {
            None
        }
    }

    /// Time in each state: to the next state's entry, or to `end_ns` for the
    /// last state of an unfinished history; none for the final CLOSE.
    pub(super) fn durations(
        &self,
        finished: bool,
        end_ns: u64,
    ) -> impl Iterator<Item = Option<u64>> + '_ {
        let n = self.steps.len();
        self.steps.iter().enumerate().map(move |(i, s)| {
            let next = if i + 1 < n {
                self.steps[i + 1].enter_ns
            } else if finished {
                None
            } else {
                Some(end_ns)
            };
            Some(next?.saturating_sub(s.enter_ns?))
        })
    }

    pub(super) fn total(&self, end_ns: u64) -> Option<u64> {
        Some(end_ns.saturating_sub(self.steps.first()?.enter_ns?))
    }
}
