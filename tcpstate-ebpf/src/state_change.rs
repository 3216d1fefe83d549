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
    event::{Fields, on_cpu, submit},
    kernel::{fin_flags, netns_of, synack_wait_ns},
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
    if what == stat::LISTEN_MAP_FAIL {
        warn!(ctx, "listener map update failed, port {}", key);
    } else {
        warn!(ctx, "socket map update failed for socket {:x}", key);
    }
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

/// A socket's tracking entry as of `now`: `followed` once an event of it
/// matched the filter, otherwise its first event is held back in `PENDING`.
#[inline(always)]
fn tracking(now: u64, owner: Owner, netns: u32, followed: bool) -> SockState {
    SockState {
        since_ns: now,
        owner,
        followed: followed as u8,
        has_pending: !followed as u8,
        _pad: [0; 2],
        netns,
    }
}

/// Writes every field of `ev` (ring-buffer or map memory), reading the
/// addresses from the record.
#[inline(always)]
fn fill_event<R: Record>(ev: &mut Event, rec: &R, cfg: &Config, f: &Fields) -> Option<()> {
    let (saddr, daddr) = rec.addrs(cfg, f.family)?;
    f.write(ev, saddr, daddr);
    Some(())
}

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

    // Cheapest rejections first. With a port filter and no first events to
    // hold back, a change whose ports do not match can never be shown: a
    // followed socket's ports match on every later change. Listener changes
    // are kept for their owners.
    let family = rec.family(&cfg)?;
    if cfg.family != 0 && family != cfg.family {
        return None;
    }
    let (sport, dport) = rec.ports(&cfg)?;
    let listen_event = old == TcpState::Listen.raw() || new == TcpState::Listen.raw();
    if cfg.port_filter != 0 && cfg.hold_back == 0 && !listen_event && !port_matches(sport, dport) {
        return None;
    }
    // MPTCP and SCTP share this tracepoint.
    if rec.protocol(&cfg)? != IPPROTO_TCP {
        return None;
    }

    let birth = is_birth(old, new);
    let tracked: Option<*mut SockState> = if birth {
        None
    } else {
        SOCKS.get_ptr_mut(skaddr)
    };
    // A tracked socket's namespace was read at its first event. Otherwise
    // read it (two kernel reads) only when something needs it before the
    // port filter has spoken: the --netns filter, no port filter at all, or
    // a listener event (its key includes the namespace).
    let (netns, netns_known) = match tracked {
        Some(t) => (unsafe { (*t).netns }, true),
        None if cfg.netns != 0 || cfg.port_filter == 0 || listen_event => {
            (netns_of(&cfg, skaddr), true)
        }
        None => (0, false),
    };
    if cfg.netns != 0 && netns != cfg.netns {
        return None;
    }
    let now = unsafe { bpf_ktime_get_boot_ns() };

    // Listener owners are tracked whatever the filter, so a followed accepted
    // socket can inherit its listener's owner even with --rport.
    let lkey = ListenKey {
        netns,
        port: sport,
        family,
    };
    if old == TcpState::Close.raw() && new == TcpState::Listen.raw() {
        if LISTENERS.insert(&lkey, &on_cpu(), BPF_ANY as u64).is_err() {
            count_failure(ctx, runner, &cfg, stat::LISTEN_MAP_FAIL, sport as u64);
        }
    } else if old == TcpState::Listen.raw() && new == TcpState::Close.raw() {
        let _ = LISTENERS.remove(&lkey);
    }

    let followed = match tracked {
        Some(st) => unsafe { (*st).followed != 0 },
        None => false,
    };
    let matched = cfg.port_filter == 0 || followed || port_matches(sport, dport);

    // Not matched: hold the event back only if a later event of this socket
    // could still match, i.e. its first event lacks the port the filter is
    // about (CLOSE->SYN_SENT has local port 0 before the ephemeral port is
    // chosen). Otherwise drop it here, before any work.
    let may_match_later = cfg.hold_back != 0
        && birth
        && new != TcpState::Listen.raw()
        && ((sport == 0 && cfg.port_filter & port_match::LOCAL != 0)
            || (dport == 0 && cfg.port_filter & port_match::REMOTE != 0));
    if !matched && !may_match_later {
        if tracked.is_some() {
            // Its tuple is complete now and still does not match: forget it.
            let _ = SOCKS.remove(skaddr);
        }
        return None;
    }
    let netns = if netns_known {
        netns
    } else {
        netns_of(&cfg, skaddr)
    };

    let cpu = on_cpu();
    let owner = if in_owner_context(old, new) {
        cpu
    } else if old == TcpState::Listen.raw() && new == TcpState::SynRecv.raw() {
        let key = ListenKey { netns, ..lkey };
        unsafe { LISTENERS.get(&key) }
            .copied()
            .unwrap_or(Owner::UNKNOWN)
    } else {
        match tracked {
            Some(st) => unsafe { (*st).owner },
            None => Owner::UNKNOWN,
        }
    };

    let mut dwell = match tracked {
        Some(t) => now.saturating_sub(unsafe { (*t).since_ns }),
        None => DWELL_UNKNOWN,
    };
    if old == TcpState::SynRecv.raw() && new == TcpState::Established.raw() {
        // Count SYN_RECV from the SYN-ACK, as netstat shows it (the request
        // socket), not from the child socket's creation a moment ago.
        let wait = synack_wait_ns(&cfg, skaddr);
        if wait != 0 && (dwell == DWELL_UNKNOWN || wait > dwell) {
            dwell = wait;
        }
    }
    let fin = if new == TcpState::Close.raw()
        && (old == TcpState::FinWait2.raw() || old == TcpState::Closing.raw())
    {
        fin_flags(&cfg, skaddr)
    } else {
        0
    };
    let fields = Fields {
        now,
        skaddr,
        dwell,
        owner,
        on_cpu: cpu,
        netns,
        sport,
        dport,
        family,
        old,
        new,
        source: Hook::Tracepoint.raw(),
        flags: fin,
        retransmits: 0,
        detail: 0,
    };

    if !matched {
        // may_match_later: hold the event back until a later event of this
        // socket matches or proves it never will.
        let scratch = SCRATCH.get_ptr_mut(runner.slot)?;
        // SAFETY: per-CPU map value, exclusively ours for this program run.
        let ev = unsafe { &mut *scratch };
        fill_event(ev, rec, &cfg, &fields)?;
        ev.flags |= flag::REPLAYED;
        let st = tracking(now, owner, netns, false);
        if PENDING.insert(skaddr, &*ev, BPF_ANY as u64).is_err()
            || SOCKS.insert(skaddr, &st, BPF_ANY as u64).is_err()
        {
            count_in(runner.row, stat::SOCK_MAP_FAIL);
        }
        return Some(());
    }

    if let Some(t) = tracked
        && unsafe { (*t).has_pending } != 0
    {
        if let Some(p) = PENDING.get_ptr(skaddr) {
            emit_copy(runner.row, &cfg, unsafe { &*p });
        }
        let _ = PENDING.remove(skaddr);
    }
    submit(runner.row, &cfg, |ev| fill_event(ev, rec, &cfg, &fields));
    if !birth && tracked.is_none() {
        count_in(runner.row, stat::UNTRACKED);
    }

    if new == TcpState::Close.raw() {
        let _ = SOCKS.remove(skaddr);
        return Some(());
    }
    match tracked {
        Some(t) => unsafe {
            (*t).since_ns = now;
            (*t).owner = owner;
            (*t).followed = 1;
            (*t).has_pending = 0;
        },
        None => {
            let st = tracking(now, owner, netns, true);
            if SOCKS.insert(skaddr, &st, BPF_ANY as u64).is_err() {
                count_failure(ctx, runner, &cfg, stat::SOCK_MAP_FAIL, skaddr);
            }
        }
    }
    Some(())
}
