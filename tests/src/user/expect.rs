//! What tcpstate's text output says, as row labels (`OLD -> NEW (note)` or
//! `is STATE (note)`, without time, owner, addresses and MS; a trailing `*`
//! matches any rest). Adjust here if a detail of the format changes.

use super::TextRow;

/// A listener or connection that existed when tracing started.
pub const SNAPSHOT_LISTEN: &str = "is LISTEN (snapshot)";
pub const SNAPSHOT_ESTABLISHED: &str = "is ESTABLISHED (snapshot)";
/// A listener created after tracing started, and closed.
pub const LISTEN: &str = "CLOSE -> LISTEN";
pub const LISTENER_CLOSED: &str = "LISTEN -> CLOSE";

/// A passive open without trouble: exactly one of each.
pub const SYN_RECV: &str = "LISTEN -> SYN_RECV";
pub const ACCEPTED: &str = "SYN_RECV -> ESTABLISHED";

/// A half-open connection whose SYN-ACK had to be resent: its row is
/// the connection's LISTEN -> SYN_RECV, dated at the first SYN-ACK.
pub const HALF_OPEN: &str = "LISTEN -> SYN_RECV (half-open, SYN-ACK retransmit #1)";
/// Its completion: the kernel's SYN_RECV -> ESTABLISHED, MS since the
/// first SYN-ACK.
pub fn completed_after(retransmits: u32) -> String {
    format!("SYN_RECV -> ESTABLISHED (after {retransmits} SYN-ACK retransmits)")
}
/// The kernel dropped it without ever creating a child.
pub const HALF_OPEN_EXPIRED: &str = "SYN_RECV -> CLOSE (half-open expired *";

/// The timewait socket taking over after FIN_WAIT2/CLOSING -> CLOSE.
pub const TIMEWAIT_SOCKET: &str = "is TIME_WAIT (timewait socket)";
pub const ORPHAN: &str = "is FIN_WAIT2 (timewait socket, orphan)";
/// The orphan receiving its peer's FIN.
pub const ORPHAN_TO_TIME_WAIT: &str = "FIN_WAIT2 -> TIME_WAIT (timewait)";

/// A timewait socket reaching TIME_WAIT: at the hand-over, or later
/// for an orphan that receives its peer's FIN.
/// (Without building the label: a storm has hundreds of thousands of
/// rows to look at.)
pub fn is_time_wait_entry(r: &TextRow) -> bool {
    r.new == "TIME_WAIT"
        && matches!(
            (r.old.as_deref(), r.note.as_deref()),
            (None, Some("timewait socket")) | (Some("FIN_WAIT2"), Some("timewait"))
        )
}
pub fn is_time_wait_end(r: &TextRow) -> bool {
    r.old.as_deref() == Some("TIME_WAIT")
        && r.new == "CLOSE"
        && matches!(
            r.note.as_deref(),
            Some("timewait expired" | "timewait reused by a new connection")
        )
}

pub fn is_expiry_of_half_open(r: &TextRow) -> bool {
    r.note
        .as_deref()
        .is_some_and(|n| n.starts_with("half-open expired"))
}

/// `--stuck 2s` on a CLOSE_WAIT (the note says for how long: 2.0s, 2.1s...).
pub const STUCK_CLOSE_WAIT: &str = "is CLOSE_WAIT (stuck for *";

/// The server end of a connection the client closed first (server
/// reads to end of stream, then closes).
pub const SERVER_END_CLIENT_CLOSED: [&str; 5] = [
    SYN_RECV,
    ACCEPTED,
    "ESTABLISHED -> CLOSE_WAIT",
    "CLOSE_WAIT -> LAST_ACK",
    "LAST_ACK -> CLOSE",
];

/// A row the kernel's state tracepoint made: a transition without a
/// note, or with the note a completed half-open adds to its
/// SYN_RECV -> ESTABLISHED.
pub fn is_kernel(r: &TextRow) -> bool {
    r.is_transition() && r.note.as_deref().is_none_or(|n| n.starts_with("after "))
}

/// A row saying something expired (a half-open, a timewait socket).
pub fn is_expiry(r: &TextRow) -> bool {
    r.note.as_deref().is_some_and(|n| n.contains("expired"))
}
