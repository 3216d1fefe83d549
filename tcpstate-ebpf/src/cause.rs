//! What the cause hooks share: one event that says why a socket's next state
//! change happens (a reset, a socket error, a retransmit), filtered like the
//! state changes and written into the same ring buffer. Userspace keeps the
//! causes per socket address and attaches them to the socket's CLOSE row, so
//! the state-change path itself does no extra work.

use aya_ebpf::helpers::bpf_ktime_get_boot_ns;
use tcpstate_common::{DWELL_UNKNOWN, Hook, IPPROTO_TCP, Owner, TcpState, stat};

use crate::{
    event::{Fields, on_cpu, submit},
    kernel::{netns_of, read},
    maps::config,
    record::{Record, SockRecord},
    state_change::port_matches,
};

/// Emits a cause event for full socket `sk`. Request and timewait sockets
/// (which some reset paths pass) are skipped: they have no CLOSE row and
/// their memory is not a `struct sock`.
#[inline(always)]
pub fn emit(sk: u64, hook: Hook, detail: u8) -> Option<()> {
    let cfg = config();
    if sk == 0 || cfg.offsets.skc_state == 0 {
        return None;
    }
    let state = read::<u8>(sk + cfg.offsets.skc_state as u64)?;
    if state == TcpState::TimeWait.raw() || state == TcpState::NewSynRecv.raw() {
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
    let fields = Fields {
        now: unsafe { bpf_ktime_get_boot_ns() },
        skaddr: sk,
        dwell: DWELL_UNKNOWN,
        // Causes are joined to their socket's rows, which carry it.
        cgroup_id: 0,
        owner: Owner::UNKNOWN,
        on_cpu: on_cpu(),
        netns,
        sport,
        dport,
        family,
        old: state,
        new: state,
        source: hook.raw(),
        flags: 0,
        retransmits: 0,
        detail,
    };
    submit(stat::ROW_CAUSE, &cfg, |ev| {
        fields.write(ev, saddr, daddr);
        Some(())
    });
    Some(())
}
