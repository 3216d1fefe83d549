//! The start-up snapshot: the sockets that already exist on the filtered
//! ports, listed once with their state and owner (like `ss -tanp`), so a
//! transition seen later is never out of context. One sock_diag dump per
//! family, at start only.

use std::collections::HashSet;

use super::{Filter, owners::owners_of};
use crate::{
    clock::boot_ns,
    diag::{Diag, DiagSocket},
    event::{Note, Source, Task, TcpEvent, TcpState},
};
use tcpstate_common::{AF_INET, AF_INET6};

pub fn take(diag: &mut Diag, netns: u32, filter: &Filter) -> std::io::Result<Vec<TcpEvent>> {
    let mut socks: Vec<DiagSocket> = Vec::new();
    for (family, ipv6) in [(AF_INET, false), (AF_INET6, true)] {
        if filter.family == 0 || filter.family == family {
            socks.extend(
                diag.dump(netns, ipv6)?
                    .into_iter()
                    .filter(|s| filter.matches(family, s.local.port(), s.remote.port())),
            );
        }
    }
    let inodes: HashSet<u32> = socks.iter().map(|s| s.inode).filter(|i| *i != 0).collect();
    let owners = owners_of(&inodes);
    let now = boot_ns();
    let mut events: Vec<TcpEvent> = socks
        .iter()
        .map(|s| event(s, netns, now, owners.get(&s.inode).copied()))
        .collect();
    inherit_listener_owners(&mut events);
    Ok(events)
}

/// Request sockets (half-open, SYN_RECV) have no file, hence no owner of
/// their own: like the kernel side, credit them to their listener's owner.
fn inherit_listener_owners(events: &mut [TcpEvent]) {
    let listeners: Vec<(u16, Task)> = events
        .iter()
        .filter(|e| e.new == TcpState::Listen)
        .filter_map(|e| e.owner.map(|o| (e.lport, o)))
        .collect();
    for e in events.iter_mut() {
        if e.new == TcpState::SynRecv && e.owner.is_none() {
            e.owner = listeners
                .iter()
                .find(|(port, _)| *port == e.lport)
                .map(|(_, o)| *o);
        }
    }
}

fn event(s: &DiagSocket, netns: u32, now: u64, owner: Option<Task>) -> TcpEvent {
    TcpEvent {
        ts_ns: now,
        skaddr: 0,
        dwell_ns: None,
        owner,
        on_cpu: Task::current(),
        netns,
        family: s.family,
        laddr: s.local.ip(),
        lport: s.local.port(),
        raddr: s.remote.ip(),
        rport: s.remote.port(),
        old: s.state,
        new: s.state,
        source: Source::SockDiag,
        replayed: false,
        note: Some(Note::Snapshot),
        peer_fin: None,
    }
}
