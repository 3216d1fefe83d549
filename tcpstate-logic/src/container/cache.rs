//! Row -> [`Attribution`], cached. A row's socket cgroup id from the kernel
//! is resolved through the cgroup2 mount ([`Cgroupfs`]): it names the
//! socket's container even when its process has exited. Rows without one
//! (a kernel that does not give it, rows of request and timewait sockets
//! from the start-up read) fall back to the owner's `/proc/<pid>/cgroup`,
//! which only works while that process lives.
//!
//! A resolved id is kept (ids are not reused within a boot); an id that
//! resolves to nothing (its cgroup is gone, or not walked yet) is asked
//! again after [`cgroupfs::REWALK`].
//!
//! The owner cache is keyed by (pid, comm): a reused pid usually runs another program, whose
//! different comm misses the cache; entries also expire after [`TTL`]
//! (a process may move to another cgroup, and a reused pid may run the same
//! program). Reading the start time from `/proc/<pid>/stat` would pin reuse
//! exactly, but at the price of a read per event, which is what the cache
//! is for. Bounded: at [`CAPACITY`] entries the expired ones go, then all.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    Attribution, cgroup,
    cgroupfs::{self, Cgroupfs},
};
use crate::event::{Task, TcpEvent};

pub(crate) const CAPACITY: usize = 4096;
pub(crate) const TTL: Duration = Duration::from_secs(10);

struct Entry {
    at: Instant,
    /// `None`: the process was gone (or unreadable) when we looked.
    attribution: Option<Arc<Attribution>>,
}

pub struct Attributor {
    proc_root: PathBuf,
    cache: HashMap<(u32, [u8; tcpstate_common::COMM_LEN]), Entry>,
    cgroupfs: Option<Cgroupfs>,
    by_id: HashMap<u64, Entry>,
    capacity: usize,
    /// /proc reads, for tests and the curious.
    pub reads: u64,
}

impl Default for Attributor {
    fn default() -> Self {
        Self::new(PathBuf::from("/proc"), CAPACITY).with_cgroupfs(Cgroupfs::system())
    }
}

/// Inserts into a bounded cache: at capacity the expired entries go, then
/// all (a burst of new processes or cgroups; they are looked up again).
fn insert_bounded<K: std::hash::Hash + Eq>(
    cache: &mut HashMap<K, Entry>,
    capacity: usize,
    key: K,
    entry: Entry,
    expired: impl Fn(&Entry) -> bool,
) {
    if cache.len() >= capacity && !cache.contains_key(&key) {
        cache.retain(|_, e| !expired(e));
        if cache.len() >= capacity {
            cache.clear();
        }
    }
    cache.insert(key, entry);
}

impl Attributor {
    pub fn new(proc_root: PathBuf, capacity: usize) -> Self {
        Attributor {
            proc_root,
            cache: HashMap::new(),
            cgroupfs: None,
            by_id: HashMap::new(),
            capacity: capacity.max(1),
            reads: 0,
        }
    }

    /// Resolve the kernel's cgroup ids on this mount (none: owners only).
    pub(crate) fn with_cgroupfs(mut self, cgroupfs: Option<Cgroupfs>) -> Self {
        self.cgroupfs = cgroupfs;
        self
    }

    /// Where a row's socket belongs: its cgroup id's cgroup, else its
    /// owner's (while that process lives), else `None`.
    pub fn of(&mut self, ev: &TcpEvent) -> Option<Arc<Attribution>> {
        self.of_socket(ev.cgroup_id, ev.owner.as_ref())
    }

    /// The same for a socket known by its cgroup id (0 if unknown) and
    /// owner, such as one a sock_diag dump listed.
    pub fn of_socket(&mut self, cgroup_id: u64, owner: Option<&Task>) -> Option<Arc<Attribution>> {
        self.of_cgroup(cgroup_id).or_else(|| self.of_owner(owner))
    }

    /// The cgroup with kernel id `id`, when it exists (or existed when it
    /// was first asked for).
    pub(crate) fn of_cgroup(&mut self, id: u64) -> Option<Arc<Attribution>> {
        if id == 0 {
            return None;
        }
        let fs = self.cgroupfs.as_mut()?;
        let now = Instant::now();
        // An id not found is asked again soon: with the walk fallback a
        // new cgroup is only found by the next walk.
        if let Some(e) = self.by_id.get(&id)
            && (e.attribution.is_some() || now.duration_since(e.at) < cgroupfs::REWALK)
        {
            return e.attribution.clone();
        }
        let attribution = fs
            .path_of(id)
            .map(|p| Arc::new(Attribution::of_cgroup(id, &p)));
        self.remember_id(id, attribution.clone(), now);
        attribution
    }

    /// Where `owner` runs, or `None` when unknown (no owner, or its process
    /// is gone).
    pub(crate) fn of_owner(&mut self, owner: Option<&Task>) -> Option<Arc<Attribution>> {
        let owner = owner?;
        let key = (owner.pid, owner.comm);
        let now = Instant::now();
        if let Some(e) = self.cache.get(&key)
            && now.duration_since(e.at) < TTL
        {
            return e.attribution.clone();
        }
        let attribution = self.read(owner.pid).map(Arc::new);
        let entry = Entry {
            at: now,
            attribution: attribution.clone(),
        };
        insert_bounded(&mut self.cache, self.capacity, key, entry, |e| {
            now.duration_since(e.at) >= TTL
        });
        attribution
    }

    /// Every cgroup on the mount now, attributed (for the kernel filter's
    /// first verdicts).
    pub fn all_cgroups(&mut self) -> Vec<Arc<Attribution>> {
        let Some(fs) = &self.cgroupfs else {
            return Vec::new();
        };
        let now = Instant::now();
        fs.walk()
            .into_iter()
            .map(|(id, path)| {
                let a = Arc::new(Attribution::of_cgroup(id, &path));
                self.remember_id(id, Some(a.clone()), now);
                a
            })
            .collect()
    }

    /// Caches what cgroup id `id` resolved to; at capacity, ids not found
    /// that are due to be asked again go first.
    fn remember_id(&mut self, id: u64, attribution: Option<Arc<Attribution>>, now: Instant) {
        let entry = Entry {
            at: now,
            attribution,
        };
        insert_bounded(&mut self.by_id, self.capacity, id, entry, |e| {
            e.attribution.is_none() && now.duration_since(e.at) >= cgroupfs::REWALK
        });
    }

    fn read(&mut self, pid: u32) -> Option<Attribution> {
        self.reads += 1;
        let path = self.proc_root.join(pid.to_string()).join("cgroup");
        let contents = std::fs::read_to_string(path).ok()?;
        cgroup::proc_cgroup_path(&contents).map(Attribution::from_path)
    }

    pub fn len(&self) -> usize {
        self.cache.len() + self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4c8a3ab0e1c8d7b6f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f8e";

    fn task(pid: u32, comm: &[u8]) -> Task {
        let mut c = [0u8; tcpstate_common::COMM_LEN];
        c[..comm.len()].copy_from_slice(comm);
        Task { pid, comm: c }
    }

    fn fake_proc(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("tcpstate-proc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (pid, path) in [
            (100, format!("/libpod_parent/libpod-{ID}")),
            (200, "/user.slice/user-0.slice/session-1.scope".to_string()),
        ] {
            std::fs::create_dir_all(root.join(pid.to_string())).unwrap();
            std::fs::write(
                root.join(pid.to_string()).join("cgroup"),
                format!("1:name=systemd:{path}\n0::{path}\n"),
            )
            .unwrap();
        }
        root
    }

    #[test]
    fn owner_attributed_once_then_cached() {
        let root = fake_proc("cached");
        let mut a = Attributor::new(root.clone(), 16);
        let c = a.of_owner(Some(&task(100, b"server"))).unwrap();
        assert_eq!(c.container_id.as_deref(), Some(ID));
        assert_eq!(c.short_id(), Some(&ID[..12]));
        let host = a.of_owner(Some(&task(200, b"sshd"))).unwrap();
        assert_eq!(host.container_id, None);
        for _ in 0..10 {
            a.of_owner(Some(&task(100, b"server")));
        }
        assert_eq!(a.reads, 2);
        // Same pid, another program: looked up again.
        a.of_owner(Some(&task(100, b"other")));
        assert_eq!(a.reads, 3);
        assert_eq!(a.of_owner(None), None);
        // Gone processes are unknown, and remembered as such.
        assert_eq!(a.of_owner(Some(&task(999, b"gone"))), None);
        assert_eq!(a.of_owner(Some(&task(999, b"gone"))), None);
        assert_eq!(a.reads, 4);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn cache_stays_bounded() {
        let root = fake_proc("bounded");
        let mut a = Attributor::new(root.clone(), 8);
        for pid in 0..100 {
            a.of_owner(Some(&task(1000 + pid, b"x")));
            assert!(a.len() <= 8);
        }
        std::fs::remove_dir_all(root).unwrap();
    }
}
