//! Why a connection ended. The kernel side reports causes (resets sent and
//! received, socket errors, retransmits) as they happen; [`Causes`] keeps
//! them per socket and [`Reason::of`] folds them, with the state the socket
//! left, into one reason on its row into CLOSE. Reset reason names come from
//! the running kernel ([`RstReasons`]), never from a table in this program.

use std::fmt;

use crate::event::TcpState;

/// The kernel's names for `enum sk_rst_reason`, indexed by value.
#[derive(Debug, Clone, Default)]
pub struct RstReasons {
    names: Vec<Option<&'static str>>,
}

impl RstReasons {
    /// Reads the `__print_symbolic(REC->reason, { 0, "NOT_SPECIFIED" }, ...)`
    /// of `tcp:tcp_send_reset`'s format file. A kernel without the field
    /// gives an empty table: resets are then reported without a reason.
    pub fn from_format(format: &str) -> RstReasons {
        let mut names = Vec::new();
        let Some(start) = format.find("__print_symbolic(REC->reason,") else {
            return RstReasons { names };
        };
        let mut rest = &format[start..];
        // Pairs `{ N, "NAME" }` up to the closing parenthesis of the call.
        while let Some(open) = rest.find('{') {
            if rest[..open].contains(')') {
                break;
            }
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let pair = &rest[open + 1..open + close];
            rest = &rest[open + close + 1..];
            let Some((num, name)) = pair.split_once(',') else {
                continue;
            };
            let (Ok(n), name) = (num.trim().parse::<usize>(), name.trim().trim_matches('"')) else {
                continue;
            };
            if n > 255 || name.is_empty() {
                continue;
            }
            if names.len() <= n {
                names.resize(n + 1, None);
            }
            // Leaked once at start-up: a few hundred bytes that every row
            // can then point to (`TcpEvent` is `Copy`).
            names[n] = Some(&*Box::leak(name.to_string().into_boxed_str()));
        }
        RstReasons { names }
    }

    pub fn name(&self, code: u8) -> Option<&'static str> {
        self.names.get(code as usize).copied().flatten()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// What the kernel reported about one socket before (or just after) it
/// closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Causes {
    /// A reset this end sent: `Some(None)` when the kernel gives no reason.
    pub reset_sent: Option<Option<&'static str>>,
    pub reset_received: bool,
    /// The socket error (errno) the application was told.
    pub error: Option<u8>,
    /// Retransmitted SYNs (in SYN_SENT) and other segments.
    pub syn_retransmits: u32,
    pub data_retransmits: u32,
}

pub(crate) const ECONNREFUSED: u8 = 111;
pub(crate) const ETIMEDOUT: u8 = 110;

impl Causes {
    /// Whether a CLOSE from `old` can be explained now, or a cause that the
    /// kernel reports right after the state change (the reset of a local
    /// abort, the error of a timeout) must be awaited.
    pub(crate) fn settled(&self, old: TcpState) -> bool {
        use TcpState::*;
        matches!(old, FinWait2 | Closing | LastAck | Listen | TimeWait)
            || self.reset_received
            || self.error.is_some()
            || matches!(self.reset_sent, Some(Some(n)) if !n.contains("KEEPALIVE"))
    }
}

/// How a connection ended, on its row into CLOSE (or the expiry row of a
/// timewait or request socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// This end sent the first FIN (FIN_WAIT2 -> CLOSE, TIME_WAIT expiry).
    ActiveClose,
    /// The peer sent the first FIN (LAST_ACK -> CLOSE).
    PassiveClose,
    /// Both sent FIN before seeing the other's (CLOSING -> CLOSE).
    SimultaneousClose,
    ResetReceived,
    /// This end sent a reset; the kernel's reason when it gives one.
    ResetSent(Option<&'static str>),
    /// The peer answered the SYN with a reset.
    Refused,
    /// SYN retransmits exhausted (`tcp_syn_retries`).
    ConnectTimeout,
    /// Data retransmits exhausted (`tcp_retries2` / TCP_USER_TIMEOUT).
    RetransmitTimeout,
    /// Keepalive probes unanswered.
    KeepaliveTimeout,
    /// Another socket error (errno).
    Error(u8),
    /// Closed by its application with no reset and no error (e.g. close()
    /// during the handshake).
    Aborted,
    ListenerClosed,
    /// A timewait socket in FIN_WAIT2 (orphan) expired: `tcp_fin_timeout`
    /// passed without the peer's FIN.
    OrphanTimeout,
    TimeWaitExpired,
    HalfOpenExpired,
}

impl Reason {
    /// The reason of a transition from `old` into CLOSE.
    pub fn of(old: TcpState, c: &Causes) -> Reason {
        use TcpState::*;
        if old == Listen {
            return Reason::ListenerClosed;
        }
        if c.reset_received {
            return if old == SynSent {
                Reason::Refused
            } else {
                Reason::ResetReceived
            };
        }
        match c.error {
            Some(ECONNREFUSED) => return Reason::Refused,
            // The keepalive timer resets the connection before reporting
            // ETIMEDOUT; the retransmit timer does not.
            Some(ETIMEDOUT) if old == SynSent => return Reason::ConnectTimeout,
            Some(ETIMEDOUT) if c.reset_sent.is_some() => return Reason::KeepaliveTimeout,
            Some(ETIMEDOUT) => return Reason::RetransmitTimeout,
            _ => {}
        }
        match c.reset_sent {
            Some(Some(n)) if n.contains("KEEPALIVE") => return Reason::KeepaliveTimeout,
            Some(n) => return Reason::ResetSent(n),
            None => {}
        }
        if let Some(e) = c.error {
            return Reason::Error(e);
        }
        match old {
            FinWait2 | TimeWait => Reason::ActiveClose,
            LastAck => Reason::PassiveClose,
            Closing => Reason::SimultaneousClose,
            _ => Reason::Aborted,
        }
    }

    /// The machine-readable name (JSON, CSV, summary keys).
    pub fn code(self) -> &'static str {
        match self {
            Reason::ActiveClose => "active-close",
            Reason::PassiveClose => "passive-close",
            Reason::SimultaneousClose => "simultaneous-close",
            Reason::ResetReceived => "reset-received",
            Reason::ResetSent(_) => "reset-sent",
            Reason::Refused => "refused",
            Reason::ConnectTimeout => "connect-timeout",
            Reason::RetransmitTimeout => "retransmit-timeout",
            Reason::KeepaliveTimeout => "keepalive-timeout",
            Reason::Error(_) => "error",
            Reason::Aborted => "aborted",
            Reason::ListenerClosed => "listener-closed",
            Reason::OrphanTimeout => "orphan-timeout",
            Reason::TimeWaitExpired => "timewait-expired",
            Reason::HalfOpenExpired => "half-open-expired",
        }
    }

    /// The kernel's reset reason, when this end sent one and the kernel
    /// named it.
    pub(crate) fn reset_reason(self) -> Option<&'static str> {
        match self {
            Reason::ResetSent(n) => n,
            Reason::KeepaliveTimeout => None,
            _ => None,
        }
    }
}

/// An errno's symbolic name, for the few a TCP socket reports.
pub(crate) fn errno_name(e: u8) -> Option<&'static str> {
    Some(match e {
        104 => "ECONNRESET",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        32 => "EPIPE",
        113 => "EHOSTUNREACH",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        71 => "EPROTO",
        _ => return None,
    })
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ActiveClose => f.write_str("closed, this end first"),
            Reason::PassiveClose => f.write_str("closed, peer first"),
            Reason::SimultaneousClose => f.write_str("closed, both at once"),
            Reason::ResetReceived => f.write_str("reset by peer"),
            Reason::ResetSent(Some(n)) => write!(f, "reset sent: {n}"),
            Reason::ResetSent(None) => f.write_str("reset sent"),
            Reason::Refused => f.write_str("connect refused"),
            Reason::ConnectTimeout => f.write_str("connect timed out"),
            Reason::RetransmitTimeout => f.write_str("retransmits timed out"),
            Reason::KeepaliveTimeout => f.write_str("keepalive timed out"),
            Reason::Error(e) => match errno_name(*e) {
                Some(n) => write!(f, "error {n}"),
                None => write!(f, "error {e}"),
            },
            Reason::Aborted => f.write_str("aborted by its application"),
            Reason::ListenerClosed => f.write_str("listener closed"),
            Reason::OrphanTimeout => f.write_str("orphan FIN_WAIT2 timed out"),
            Reason::TimeWaitExpired => f.write_str("TIME_WAIT over"),
            Reason::HalfOpenExpired => f.write_str("half-open expired"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FMT: &str = r#"print fmt: "skbaddr=%p state=%s reason=%s", REC->state ? __print_symbolic(REC->state, { TCP_ESTABLISHED, "TCP_ESTABLISHED" }) : "UNKNOWN", __print_symbolic(REC->reason, { 0, "NOT_SPECIFIED" }, { 1, "NO_SOCKET" }, { 11, "TCP_ABORT_ON_CLOSE" }, { 12, "TCP_ABORT_ON_LINGER" }, { 15, "TCP_KEEPALIVE_TIMEOUT" })"#;

    #[test]
    fn reset_reasons_come_from_the_format_file() {
        let r = RstReasons::from_format(FMT);
        assert_eq!(r.name(11), Some("TCP_ABORT_ON_CLOSE"));
        assert_eq!(r.name(1), Some("NO_SOCKET"));
        assert_eq!(r.name(5), None);
        assert_eq!(r.name(200), None);
        // The state's symbols (not numbers) are not taken for reasons.
        assert!(
            RstReasons::from_format("__print_symbolic(REC->state, { TCP_CLOSE, \"X\" })")
                .is_empty()
        );
    }

    #[test]
    fn reasons_from_causes() {
        use TcpState::*;
        let none = Causes::default();
        assert_eq!(Reason::of(FinWait2, &none), Reason::ActiveClose);
        assert_eq!(Reason::of(LastAck, &none), Reason::PassiveClose);
        assert_eq!(Reason::of(Closing, &none), Reason::SimultaneousClose);
        assert_eq!(Reason::of(SynSent, &none), Reason::Aborted);
        let rst_in = Causes {
            reset_received: true,
            ..none
        };
        assert_eq!(Reason::of(SynSent, &rst_in), Reason::Refused);
        assert_eq!(Reason::of(Established, &rst_in), Reason::ResetReceived);
        let timeout = Causes {
            error: Some(ETIMEDOUT),
            syn_retransmits: 1,
            ..none
        };
        assert_eq!(Reason::of(SynSent, &timeout), Reason::ConnectTimeout);
        assert_eq!(Reason::of(Established, &timeout), Reason::RetransmitTimeout);
        let ka = Causes {
            reset_sent: Some(Some("TCP_KEEPALIVE_TIMEOUT")),
            ..none
        };
        assert_eq!(Reason::of(Established, &ka), Reason::KeepaliveTimeout);
        // Without the kernel's reason: reset, then ETIMEDOUT.
        let ka_old = Causes {
            reset_sent: Some(None),
            error: Some(ETIMEDOUT),
            ..none
        };
        assert_eq!(Reason::of(Established, &ka_old), Reason::KeepaliveTimeout);
        let abort = Causes {
            reset_sent: Some(Some("TCP_ABORT_ON_CLOSE")),
            ..none
        };
        assert_eq!(
            Reason::of(Established, &abort),
            Reason::ResetSent(Some("TCP_ABORT_ON_CLOSE"))
        );
        assert_eq!(
            abort.to_owned().reset_sent,
            Some(Some("TCP_ABORT_ON_CLOSE"))
        );
        assert_eq!(
            Reason::of(Established, &abort).to_string(),
            "reset sent: TCP_ABORT_ON_CLOSE"
        );
    }

    #[test]
    fn which_closes_wait_for_a_later_cause() {
        use TcpState::*;
        let none = Causes::default();
        assert!(none.settled(FinWait2) && none.settled(LastAck));
        // close() with unread data: CLOSE first, the reset right after.
        assert!(!none.settled(Established));
        // A connect timeout: CLOSE first, ETIMEDOUT right after.
        assert!(!none.settled(SynSent));
        let ka = Causes {
            reset_sent: Some(Some("TCP_KEEPALIVE_TIMEOUT")),
            ..none
        };
        assert!(!ka.settled(Established), "keepalive: ETIMEDOUT follows");
        let rst = Causes {
            reset_received: true,
            ..none
        };
        assert!(rst.settled(SynSent));
    }
}
