//! The kernel's side of `--top`, read once a second: one sock_diag dump per
//! namespace in scope and address family, with each socket's queues and
//! drops (`INET_DIAG_SKMEMINFO`), the owners of listeners (one /proc walk
//! when a new listener appears, not every second) and each namespace's
//! `ip_local_port_range`. What it reads becomes a [`Sample`] for the model.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
};

use super::model::{ListenerSample, PortRange, Sample};
use crate::{
    diag::{Diag, DiagDetail},
    enrich::{Filter, ListenKey, owners::owners_of, table::Wanted},
    event::{Task, TcpState},
};

/// Most namespaces read (as the start-up snapshot).
const MAX_NAMESPACES: usize = 4096;

/// Rounds between two walks of /proc for new namespaces, and between two
/// reads of a namespace's port range (both change rarely; the walk costs).
const REDISCOVER_EVERY: u64 = 10;

/// Whether a listener's owner passes `--container`/`--cgroup`, and the
/// container it runs in (short ID) for the screen.
/// Arguments: the socket's cgroup id from the kernel (0 if unknown) and its
/// owner, as [`crate::container::Attributor::of_socket`] takes them.
pub(crate) type Attribute<'a> = dyn FnMut(u64, Option<&Task>) -> (bool, Option<String>) + 'a;

pub(crate) struct Sampler {
    diag: Diag,
    /// `--netns`'s namespace, or 0 for every one.
    scope: u32,
    filter: Filter,
    /// Whether dumps stand for the filters (not with a container filter:
    /// request and timewait sockets have no owner to filter by).
    correct: bool,
    namespaces: Vec<(u32, Option<PathBuf>)>,
    /// Listener owners by socket inode.
    owners: HashMap<u32, Option<Task>>,
    port_ranges: HashMap<u32, PortRange>,
    rounds: u64,
    /// Dumps and reads that failed, and the last error, for the screen.
    pub errors: u64,
    pub last_error: Option<String>,
}

impl Sampler {
    pub fn new(scope: u32, filter: Filter, correct: bool) -> Self {
        Sampler {
            diag: Diag::default(),
            scope,
            filter,
            correct,
            namespaces: Vec::new(),
            owners: HashMap::new(),
            port_ranges: HashMap::new(),
            rounds: 0,
            errors: 0,
            last_error: None,
        }
    }

    /// The sampler for `--netns` as given (validated by the probe already:
    /// an error here leaves every namespace in scope, which the dump errors
    /// would show). `correct`: the dumps stand for the filters (no
    /// container filter).
    pub(crate) fn for_netns(netns: Option<&str>, filter: Filter, correct: bool) -> Self {
        let scope = netns
            .and_then(|s| crate::netns::resolve(s).ok())
            .unwrap_or(0);
        Sampler::new(scope, filter, correct)
    }

    fn failed(&mut self, what: String) {
        self.errors += 1;
        self.last_error = Some(what);
    }

    fn discover(&mut self) {
        self.namespaces = if self.scope != 0 {
            vec![(self.scope, crate::netns::find_path(self.scope))]
        } else {
            crate::netns::discover(MAX_NAMESPACES)
                .into_iter()
                .map(|(inode, path)| {
                    self.diag.know_path(inode, path.clone());
                    (inode, Some(path))
                })
                .collect()
        };
        self.port_ranges.clear();
    }

    /// One round: every namespace's sockets, its listeners with their
    /// owners, and the port ranges not read yet.
    pub fn sample(&mut self, attribute: &mut Attribute<'_>) -> Sample {
        if self.rounds.is_multiple_of(REDISCOVER_EVERY) {
            self.discover();
        }
        self.rounds += 1;
        let mut out = Sample::default();
        let mut sockets: Vec<(u32, DiagDetail)> = Vec::new();
        let namespaces = self.namespaces.clone();
        for (netns, path) in &namespaces {
            match self.dump(*netns) {
                Ok(found) => sockets.extend(found.into_iter().map(|d| (*netns, d))),
                Err(e) => {
                    self.failed(format!("netns {netns}: {e}"));
                    out.failed.push(*netns);
                    continue;
                }
            }
            if !self.port_ranges.contains_key(netns)
                && let Some(path) = path
            {
                match read_port_range(path) {
                    Ok(r) => {
                        self.port_ranges.insert(*netns, r);
                    }
                    Err(e) => self.failed(format!("ip_local_port_range of netns {netns}: {e}")),
                }
            }
        }
        out.port_ranges = self.port_ranges.clone();
        out.listeners = self.listeners(&sockets, attribute);
        out.sockets = self.correct.then_some(sockets);
        out
    }

    fn dump(&mut self, netns: u32) -> std::io::Result<Vec<DiagDetail>> {
        let bits = Wanted::All.state_bits();
        let mut found = Vec::new();
        for (family, ipv6) in [
            (tcpstate_common::AF_INET, false),
            (tcpstate_common::AF_INET6, true),
        ] {
            if self.filter.family == 0 || self.filter.family == family {
                found.extend(self.diag.dump_detailed(netns, ipv6, bits)?);
            }
        }
        found.retain(|d| {
            let s = &d.sock;
            self.filter
                .matches(s.family, s.local.port(), s.remote.port())
        });
        Ok(found)
    }

    fn listeners(
        &mut self,
        sockets: &[(u32, DiagDetail)],
        attribute: &mut Attribute<'_>,
    ) -> Vec<ListenerSample> {
        let listening = || {
            sockets
                .iter()
                .filter(|(_, d)| d.sock.state == TcpState::Listen)
        };
        let unknown: HashSet<u32> = listening()
            .map(|(_, d)| d.sock.inode)
            .filter(|i| *i != 0 && !self.owners.contains_key(i))
            .collect();
        if !unknown.is_empty() {
            let found = owners_of(&unknown);
            for inode in unknown {
                // Remembered even when not found (a listener whose owner
                // exited, or out of our sight): one walk per new listener.
                self.owners.insert(inode, found.get(&inode).copied());
            }
        }
        let live: HashSet<u32> = listening().map(|(_, d)| d.sock.inode).collect();
        self.owners.retain(|i, _| live.contains(i));
        let mut out = Vec::new();
        for (netns, d) in listening() {
            let owner = self.owners.get(&d.sock.inode).copied().flatten();
            let (keep, container) = attribute(d.sock.cgroup_id, owner.as_ref());
            if !keep {
                continue;
            }
            out.push(ListenerSample {
                key: ListenKey {
                    netns: *netns,
                    port: d.sock.local.port(),
                    family: d.sock.family,
                },
                inode: d.sock.inode,
                cgroup_id: d.sock.cgroup_id,
                addr: d.sock.local.ip(),
                owner,
                container,
                queue: d.rqueue,
                limit: d.wqueue,
                drops: d.drops,
            });
        }
        out
    }
}

/// A namespace's `net.ipv4.ip_local_port_range` (IPv6 uses the same one):
/// /proc/sys/net answers for the namespace of the thread that opens it.
fn read_port_range(path: &std::path::Path) -> std::io::Result<PortRange> {
    let text = crate::netns::run_in(path, || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
    })?;
    PortRange::parse(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected ip_local_port_range `{}`", text.trim()),
        )
    })
}
