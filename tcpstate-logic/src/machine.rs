//! The TCP state machine as the Linux kernel runs it (RFC 793 figure 6 plus
//! what Linux adds): which OLD -> NEW a full socket's `tcp_set_state()` can
//! make, i.e. which kernel rows (source `tracepoint`) can ever be printed.
//! `--trigger OLD->NEW` matches kernel rows only and is checked against it,
//! so a transition that never happens is a usage error instead of a filter
//! that silently matches nothing.

use crate::event::TcpState::{self, *};

/// The states the kernel can move a full socket in `from` to. Every state a
/// full socket holds can go to CLOSE: an abort, a reset, a timeout,
/// `tcp_disconnect()`, or the hand-over to a timewait socket.
pub(crate) fn next_states(from: TcpState) -> &'static [TcpState] {
    match from {
        // connect(), listen().
        Close => &[SynSent, Listen],
        // A child socket starts as its listener's copy: the kernel reports
        // LISTEN -> SYN_RECV for it.
        Listen => &[SynRecv, Close],
        // The handshake; a simultaneous open answers a SYN with SYN_RECV.
        SynSent => &[Established, SynRecv, Close],
        // The handshake's last ACK; with TCP Fast Open data flows before it,
        // so close() (FIN_WAIT1) or the peer's FIN (CLOSE_WAIT) can come first.
        SynRecv => &[Established, FinWait1, CloseWait, Close],
        // We close first, or the peer does.
        Established => &[FinWait1, CloseWait, Close],
        // Our FIN acked; the peer's FIN first (simultaneous close).
        FinWait1 => &[FinWait2, Closing, Close],
        // TIME_WAIT belongs to the timewait socket that takes over: the full
        // socket goes to CLOSE (tcpstate adds the timewait rows, marked).
        FinWait2 | Closing => &[Close],
        CloseWait => &[LastAck, Close],
        LastAck => &[Close],
        // Never a full socket's state (timewait sockets), nor reported
        // (request sockets are set by a plain store).
        TimeWait | NewSynRecv | Unknown(_) => &[],
    }
}

/// True when the kernel can ever report `old -> new`.
pub fn possible(old: TcpState, new: TcpState) -> bool {
    next_states(old).contains(&new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [TcpState; 12] = [
        Established,
        SynSent,
        SynRecv,
        FinWait1,
        FinWait2,
        TimeWait,
        Close,
        CloseWait,
        LastAck,
        Listen,
        Closing,
        NewSynRecv,
    ];

    #[test]
    fn the_paths_of_a_connection_are_possible() {
        let paths: &[&[TcpState]] = &[
            &[Close, SynSent, Established, FinWait1, FinWait2, Close],
            &[Listen, SynRecv, Established, CloseWait, LastAck, Close],
            &[Established, FinWait1, Closing, Close],
            &[Close, Listen, Close],
            &[Listen, SynRecv, Close],
        ];
        for p in paths {
            for w in p.windows(2) {
                assert!(possible(w[0], w[1]), "{} -> {}", w[0], w[1]);
            }
        }
    }

    #[test]
    fn nothing_stays_where_it_is_and_nothing_comes_back_to_listen() {
        for s in ALL {
            assert!(!possible(s, s), "{s} -> {s}");
            assert!(!possible(s, Listen) || s == Close, "{s} -> LISTEN");
            assert!(!possible(s, NewSynRecv), "{s} -> NEW_SYN_RECV");
        }
        assert!(!possible(TimeWait, Established));
        assert!(
            !possible(FinWait2, TimeWait),
            "a timewait socket's, not the kernel's row"
        );
        assert!(!possible(LastAck, FinWait1));
    }

    #[test]
    fn every_state_of_a_full_socket_but_close_can_close() {
        for s in ALL {
            if !matches!(s, Close | NewSynRecv | TimeWait) {
                assert!(possible(s, Close), "{s} -> CLOSE");
            }
        }
    }
}
