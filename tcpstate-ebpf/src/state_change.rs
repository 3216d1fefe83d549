//! The handler of one TCP state change, shared by the BTF and the classic
//! tracepoint programs. Per event it keeps TCP only, applies the
//! namespace/family/port filters, computes the time spent in the old state
//! from per-socket tracking, attaches the socket's owner (learned where the
//! kernel runs in the owner's context) and writes one `Event` into the ring
//! buffer.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_ANY,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
};
use aya_log_ebpf::warn;
use tcpstate_common::{
    COMM_LEN, Config, DWELL_UNKNOWN, Event, IPPROTO_TCP, ListenKey, Owner, SockState, flag,
    port_match, source, stat, tcp_state,
};

use crate::{
    kernel::{fin_flags, netns_of, synack_wait_ns},
    maps::{
        EVENTS, LISTENERS, PENDING, PORTS, SCRATCH, SOCKS, config, count_in, emit_copy,
        wakeup_flags,
    },
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

#[inline(always)]
fn current_owner() -> Owner {
    Owner {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    }
}

/// Transitions the kernel makes in the context of the process that owns the
/// socket: connect(), listen(), and close()/shutdown() (of a connection or a
/// listener). Everything else runs in softirq or timer context, where the
/// on-CPU task is whoever was there.
#[inline(always)]
fn in_owner_context(old: u8, new: u8) -> bool {
    (old == tcp_state::CLOSE && (new == tcp_state::SYN_SENT || new == tcp_state::LISTEN))
        || (old == tcp_state::LISTEN && new == tcp_state::CLOSE)
        || new == tcp_state::FIN_WAIT1
        || (old == tcp_state::CLOSE_WAIT && new == tcp_state::LAST_ACK)
}

/// The first event of a new socket: anything tracked under this address
/// before belongs to a freed socket whose memory was reused.
#[inline(always)]
fn is_birth(old: u8, new: u8) -> bool {
    old == tcp_state::CLOSE || (old == tcp_state::LISTEN && new == tcp_state::SYN_RECV)
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

/// What one state change carries, gathered before the event is written.
struct EventFields {
    now: u64,
    skaddr: u64,
    dwell: u64,
    owner: Owner,
    cpu_pid: u32,
    cpu_comm: [u8; COMM_LEN],
    netns: u32,
    sport: u16,
    dport: u16,
    family: u16,
    old: u8,
    new: u8,
    flags: u8,
}

/// Writes every field of `ev` (ring-buffer or map memory).
#[inline(always)]
fn fill_event<R: Record>(ev: &mut Event, rec: &R, cfg: &Config, f: &EventFields) -> Option<()> {
    let (saddr, daddr) = rec.addrs(cfg, f.family)?;
    ev.ts_ns = f.now;
    ev.skaddr = f.skaddr;
    ev.dwell_ns = f.dwell;
    ev.owner_pid = f.owner.pid;
    ev.owner_comm = f.owner.comm;
    ev.cpu_pid = f.cpu_pid;
    ev.cpu_comm = f.cpu_comm;
    ev.netns = f.netns;
    ev.sport = f.sport;
    ev.dport = f.dport;
    ev.family = f.family;
    ev.oldstate = f.old;
    ev.newstate = f.new;
    ev.source = source::TRACEPOINT;
    ev.flags = f.flags;
    ev.retransmits = 0;
    ev.detail = 0;
    ev.saddr = saddr;
    ev.daddr = daddr;
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
    let listen_event = old == tcp_state::LISTEN || new == tcp_state::LISTEN;
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
    if old == tcp_state::CLOSE && new == tcp_state::LISTEN {
        if LISTENERS
            .insert(&lkey, &current_owner(), BPF_ANY as u64)
            .is_err()
        {
            count_failure(ctx, runner, &cfg, stat::LISTEN_MAP_FAIL, sport as u64);
        }
    } else if old == tcp_state::LISTEN && new == tcp_state::CLOSE {
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
        && new != tcp_state::LISTEN
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

    let cpu_pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let cpu_comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    let owner = if in_owner_context(old, new) {
        Owner {
            pid: cpu_pid,
            _pad: 0,
            comm: cpu_comm,
        }
    } else if old == tcp_state::LISTEN && new == tcp_state::SYN_RECV {
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
    if old == tcp_state::SYN_RECV && new == tcp_state::ESTABLISHED {
        // Count SYN_RECV from the SYN-ACK, as netstat shows it (the request
        // socket), not from the child socket's creation a moment ago.
        let wait = synack_wait_ns(&cfg, skaddr);
        if wait != 0 && (dwell == DWELL_UNKNOWN || wait > dwell) {
            dwell = wait;
        }
    }
    let fin =
        if new == tcp_state::CLOSE && (old == tcp_state::FIN_WAIT2 || old == tcp_state::CLOSING) {
            fin_flags(&cfg, skaddr)
        } else {
            0
        };
    let fields = EventFields {
        now,
        skaddr,
        dwell,
        owner,
        cpu_pid,
        cpu_comm,
        netns,
        sport,
        dport,
        family,
        old,
        new,
        flags: fin,
    };

    if !matched {
        // may_match_later: hold the event back until a later event of this
        // socket matches or proves it never will.
        let scratch = SCRATCH.get_ptr_mut(runner.slot)?;
        // SAFETY: per-CPU map value, exclusively ours for this program run.
        let ev = unsafe { &mut *scratch };
        fill_event(ev, rec, &cfg, &fields)?;
        ev.flags |= flag::REPLAYED;
        let st = SockState {
            since_ns: now,
            owner,
            followed: 0,
            has_pending: 1,
            _pad: [0; 2],
            netns,
        };
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
    // Written straight into the ring buffer: no copy.
    let wake = wakeup_flags(&cfg);
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            // SAFETY: the reserved slot is ours until submitted; every field
            // is written by fill_event.
            let ev = unsafe { &mut *entry.as_mut_ptr() };
            if fill_event(ev, rec, &cfg, &fields).is_some() {
                entry.submit(wake);
                count_in(runner.row, stat::SUBMITTED);
            } else {
                entry.discard(0);
            }
        }
        None => count_in(runner.row, stat::RINGBUF_FULL),
    }
    if !birth && tracked.is_none() {
        count_in(runner.row, stat::UNTRACKED);
    }

    if new == tcp_state::CLOSE {
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
            let st = SockState {
                since_ns: now,
                owner,
                followed: 1,
                has_pending: 0,
                _pad: [0; 2],
                netns,
            };
            if SOCKS.insert(skaddr, &st, BPF_ANY as u64).is_err() {
                count_failure(ctx, runner, &cfg, stat::SOCK_MAP_FAIL, skaddr);
            }
        }
    }
    Some(())
}
