//! NETLINK_SOCK_DIAG (inet_diag) queries: what the kernel's socket tables hold
//! right now, including what the state tracepoint cannot show (request
//! sockets of half-open connections, timewait sockets). Queries are targeted:
//! an exact tuple lookup, or a one-off dump for the start-up snapshot.
//!
//! A netlink socket answers for the network namespace it was created in, so
//! one is opened per namespace, from a thread that entered it.

use std::{collections::HashMap, io, net::SocketAddr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, nlas::Nla},
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};

use crate::{
    enrich::table::{SocketTable, Wanted},
    event::TcpState,
    netns,
};

/// One socket as inet_diag reports it. For timewait sockets `state` is the
/// substate (FIN_WAIT2 or TIME_WAIT); request sockets report SYN_RECV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagSocket {
    pub family: u16,
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// 0 for request and timewait sockets (they have no file).
    pub inode: u32,
    pub uid: u32,
    /// The socket's cgroup-v2 id (`INET_DIAG_CGROUP_ID`, Linux >= 5.7), as
    /// the kernel program reads it; 0 for request and timewait sockets.
    pub cgroup_id: u64,
}

/// `INET_DIAG_CGROUP_ID` (not named by netlink-packet-sock-diag).
const INET_DIAG_CGROUP_ID: u16 = 21;

fn cgroup_id(r: &InetResponse) -> u64 {
    use netlink_packet_core::Nla as _;
    r.nlas
        .iter()
        .find_map(|n| match n {
            Nla::Other(a) if a.kind() == INET_DIAG_CGROUP_ID && a.value_len() == 8 => {
                let mut b = [0u8; 8];
                a.emit_value(&mut b);
                Some(u64::from_ne_bytes(b))
            }
            _ => None,
        })
        .unwrap_or(0)
}

impl DiagSocket {
    fn from_response(r: &InetResponse) -> Self {
        let h = &r.header;
        DiagSocket {
            family: h.family as u16,
            state: TcpState::from_raw(h.state),
            local: SocketAddr::new(h.socket_id.source_address, h.socket_id.source_port),
            remote: SocketAddr::new(
                h.socket_id.destination_address,
                h.socket_id.destination_port,
            ),
            inode: h.inode,
            uid: h.uid,
            cgroup_id: cgroup_id(r),
        }
    }
}

/// A socket with the queue and drop counts `ss -tm` adds. For a listener
/// `rqueue` is its accept queue now and `wqueue` the queue's limit (the
/// backlog); `drops` is its `sk_drops` (accept-queue overflows and other
/// drops, `ss -tlm`'s `d<N>`), absent on kernels that do not report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiagDetail {
    pub sock: DiagSocket,
    pub rqueue: u32,
    pub wqueue: u32,
    pub drops: Option<u32>,
}

impl DiagDetail {
    fn from_response(r: &InetResponse) -> Self {
        DiagDetail {
            sock: DiagSocket::from_response(r),
            rqueue: r.header.recv_queue,
            wqueue: r.header.send_queue,
            drops: r.nlas.iter().find_map(|n| match n {
                Nla::MemInfo(m) => Some(m.drops),
                _ => None,
            }),
        }
    }
}

/// Netlink sockets per network namespace (by inode).
#[derive(Default)]
pub(crate) struct Diag {
    sockets: HashMap<u32, Socket>,
    /// How to enter namespaces found by the start-up walk.
    paths: HashMap<u32, std::path::PathBuf>,
}

/// Most namespaces with an open netlink socket. A socket keeps its namespace
/// alive, so with namespaces coming and going (containers) the cache must
/// not grow without bound; reopening one costs a thread and a setns.
const MAX_NAMESPACES: usize = 32;

fn open_socket() -> io::Result<Socket> {
    let mut s = Socket::new(NETLINK_SOCK_DIAG)?;
    s.bind_auto()?;
    s.connect(&NlAddr::new(0, 0))?;
    Ok(s)
}

impl Diag {
    fn socket(&mut self, netns: u32) -> io::Result<&Socket> {
        if !self.sockets.contains_key(&netns) {
            let s = if netns == 0 {
                // Namespace unknown: ours.
                open_socket()?
            } else {
                netns::run_in(&self.path_of(netns)?, open_socket)?
            };
            if self.sockets.len() >= MAX_NAMESPACES {
                // Drop them all rather than track use: rare, and cheap to redo.
                self.sockets.clear();
            }
            self.sockets.insert(netns, s);
        }
        Ok(&self.sockets[&netns])
    }

    fn path_of(&self, netns: u32) -> io::Result<std::path::PathBuf> {
        let known = self.paths.get(&netns).filter(|p| p.exists()).cloned();
        known.or_else(|| netns::find_path(netns)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no way to enter network namespace {netns}"),
            )
        })
    }

    /// False when namespace `netns` holds no TCP socket at all (hashed or
    /// timewait), from its /proc/net/sockstat counters. A dump walks the
    /// kernel's one established-socket hash table shared by every namespace
    /// (~1.5 ms per dump here, whatever the namespace holds): with thousands
    /// of empty namespaces, not dumping them is most of the start-up time.
    fn has_tcp(&mut self, netns: u32) -> io::Result<bool> {
        let read = || -> io::Result<bool> {
            let v4 = std::fs::read_to_string("/proc/thread-self/net/sockstat")?;
            // Without IPv6 there is no sockstat6: nothing there.
            let v6 = std::fs::read_to_string("/proc/thread-self/net/sockstat6").unwrap_or_default();
            Ok(sockstat_has_tcp(&v4, &v6))
        };
        if netns == 0 {
            return read();
        }
        netns::run_in(&self.path_of(netns)?, read)
    }

    fn request<T>(
        &mut self,
        netns: u32,
        flags: u16,
        req: InetRequest,
        each: fn(&InetResponse) -> T,
    ) -> io::Result<Vec<T>> {
        let sock = self.socket(netns)?;
        let mut hdr = NetlinkHeader::default();
        hdr.flags = flags;
        let mut msg = NetlinkMessage::new(hdr, SockDiagMessage::InetRequest(req).into());
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        sock.send(&buf, 0)?;

        let mut out = Vec::new();
        let mut rx = vec![0u8; 64 * 1024];
        loop {
            let n = sock.recv(&mut &mut rx[..], 0)?;
            let mut off = 0;
            while off < n {
                let m = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[off..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = m.header.length as usize;
                match m.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        out.push(each(&r));
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        // An exact lookup that finds nothing answers ENOENT.
                        return match e.code {
                            Some(c) if -c.get() == libc::ENOENT => Ok(out),
                            Some(c) => Err(io::Error::from_raw_os_error(-c.get())),
                            None => Ok(out), // an ACK
                        };
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
            if flags & NLM_F_DUMP == 0 {
                return Ok(out);
            }
        }
    }

    /// TCP sockets of one family in namespace `netns`, in the states of
    /// `states` (inet_diag bits, `1 << state`; request sockets need bit 12).
    pub(crate) fn dump_states(
        &mut self,
        netns: u32,
        ipv6: bool,
        states: u32,
    ) -> io::Result<Vec<DiagSocket>> {
        let req = dump_request(ipv6, states, ExtensionFlags::empty());
        self.request(
            netns,
            NLM_F_REQUEST | NLM_F_DUMP,
            req,
            DiagSocket::from_response,
        )
    }

    /// Like [`Diag::dump_states`], with each socket's queues and drops
    /// (`INET_DIAG_SKMEMINFO`): what `--top` shows per listener.
    pub(crate) fn dump_detailed(
        &mut self,
        netns: u32,
        ipv6: bool,
        states: u32,
    ) -> io::Result<Vec<DiagDetail>> {
        let req = dump_request(ipv6, states, ExtensionFlags::SKMEMINFO);
        self.request(
            netns,
            NLM_F_REQUEST | NLM_F_DUMP,
            req,
            DiagDetail::from_response,
        )
    }

    /// Remembers how to enter namespace `inode` (found by a /proc walk that
    /// already happened), so opening its netlink socket needs no new walk.
    pub(crate) fn know_path(&mut self, inode: u32, path: std::path::PathBuf) {
        self.paths.insert(inode, path);
    }
}

fn dump_request(ipv6: bool, states: u32, extensions: ExtensionFlags) -> InetRequest {
    InetRequest {
        family: if ipv6 { AF_INET6 } else { AF_INET },
        protocol: IPPROTO_TCP,
        extensions,
        states: StateFlags::from_bits_retain(states),
        socket_id: if ipv6 {
            SocketId::new_v6()
        } else {
            SocketId::new_v4()
        },
    }
}

/// True unless sockstat says no TCP socket is hashed (`inuse`: listeners,
/// connections; request sockets hang off a listener) and none is in
/// timewait (`tw`). Unreadable or unexpected text: true (dump to be sure).
fn sockstat_has_tcp(v4: &str, v6: &str) -> bool {
    let field = |text: &str, line: &str, name: &str| -> Option<u64> {
        let rest = text.lines().find_map(|l| l.strip_prefix(line))?;
        let mut it = rest.split_whitespace();
        while let Some(k) = it.next() {
            if k == name {
                return it.next()?.parse().ok();
            }
        }
        None
    };
    let counts = [
        field(v4, "TCP:", "inuse"),
        field(v4, "TCP:", "tw"),
        if v6.is_empty() {
            Some(0)
        } else {
            field(v6, "TCP6:", "inuse")
        },
    ];
    counts.iter().any(|c| c.is_none_or(|n| n > 0))
}

impl SocketTable for Diag {
    fn dump(&mut self, netns: u32, wanted: Wanted, family: u16) -> io::Result<Vec<DiagSocket>> {
        let mut out = Vec::new();
        if !self.has_tcp(netns)? {
            return Ok(out);
        }
        for (fam, ipv6) in [(AF_INET as u16, false), (AF_INET6 as u16, true)] {
            if family == 0 || family == fam {
                out.extend(self.dump_states(netns, ipv6, wanted.state_bits())?);
            }
        }
        // The kernel may add sockets in states we did not ask for (a full
        // socket's listener, say): keep what was asked.
        out.retain(|s| wanted.includes(s.state));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_says_when_a_namespace_has_no_tcp_socket() {
        let empty4 =
            "sockets: used 0\nTCP: inuse 0 orphan 0 tw 0 alloc 12 mem 0\nUDP: inuse 0 mem 0\n";
        let empty6 = "TCP6: inuse 0\nUDP6: inuse 0\n";
        assert!(!sockstat_has_tcp(empty4, empty6));
        assert!(!sockstat_has_tcp(empty4, ""), "no IPv6");
        assert!(sockstat_has_tcp(
            &empty4.replace("inuse 0 orphan", "inuse 1 orphan"),
            empty6
        ));
        assert!(sockstat_has_tcp(&empty4.replace("tw 0", "tw 3"), empty6));
        assert!(sockstat_has_tcp(empty4, "TCP6: inuse 2\n"));
        assert!(sockstat_has_tcp("garbage", empty6), "unreadable: dump");
    }
    use std::net::{TcpListener, TcpStream};

    /// Real kernel: our own namespace's sockets are found by a dump, the
    /// way the trackers and the snapshot ask.
    #[test]
    fn finds_a_live_connection_and_its_listener_in_a_dump() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_a, _) = l.accept().unwrap();
        let mut d = Diag::default();
        let own = std::fs::metadata("/proc/self/ns/net").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino() as u32
        });
        let ns = own.unwrap();
        let all = SocketTable::dump(&mut d, ns, Wanted::All, 0).unwrap();
        let got = all
            .iter()
            .find(|s| s.local == c.local_addr().unwrap() && s.remote == c.peer_addr().unwrap())
            .expect("found");
        assert_eq!(got.state, TcpState::Established);
        assert!(got.inode != 0);
        assert!(
            all.iter()
                .any(|s| s.local == l.local_addr().unwrap() && s.state == TcpState::Listen)
        );
        // A tuple nobody uses is simply absent.
        let unused: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(!all.iter().any(|s| s.local == unused));
    }
}
