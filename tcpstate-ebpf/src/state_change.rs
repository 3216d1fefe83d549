//! The handler of one TCP state change, shared by the BTF and the classic
//! tracepoint programs. Per event it keeps TCP only, applies the
//! namespace/family/port filters, computes the time spent in the old state
//! from per-socket tracking, attaches the socket's owner (learned where the
//! kernel runs in the owner's context) and writes one `Event` into the ring
//! buffer.

use aya_ebpf::{EbpfContext, bindings::BPF_ANY, helpers::bpf_ktime_get_boot_ns};
use aya_log_ebpf::warn;
use tcpstate_common::{
    Config, DWELL_UNKNOWN, Event, Hook, IPPROTO_TCP, ListenKey, Owner, SockState, TcpState, flag,
    port_match, stat,
};

use crate::{
    event::{copy_comm, owner, set_on_cpu},
    kernel::{cgroup_dropped, cgroup_of, fin_flags, netns_of, synack_wait_ns},
    maps::{LISTENERS, PENDING, PORTS, SCRATCH, SOCKS, config, count_in, emit_copy},
    record::Record,
};

/// Which program is running the handler: each has its own counter row and
/// scratch slot, since one may interrupt the other on a CPU.
#[derive(Clone, Copy)]
pub struct Runner {
    pub row: u32,
    pub slot: u32,
}

#[inline(always)]
pub fn port_matches(sport: u16, dport: u16) -> bool {
    // An array indexed by port: the verifier inlines the lookup, no hashing.
    let local = PORTS.get(sport as u32).copied().unwrap_or(0);
    let remote = PORTS.get(dport as u32).copied().unwrap_or(0);
    local & port_match::LOCAL != 0 || remote & port_match::REMOTE != 0
}

/// Transitions the kernel makes in the context of the process that owns the
/// socket: connect(), listen(), and close()/shutdown() (of a connection or a
/// listener). Everything else runs in softirq or timer context, where the
/// on-CPU task is whoever was there.
#[inline(always)]
fn in_owner_context(old: u8, new: u8) -> bool {
    (old == TcpState::Close.raw()
        && (new == TcpState::SynSent.raw() || new == TcpState::Listen.raw()))
        || (old == TcpState::Listen.raw() && new == TcpState::Close.raw())
        || new == TcpState::FinWait1.raw()
        || (old == TcpState::CloseWait.raw() && new == TcpState::LastAck.raw())
}

/// The first event of a new socket: anything tracked under this address
/// before belongs to a freed socket whose memory was reused.
#[inline(always)]
fn is_birth(old: u8, new: u8) -> bool {
    old == TcpState::Close.raw()
        || (old == TcpState::Listen.raw() && new == TcpState::SynRecv.raw())
}

/// Kernel-side diagnostics for `--verbose`, through aya-log. Kept out of
/// line (a BPF subprogram) so the log-record code does not bloat the hot
/// path. It returns a value the caller reads, so R0 is always written before
/// the subprogram exits (the log code ends in a void helper call).
#[inline(never)]
fn log_map_failure<C: EbpfContext>(ctx: &C, what: u32, key: u64) -> u32 {
    warn!(ctx, "listener map update failed, port {}", key);
    unsafe { core::ptr::read_volatile(&what) }
}

#[inline(always)]
fn count_failure<C: EbpfContext>(ctx: &C, r: Runner, cfg: &Config, what: u32, key: u64) {
    if cfg.verbose == 0 {
        count_in(r.row, what);
    } else {
        count_in(r.row, log_map_failure(ctx, what, key));
    }
}

/// A socket's tracking entry for the event in `ev`: `followed` once an
/// event of it matched the filter, otherwise its first event is held back
/// in `PENDING`.
#[inline(always)]
fn tracking(ev: &Event, followed: bool) -> SockState {
    SockState {
        since_ns: ev.ts_ns,
        owner: owner(ev.owner_pid, &ev.owner_comm),
        followed: followed as u8,
        has_pending: !followed as u8,
        _pad: [0; 2],
        netns: ev.netns,
        cgroup_id: ev.cgroup_id,
    }
}

/// The cheapest rejections, before any map work: family, ports and
/// protocol. With a port filter and no first events to hold back, a change
/// whose ports do not match can never be shown: a followed socket's ports
/// match on every later change. Listener changes are kept for their owners.
/// Returns (family, local port, remote port).
#[inline(always)]
fn admit<R: Record>(rec: &R, cfg: &Config, old: u8, new: u8) -> Option<(u16, u16, u16)> {
    let family = rec.family(cfg)?;
    if cfg.family != 0 && family != cfg.family {
        return None;
    }
    let (sport, dport) = rec.ports(cfg)?;
    let listen_event = old == TcpState::Listen.raw() || new == TcpState::Listen.raw();
    if cfg.port_filter != 0 && cfg.hold_back == 0 && !listen_event && !port_matches(sport, dport) {
        return None;
    }
    // MPTCP and SCTP share this tracepoint.
    if rec.protocol(cfg)? != IPPROTO_TCP {
        return None;
    }
    Some((family, sport, dport))
}

/// Listener owners are tracked whatever the filter, so a followed accepted
/// socket can inherit its listener's owner even with --rport.
#[inline(always)]
fn track_listener<C: EbpfContext>(ctx: &C, r: Runner, cfg: &Config, ev: &Event, key: &ListenKey) {
    let (old, new) = (ev.oldstate, ev.newstate);
    if old == TcpState::Close.raw() && new == TcpState::Listen.raw() {
        if LISTENERS
            .insert(key, &owner(ev.cpu_pid, &ev.cpu_comm), BPF_ANY as u64)
            .is_err()
        {
            count_failure(ctx, r, cfg, stat::LISTEN_MAP_FAIL, key.port as u64);
        }
    } else if old == TcpState::Listen.raw() && new == TcpState::Close.raw() {
        let _ = LISTENERS.remove(key);
    }
}

/// Whether an unmatched change is held back because a later event of its
/// socket could still match: its first event lacks the port the filter is
/// about. CLOSE->SYN_SENT has local port 0 before the ephemeral port is
/// chosen; on some kernels (6.1, 6.12) a child's LISTEN->SYN_RECV still has
/// its listener's remote port 0 (the tuple is copied in after the state is
/// set), and as a listener event it got past `admit` even without
/// `hold_back`. Anything else unmatched is dropped before any work.
#[inline(always)]
fn may_match_later(cfg: &Config, old: u8, new: u8, sport: u16, dport: u16) -> bool {
    is_birth(old, new)
        && new != TcpState::Listen.raw()
        && ((cfg.hold_back != 0 && sport == 0 && cfg.port_filter & port_match::LOCAL != 0)
            || (dport == 0 && cfg.port_filter & port_match::REMOTE != 0))
}

/// The owner: the task on CPU where the kernel runs in the owner's context,
/// the listener's for a new child socket, else what the socket's tracking
/// entry learned. Written into `ev` (map memory, so the verifier does not
/// carry the three cases through the rest of the handler).
#[inline(always)]
fn set_owner(ev: &mut Event, tracked: Option<*mut SockState>, key: &ListenKey) {
    let (old, new) = (ev.oldstate, ev.newstate);
    let found = if in_owner_context(old, new) {
        ev.owner_pid = ev.cpu_pid;
        let cpu = ev.cpu_comm;
        copy_comm(&mut ev.owner_comm, &cpu);
        return;
    } else if old == TcpState::Listen.raw() && new == TcpState::SynRecv.raw() {
        LISTENERS.get_ptr(key)
    } else {
        tracked.map(|t| unsafe { &raw const (*t).owner })
    };
    match found {
        Some(o) => unsafe {
            ev.owner_pid = (*o).pid;
            copy_comm(&mut ev.owner_comm, &(*o).comm);
        },
        None => {
            ev.owner_pid = Owner::UNKNOWN.pid;
            copy_comm(&mut ev.owner_comm, &Owner::UNKNOWN.comm);
        }
    }
}

/// Time in the old state, and the peer's FIN on a hand-over to a timewait
/// socket.
#[inline(always)]
fn set_dwell(ev: &mut Event, cfg: &Config, tracked: Option<*mut SockState>) {
    let (old, new) = (ev.oldstate, ev.newstate);
    ev.dwell_ns = match tracked {
        Some(t) => ev.ts_ns.saturating_sub(unsafe { (*t).since_ns }),
        None => DWELL_UNKNOWN,
    };
    if old == TcpState::SynRecv.raw() && new == TcpState::Established.raw() {
        // Count SYN_RECV from the SYN-ACK, as netstat shows it (the request
        // socket), not from the child socket's creation a moment ago.
        let wait = synack_wait_ns(cfg, ev.skaddr);
        if wait != 0 && (ev.dwell_ns == DWELL_UNKNOWN || wait > ev.dwell_ns) {
            ev.dwell_ns = wait;
        }
    }
    ev.flags = if new == TcpState::Close.raw()
        && (old == TcpState::FinWait2.raw() || old == TcpState::Closing.raw())
    {
        fin_flags(cfg, ev.skaddr)
    } else {
        0
    };
}

/// After the event went out: the socket's tracking entry says when it
/// entered its new state and who owns it (removed at CLOSE).
#[inline(always)]
fn update_tracking(r: Runner, ev: &Event, tracked: Option<*mut SockState>) {
    if ev.newstate == TcpState::Close.raw() {
        let _ = SOCKS.remove(ev.skaddr);
        return;
    }
    match tracked {
        Some(t) => unsafe {
            (*t).since_ns = ev.ts_ns;
            (*t).owner.pid = ev.owner_pid;
            copy_comm(&mut (*t).owner.comm, &ev.owner_comm);
            (*t).followed = 1;
            (*t).has_pending = 0;
        },
        None => {
            if SOCKS
                .insert(ev.skaddr, &tracking(ev, true), BPF_ANY as u64)
                .is_err()
            {
                // Counted only (the exit report shows it): logging here
                // would have the verifier walk the log code once per path
                // that reaches this insert.
                count_in(r.row, stat::SOCK_MAP_FAIL);
            }
        }
    }
}

/// With `--container` / `--cgroup` the socket's cgroup is read first, so a
/// change of a cgroup already ruled out costs nothing more: `None` then,
/// else the id (0 without the filter: read later, or taken from tracking).
#[inline(always)]
fn cgroup_first(r: Runner, cfg: &Config, skaddr: u64) -> Option<u64> {
    if cfg.cgroup_filter == 0 {
        return Some(0);
    }
    let id = cgroup_of(cfg, skaddr);
    (!cgroup_dropped(r.row, cfg, id)).then_some(id)
}

/// The event's fields known before the filter's verdict: time, socket,
/// namespace, cgroup, tuple ports, states, the on-CPU task.
#[inline(always)]
fn start_event(
    ev: &mut Event,
    skaddr: u64,
    netns: u32,
    cgroup_id: u64,
    (family, sport, dport): (u16, u16, u16),
    old: u8,
    new: u8,
) {
    ev.ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    ev.skaddr = skaddr;
    ev.netns = netns;
    ev.cgroup_id = cgroup_id;
    ev.sport = sport;
    ev.dport = dport;
    ev.family = family;
    ev.oldstate = old;
    ev.newstate = new;
    ev.source = Hook::Tracepoint.raw();
    ev.retransmits = 0;
    ev.detail = 0;
    set_on_cpu(ev);
}

/// An unmatched first event, held back until a later event of its socket
/// matches or proves it never will.
#[inline(always)]
fn hold_back(r: Runner, ev: &mut Event) {
    ev.flags |= flag::REPLAYED;
    if PENDING.insert(ev.skaddr, &*ev, BPF_ANY as u64).is_err()
        || SOCKS
            .insert(ev.skaddr, &tracking(ev, false), BPF_ANY as u64)
            .is_err()
    {
        count_in(r.row, stat::SOCK_MAP_FAIL);
    }
}

/// A matching change: its socket's held-back first event (if any), then
/// this one; then the tracking entry.
#[inline(always)]
fn emit(r: Runner, cfg: &Config, ev: &Event, tracked: Option<*mut SockState>, birth: bool) {
    if let Some(t) = tracked
        && unsafe { (*t).has_pending } != 0
    {
        if let Some(p) = PENDING.get_ptr(ev.skaddr) {
            emit_copy(r.row, cfg, unsafe { &*p });
        }
        let _ = PENDING.remove(ev.skaddr);
    }
    emit_copy(r.row, cfg, ev);
    if !birth && tracked.is_none() {
        count_in(r.row, stat::UNTRACKED);
    }
    update_tracking(r, ev, tracked);
}

/// One state change: filter, track, emit. The event is built in the
/// runner's per-CPU scratch slot and copied into the ring buffer: values in
/// map memory are not part of the verifier's state, which keeps the number
/// of paths it walks small enough for older kernels' verifiers (6.1's gives
/// up where 6.18's prunes).
#[inline(always)]
pub fn handle<C: EbpfContext, R: Record>(
    ctx: &C,
    runner: Runner,
    rec: &R,
    skaddr: u64,
    old: u8,
    new: u8,
) -> Option<()> {
    let cfg = config();
    let (family, sport, dport) = admit(rec, &cfg, old, new)?;
    let filtered_cgroup = cgroup_first(runner, &cfg, skaddr)?;
    let birth = is_birth(old, new);
    let tracked: Option<*mut SockState> = if birth {
        None
    } else {
        SOCKS.get_ptr_mut(skaddr)
    };
    // A tracked socket's namespace and cgroup were read at its first event.
    let netns = match tracked {
        Some(t) => unsafe { (*t).netns },
        None => netns_of(&cfg, skaddr),
    };
    if cfg.netns != 0 && netns != cfg.netns {
        return None;
    }
    let cgroup_id = match tracked {
        _ if cfg.cgroup_filter != 0 => filtered_cgroup,
        Some(t) => unsafe { (*t).cgroup_id },
        None => cgroup_of(&cfg, skaddr),
    };

    // SAFETY: per-CPU map value, exclusively this program run's.
    let ev = unsafe { &mut *SCRATCH.get_ptr_mut(runner.slot)? };
    start_event(
        ev,
        skaddr,
        netns,
        cgroup_id,
        (family, sport, dport),
        old,
        new,
    );
    let key = ListenKey {
        netns,
        port: sport,
        family,
    };
    track_listener(ctx, runner, &cfg, ev, &key);

    let followed = match tracked {
        Some(st) => unsafe { (*st).followed != 0 },
        None => false,
    };
    let matched = cfg.port_filter == 0 || followed || port_matches(sport, dport);
    if !matched && !may_match_later(&cfg, old, new, sport, dport) {
        if tracked.is_some() {
            // Its tuple is complete now and still does not match: forget it.
            let _ = SOCKS.remove(skaddr);
        }
        return None;
    }

    set_owner(ev, tracked, &key);
    set_dwell(ev, &cfg, tracked);
    let (saddr, daddr) = rec.addrs(&cfg, family)?;
    ev.saddr = saddr;
    ev.daddr = daddr;
    if matched {
        emit(runner, &cfg, ev, tracked, birth);
    } else {
        hold_back(runner, ev);
    }
    Some(())
}
