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

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel,
    },
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use tcpstate_common::{
    AF_INET, COMM_LEN, Config, DWELL_UNKNOWN, Event, IPPROTO_TCP, ListenKey, Owner,
    SockState, flag, port_match, source, stat, tcp_state,
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
    netns_offsets: tcpstate_common::NetnsOffsets {
        skc_net: 0,
        ns_inum: 0,
    },
    netns: 0,
    wakeup_bytes: 0,
    family: 0,
    port_filter: 0,
    verbose: 0,
};

// Sizes here are defaults; the loader resizes every map from its flags.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

#[map]
static SOCKS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(65536, 0);

#[map]
static LISTENERS: LruHashMap<ListenKey, Owner> = LruHashMap::with_max_entries(4096, 0);

#[map]
static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(1024, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Per-CPU scratch space: the event and socket state are built here because
/// they do not fit the 512-byte BPF stack together.
#[map]
static SCRATCH: PerCpuArray<SockState> = PerCpuArray::with_max_entries(1, 0);

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
    if let Some(c) = STATS.get_ptr_mut(slot) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn read<T>(ctx: &TracePointContext, off: u16) -> Result<T, i32> {
    unsafe { ctx.read_at::<T>(off as usize) }
}

/// `sk->__sk_common.skc_net.net->ns.inum`, or 0 when BTF gave no offsets.
#[inline(always)]
fn netns_of(cfg: &Config, skaddr: u64) -> u32 {
    let off = cfg.netns_offsets;
    if off.skc_net == 0 {
        return 0;
    }
    let net: u64 = match unsafe { bpf_probe_read_kernel((skaddr + off.skc_net as u64) as *const u64) } {
        Ok(p) => p,
        Err(_) => return 0,
    };
    unsafe { bpf_probe_read_kernel((net + off.ns_inum as u64) as *const u32) }.unwrap_or(0)
}

#[inline(always)]
fn port_matches(sport: u16, dport: u16) -> bool {
    let local = unsafe { PORTS.get(sport) }.copied().unwrap_or(0);
    let remote = unsafe { PORTS.get(dport) }.copied().unwrap_or(0);
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
/// socket: connect(), listen(), and close()/shutdown(). Everything else runs
/// in softirq or timer context, where the on-CPU task is whoever was there.
#[inline(always)]
fn in_owner_context(old: u8, new: u8) -> bool {
    (old == tcp_state::CLOSE && (new == tcp_state::SYN_SENT || new == tcp_state::LISTEN))
        || new == tcp_state::FIN_WAIT1
        || (old == tcp_state::CLOSE_WAIT && new == tcp_state::LAST_ACK)
}

/// The first event of a new socket: anything tracked under this address
/// before belongs to a freed socket whose memory was reused.
#[inline(always)]
fn is_birth(old: u8, new: u8) -> bool {
    old == tcp_state::CLOSE || (old == tcp_state::LISTEN && new == tcp_state::SYN_RECV)
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
    match EVENTS.output::<Event>(ev, wakeup_flags(cfg)) {
        Ok(()) => count(stat::SUBMITTED),
        Err(_) => count(stat::RINGBUF_FULL),
    }
}

fn try_handle(ctx: &TracePointContext) -> Result<(), i32> {
    let cfg = config();
    let l = cfg.layout;

    // Cheapest rejections first: MPTCP and SCTP share this tracepoint.
    let protocol: u16 = if l.protocol_size == 1 {
        read::<u8>(ctx, l.protocol)? as u16
    } else {
        read::<u16>(ctx, l.protocol)?
    };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let family: u16 = read(ctx, l.family)?;
    if cfg.family != 0 && family != cfg.family {
        return Ok(());
    }
    let skaddr: u64 = read(ctx, l.skaddr)?;
    let netns = netns_of(&cfg, skaddr);
    if cfg.netns != 0 && netns != cfg.netns {
        return Ok(());
    }
    let old = read::<i32>(ctx, l.oldstate)? as u8;
    let new = read::<i32>(ctx, l.newstate)? as u8;
    let sport: u16 = read(ctx, l.sport)?;
    let dport: u16 = read(ctx, l.dport)?;
    let now = unsafe { bpf_ktime_get_boot_ns() };

    // Listener owners are tracked whatever the filter, so a followed accepted
    // socket can inherit its listener's owner even with --rport.
    let lkey = ListenKey {
        netns,
        port: sport,
        family,
    };
    if old == tcp_state::CLOSE && new == tcp_state::LISTEN {
        if LISTENERS.insert(&lkey, &current_owner(), BPF_ANY as u64).is_err() {
            count(stat::LISTEN_MAP_FAIL);
            if cfg.verbose != 0 {
                warn!(ctx, "listener map update failed, port {}", sport);
            }
        }
    } else if old == tcp_state::LISTEN && new == tcp_state::CLOSE {
        let _ = LISTENERS.remove(&lkey);
    }

    let birth = is_birth(old, new);
    let tracked: Option<*mut SockState> = if birth {
        None
    } else {
        SOCKS.get_ptr_mut(skaddr)
    };
    let followed = match tracked {
        Some(st) => unsafe { (*st).followed != 0 },
        None => false,
    };
    let matched = cfg.port_filter == 0 || followed || port_matches(sport, dport);

    // Owner: from the current task where it is the owner, else inherited.
    let owner = if in_owner_context(old, new) {
        current_owner()
    } else if old == tcp_state::LISTEN && new == tcp_state::SYN_RECV {
        unsafe { LISTENERS.get(&lkey) }.copied().unwrap_or(Owner::UNKNOWN)
    } else {
        match tracked {
            Some(st) => unsafe { (*st).owner },
            None => Owner::UNKNOWN,
        }
    };

    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: per-CPU map value, exclusively ours for this program run.
    let st = unsafe { &mut *scratch };
    st.since_ns = now;
    st.owner = owner;
    st.followed = 1;
    st.has_pending = 0;
    let ev = &mut st.pending;
    ev.ts_ns = now;
    ev.skaddr = skaddr;
    ev.dwell_ns = match tracked {
        Some(t) => now.saturating_sub(unsafe { (*t).since_ns }),
        None => DWELL_UNKNOWN,
    };
    ev.owner_pid = owner.pid;
    ev.owner_comm = owner.comm;
    ev.cpu_pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    ev.cpu_comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    ev.netns = netns;
    ev.sport = sport;
    ev.dport = dport;
    ev.family = family;
    ev.oldstate = old;
    ev.newstate = new;
    ev.source = source::TRACEPOINT;
    ev.flags = 0;
    ev._pad = [0; 2];
    if family == AF_INET {
        ev.saddr = [0; 16];
        ev.daddr = [0; 16];
        ev.saddr[..4].copy_from_slice(&read::<[u8; 4]>(ctx, l.saddr)?);
        ev.daddr[..4].copy_from_slice(&read::<[u8; 4]>(ctx, l.daddr)?);
    } else {
        ev.saddr = read(ctx, l.saddr_v6)?;
        ev.daddr = read(ctx, l.daddr_v6)?;
    }

    if !matched {
        if birth && new != tcp_state::LISTEN {
            // Its port may not be known yet (CLOSE->SYN_SENT has local port 0,
            // LISTEN->SYN_RECV can lack the tuple): hold the event back until a
            // later event of this socket matches or proves it never will.
            ev.flags = flag::REPLAYED;
            st.followed = 0;
            st.has_pending = 1;
            if SOCKS.insert(skaddr, &*st, BPF_ANY as u64).is_err() {
                count(stat::SOCK_MAP_FAIL);
            }
        } else if tracked.is_some() {
            // Its tuple is complete now and still does not match: forget it.
            let _ = SOCKS.remove(skaddr);
        }
        return Ok(());
    }

    if let Some(t) = tracked {
        if unsafe { (*t).has_pending } != 0 {
            emit_copy(&cfg, unsafe { &(*t).pending });
        }
    }
    emit_copy(&cfg, &st.pending);

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
            if SOCKS.insert(skaddr, &*st, BPF_ANY as u64).is_err() {
                count(stat::SOCK_MAP_FAIL);
                if cfg.verbose != 0 {
                    warn!(ctx, "socket map update failed for {:x}", skaddr);
                }
            }
        }
    }
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
