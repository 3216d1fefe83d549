//! The values that cross the kernel/user boundary as one `u8`: TCP states
//! and the hook an event came from, each declared once with its value on the
//! wire and the name tcpstate prints.

/// Declares a value that crosses the kernel/user boundary as one `u8`, once:
/// each variant with its value on the wire and the name tcpstate prints.
/// Both sides use the generated enum (the kernel through the `const fn`
/// `raw`), so a value cannot be written down twice. `Unknown` keeps a value
/// this build does not know (a newer kernel) instead of dropping it.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this build does not know.
            Unknown(u8),
        }

        impl $name {
            /// Every known value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value on the wire.
            pub const fn raw(self) -> u8 {
                match self {
                    $($name::$variant => $value,)+
                    $name::Unknown(v) => v,
                }
            }

            pub const fn from_raw(v: u8) -> Self {
                match v {
                    $($value => $name::$variant,)+
                    other => $name::Unknown(other),
                }
            }

            /// The name tcpstate prints; `UNKNOWN` for an unknown value.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Unknown(_) => "UNKNOWN",
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self {
                    $name::Unknown(v) => write!(f, "UNKNOWN({v})"),
                    known => f.pad(known.name()),
                }
            }
        }
    };
}

wire_enum! {
    /// Linux TCP states (`include/net/tcp_states.h`), as the tracepoint
    /// reports them, named as netstat and bcc's tcpstates print them.
    pub enum TcpState {
        Established = 1 => "ESTABLISHED",
        SynSent = 2 => "SYN_SENT",
        SynRecv = 3 => "SYN_RECV",
        FinWait1 = 4 => "FIN_WAIT1",
        FinWait2 = 5 => "FIN_WAIT2",
        TimeWait = 6 => "TIME_WAIT",
        Close = 7 => "CLOSE",
        CloseWait = 8 => "CLOSE_WAIT",
        LastAck = 9 => "LAST_ACK",
        Listen = 10 => "LISTEN",
        Closing = 11 => "CLOSING",
        NewSynRecv = 12 => "NEW_SYN_RECV",
    }
}

wire_enum! {
    /// The kernel hook an event came from (`Event::source`). Only
    /// `Tracepoint` is a transition the kernel made; the others are reported
    /// with their hook so nothing synthesized passes as one.
    pub enum Hook {
        /// `inet_sock_set_state` (BTF or classic tracepoint).
        Tracepoint = 0 => "tracepoint",
        /// `tcp:tcp_retransmit_synack`: a request socket's SYN-ACK was resent.
        /// `dwell_ns` is the time since its first SYN-ACK, `retransmits`
        /// which retransmit this is.
        Synack = 2 => "synack_tracepoint",
        /// Cause hooks: not state changes but what explains the socket's
        /// next one (userspace attaches them to its CLOSE row). `oldstate`
        /// and `newstate` both hold the socket's state when it happened.
        /// `tcp:tcp_send_reset`: this end sent a reset; `detail` is the
        /// kernel's `enum sk_rst_reason` value, or `DETAIL_NONE` on kernels
        /// without it.
        ResetSent = 3 => "reset_sent",
        /// `tcp:tcp_receive_reset`: the peer's reset was accepted.
        ResetReceived = 4 => "reset_received",
        /// `sock:inet_sk_error_report`: the socket got an error; `detail` is
        /// `sk_err` (an errno: ECONNREFUSED, ETIMEDOUT, ...).
        SockError = 5 => "sock_error",
        /// `tcp:tcp_retransmit_skb`: a segment was resent (a SYN when the
        /// state is SYN_SENT).
        Retransmit = 6 => "retransmit",
    }
}

#[cfg(test)]
mod tests {
    use super::{Hook, TcpState};

    #[test]
    fn every_wire_value_round_trips_and_unknown_ones_survive() {
        for &st in TcpState::ALL {
            assert_eq!(TcpState::from_raw(st.raw()), st);
        }
        for &h in Hook::ALL {
            assert_eq!(Hook::from_raw(h.raw()), h);
        }
        assert_eq!(TcpState::from_raw(99), TcpState::Unknown(99));
        assert_eq!(TcpState::Unknown(99).raw(), 99);
        assert_eq!(Hook::from_raw(1), Hook::Unknown(1));
    }

    #[test]
    fn values_are_the_kernels() {
        // include/net/tcp_states.h
        assert_eq!(TcpState::Established.raw(), 1);
        assert_eq!(TcpState::Close.raw(), 7);
        assert_eq!(TcpState::Listen.raw(), 10);
        assert_eq!(TcpState::NewSynRecv.raw(), 12);
        assert_eq!(TcpState::ALL.len(), 12);
        assert_eq!(TcpState::CloseWait.name(), "CLOSE_WAIT");
    }
}
