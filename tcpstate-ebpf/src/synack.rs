//! `tcp_retransmit_synack`: a half-open connection's SYN-ACK was resent
//! because the client's final ACK has not arrived. The state tracepoint never
//! shows request sockets (TCP_NEW_SYN_RECV is set by a plain store), so this
//! is where a half-open connection that lingers becomes visible; one that
//! completes promptly costs nothing here. The event carries the time since
//! the first SYN-ACK (`snt_synack`), so userspace can date the connection's
//! entry into SYN_RECV.
//!
//! Two front ends feed one handler. The BTF tracepoint is the default: the
//! kernel skips a classic tracepoint program whenever any other classic
//! tracepoint or kprobe program (another tool's, say) is running on the CPU
//! the timer interrupted, and a skipped first retransmit would misdate the
//! connection. The classic tracepoint is the fallback where kernel BTF lacks
//! what the BTF program reads.

use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, bpf_ktime_get_ns},
    programs::{BtfTracePointContext, TracePointContext},
};
use tcpstate_common::{AF_INET, Config, DWELL_UNKNOWN, Hook, ListenKey, Owner, TcpState, stat};

use crate::{
    event::{Fields, on_cpu},
    kernel::{arg, cgroup_dropped, cgroup_of, netns_of, read},
    maps::{LISTENERS, SCRATCH, config, emit_copy, slot},
    record::{Record, SockRecord, v4},
    state_change::port_matches,
};

fn field<T>(ctx: &TracePointContext, off: u16) -> Option<T> {
    unsafe { ctx.read_at::<T>(off as usize) }.ok()
}

/// `tcp:tcp_retransmit_synack` (classic): the record holds the tuple.
pub fn from_tracepoint(ctx: &TracePointContext) -> Option<()> {
    let cfg = config();
    let l = cfg.synack;
    let tuple = (
        field(ctx, l.family)?,
        field(ctx, l.sport)?,
        field(ctx, l.dport)?,
    );
    handle(
        &cfg,
        field(ctx, l.skaddr)?,
        field(ctx, l.req)?,
        tuple,
        |family| {
            if family == AF_INET {
                Some((v4(field(ctx, l.saddr)?), v4(field(ctx, l.daddr)?)))
            } else {
                Some((field(ctx, l.saddr_v6)?, field(ctx, l.daddr_v6)?))
            }
        },
    )
}

/// `tp_btf/tcp_retransmit_synack(const struct sock *sk, const struct
/// request_sock *req)`: the tuple is read from the request socket, which
/// starts with `struct sock_common` like a full socket.
pub fn from_btf(ctx: &BtfTracePointContext) -> Option<()> {
    let cfg = config();
    let req = SockRecord::new(arg(ctx, 1))?;
    let family = req.family(&cfg)?;
    let (sport, dport) = req.common_ports();
    handle(
        &cfg,
        arg(ctx, 0),
        req.sk,
        (family, sport, dport),
        |family| req.addrs(&cfg, family),
    )
}

/// One SYN-ACK retransmit of request socket `req` on `listener`, with its
/// (family, local port, remote port); `addrs` reads the addresses once the
/// filters passed.
#[inline(always)]
fn handle(
    cfg: &Config,
    listener: u64,
    req: u64,
    (family, sport, dport): (u16, u16, u16),
    addrs: impl FnOnce(u16) -> Option<([u8; 16], [u8; 16])>,
) -> Option<()> {
    if (cfg.family != 0 && cfg.family != family)
        || (cfg.port_filter != 0 && !port_matches(sport, dport))
    {
        return None;
    }
    let netns = netns_of(cfg, listener);
    if cfg.netns != 0 && cfg.netns != netns {
        return None;
    }
    // A request socket has no cgroup of its own: its child will get the
    // listener's.
    let cgroup_id = cgroup_of(cfg, listener);
    if cgroup_dropped(stat::ROW_SYNACK, cfg, cgroup_id) {
        return None;
    }
    let (saddr, daddr) = addrs(family)?;
    // snt_synack is µs of CLOCK_MONOTONIC (tcp_clock_us), which is what
    // bpf_ktime_get_ns reads.
    let o = cfg.offsets;
    let first_synack_us = if o.snt_synack != 0 {
        read::<u64>(req + o.snt_synack as u64).unwrap_or(0)
    } else {
        0
    };
    let since_first = if first_synack_us != 0 {
        unsafe { bpf_ktime_get_ns() }.saturating_sub(first_synack_us * 1000)
    } else {
        DWELL_UNKNOWN
    };
    // num_retrans is incremented after this tracepoint (inet_rtx_syn_ack).
    let previous = if o.num_retrans != 0 {
        read::<u8>(req + o.num_retrans as u64).unwrap_or(0)
    } else {
        0
    };
    let owner = unsafe {
        LISTENERS.get(&ListenKey {
            netns,
            port: sport,
            family,
        })
    }
    .copied()
    .unwrap_or(Owner::UNKNOWN);

    // Slot 1: slot 0 may be in use by a state-change program this one
    // interrupted on the same CPU.
    let ev = unsafe { &mut *SCRATCH.get_ptr_mut(slot::SYNACK)? };
    let fields = Fields {
        now: unsafe { bpf_ktime_get_boot_ns() },
        skaddr: req,
        dwell: since_first,
        cgroup_id,
        owner,
        on_cpu: on_cpu(),
        netns,
        sport,
        dport,
        family,
        old: TcpState::SynRecv.raw(),
        new: TcpState::SynRecv.raw(),
        source: Hook::Synack.raw(),
        flags: 0,
        retransmits: previous.saturating_add(1),
        detail: 0,
    };
    fields.write(ev, saddr, daddr);
    emit_copy(stat::ROW_SYNACK, cfg, ev);
    Some(())
}
