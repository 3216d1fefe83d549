//! What the cause hooks share: one event that says why a socket's next state
//! change happens (a reset, a socket error, a retransmit), filtered like the
//! state changes and written into the same ring buffer. Userspace keeps the
//! causes per socket address and attaches them to the socket's CLOSE row, so
//! the state-change path itself does no extra work.

use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns};
use tcpstate_common::{
    COMM_LEN, DWELL_UNKNOWN, Event, IPPROTO_TCP, OWNER_UNKNOWN, stat, tcp_state,
};

use crate::{
    kernel::{netns_of, read},
    maps::{EVENTS, config, count_in, wakeup_flags},
    record::{Record, SockRecord},
    state_change::port_matches,
};

/// Emits a cause event for full socket `sk`. Request and timewait sockets
/// (which some reset paths pass) are skipped: they have no CLOSE row and
/// their memory is not a `struct sock`.
#[inline(always)]
pub fn emit(sk: u64, source: u8, detail: u8) -> Option<()> {
    let cfg = config();
    if sk == 0 || cfg.offsets.skc_state == 0 {
        return None;
    }
    let state = read::<u8>(sk + cfg.offsets.skc_state as u64)?;
    if state == tcp_state::TIME_WAIT || state == tcp_state::NEW_SYN_RECV {
        return None;
    }
    let rec = SockRecord::new(sk)?;
    if rec.protocol(&cfg)? != IPPROTO_TCP {
        return None;
    }
    let family = rec.family(&cfg)?;
    if cfg.family != 0 && family != cfg.family {
        return None;
    }
    let (sport, dport) = rec.ports(&cfg)?;
    if cfg.port_filter != 0 && !port_matches(sport, dport) {
        return None;
    }
    let netns = netns_of(&cfg, sk);
    if cfg.netns != 0 && netns != cfg.netns {
        return None;
    }
    let (saddr, daddr) = rec.addrs(&cfg, family)?;
    let wake = wakeup_flags(&cfg);
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_in(stat::ROW_CAUSE, stat::RINGBUF_FULL);
        return None;
    };
    // SAFETY: the reserved slot is ours until submitted; every field is
    // written below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    ev.skaddr = sk;
    ev.dwell_ns = DWELL_UNKNOWN;
    ev.owner_pid = OWNER_UNKNOWN;
    ev.owner_comm = [0; COMM_LEN];
    ev.cpu_pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    ev.cpu_comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    ev.netns = netns;
    ev.sport = sport;
    ev.dport = dport;
    ev.family = family;
    ev.oldstate = state;
    ev.newstate = state;
    ev.source = source;
    ev.flags = 0;
    ev.retransmits = 0;
    ev.detail = detail;
    ev.saddr = saddr;
    ev.daddr = daddr;
    entry.submit(wake);
    count_in(stat::ROW_CAUSE, stat::SUBMITTED);
    Some(())
}

/// The socket pointer in a BTF tracepoint's first argument, as a number.
#[inline(always)]
pub fn first_arg(ctx: &aya_ebpf::programs::BtfTracePointContext) -> u64 {
    use aya_ebpf::EbpfContext as _;
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(ctx.as_ptr() as *const u64) }.unwrap_or(0)
}
