//! The one definition of everything the eBPF program and the loader exchange:
//! the event record pushed through the ring buffer, the load-time configuration,
//! and the keys/values of the maps userspace reads.
//!
//! Every struct is `#[repr(C)]` with explicit padding so both sides (bpfel and
//! x86_64) agree byte for byte; the size assertions at the bottom keep it so.
#![no_std]

mod wire;
pub use wire::{Hook, TcpState};

/// Map and global names, shared so a rename cannot split the two sides.
pub mod names {
    /// The state-change handler on the BTF (raw) tracepoint: the default.
    pub const BTF_PROGRAM: &str = "inet_sock_set_state_btf";
    /// A second program on the same BTF tracepoint that handles only the
    /// runs the kernel skips for the first (see `stat::RESCUED`).
    pub const NESTED_PROGRAM: &str = "inet_sock_set_state_nested";
    /// The same handler on the classic tracepoint, for kernels whose BTF
    /// does not give the socket layout the BTF program reads.
    pub const CLASSIC_PROGRAM: &str = "inet_sock_set_state";
    /// SYN-ACK retransmits on the BTF tracepoint: the default.
    pub const SYNACK_BTF_PROGRAM: &str = "tcp_retransmit_synack_btf";
    /// The same on the classic tracepoint, where kernel BTF lacks what the
    /// BTF program reads.
    pub const SYNACK_CLASSIC_PROGRAM: &str = "tcp_retransmit_synack";
    /// Cause hooks (BTF tracepoints): they fire only on resets, socket
    /// errors and retransmits, never on the state-change path.
    pub const RESET_SENT_PROGRAM: &str = "tcp_send_reset";
    pub const RESET_RECEIVED_PROGRAM: &str = "tcp_receive_reset";
    pub const SOCK_ERROR_PROGRAM: &str = "inet_sk_error_report";
    pub const RETRANSMIT_PROGRAM: &str = "tcp_retransmit_skb";
    pub const EVENTS: &str = "EVENTS";
    pub const SOCKS: &str = "SOCKS";
    pub const PENDING: &str = "PENDING";
    pub const LISTENERS: &str = "LISTENERS";
    pub const PORTS: &str = "PORTS";
    pub const STATS: &str = "STATS";
    pub const CGROUPS: &str = "CGROUPS";
    pub const CONFIG: &str = "CONFIG";
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
pub const COMM_LEN: usize = 16;

/// `Event::dwell_ns` when the time in the old state is unknown (first event of a
/// socket, or its earlier events were not seen). Rendered as `-`, never `0`.
pub const DWELL_UNKNOWN: u64 = u64::MAX;
/// `Event::owner_pid` when the owner is unknown.
pub const OWNER_UNKNOWN: u32 = u32::MAX;

/// `Event::detail` when the kernel gave no value.
pub const DETAIL_NONE: u8 = u8::MAX;

/// Event flags.
pub mod flag {
    /// The event was held back in the kernel because the socket had not matched
    /// the filter yet, and released when a later event of it matched.
    pub const REPLAYED: u8 = 1;
    /// On FIN_WAIT2->CLOSE / CLOSING->CLOSE: whether the peer's FIN had been
    /// received (SOCK_DONE in `sk_flags`) is known...
    pub const FIN_KNOWN: u8 = 2;
    /// ...and it had: the timewait socket taking over is in TIME_WAIT, not an
    /// orphaned FIN_WAIT2 still waiting for the peer's FIN.
    pub const FIN_RECEIVED: u8 = 4;
}

/// One state change of one socket, as pushed through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_boot_ns()` at the transition (CLOCK_BOOTTIME).
    pub ts_ns: u64,
    /// Kernel address of the socket: the identity of a connection's events.
    pub skaddr: u64,
    /// Nanoseconds spent in `oldstate`, or [`DWELL_UNKNOWN`].
    pub dwell_ns: u64,
    /// The cgroup-v2 id of the socket (its directory's inode in the cgroup2
    /// mount), set when the socket was created and kept after its process
    /// exits; a SYN-ACK event carries its listener's. 0 when unknown.
    pub cgroup_id: u64,
    /// Thread-group id of the socket's owner, or [`OWNER_UNKNOWN`].
    pub owner_pid: u32,
    /// Thread-group id of the task on CPU when the kernel made the change.
    pub cpu_pid: u32,
    /// Inode number of the socket's network namespace (0 if unavailable).
    pub netns: u32,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    /// A [`TcpState`] value.
    pub oldstate: u8,
    /// A [`TcpState`] value.
    pub newstate: u8,
    /// A [`Hook`] value.
    pub source: u8,
    pub flags: u8,
    /// SYN-ACK retransmit events: which retransmit of the request socket
    /// this is (1 = the first), saturating at 255.
    pub retransmits: u8,
    /// Cause events: the reset reason or errno (see [`Hook`]); 0 otherwise.
    pub detail: u8,
    /// IPv4 addresses use the first 4 bytes; network byte order.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub owner_comm: [u8; COMM_LEN],
    pub cpu_comm: [u8; COMM_LEN],
}

impl Event {
    pub const ZERO: Event = Event {
        ts_ns: 0,
        skaddr: 0,
        dwell_ns: DWELL_UNKNOWN,
        cgroup_id: 0,
        owner_pid: OWNER_UNKNOWN,
        cpu_pid: 0,
        netns: 0,
        sport: 0,
        dport: 0,
        family: 0,
        oldstate: 0,
        newstate: 0,
        source: Hook::Tracepoint.raw(),
        flags: 0,
        retransmits: 0,
        detail: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        owner_comm: [0; COMM_LEN],
        cpu_comm: [0; COMM_LEN],
    };
}

/// Byte offsets of the `sock:inet_sock_set_state` record fields, read from the
/// tracepoint's `format` file at load time: aya has no CO-RE for Rust programs,
/// and the layout moved in Linux 5.6 (`protocol` grew from u8 to u16).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointLayout {
    pub skaddr: u16,
    pub oldstate: u16,
    pub newstate: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u16,
    /// 1 (before 5.6) or 2.
    pub protocol_size: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
}

impl TracepointLayout {
    /// The layout of Linux >= 5.6 (`protocol` is u16). When the format file
    /// describes exactly this, the program reads the record with direct,
    /// constant-offset context loads instead of a helper call per field.
    pub const SINCE_5_6: TracepointLayout = TracepointLayout {
        skaddr: 8,
        oldstate: 16,
        newstate: 20,
        sport: 24,
        dport: 26,
        family: 28,
        protocol: 30,
        protocol_size: 2,
        saddr: 32,
        daddr: 36,
        saddr_v6: 40,
        daddr_v6: 56,
    };
}

/// Byte offsets of the `tcp:tcp_retransmit_synack` record fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynackLayout {
    /// The listener.
    pub skaddr: u16,
    /// The request socket: its identity for the half-open tracker.
    pub req: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    /// 1 when the layout was found (the tracepoint exists).
    pub present: u16,
}

/// Struct offsets resolved from kernel BTF at load time (no CO-RE for Rust
/// eBPF programs). `skc_net == 0` means unavailable: netns reads as 0; any
/// other offset 0 means that field is unavailable.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `sock.__sk_common.skc_net.net`
    pub skc_net: u32,
    /// `net.ns.inum`
    pub ns_inum: u32,
    /// `sock.sk_flags`, 0 = unknown.
    pub sk_flags: u32,
    /// The bit of SOCK_DONE (`enum sock_flags`) in `sk_flags`: set by
    /// `tcp_fin()` when the peer's FIN arrives.
    pub sock_done_bit: u32,
    /// `sock.sk_protocol` (a u16 since Linux 5.6): the BTF program's
    /// protocol filter.
    pub sk_protocol: u32,
    /// `sock.__sk_common.skc_v6_daddr`; `skc_v6_rcv_saddr` follows it
    /// (checked at load time).
    pub skc_v6_daddr: u32,
    /// `tcp_sock.srtt_us`: on SYN_RECV->ESTABLISHED it holds the SYN-ACK's
    /// round trip, i.e. how long the connection waited in SYN_RECV.
    pub srtt_us: u32,
    /// `tcp_request_sock.snt_synack`: when the first SYN-ACK went out (µs,
    /// CLOCK_MONOTONIC).
    pub snt_synack: u32,
    /// `request_sock.num_retrans` (u8): SYN-ACK retransmits so far.
    pub num_retrans: u32,
    /// `inet_sock.inet_sport` (network order): the local port as the
    /// classic tracepoint reports it. `skc_num` is already 0 when a socket
    /// reaches CLOSE (its port is released first).
    pub inet_sport: u32,
    /// `sock.sk_err` (int): the error `inet_sk_error_report` reports.
    pub sk_err: u32,
    /// `sock.__sk_common.skc_state` (u8): what the cause hooks record as
    /// the socket's state.
    pub skc_state: u32,
    /// `sock.sk_cgrp_data.cgroup` (a `struct cgroup *` since Linux 5.15),
    /// 0 = unavailable: cgroup ids read as 0 and userspace falls back to
    /// the owner's `/proc/<pid>/cgroup`.
    pub sk_cgroup: u32,
    /// `cgroup.kn`: the cgroup's kernfs directory...
    pub cgroup_kn: u32,
    /// ...and `kernfs_node.id`, the cgroup id (the directory's inode).
    pub kn_id: u32,
}

/// The head of `struct sock_common` as the BTF program reads it in one go:
/// IPv4 addresses and both ports. Its offsets have not moved since Linux
/// 2.6; the loader checks them against kernel BTF and falls back to the
/// classic tracepoint if they ever do.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockHead {
    /// `skc_daddr` (network order).
    pub daddr: [u8; 4],
    /// `skc_rcv_saddr` (network order).
    pub rcv_saddr: [u8; 4],
    pub hash: u32,
    /// `skc_dport`, network order.
    pub dport_be: u16,
    /// `skc_num`: the local port, host order.
    pub num: u16,
    pub family: u16,
    pub _pad: u16,
}

impl SockHead {
    /// (`skc_daddr`, `skc_rcv_saddr`, `skc_dport`, `skc_num`, `skc_family`).
    pub const OFFSETS: [u32; 5] = [0, 4, 12, 14, 16];
}

/// Load-time configuration, written into the program's `CONFIG` global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub layout: TracepointLayout,
    pub synack: SynackLayout,
    pub offsets: KernelOffsets,
    /// Only sockets of this network namespace (inode), 0 = all.
    pub netns: u32,
    /// Ring-buffer fill level (bytes) above which the producer wakes the reader;
    /// below it events are submitted with `BPF_RB_NO_WAKEUP` and the reader polls
    /// on a short timer. 0 = wake on every event.
    pub wakeup_bytes: u32,
    /// Only this address family (`AF_INET`/`AF_INET6`), 0 = both.
    pub family: u16,
    /// The union of the `port_match` bits in the `PORTS` map: 0 = no port
    /// filter; LOCAL / REMOTE when some port applies to that end.
    pub port_filter: u8,
    /// Non-zero: emit aya-log diagnostics from the kernel (`--verbose`).
    pub verbose: u8,
    /// Non-zero when `layout` is `TracepointLayout::SINCE_5_6`.
    pub fast_layout: u8,
    /// Non-zero when a socket's first event may lack the port the filter
    /// is about and must be held back: a local-port filter on a port inside
    /// the ephemeral range (`ip_local_port_range`), which connect() may pick
    /// after CLOSE->SYN_SENT. Zero lets unmatched events be dropped before
    /// any map work.
    pub hold_back: u8,
    /// Non-zero when `tcp_send_reset` passes `enum sk_rst_reason` as its
    /// third argument (Linux >= 6.10): reading it on an older kernel would
    /// make the verifier refuse the program, so it is gated on this
    /// read-only value and the branch not taken is dropped.
    pub rst_reason_arg: u8,
    /// Non-zero when `tcp_retransmit_skb` passes the transmit result as its
    /// third argument: failed resends (not on the wire) are not counted.
    pub retransmit_err_arg: u8,
    /// Non-zero with `--container` / `--cgroup`: state changes of sockets
    /// whose cgroup id `CGROUPS` says [`cgroup_verdict::DROP`] are dropped
    /// first thing. Ids not in the map still go to userspace, which decides
    /// (and writes the verdict), so a container started later is judged on
    /// its first row.
    pub cgroup_filter: u8,
    pub _pad: [u8; 3],
}

/// `CGROUPS` map values, written by userspace from `--container` / `--cgroup`.
pub mod cgroup_verdict {
    /// Rows of this cgroup are wanted.
    pub const KEEP: u8 = 1;
    /// Rows of this cgroup can never be shown: the kernel drops them.
    pub const DROP: u8 = 2;
}

/// `PORTS` map values: which end of a connection a port filter applies to.
pub mod port_match {
    pub const LOCAL: u8 = 1;
    pub const REMOTE: u8 = 2;
}

/// `STATS` per-CPU counter slots.
pub mod stat {
    /// Events dropped because the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 0;
    /// Socket-state updates that failed (map full / error): dwell time and owner
    /// of that socket become unknown.
    pub const SOCK_MAP_FAIL: u32 = 1;
    /// Listener-owner updates that failed.
    pub const LISTEN_MAP_FAIL: u32 = 2;
    /// Events submitted to the ring buffer.
    pub const SUBMITTED: u32 = 3;
    /// Events of a socket with no tracking entry that is not a new socket:
    /// it existed before tracing started, or was evicted from the full
    /// (LRU) socket map. Their dwell time and owner are unknown.
    pub const UNTRACKED: u32 = 4;
    /// State changes the kernel did not run the main program for (it was
    /// already running on that CPU, interrupted by a softirq that changed
    /// another socket's state), handled by the nested-run program instead.
    pub const RESCUED: u32 = 5;
    /// State changes dropped because `--container` / `--cgroup` ruled their
    /// socket's cgroup out (not lost: filtered).
    pub const CGROUP_DROPPED: u32 = 6;
    pub const COUNT: u32 = 7;
    /// Counter rows per CPU, one per program that may interrupt another on
    /// its CPU: the main state-change program, the SYN-ACK program (a classic
    /// tracepoint in softirq), the nested-run program, and the cause hooks.
    pub const ROWS: u32 = 4;
    pub const ROW_TRACING: u32 = 0;
    pub const ROW_SYNACK: u32 = 1;
    pub const ROW_NESTED: u32 = 2;
    /// The cause hooks (resets, errors, retransmits). They may interrupt
    /// each other (a timer's retransmit during a close()'s reset), so this
    /// row's counts can be short by the rare collision; they only count
    /// submissions and ring-buffer drops of cause events.
    pub const ROW_CAUSE: u32 = 3;
}

/// Owner of a socket: the process in whose context it was connected, listened,
/// or closed. Aligned to 8 so that `comm`, like every task name here, is
/// two whole words (the kernel side copies it as such).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

impl Owner {
    pub const UNKNOWN: Owner = Owner {
        pid: OWNER_UNKNOWN,
        _pad: 0,
        comm: [0; COMM_LEN],
    };
}

/// `LISTENERS` key: accepted sockets inherit the owner of the listener on
/// their local port, in their namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenKey {
    pub netns: u32,
    pub port: u16,
    pub family: u16,
}

/// `SOCKS` value (key: socket address): per-socket tracking, removed at CLOSE.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockState {
    /// When the socket entered its current state (boot ns).
    pub since_ns: u64,
    pub owner: Owner,
    /// 1 once an event of this socket matched the filter: it stays followed.
    pub followed: u8,
    /// 1 when the `PENDING` map holds the socket's first event, held back
    /// because it could not match yet (e.g. CLOSE->SYN_SENT still has local
    /// port 0).
    pub has_pending: u8,
    pub _pad: [u8; 2],
    /// The socket's namespace inode, so later events need not read it again.
    pub netns: u32,
    /// The socket's cgroup id (see `Event::cgroup_id`), read at its first
    /// event.
    pub cgroup_id: u64,
}

const _: () = assert!(core::mem::size_of::<Event>() == 120);
const _: () = assert!(core::mem::size_of::<Config>() == 124);
const _: () = assert!(core::mem::size_of::<SockHead>() == 20);
const _: () = assert!(core::mem::size_of::<SockState>() == 48);
const _: () = assert!(core::mem::size_of::<ListenKey>() == 8);
// Task names are copied by the kernel side as two aligned words.
const _: () = assert!(core::mem::offset_of!(Event, owner_comm) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(Event, cpu_comm) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(Owner, comm) % 8 == 0);
const _: () = assert!(core::mem::align_of::<Owner>() == 8);
const _: () = assert!(core::mem::size_of::<Owner>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are repr(C), Copy, made only of integers and byte arrays with
    // explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Owner {}
    unsafe impl aya::Pod for super::ListenKey {}
    unsafe impl aya::Pod for super::SockState {}
    unsafe impl aya::Pod for super::KernelOffsets {}
}
