//! The start-up snapshot: the sockets that already exist, in every network
//! namespace in scope, listed once with their state and owner (like `ss
//! -tanp`), so a transition seen later is never out of context. It also
//! finds who owns each listening socket: the kernel side learns a listener's
//! owner only when it sees listen(), so for servers started before tracing
//! it must be told (see `Probe::seed_listeners`).

use std::collections::{HashMap, HashSet};

use super::{
    Filter,
    owners::owners_counted,
    table::{SocketTable, Wanted},
};
use crate::{
    clock::boot_ns,
    diag::DiagSocket,
    event::{Note, Source, Task, TcpEvent, TcpState},
};

/// A listening socket's identity, as the kernel side keys its owners.
pub use tcpstate_common::ListenKey;

#[derive(Debug, Default)]
pub struct Snapshot {
    /// State rows for the sockets the filter matches (empty unless rows
    /// were asked for).
    pub rows: Vec<TcpEvent>,
    /// Every listener found with its owner, whatever the filter.
    pub listeners: HashMap<ListenKey, Task>,
    /// Namespaces that could not be read.
    pub failed: Vec<(u32, std::io::Error)>,
    /// Namespaces left out because there were more than the cap.
    pub skipped_namespaces: usize,
    /// Processes whose open files we may not read: owners unknown there.
    pub unreadable_processes: usize,
    /// A stop signal arrived during the read: it ended there.
    pub interrupted: bool,
}

/// Lists the sockets of `namespaces`: all of them when `rows` is set (one
/// dump per namespace and family), else only the listeners. `stop` is asked
/// between namespaces: when it says so, the read ends there (`interrupted`).
pub fn take(
    table: &mut dyn SocketTable,
    namespaces: &[u32],
    filter: &Filter,
    rows: bool,
    stop: &dyn Fn() -> bool,
) -> Snapshot {
    let mut found: Vec<(u32, DiagSocket)> = Vec::new();
    let mut snap = Snapshot::default();
    let wanted = if rows { Wanted::All } else { Wanted::Listeners };
    for &netns in namespaces {
        if stop() {
            snap.interrupted = true;
            return snap;
        }
        match table.dump(netns, wanted, filter.family) {
            Ok(socks) => found.extend(socks.into_iter().map(|s| (netns, s))),
            Err(e) => snap.failed.push((netns, e)),
        }
    }
    let inodes: HashSet<u32> = found
        .iter()
        .map(|(_, s)| s.inode)
        .filter(|i| *i != 0)
        .collect();
    let (owners, denied) = owners_counted(&inodes);
    snap.unreadable_processes = denied;
    for (netns, s) in &found {
        if s.state == TcpState::Listen
            && let Some(o) = owners.get(&s.inode)
        {
            snap.listeners.insert(
                ListenKey {
                    netns: *netns,
                    port: s.local.port(),
                    family: s.family,
                },
                *o,
            );
        }
    }
    if rows {
        let now = boot_ns();
        for (netns, s) in &found {
            if !filter.matches(s.family, s.local.port(), s.remote.port()) {
                continue;
            }
            // Request sockets have no file: credit them, like the kernel
            // side does, to their listener's owner.
            let owner = owners.get(&s.inode).copied().or_else(|| {
                (s.state == TcpState::SynRecv)
                    .then(|| {
                        snap.listeners.get(&ListenKey {
                            netns: *netns,
                            port: s.local.port(),
                            family: s.family,
                        })
                    })
                    .flatten()
                    .copied()
            });
            snap.rows.push(event(s, *netns, now, owner));
        }
    }
    snap
}

fn event(s: &DiagSocket, netns: u32, now: u64, owner: Option<Task>) -> TcpEvent {
    TcpEvent {
        ts_ns: now,
        skaddr: 0,
        dwell_ns: None,
        cgroup_id: s.cgroup_id,
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
        retransmits: 0,
        detail: 0,
        reason: None,
        data_retransmits: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::table::fake::{FakeTable, sock};

    #[test]
    fn every_namespace_is_dumped_and_rows_are_filtered_state_rows() {
        let mut t = FakeTable::default();
        t.socks.insert(
            1,
            vec![
                sock(TcpState::Listen, "0.0.0.0:10050", "0.0.0.0:0", 0),
                sock(
                    TcpState::Established,
                    "127.0.0.1:10050",
                    "127.0.0.1:5000",
                    0,
                ),
                sock(TcpState::Established, "127.0.0.1:22", "127.0.0.1:5001", 0),
            ],
        );
        t.socks.insert(
            2,
            vec![sock(
                TcpState::SynRecv,
                "10.0.0.1:10050",
                "10.0.0.2:6000",
                0,
            )],
        );
        let filter = Filter {
            local_ports: vec![10050],
            remote_ports: vec![10050],
            family: 0,
        };
        let snap = take(&mut t, &[1, 2], &filter, true, &|| false);
        assert_eq!(t.dumps, vec![(1, Wanted::All), (2, Wanted::All)]);
        assert_eq!(snap.rows.len(), 3);
        assert!(snap.rows.iter().all(|r| r.is_state_row()));
        assert_eq!(snap.rows[2].netns, 2);
    }

    #[test]
    fn without_rows_only_listeners_are_asked_for() {
        let mut t = FakeTable::default();
        let snap = take(&mut t, &[7], &Filter::default(), false, &|| false);
        assert_eq!(t.dumps, vec![(7, Wanted::Listeners)]);
        assert!(snap.rows.is_empty());
    }

    #[test]
    fn a_stop_request_ends_the_read_between_namespaces() {
        let mut t = FakeTable::default();
        let calls = std::cell::Cell::new(0);
        let stop = || {
            calls.set(calls.get() + 1);
            calls.get() > 2
        };
        let snap = take(&mut t, &[1, 2, 3, 4], &Filter::default(), true, &stop);
        assert!(snap.interrupted);
        assert_eq!(t.dumps.len(), 2, "two namespaces read, then stopped");
    }
}
