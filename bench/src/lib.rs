//! tcpstate's overhead benchmark (`cargo xtask bench`): the pieces the runner
//! (`tcpstate-bench`) and the load generator (`loadgen`) share, kept here so they can be
//! unit-tested without root: the load generator's reports, figure summaries, parsing of the
//! tracers' output, /proc readers and the markdown report.

pub mod count;
pub mod loadgen;
pub mod procfs;
pub mod report;
pub mod stats;

/// CLOCK_MONOTONIC in ns: one clock for the client, the server and the runner.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Transitions the kernel reports per loopback connection, client and server side together
/// (the ten of [`CONNECTION_TRANSITIONS`]; TIME_WAIT is not among them, the timewait socket
/// that takes over makes none): checked by the smoke run against tcpstate's own
/// per-transition summary.
pub const TRANSITIONS_PER_CONNECTION: u64 = 10;

/// The 10 transitions of one connection (client closes first), as tcpstate names them.
pub const CONNECTION_TRANSITIONS: [(&str, &str); 10] = [
    ("CLOSE", "SYN_SENT"),
    ("SYN_SENT", "ESTABLISHED"),
    ("ESTABLISHED", "FIN_WAIT1"),
    ("FIN_WAIT1", "FIN_WAIT2"),
    ("FIN_WAIT2", "CLOSE"),
    ("LISTEN", "SYN_RECV"),
    ("SYN_RECV", "ESTABLISHED"),
    ("ESTABLISHED", "CLOSE_WAIT"),
    ("CLOSE_WAIT", "LAST_ACK"),
    ("LAST_ACK", "CLOSE"),
];

/// The listener's own two: CLOSE->LISTEN when the server starts, LISTEN->CLOSE when it stops.
pub const LISTENER_TRANSITIONS: [(&str, &str); 2] = [("CLOSE", "LISTEN"), ("LISTEN", "CLOSE")];
