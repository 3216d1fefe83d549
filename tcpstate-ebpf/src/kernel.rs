//! Reads from kernel memory through the offsets the loader resolved from
//! BTF (Rust eBPF programs have no CO-RE).

use aya_ebpf::helpers::bpf_probe_read_kernel;
use tcpstate_common::{Config, flag};

#[inline(always)]
pub fn read<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// Pointer argument `n` of a BTF tracepoint, as a number: read through the
/// helper, so the verifier treats it as a plain value the offsets can be
/// added to (0 if it cannot be read).
#[inline(always)]
pub fn arg(ctx: &aya_ebpf::programs::BtfTracePointContext, n: usize) -> u64 {
    use aya_ebpf::EbpfContext as _;
    read::<u64>(ctx.as_ptr() as u64 + 8 * n as u64).unwrap_or(0)
}

/// `sk->__sk_common.skc_net.net`, or 0 when BTF gave no offsets.
#[inline(always)]
pub fn net_of(cfg: &Config, sk: u64) -> u64 {
    let off = cfg.offsets.skc_net;
    if off == 0 {
        return 0;
    }
    read::<u64>(sk + off as u64).unwrap_or(0)
}

/// `net->ns.inum`: the inode `ip netns`/`/proc/PID/ns/net` show.
#[inline(always)]
pub fn netns_inode(cfg: &Config, net: u64) -> u32 {
    if net == 0 {
        return 0;
    }
    read::<u32>(net + cfg.offsets.ns_inum as u64).unwrap_or(0)
}

/// The namespace inode of a socket (full or request socket: both start
/// with `struct sock_common`).
#[inline(always)]
pub fn netns_of(cfg: &Config, sk: u64) -> u32 {
    netns_inode(cfg, net_of(cfg, sk))
}

/// The cgroup-v2 id of a full socket, `sk->sk_cgrp_data.cgroup->kn->id`:
/// the cgroup its creator ran in (an accepted socket gets its listener's),
/// kept for the socket's life. 0 when BTF gave no offsets or a read fails.
#[inline(always)]
pub fn cgroup_of(cfg: &Config, sk: u64) -> u64 {
    let o = cfg.offsets;
    if o.sk_cgroup == 0 {
        return 0;
    }
    let cgroup = read::<u64>(sk + o.sk_cgroup as u64).unwrap_or(0);
    if cgroup == 0 {
        return 0;
    }
    let kn = read::<u64>(cgroup + o.cgroup_kn as u64).unwrap_or(0);
    if kn == 0 {
        return 0;
    }
    read::<u64>(kn + o.kn_id as u64).unwrap_or(0)
}

/// Whether `--container` / `--cgroup` already ruled this cgroup out;
/// counted in counter row `row` if so.
#[inline(always)]
pub fn cgroup_dropped(row: u32, cfg: &Config, cgroup_id: u64) -> bool {
    let dropped = cfg.cgroup_filter != 0
        && unsafe { crate::maps::CGROUPS.get(&cgroup_id) }
            .is_some_and(|v| *v == tcpstate_common::cgroup_verdict::DROP);
    if dropped {
        crate::maps::count_in(row, tcpstate_common::stat::CGROUP_DROPPED);
    }
    dropped
}

/// Flags for the hand-over to a timewait socket: had the peer's FIN arrived?
/// `tcp_fin()` sets SOCK_DONE in `sk_flags` (not `sk_shutdown`, which close()
/// sets in full by itself).
#[inline(always)]
pub fn fin_flags(cfg: &Config, sk: u64) -> u8 {
    let off = cfg.offsets.sk_flags;
    if off == 0 {
        return 0;
    }
    match read::<u64>(sk + off as u64) {
        Some(f) if f & (1u64 << (cfg.offsets.sock_done_bit & 63)) != 0 => {
            flag::FIN_KNOWN | flag::FIN_RECEIVED
        }
        Some(_) => flag::FIN_KNOWN,
        None => 0,
    }
}

/// On SYN_RECV->ESTABLISHED, the kernel has just measured the SYN-ACK's
/// round trip into `srtt_us` (first sample, scaled by 8): the time from the
/// SYN-ACK to the final ACK, which is how long netstat would have shown the
/// connection in SYN_RECV. 0 when unknown.
#[inline(always)]
pub fn synack_wait_ns(cfg: &Config, sk: u64) -> u64 {
    let off = cfg.offsets.srtt_us;
    if off == 0 {
        return 0;
    }
    read::<u32>(sk + off as u64).map_or(0, |s| (s as u64 >> 3) * 1000)
}
