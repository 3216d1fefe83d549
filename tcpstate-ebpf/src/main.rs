//! tcpstate's kernel side: one classic tracepoint program on
//! `sock:inet_sock_set_state`.
//!
//! Per event it: keeps TCP only, applies the namespace/family/port filters,
//! computes the time spent in the old state from per-socket tracking, attaches
//! the socket's owner (learned where the kernel runs in the owner's context),
//! and pushes one `Event` to the ring buffer, waking the reader only when the
//! buffer fills past a threshold (the reader also polls on a short timer).
#![no_std]
#![no_main]
// Map keys and values are passed by reference on purpose: by value, a
// `Borrow<V>` argument copies the struct (SockState is 152 bytes) onto the
// 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_ANY, BPF_F_MMAPABLE, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
        BPF_SOCK_OPS_TIMEOUT_INIT,
    },
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_netns_cookie,
        bpf_get_smp_processor_id, bpf_ktime_get_boot_ns, bpf_probe_read_kernel,
    },
    macros::{map, sock_ops, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{SockOpsContext, TracePointContext},
};
use aya_log_ebpf::warn;
use tcpstate_common::{
    AF_INET, COMM_LEN, Config, DWELL_UNKNOWN, Event, IPPROTO_TCP, ListenKey, Owner, SockState,
    TracepointLayout, flag, port_match, source, stat, tcp_state,
};

/// Written by the loader before load (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    layout: tcpstate_common::TracepointLayout {
        skaddr: 0,
        oldstate: 0,
        newstate: 0,
        sport: 0,
        dport: 0,
        family: 0,
        protocol: 0,
        protocol_size: 0,
        saddr: 0,
        daddr: 0,
        saddr_v6: 0,
        daddr_v6: 0,
    },
    synack: tcpstate_common::SynackLayout {
        skaddr: 0,
        req: 0,
        sport: 0,
        dport: 0,
        family: 0,
        saddr: 0,
        daddr: 0,
        saddr_v6: 0,
        daddr_v6: 0,
        present: 0,
    },
    netns_offsets: tcpstate_common::NetnsOffsets {
        skc_net: 0,
        ns_inum: 0,
        net_cookie: 0,
        sk_flags: 0,
        sock_done_bit: 0,
    },
    netns: 0,
    wakeup_bytes: 0,
    family: 0,
    port_filter: 0,
    verbose: 0,
    fast_layout: 0,
    _pad: [0; 3],
};

// Sizes here are defaults; the loader resizes every map from its flags.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

#[map]
static SOCKS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(65536, 0);

#[map]
static LISTENERS: LruHashMap<ListenKey, Owner> = LruHashMap::with_max_entries(4096, 0);

#[map]
static PORTS: Array<u8> = Array::with_max_entries(65536, 0);

/// Netns cookie -> inode. The sock_ops program only has the cookie
/// (`bpf_get_netns_cookie`); the tracepoint program learns the pair when a
/// socket starts listening, and the loader adds the `--netns` target's.
#[map]
static NETNS_COOKIES: LruHashMap<u64, u32> = LruHashMap::with_max_entries(1024, 0);

/// Counters, one row of `stat::COUNT` per CPU. A plain mmap-able array
/// rather than a per-CPU one so userspace reads it from memory: a map-lookup
/// syscall disables BPF tracing programs on its CPU while it runs (the kernel
/// then skips our tracepoint: a "recursion miss"), so polling counters with
/// syscalls would itself lose events. The loader sizes it to
/// CPUs x ROWS x COUNT.
#[map]
static STATS: Array<u64> = Array::with_max_entries(stat::COUNT, BPF_F_MMAPABLE);

/// Per-CPU scratch space for events that are not written straight into the
/// ring buffer (held-back first events, half-open events): an Event is too
/// large to build on the 512-byte BPF stack next to everything else.
#[map]
static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

/// First events held back until their socket matches the filter (see
/// `may_match_later`), by socket address; `SockState::has_pending` says one
/// is here.
#[map]
static PENDING: LruHashMap<u64, Event> = LruHashMap::with_max_entries(16384, 0);

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_handle(&ctx);
    0
}

#[inline(always)]
fn config() -> Config {
    // Volatile: the value is patched into .rodata by the loader, so the
    // compiler must not fold the zero initialiser into the code.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

#[inline(always)]
fn count(slot: u32) {
    count_in(stat::ROW_TRACING, slot)
}

/// Plain increments are exact: a row is only written by programs that cannot
/// interrupt each other on one CPU (tracepoint programs never nest; the
/// sock_ops program, which can interrupt them from softirq, has its own row).
#[inline(always)]
fn count_in(row: u32, slot: u32) {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let i = (cpu * stat::ROWS + row) * stat::COUNT + slot;
    if let Some(c) = STATS.get_ptr_mut(i) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn read<T>(ctx: &TracePointContext, off: u16) -> Result<T, i32> {
    unsafe { ctx.read_at::<T>(off as usize) }
}

/// A field of the `inet_sock_set_state` record. With the layout of Linux >=
/// 5.6 (checked against the format file at load time) the offset is a
/// constant and the field is loaded straight from the context, which the
/// verifier allows for tracepoints; any other layout is read with a helper
/// call at the offset the format file gave. `fast_layout` is read-only data,
/// so the verifier drops the branch not taken.
#[inline(always)]
fn field<T: Copy>(
    ctx: &TracePointContext,
    cfg: &Config,
    known: u16,
    runtime: u16,
) -> Result<T, i32> {
    if cfg.fast_layout != 0 {
        // Volatile: one load instruction at ctx + constant, never a copy
        // through a computed pointer (the verifier refuses those).
        Ok(unsafe {
            core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(known as usize).cast::<T>())
        })
    } else {
        read(ctx, runtime)
    }
}

/// An IPv4 address field, as bytes in network order.
#[inline(always)]
fn field_v4(
    ctx: &TracePointContext,
    cfg: &Config,
    known: u16,
    runtime: u16,
) -> Result<[u8; 4], i32> {
    if cfg.fast_layout != 0 {
        Ok(field::<u32>(ctx, cfg, known, runtime)?.to_ne_bytes())
    } else {
        read(ctx, runtime)
    }
}

/// An IPv6 address field: two 8-byte loads on the fast path.
#[inline(always)]
fn field_v6(
    ctx: &TracePointContext,
    cfg: &Config,
    known: u16,
    runtime: u16,
) -> Result<[u8; 16], i32> {
    if cfg.fast_layout != 0 {
        let hi = field::<u64>(ctx, cfg, known, runtime)?.to_ne_bytes();
        let lo = field::<u64>(ctx, cfg, known + 8, runtime)?.to_ne_bytes();
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&hi);
        a[8..].copy_from_slice(&lo);
        Ok(a)
    } else {
        read(ctx, runtime)
    }
}

/// `sk->__sk_common.skc_net.net`, or 0 when BTF gave no offsets.
#[inline(always)]
fn net_of(cfg: &Config, skaddr: u64) -> u64 {
    let off = cfg.netns_offsets;
    if off.skc_net == 0 {
        return 0;
    }
    unsafe { bpf_probe_read_kernel((skaddr + off.skc_net as u64) as *const u64) }.unwrap_or(0)
}

/// `net->ns.inum`: the inode `ip netns`/`/proc/PID/ns/net` show.
#[inline(always)]
fn netns_inode(cfg: &Config, net: u64) -> u32 {
    if net == 0 {
        return 0;
    }
    unsafe { bpf_probe_read_kernel((net + cfg.netns_offsets.ns_inum as u64) as *const u32) }
        .unwrap_or(0)
}

/// Remembers which netns inode a cookie stands for (see NETNS_COOKIES).
#[inline(always)]
fn learn_netns_cookie(cfg: &Config, net: u64, inode: u32) {
    let off = cfg.netns_offsets.net_cookie;
    if net == 0 || off == 0 {
        return;
    }
    if let Ok(cookie) = unsafe { bpf_probe_read_kernel((net + off as u64) as *const u64) } {
        let _ = NETNS_COOKIES.insert(cookie, inode, BPF_ANY as u64);
    }
}

/// Flags for the hand-over to a timewait socket: had the peer's FIN arrived?
/// `tcp_fin()` sets SOCK_DONE in `sk_flags` (not `sk_shutdown`, which close()
/// sets in full by itself).
#[inline(always)]
fn fin_flags(cfg: &Config, skaddr: u64) -> u8 {
    let off = cfg.netns_offsets.sk_flags;
    if off == 0 {
        return 0;
    }
    match unsafe { bpf_probe_read_kernel((skaddr + off as u64) as *const u64) } {
        Ok(f) if f & (1u64 << (cfg.netns_offsets.sock_done_bit & 63)) != 0 => {
            flag::FIN_KNOWN | flag::FIN_RECEIVED
        }
        Ok(_) => flag::FIN_KNOWN,
        Err(_) => 0,
    }
}

#[inline(always)]
fn port_matches(sport: u16, dport: u16) -> bool {
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
/// listener). Everything else runs
/// in softirq or timer context, where the on-CPU task is whoever was there.
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
/// line (a BPF subprogram) so the log-record code does not bloat, or confuse
/// the register allocation of, the hot path.
///
/// It returns a value, read by the caller, so that R0 is always written
/// before the subprogram exits: the log code ends in a void helper call
/// (`bpf_ringbuf_discard`), and LLVM otherwise lets the caller consume an R0
/// the verifier considers unreadable.
#[inline(never)]
fn log_map_failure(ctx: &TracePointContext, what: u32, key: u64) -> u32 {
    if what == stat::LISTEN_MAP_FAIL {
        warn!(ctx, "listener map update failed, port {}", key);
    } else {
        warn!(ctx, "socket map update failed for socket {:x}", key);
    }
    unsafe { core::ptr::read_volatile(&what) }
}

/// Submit flags: wake the reader only when the buffer is filling up.
#[inline(always)]
fn wakeup_flags(cfg: &Config) -> u64 {
    if cfg.wakeup_bytes == 0 {
        return 0;
    }
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= cfg.wakeup_bytes as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
fn emit_copy(cfg: &Config, ev: &Event) {
    emit_copy_in(stat::ROW_TRACING, cfg, ev)
}

#[inline(always)]
fn emit_copy_in(row: u32, cfg: &Config, ev: &Event) {
    match EVENTS.output::<Event>(ev, wakeup_flags(cfg)) {
        Ok(()) => count_in(row, stat::SUBMITTED),
        Err(_) => count_in(row, stat::RINGBUF_FULL),
    }
}

fn try_handle(ctx: &TracePointContext) -> Result<(), i32> {
    let cfg = config();
    let l = cfg.layout;

    // Cheapest rejections first: MPTCP and SCTP share this tracepoint.
    const K: TracepointLayout = TracepointLayout::SINCE_5_6;
    let protocol: u16 = if cfg.fast_layout != 0 {
        field(ctx, &cfg, K.protocol, l.protocol)?
    } else if l.protocol_size == 1 {
        read::<u8>(ctx, l.protocol)? as u16
    } else {
        read::<u16>(ctx, l.protocol)?
    };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let family: u16 = field(ctx, &cfg, K.family, l.family)?;
    if cfg.family != 0 && family != cfg.family {
        return Ok(());
    }
    let skaddr: u64 = field(ctx, &cfg, K.skaddr, l.skaddr)?;
    let old = field::<i32>(ctx, &cfg, K.oldstate, l.oldstate)? as u8;
    let new = field::<i32>(ctx, &cfg, K.newstate, l.newstate)? as u8;

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
    let listen_event = old == tcp_state::LISTEN || new == tcp_state::LISTEN;
    let (net, netns, netns_known) = match tracked {
        Some(t) => (0, unsafe { (*t).netns }, true),
        None if cfg.netns != 0 || cfg.port_filter == 0 || listen_event => {
            let net = net_of(&cfg, skaddr);
            (net, netns_inode(&cfg, net), true)
        }
        None => (0, 0, false),
    };
    if cfg.netns != 0 && netns != cfg.netns {
        return Ok(());
    }
    let sport: u16 = field(ctx, &cfg, K.sport, l.sport)?;
    let dport: u16 = field(ctx, &cfg, K.dport, l.dport)?;
    let now = unsafe { bpf_ktime_get_boot_ns() };

    // Listener owners are tracked whatever the filter, so a followed accepted
    // socket can inherit its listener's owner even with --rport.
    let lkey = ListenKey {
        netns,
        port: sport,
        family,
    };
    if old == tcp_state::CLOSE && new == tcp_state::LISTEN {
        learn_netns_cookie(&cfg, net, netns);
        if LISTENERS
            .insert(&lkey, &current_owner(), BPF_ANY as u64)
            .is_err()
        {
            if cfg.verbose == 0 {
                count(stat::LISTEN_MAP_FAIL);
            } else {
                count(log_map_failure(ctx, stat::LISTEN_MAP_FAIL, sport as u64));
            }
        }
    } else if old == tcp_state::LISTEN && new == tcp_state::CLOSE {
        let _ = LISTENERS.remove(&lkey);
    }

    let followed = match tracked {
        Some(st) => unsafe { (*st).followed != 0 },
        None => false,
    };
    let matched = cfg.port_filter == 0 || followed || port_matches(sport, dport);

    // Owner: from the current task where it is the owner, else inherited.
    // Not matched: hold the event back only if a later event of this socket
    // could still match, i.e. its first event lacks the port the filter is
    // about (CLOSE->SYN_SENT has local port 0 before the ephemeral port is
    // chosen; LISTEN->SYN_RECV may lack the remote port). Otherwise drop it
    // here, before any work.
    let may_match_later = birth
        && new != tcp_state::LISTEN
        && ((sport == 0 && cfg.port_filter & port_match::LOCAL != 0)
            || (dport == 0 && cfg.port_filter & port_match::REMOTE != 0));
    if !matched && !may_match_later {
        if tracked.is_some() {
            // Its tuple is complete now and still does not match: forget it.
            let _ = SOCKS.remove(skaddr);
        }
        return Ok(());
    }
    let netns = if netns_known {
        netns
    } else {
        netns_inode(&cfg, net_of(&cfg, skaddr))
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
        unsafe { LISTENERS.get(&lkey) }
            .copied()
            .unwrap_or(Owner::UNKNOWN)
    } else {
        match tracked {
            Some(st) => unsafe { (*st).owner },
            None => Owner::UNKNOWN,
        }
    };

    let dwell = match tracked {
        Some(t) => now.saturating_sub(unsafe { (*t).since_ns }),
        None => DWELL_UNKNOWN,
    };
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
        owner: &owner,
        cpu_pid,
        cpu_comm: &cpu_comm,
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
        let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
            return Ok(());
        };
        // SAFETY: per-CPU map value, exclusively ours for this program run.
        let ev = unsafe { &mut *scratch };
        fill_event(ev, ctx, &cfg, &fields)?;
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
            count(stat::SOCK_MAP_FAIL);
        }
        return Ok(());
    }

    if let Some(t) = tracked
        && unsafe { (*t).has_pending } != 0
    {
        if let Some(p) = PENDING.get_ptr(skaddr) {
            emit_copy(&cfg, unsafe { &*p });
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
            if fill_event(ev, ctx, &cfg, &fields).is_ok() {
                entry.submit(wake);
                count(stat::SUBMITTED);
            } else {
                entry.discard(0);
            }
        }
        None => count(stat::RINGBUF_FULL),
    }
    if !birth && tracked.is_none() {
        count(stat::UNTRACKED);
    }

    if new == tcp_state::CLOSE {
        let _ = SOCKS.remove(skaddr);
        return Ok(());
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
                if cfg.verbose == 0 {
                    count(stat::SOCK_MAP_FAIL);
                } else {
                    count(log_map_failure(ctx, stat::SOCK_MAP_FAIL, skaddr));
                }
            }
        }
    }
    Ok(())
}

/// What one state change carries, gathered before the event is written.
struct EventFields<'a> {
    now: u64,
    skaddr: u64,
    dwell: u64,
    owner: &'a Owner,
    cpu_pid: u32,
    cpu_comm: &'a [u8; COMM_LEN],
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
fn fill_event(
    ev: &mut Event,
    ctx: &TracePointContext,
    cfg: &Config,
    f: &EventFields<'_>,
) -> Result<(), i32> {
    const K: TracepointLayout = TracepointLayout::SINCE_5_6;
    let l = cfg.layout;
    ev.ts_ns = f.now;
    ev.skaddr = f.skaddr;
    ev.dwell_ns = f.dwell;
    ev.owner_pid = f.owner.pid;
    ev.owner_comm = f.owner.comm;
    ev.cpu_pid = f.cpu_pid;
    ev.cpu_comm = *f.cpu_comm;
    ev.netns = f.netns;
    ev.sport = f.sport;
    ev.dport = f.dport;
    ev.family = f.family;
    ev.oldstate = f.old;
    ev.newstate = f.new;
    ev.source = source::TRACEPOINT;
    ev.flags = f.flags;
    ev._pad = [0; 2];
    if f.family == AF_INET {
        ev.saddr = [0; 16];
        ev.daddr = [0; 16];
        ev.saddr[..4].copy_from_slice(&field_v4(ctx, cfg, K.saddr, l.saddr)?);
        ev.daddr[..4].copy_from_slice(&field_v4(ctx, cfg, K.daddr, l.daddr)?);
    } else {
        ev.saddr = field_v6(ctx, cfg, K.saddr_v6, l.saddr_v6)?;
        ev.daddr = field_v6(ctx, cfg, K.daddr_v6, l.daddr_v6)?;
    }
    Ok(())
}

/// Fills the scratch event for a request socket (half-open connection) and
/// submits it. These events have no full socket yet: the tracker in
/// userspace follows them by tuple (and, for SYN-ACK retransmits, by the
/// request socket's address).
#[inline(always)]
fn emit_request_event(cfg: &Config, src: u8, req: u64, netns: u32, tuple: &Tuple) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let owner = unsafe {
        LISTENERS.get(&ListenKey {
            netns,
            port: tuple.sport,
            family: tuple.family,
        })
    }
    .copied()
    .unwrap_or(Owner::UNKNOWN);
    // SAFETY: per-CPU map value, exclusively ours for this program run.
    let ev = unsafe { &mut *scratch };
    ev.ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    ev.skaddr = req;
    ev.dwell_ns = DWELL_UNKNOWN;
    ev.owner_pid = owner.pid;
    ev.owner_comm = owner.comm;
    ev.cpu_pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    ev.cpu_comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    ev.netns = netns;
    ev.sport = tuple.sport;
    ev.dport = tuple.dport;
    ev.family = tuple.family;
    ev.oldstate = if src == source::SOCK_OPS {
        tcp_state::LISTEN
    } else {
        tcp_state::SYN_RECV
    };
    ev.newstate = tcp_state::SYN_RECV;
    ev.source = src;
    ev.flags = 0;
    ev._pad = [0; 2];
    ev.saddr = tuple.saddr;
    ev.daddr = tuple.daddr;
    let row = if src == source::SOCK_OPS {
        stat::ROW_SOCK_OPS
    } else {
        stat::ROW_TRACING
    };
    emit_copy_in(row, cfg, ev);
}

struct Tuple {
    family: u16,
    sport: u16,
    dport: u16,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

#[inline(always)]
fn request_wanted(cfg: &Config, netns: u32, t: &Tuple) -> bool {
    (cfg.family == 0 || cfg.family == t.family)
        && (cfg.netns == 0 || cfg.netns == netns)
        && (cfg.port_filter == 0 || port_matches(t.sport, t.dport))
}

/// `tcp:tcp_retransmit_synack`: a half-open connection's SYN-ACK was resent
/// (the client's final ACK has not arrived).
#[tracepoint]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    let _ = try_synack(&ctx);
    0
}

fn try_synack(ctx: &TracePointContext) -> Result<(), i32> {
    let cfg = config();
    let l = cfg.synack;
    let family: u16 = read(ctx, l.family)?;
    let mut t = Tuple {
        family,
        sport: read(ctx, l.sport)?,
        dport: read(ctx, l.dport)?,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    let listener: u64 = read(ctx, l.skaddr)?;
    let netns = netns_inode(&cfg, net_of(&cfg, listener));
    if !request_wanted(&cfg, netns, &t) {
        return Ok(());
    }
    if family == AF_INET {
        t.saddr[..4].copy_from_slice(&read::<[u8; 4]>(ctx, l.saddr)?);
        t.daddr[..4].copy_from_slice(&read::<[u8; 4]>(ctx, l.daddr)?);
    } else {
        t.saddr = read(ctx, l.saddr_v6)?;
        t.daddr = read(ctx, l.daddr_v6)?;
    }
    let req: u64 = read(ctx, l.req)?;
    emit_request_event(&cfg, source::SYNACK, req, netns, &t);
    Ok(())
}

/// sock_ops on the cgroup-v2 root: runs with `BPF_SOCK_OPS_TIMEOUT_INIT` on
/// a request socket (not a full socket) when a SYN is accepted and the
/// SYN-ACK is built: the start of a half-open connection, which the state
/// tracepoint never shows (TCP_NEW_SYN_RECV is not emitted).
#[sock_ops]
pub fn request_sock_created(ctx: SockOpsContext) -> u32 {
    if ctx.op() == BPF_SOCK_OPS_TIMEOUT_INIT && unsafe { (*ctx.ops).is_fullsock } == 0 {
        on_request_sock(&ctx);
    }
    // 1 = carry on; the reply stays 0 so the kernel keeps its own timeout.
    1
}

#[inline(always)]
fn on_request_sock(ctx: &SockOpsContext) {
    let cfg = config();
    let family = ctx.family() as u16;
    // local_port is host order; remote_port is network order in the upper
    // 16 bits on little-endian (see sock_ops_convert_ctx_access).
    let rp = ctx.remote_port();
    let rport = if rp > 0xffff {
        u16::from_be((rp >> 16) as u16)
    } else {
        u16::from_be(rp as u16)
    };
    let mut t = Tuple {
        family,
        sport: ctx.local_port() as u16,
        dport: rport,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    let cookie = unsafe { bpf_get_netns_cookie(ctx.ops.cast()) };
    let netns = unsafe { NETNS_COOKIES.get(cookie) }.copied().unwrap_or(0);
    if !request_wanted(&cfg, netns, &t) {
        return;
    }
    if family == AF_INET {
        t.saddr[..4].copy_from_slice(&ctx.local_ip4().to_ne_bytes());
        t.daddr[..4].copy_from_slice(&ctx.remote_ip4().to_ne_bytes());
    } else {
        // One volatile load per word: the verifier only allows context reads
        // at a constant offset from the unmodified context pointer.
        let o = ctx.ops;
        let (l6, r6) = unsafe {
            use core::ptr::{addr_of, read_volatile as rv};
            (
                [
                    rv(addr_of!((*o).local_ip6[0])),
                    rv(addr_of!((*o).local_ip6[1])),
                    rv(addr_of!((*o).local_ip6[2])),
                    rv(addr_of!((*o).local_ip6[3])),
                ],
                [
                    rv(addr_of!((*o).remote_ip6[0])),
                    rv(addr_of!((*o).remote_ip6[1])),
                    rv(addr_of!((*o).remote_ip6[2])),
                    rv(addr_of!((*o).remote_ip6[3])),
                ],
            )
        };
        for i in 0..4 {
            t.saddr[i * 4..i * 4 + 4].copy_from_slice(&l6[i].to_ne_bytes());
            t.daddr[i * 4..i * 4 + 4].copy_from_slice(&r6[i].to_ne_bytes());
        }
    }
    emit_request_event(&cfg, source::SOCK_OPS, 0, netns, &t);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
