//! The enrich stage, between decoding and rendering: it passes every kernel
//! event through and adds what the state tracepoint cannot show, each marked
//! with its source and a note so nothing synthesized passes as a kernel
//! transition:
//! - [`halfopen`]: request sockets (netstat's SYN_RECV while the client's last
//!   ACK is missing), from the sock_ops program and the SYN-ACK tracepoint;
//! - [`timewait`]: the TIME_WAIT / orphaned FIN_WAIT2 timewait socket that
//!   takes over when a full socket closes, and its expiry;
//! - [`stuck`]: sockets sitting too long in CLOSE_WAIT, FIN_WAIT2, LAST_ACK
//!   or SYN_SENT (`--stuck`);
//! - [`snapshot`]: the sockets that already exist when tracing starts.
//!
//! Kernel events drive it; sock_diag lookups are targeted (one tuple) and
//! bounded per tick.

pub mod halfopen;
pub mod owners;
pub mod snapshot;
pub mod stuck;
pub mod timewait;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use crate::{
    diag::Diag,
    event::{Source, Task, TcpEvent, TcpState},
};

/// A socket's identity when it has no address we can use: namespace and
/// tuple (local, remote).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TupleKey {
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

    pub fn reversed(&self) -> Self {
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
    pub fn from_cli(cli: &crate::cli::Cli) -> Self {
        Filter {
            local_ports: cli.ports.iter().chain(&cli.lports).copied().collect(),
            remote_ports: cli.ports.iter().chain(&cli.rports).copied().collect(),
            family: if cli.ipv4 {
                tcpstate_common::AF_INET
            } else if cli.ipv6 {
                tcpstate_common::AF_INET6
            } else {
                0
            },
        }
    }

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
    /// Most targeted sock_diag lookups per tick.
    pub lookups_per_tick: usize,
}

/// One targeted sock_diag lookup of `key`, paid from the tick's `budget` and
/// counted. `None` when it failed (the namespace is gone, say): the caller
/// stops following that socket.
pub(crate) fn budgeted_lookup(
    diag: &mut Diag,
    key: &TupleKey,
    budget: &mut usize,
    counters: &mut Counters,
) -> Option<Option<crate::diag::DiagSocket>> {
    *budget = budget.saturating_sub(1);
    counters.lookups += 1;
    match diag.lookup(key.netns, key.local, key.remote) {
        Ok(found) => Some(found),
        Err(_) => {
            counters.lookup_errors += 1;
            None
        }
    }
}

/// Counters for the exit report.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub lookups: u64,
    pub lookup_errors: u64,
    /// Half-open or timewait sockets not followed because the table was full.
    pub untracked: u64,
}

pub struct Enricher {
    diag: Diag,
    /// Owners of sockets that existed before tracing (from the snapshot):
    /// the kernel side never saw them connect or listen, so their events
    /// would otherwise have no owner.
    snapshot_owners: HashMap<TupleKey, Task>,
    halfopen: halfopen::HalfOpen,
    timewait: timewait::TimeWait,
    stuck: Option<stuck::Stuck>,
    opts: Options,
    pub counters: Counters,
}

/// Where enriched events go (the renderers and summary).
pub type Emit<'a> = dyn FnMut(&TcpEvent) + 'a;

impl Enricher {
    pub fn new(opts: Options) -> Self {
        Enricher {
            diag: Diag::default(),
            snapshot_owners: HashMap::new(),
            halfopen: halfopen::HalfOpen::new(opts.max_tracked),
            timewait: timewait::TimeWait::new(opts.max_tracked),
            stuck: opts.stuck.map(|d| stuck::Stuck::new(d, opts.max_tracked)),
            opts,
            counters: Counters::default(),
        }
    }

    /// Handles one decoded kernel event: emits it, then what it implies.
    pub fn on_event(&mut self, ev: &TcpEvent, emit: &mut Emit<'_>) {
        let filled;
        let ev = match self.owner_from_snapshot(ev) {
            Some(e) => {
                filled = e;
                &filled
            }
            None => ev,
        };
        match ev.source {
            Source::SockOps => {
                if let Some(e) = self.halfopen.created(ev, &mut self.counters) {
                    emit(&e);
                }
                return;
            }
            Source::SynackTracepoint => {
                emit(&self.halfopen.synack_retransmit(ev));
                return;
            }
            _ => {}
        }
        emit(ev);
        if ev.source != Source::Tracepoint {
            return;
        }
        if let Some(st) = &mut self.stuck {
            st.on_event(ev);
        }
        if (ev.old == TcpState::Listen && ev.new == TcpState::SynRecv
            || ev.old == TcpState::SynRecv && ev.new == TcpState::Established)
            && let Some(e) = self.halfopen.completed(ev)
        {
            emit(&e);
        }
        if ev.new == TcpState::Close {
            match ev.old {
                TcpState::FinWait2 | TcpState::Closing => {
                    if let Some(e) = self.timewait.handover(ev, &mut self.counters) {
                        emit(&e);
                    }
                }
                // The peer's FIN was acked: if its timewait socket is ours and
                // still an orphaned FIN_WAIT2, it is TIME_WAIT now. Look.
                TcpState::LastAck => self.timewait.peer_closed(ev),
                _ => {}
            }
        }
    }

    /// The owner of a pre-existing socket, as the snapshot found it.
    fn owner_from_snapshot(&mut self, ev: &TcpEvent) -> Option<TcpEvent> {
        if self.snapshot_owners.is_empty() || ev.source != Source::Tracepoint {
            return None;
        }
        let key = TupleKey::of(ev);
        let owner = if ev.new == TcpState::Close {
            self.snapshot_owners.remove(&key)
        } else {
            self.snapshot_owners.get(&key).copied()
        }?;
        ev.owner.is_none().then_some(TcpEvent {
            owner: Some(owner),
            ..*ev
        })
    }

    /// Periodic work: targeted lookups that are due, stuck sockets.
    pub fn on_tick(&mut self, now_ns: u64, emit: &mut Emit<'_>) {
        let mut budget = self.opts.lookups_per_tick;
        self.halfopen.tick(
            now_ns,
            &mut self.diag,
            &mut budget,
            &mut self.counters,
            emit,
        );
        self.timewait.tick(
            now_ns,
            &mut self.diag,
            &mut budget,
            &mut self.counters,
            emit,
        );
        if let Some(st) = &mut self.stuck {
            st.tick(now_ns, emit);
            self.timewait.flag_stuck(now_ns, st.threshold_ns(), emit);
        }
    }

    /// Lists the sockets that already exist (see [`snapshot`]), and starts
    /// following the half-open and timewait ones among them.
    pub fn snapshot(
        &mut self,
        netns: u32,
        filter: &Filter,
        emit: &mut Emit<'_>,
    ) -> std::io::Result<usize> {
        let events = snapshot::take(&mut self.diag, netns, filter)?;
        for ev in &events {
            emit(ev);
            if let Some(owner) = ev.owner
                && self.snapshot_owners.len() < self.opts.max_tracked
            {
                self.snapshot_owners.insert(TupleKey::of(ev), owner);
            }
            match ev.new {
                // A request socket (half-open), credited to its listener's owner.
                TcpState::SynRecv if ev.lport != 0 => self.halfopen.adopt(ev, &mut self.counters),
                // No owner: a timewait socket (an orphan FIN_WAIT2 or TIME_WAIT).
                TcpState::TimeWait | TcpState::FinWait2 if ev.owner.is_none() => {
                    self.timewait.adopt(ev, &mut self.counters)
                }
                _ => {}
            }
            if let Some(st) = &mut self.stuck {
                st.adopt(ev);
            }
        }
        Ok(events.len())
    }
}
