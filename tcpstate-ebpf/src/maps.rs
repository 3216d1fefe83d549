//! The maps and the load-time configuration every handler shares, and the
//! small helpers around them (counters, ring-buffer submission).

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_get_smp_processor_id,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use tcpstate_common::{
    Config, Event, KernelOffsets, ListenKey, Owner, SockState, SynackLayout, TracepointLayout, stat,
};

/// Written by the loader before load (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config {
    layout: TracepointLayout {
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
    synack: SynackLayout {
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
    offsets: KernelOffsets {
        skc_net: 0,
        ns_inum: 0,
        sk_flags: 0,
        sock_done_bit: 0,
        sk_protocol: 0,
        skc_v6_daddr: 0,
        srtt_us: 0,
        snt_synack: 0,
        num_retrans: 0,
        inet_sport: 0,
        sk_err: 0,
        skc_state: 0,
        sk_cgroup: 0,
        cgroup_kn: 0,
        kn_id: 0,
    },
    netns: 0,
    wakeup_bytes: 0,
    family: 0,
    port_filter: 0,
    verbose: 0,
    fast_layout: 0,
    hold_back: 0,
    rst_reason_arg: 0,
    retransmit_err_arg: 0,
    cgroup_filter: 0,
    _pad: [0; 3],
};

#[inline(always)]
pub fn config() -> Config {
    // Volatile: the value is patched into .rodata by the loader, so the
    // compiler must not fold the zero initialiser into the code.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

// Sizes here are defaults; the loader resizes every map from its flags.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Per-socket tracking (key: socket address), removed at CLOSE.
#[map]
pub static SOCKS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(65536, 0);

/// Owners of listening sockets: accepted sockets inherit them. Filled here
/// at CLOSE->LISTEN and by the loader from its start-up snapshot (listeners
/// that predate tracing, in every network namespace).
#[map]
pub static LISTENERS: LruHashMap<ListenKey, Owner> = LruHashMap::with_max_entries(4096, 0);

/// `--container` / `--cgroup` verdicts by cgroup id (`cgroup_verdict`),
/// written by userspace as it learns each cgroup. LRU: an evicted verdict
/// only means that cgroup's next change goes to userspace to be judged.
#[map]
pub static CGROUPS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(4096, 0);

/// Port filter: an array indexed by port (no hashing), values are
/// `port_match` bits.
#[map]
pub static PORTS: Array<u8> = Array::with_max_entries(65536, 0);

/// Counters, one row of `stat::COUNT` per CPU and program kind. A plain
/// mmap-able array rather than a per-CPU one so userspace reads it from
/// memory: a map-lookup syscall disables BPF tracing programs on its CPU
/// while it runs, so polling counters with syscalls would itself lose
/// events. The loader sizes it to CPUs x ROWS x COUNT.
#[map]
pub static STATS: Array<u64> = Array::with_max_entries(stat::COUNT, BPF_F_MMAPABLE);

/// Per-CPU scratch space for events not written straight into the ring
/// buffer (held-back first events, SYN-ACK events): an Event is too large
/// to build on the 512-byte BPF stack next to everything else.
#[map]
pub static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(3, 0);

/// Scratch slots, one per program that may interrupt another on a CPU.
pub mod slot {
    pub const MAIN: u32 = 0;
    pub const SYNACK: u32 = 1;
    pub const NESTED: u32 = 2;
}

/// Per CPU: non-zero while the main state-change program runs there. The
/// kernel skips a program that is already running on the CPU (a softirq
/// interrupting it), so a second program on the same hook handles exactly
/// the runs where this is set.
#[map]
pub static RUNNING: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// First events held back until their socket matches the filter, by socket
/// address; `SockState::has_pending` says one is here.
#[map]
pub static PENDING: LruHashMap<u64, Event> = LruHashMap::with_max_entries(16384, 0);

/// Plain increments are exact: a row is only written by programs that
/// cannot interrupt each other on one CPU (each program kind has its own).
#[inline(always)]
pub fn count_in(row: u32, slot: u32) {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let i = (cpu * stat::ROWS + row) * stat::COUNT + slot;
    if let Some(c) = STATS.get_ptr_mut(i) {
        unsafe { *c += 1 };
    }
}

/// Submit flags: wake the reader only when the buffer is filling up (the
/// reader also drains on a short timer). A wakeup per event costs the
/// traced CPU an interrupt, which is what slows workloads under the peer
/// tools.
#[inline(always)]
pub fn wakeup_flags(cfg: &Config) -> u64 {
    if cfg.wakeup_bytes == 0 {
        return 0;
    }
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= cfg.wakeup_bytes as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Copies an event built elsewhere into the ring buffer.
#[inline(always)]
pub fn emit_copy(row: u32, cfg: &Config, ev: &Event) {
    match EVENTS.output::<Event>(ev, wakeup_flags(cfg)) {
        Ok(()) => count_in(row, stat::SUBMITTED),
        Err(_) => count_in(row, stat::RINGBUF_FULL),
    }
}
