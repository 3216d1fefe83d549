//! The trackers' view of the kernel's socket tables. The netlink client
//! ([`crate::diag::Diag`]) implements it; unit tests implement it with a
//! table they script, so the trackers' rules are tested without root.

use std::io;

use crate::{diag::DiagSocket, event::TcpState};

/// Which sockets a dump asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Every TCP socket, request and timewait sockets included.
    All,
    /// Listening sockets.
    Listeners,
    /// Request sockets (half-open connections; reported as SYN_RECV).
    RequestSockets,
    /// Timewait sockets (substate TIME_WAIT or FIN_WAIT2) and full sockets in
    /// those states.
    TimeWait,
}

impl Wanted {
    /// inet_diag's state bit mask (`1 << state`; TCP_NEW_SYN_RECV is 12).
    pub(crate) fn state_bits(self) -> u32 {
        let bit = |s: TcpState| 1u32 << s.raw();
        match self {
            Wanted::All => TcpState::ALL.iter().fold(0, |bits, &s| bits | bit(s)),
            Wanted::Listeners => bit(TcpState::Listen),
            Wanted::RequestSockets => bit(TcpState::NewSynRecv),
            Wanted::TimeWait => bit(TcpState::TimeWait) | bit(TcpState::FinWait2),
        }
    }

    pub(crate) fn includes(self, state: TcpState) -> bool {
        match self {
            Wanted::All => true,
            Wanted::Listeners => state == TcpState::Listen,
            Wanted::RequestSockets => state == TcpState::SynRecv,
            Wanted::TimeWait => matches!(state, TcpState::TimeWait | TcpState::FinWait2),
        }
    }
}

pub trait SocketTable {
    /// The sockets of network namespace `netns` (inode; 0 = ours) in the
    /// wanted states, both address families (or only `family` if not 0).
    fn dump(&mut self, netns: u32, wanted: Wanted, family: u16) -> io::Result<Vec<DiagSocket>>;
}

#[cfg(test)]
pub mod fake {
    //! A scripted socket table for the trackers' unit tests.
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    pub(crate) struct FakeTable {
        /// Sockets per namespace.
        pub socks: HashMap<u32, Vec<DiagSocket>>,
        /// Dumps asked for, in order.
        pub dumps: Vec<(u32, Wanted)>,
    }

    impl SocketTable for FakeTable {
        fn dump(&mut self, netns: u32, wanted: Wanted, family: u16) -> io::Result<Vec<DiagSocket>> {
            self.dumps.push((netns, wanted));
            Ok(self
                .socks
                .get(&netns)
                .map(|v| {
                    v.iter()
                        .filter(|s| wanted.includes(s.state))
                        .filter(|s| family == 0 || s.family == family)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default())
        }
    }

    pub fn sock(state: TcpState, local: &str, remote: &str, inode: u32) -> DiagSocket {
        let local: std::net::SocketAddr = local.parse().unwrap();
        DiagSocket {
            family: if local.is_ipv4() {
                tcpstate_common::AF_INET
            } else {
                tcpstate_common::AF_INET6
            },
            state,
            local,
            remote: remote.parse().unwrap(),
            inode,
            uid: 0,
            cgroup_id: 0,
        }
    }
}
