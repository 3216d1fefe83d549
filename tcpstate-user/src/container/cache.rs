//! The owner -> [`Attribution`] cache. Reading `/proc/<pid>/cgroup` costs a
//! few microseconds; a busy server owns thousands of sockets, so each
//! process is read once and then served from memory.
//!
//! Keyed by (pid, comm): a reused pid usually runs another program, whose
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

use super::{Attribution, cgroup};
use crate::event::Task;

pub const CAPACITY: usize = 4096;
pub const TTL: Duration = Duration::from_secs(10);

struct Entry {
    at: Instant,
    /// `None`: the process was gone (or unreadable) when we looked.
    attribution: Option<Arc<Attribution>>,
}

pub struct Attributor {
    proc_root: PathBuf,
    cache: HashMap<(u32, [u8; tcpstate_common::COMM_LEN]), Entry>,
    capacity: usize,
    /// /proc reads, for tests and the curious.
    pub reads: u64,
}

impl Default for Attributor {
    fn default() -> Self {
        Self::new(PathBuf::from("/proc"), CAPACITY)
    }
}

impl Attributor {
    pub fn new(proc_root: PathBuf, capacity: usize) -> Self {
        Attributor {
            proc_root,
            cache: HashMap::new(),
            capacity: capacity.max(1),
            reads: 0,
        }
    }

    /// Where `owner` runs, or `None` when unknown (no owner, or its process
    /// is gone).
    pub fn of(&mut self, owner: Option<&Task>) -> Option<Arc<Attribution>> {
        let owner = owner?;
        let key = (owner.pid, owner.comm);
        let now = Instant::now();
        if let Some(e) = self.cache.get(&key)
            && now.duration_since(e.at) < TTL
        {
            return e.attribution.clone();
        }
        let attribution = self.read(owner.pid).map(Arc::new);
        if self.cache.len() >= self.capacity && !self.cache.contains_key(&key) {
            self.cache.retain(|_, e| now.duration_since(e.at) < TTL);
            if self.cache.len() >= self.capacity {
                self.cache.clear();
            }
        }
        self.cache.insert(
            key,
            Entry {
                at: now,
                attribution: attribution.clone(),
            },
        );
        attribution
    }

    fn read(&mut self, pid: u32) -> Option<Attribution> {
        self.reads += 1;
        let path = self.proc_root.join(pid.to_string()).join("cgroup");
        let contents = std::fs::read_to_string(path).ok()?;
        cgroup::proc_cgroup_path(&contents).map(Attribution::from_path)
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
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
        let c = a.of(Some(&task(100, b"server"))).unwrap();
        assert_eq!(c.container_id.as_deref(), Some(ID));
        assert_eq!(c.short_id(), Some(&ID[..12]));
        let host = a.of(Some(&task(200, b"sshd"))).unwrap();
        assert_eq!(host.container_id, None);
        for _ in 0..10 {
            a.of(Some(&task(100, b"server")));
        }
        assert_eq!(a.reads, 2);
        // Same pid, another program: looked up again.
        a.of(Some(&task(100, b"other")));
        assert_eq!(a.reads, 3);
        assert_eq!(a.of(None), None);
        // Gone processes are unknown, and remembered as such.
        assert_eq!(a.of(Some(&task(999, b"gone"))), None);
        assert_eq!(a.of(Some(&task(999, b"gone"))), None);
        assert_eq!(a.reads, 4);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn cache_stays_bounded() {
        let root = fake_proc("bounded");
        let mut a = Attributor::new(root.clone(), 8);
        for pid in 0..100 {
            a.of(Some(&task(1000 + pid, b"x")));
            assert!(a.len() <= 8);
        }
        std::fs::remove_dir_all(root).unwrap();
    }
}
