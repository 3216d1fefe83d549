//! The enrich stage, between decoding and rendering: it passes every kernel
//! event through and adds what the state tracepoint cannot show, each marked
//! with its source and a note so nothing synthesized passes as a kernel
//! transition, and no kernel transition is shown twice:
//! - [`halfopen`]: half-open connections that linger (request sockets whose
//!   SYN-ACK was resent), folded into their connection's own rows;
//! - [`timewait`]: the TIME_WAIT / orphaned FIN_WAIT2 timewait socket that
//!   takes over when a full socket closes, and its expiry;
//! - [`stuck`]: sockets sitting too long in CLOSE_WAIT, FIN_WAIT2, LAST_ACK
//!   or SYN_SENT (`--stuck`);
//! - [`causes`]: how each connection ended (resets, errors, timeouts,
//!   retransmits), on its row into CLOSE;
//! - [`tuple`]: a child socket's first row, completed with its own tuple on
//!   kernels that report it with its listener's;
//! - [`snapshot`]: the sockets (and listener owners) that already exist
//!   when tracing starts, in every network namespace.
//!
//! Kernel events drive it; the socket tables are read through
//! [`table::SocketTable`], one dump per namespace per check.

pub mod causes;
pub mod halfopen;
pub mod owners;
pub mod snapshot;
pub mod stuck;
pub mod table;
pub mod timewait;
pub mod tuple;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use crate::{
    diag::Diag,
    event::{Source, Task, TcpEvent, TcpState},
};
pub use snapshot::ListenKey;

/// A socket's identity when it has no address we can use: namespace and
/// tuple (local, remote).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TupleKey {
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl TupleKey {
    pub fn of(ev: &TcpEvent) -> Self {
        TupleKey {
            netns: ev.netns,
            local: ev.local(),
            remote: ev.remote(),
        }
    }

    pub(crate) fn reversed(&self) -> Self {
        TupleKey {
            netns: self.netns,
            local: self.remote,
            remote: self.local,
        }
    }
}

/// Which sockets the user asked about (the kernel applies the same filter to
/// kernel events; sock_diag results are filtered here).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub local_ports: Vec<u16>,
    pub remote_ports: Vec<u16>,
    /// 0 = both.
    pub family: u16,
}

impl Filter {
    pub fn matches(&self, family: u16, local: u16, remote: u16) -> bool {
        let ports = self.local_ports.is_empty() && self.remote_ports.is_empty()
            || self.local_ports.contains(&local)
            || self.remote_ports.contains(&remote);
        ports && (self.family == 0 || self.family == family)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub stuck: Option<Duration>,
    /// Most half-open and timewait sockets followed at once.
    pub max_tracked: usize,
}

/// What a counted dump found.
pub(crate) enum Dumped {
    Sockets(Vec<crate::diag::DiagSocket>),
    /// Failed this time; retried at the next check.
    Failed,
    /// The namespace is gone (its last process exited): it cannot be
    /// entered again, and what it held is gone with it.
    Gone,
}

/// The socket table as the trackers use it: every dump is counted, and a
/// failed one is kept for the exit report.
pub(crate) struct Dumps<'a> {
    pub table: &'a mut dyn table::SocketTable,
    pub counters: &'a mut Counters,
}

impl Dumps<'_> {
    /// One dump of `netns`.
    pub(crate) fn dump(&mut self, netns: u32, wanted: table::Wanted) -> Dumped {
        let c = &mut *self.counters;
        c.lookups += 1;
        match self.table.dump(netns, wanted, 0) {
            Ok(socks) => Dumped::Sockets(socks),
            Err(e) => {
                c.lookup_errors += 1;
                c.last_error = Some(format!("netns {netns}: {e}"));
                if e.kind() == std::io::ErrorKind::NotFound {
                    Dumped::Gone
                } else {
                    Dumped::Failed
                }
            }
        }
    }
}

/// Counters for the exit report.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// sock_diag dumps made.
    pub lookups: u64,
    pub lookup_errors: u64,
    /// The last failed dump's error, for the exit report.
    pub last_error: Option<String>,
    /// Half-open or timewait sockets not followed because the table was full.
    pub untracked: u64,
}

pub struct Enricher {
    diag: Diag,
    /// Owners of sockets that existed before tracing (from the snapshot):
    /// the kernel side never saw them connect or listen, so their events
    /// would otherwise have no owner.
    snapshot_owners: HashMap<TupleKey, Task>,
    /// Owners of listening sockets, from the snapshot and from the kernel's
    /// CLOSE->LISTEN rows: an accepted socket whose owner the kernel could
    /// not name (accepted before its listener's owner reached the kernel
    /// side) gets its listener's.
    listener_owners: HashMap<ListenKey, Task>,
    halfopen: halfopen::HalfOpen,
    timewait: timewait::TimeWait,
    stuck: Option<stuck::Stuck>,
    why: causes::Why,
    tuples: tuple::Tuples,
    opts: Options,
    pub counters: Counters,
}

/// Where enriched events go (the renderers and summary).
pub(crate) type Emit<'a> = dyn FnMut(&TcpEvent) + 'a;

/// Most network namespaces the start-up snapshot reads (those holding a
/// process first); beyond it they are counted and said once.
pub const MAX_NAMESPACES: usize = 4096;

impl Enricher {
    /// `rst_reasons`: the running kernel's names of reset reasons, as the
    /// probe read them.
    pub fn new(opts: Options, rst_reasons: crate::reason::RstReasons) -> Self {
        Enricher {
            diag: Diag::default(),
            snapshot_owners: HashMap::new(),
            listener_owners: HashMap::new(),
            halfopen: halfopen::HalfOpen::new(opts.max_tracked),
            timewait: timewait::TimeWait::new(opts.max_tracked),
            stuck: opts.stuck.map(|d| stuck::Stuck::new(d, opts.max_tracked)),
            why: causes::Why::new(rst_reasons, opts.max_tracked),
            tuples: tuple::Tuples::new(opts.max_tracked),
            opts,
            counters: Counters::default(),
        }
    }

    /// Handles one decoded kernel event: emits it, then what it implies.
    pub fn on_event(&mut self, ev: &TcpEvent, emit: &mut Emit<'_>) {
        let mut emit = |e: &TcpEvent| {
            let mut e = *e;
            causes::annotate_expiry(&mut e);
            emit(&e)
        };
        let emit: &mut Emit<'_> = &mut emit;
        if matches!(ev.source, Source::Cause(_)) {
            if let Some(row) = self.why.on_cause(ev) {
                self.emit_closed(&row, emit);
            }
            return;
        }
        let mut ev = *ev;
        if ev.owner.is_none() {
            ev.owner = self.known_owner(&ev);
        }
        if ev.source == Source::SynackTracepoint {
            if let Some(row) = self.halfopen.synack_retransmit(&ev, &mut self.counters) {
                emit(&row);
            }
            return;
        }
        if ev.source != Source::Tracepoint {
            emit(&ev);
            return;
        }
        if tuple::incomplete(&ev) {
            match self.tuples.hold(&ev, ev.ts_ns) {
                tuple::Hold::Held => return,
                tuple::Hold::Replaced(first) => self.transition(first, emit),
                tuple::Hold::Full => {}
            }
        } else if let Some(mut held) = self.tuples.complete(&ev) {
            if held.owner.is_none() {
                held.owner = self.known_owner(&held);
            }
            self.transition(held, emit);
        }
        self.transition(ev, emit);
    }

    /// A kernel state change with its tuple complete: emits it, then what it
    /// implies.
    fn transition(&mut self, mut ev: TcpEvent, emit: &mut Emit<'_>) {
        if matches!(
            (ev.old, ev.new),
            (TcpState::SynSent, TcpState::Established) | (TcpState::Listen, TcpState::SynRecv)
        ) && let Some(e) = self.timewait.reused(&ev)
        {
            emit(&e);
        }
        match (ev.old, ev.new) {
            // Already shown as its half-open row.
            (TcpState::Listen, TcpState::SynRecv)
                if self.halfopen.child_created(&ev) == halfopen::ChildRow::Folded =>
            {
                if let Some(st) = &mut self.stuck {
                    st.on_event(&ev);
                }
                return;
            }
            (TcpState::SynRecv, _) => {
                if let Some(e) = self.halfopen.child_left_syn_recv(&ev) {
                    ev = e;
                }
            }
            (TcpState::Close, TcpState::Listen) => {
                if let Some(o) = ev.owner {
                    self.listener_owners.insert(listen_key(&ev), o);
                }
            }
            (TcpState::Listen, TcpState::Close) => {
                self.listener_owners.remove(&listen_key(&ev));
            }
            _ => {}
        }
        let mut released = Vec::new();
        ev = match self.why.on_transition(&ev, &mut |r| released.push(r)) {
            causes::Next::Emit(e) => e,
            causes::Next::Held => ev,
        };
        for r in released {
            self.emit_closed(&r, emit);
        }
        if ev.new == TcpState::Close && ev.reason.is_none() {
            // Held until the cause the kernel reports after the CLOSE.
            return;
        }
        emit(&ev);
        if let Some(st) = &mut self.stuck {
            st.on_event(&ev);
        }
        if ev.new == TcpState::Close {
            match ev.old {
                TcpState::FinWait2 | TcpState::Closing => {
                    if let Some(e) = self.timewait.handover(&ev, &mut self.counters) {
                        emit(&e);
                    }
                }
                // The peer's FIN was acked: if its timewait socket is ours and
                // still an orphaned FIN_WAIT2, it is TIME_WAIT now. Look.
                TcpState::LastAck => {
                    if let Some(e) = self.timewait.peer_closed(&ev) {
                        emit(&e);
                    }
                }
                _ => {}
            }
        }
    }

    /// The owner the kernel could not name: from the snapshot (a socket that
    /// predates tracing), else its listener's (an accepted socket).
    fn known_owner(&mut self, ev: &TcpEvent) -> Option<Task> {
        if !self.snapshot_owners.is_empty() {
            let key = TupleKey::of(ev);
            let found = if ev.new == TcpState::Close {
                self.snapshot_owners.remove(&key)
            } else {
                self.snapshot_owners.get(&key).copied()
            };
            if found.is_some() {
                return found;
            }
        }
        if ev.rport == 0 || ev.old == TcpState::Close {
            return None;
        }
        self.listener_owners.get(&listen_key(ev)).copied()
    }

    /// A CLOSE row released by [`causes::Why`]: a local abort or timeout, so
    /// none of the FIN_WAIT2/LAST_ACK follow-ups apply.
    fn emit_closed(&mut self, ev: &TcpEvent, emit: &mut Emit<'_>) {
        emit(ev);
        if let Some(st) = &mut self.stuck {
            st.on_event(ev);
        }
    }

    /// Tracing stops: the CLOSE rows still waiting for a cause.
    pub fn finish(&mut self, emit: &mut Emit<'_>) {
        for held in self.tuples.drain() {
            self.transition(held, emit);
        }
        let mut rows = Vec::new();
        self.why.flush(&mut |r| rows.push(r));
        for r in rows {
            self.emit_closed(&r, emit);
        }
    }

    /// Periodic work: dumps that are due, stuck sockets.
    pub fn on_tick(&mut self, now_ns: u64, emit: &mut Emit<'_>) {
        let mut emit = |e: &TcpEvent| {
            let mut e = *e;
            causes::annotate_expiry(&mut e);
            emit(&e)
        };
        let emit: &mut Emit<'_> = &mut emit;
        for held in self.tuples.expired(now_ns) {
            self.transition(held, emit);
        }
        let mut rows = Vec::new();
        self.why.tick(&mut |r| rows.push(r));
        for r in rows {
            self.emit_closed(&r, emit);
        }
        let mut dumps = Dumps {
            table: &mut self.diag,
            counters: &mut self.counters,
        };
        self.halfopen.tick(now_ns, &mut dumps, emit);
        self.timewait.tick(now_ns, &mut dumps, emit);
        if let Some(st) = &mut self.stuck {
            st.tick(now_ns, emit);
            self.timewait.flag_stuck(now_ns, st.threshold_ns(), emit);
        }
    }

    /// Reads what already exists when tracing starts, in namespace `netns`
    /// (0: every namespace): emits the snapshot rows (`rows`) of the
    /// sockets the filter matches, starts following the half-open and
    /// timewait ones among them, and returns every listener's owner for the
    /// kernel side.
    /// `stop` is asked between namespaces (a signal during a long read).
    pub fn start(
        &mut self,
        netns: u32,
        filter: &Filter,
        rows: bool,
        stop: &dyn Fn() -> bool,
        emit: &mut Emit<'_>,
    ) -> snapshot::Snapshot {
        let mut skipped = 0;
        let namespaces: Vec<u32> = if netns != 0 {
            vec![netns]
        } else {
            let all = crate::netns::discover_all(MAX_NAMESPACES);
            skipped = all.skipped;
            all.found
                .into_iter()
                .map(|(inode, path)| {
                    self.diag.know_path(inode, path);
                    inode
                })
                .collect()
        };
        let mut snap = snapshot::take(&mut self.diag, &namespaces, filter, rows, stop);
        snap.skipped_namespaces = skipped;
        if snap.interrupted {
            return snap;
        }
        self.listener_owners
            .extend(snap.listeners.iter().map(|(k, v)| (*k, *v)));
        for ev in &snap.rows {
            emit(ev);
            if let Some(owner) = ev.owner
                && self.snapshot_owners.len() < self.opts.max_tracked
            {
                self.snapshot_owners.insert(TupleKey::of(ev), owner);
            }
            match ev.new {
                // A request socket (half-open).
                TcpState::SynRecv if ev.lport != 0 => self.halfopen.adopt(ev, &mut self.counters),
                // A timewait socket (no file, so no owner): TIME_WAIT, or an
                // orphan FIN_WAIT2.
                TcpState::TimeWait | TcpState::FinWait2 if ev.owner.is_none() => {
                    self.timewait.adopt(ev, &mut self.counters)
                }
                _ => {}
            }
            if let Some(st) = &mut self.stuck {
                st.adopt(ev);
            }
        }
        snap
    }
}

/// The listener key of a row: its namespace, local port and family.
fn listen_key(ev: &TcpEvent) -> ListenKey {
    ListenKey {
        netns: ev.netns,
        port: ev.lport,
        family: ev.family,
    }
}
