//! Container attribution: which cgroup, container and Kubernetes pod a
//! socket's owner runs in.
//!
//! Each row carries its socket's cgroup id from the kernel (the cgroup the
//! socket was created in; an accepted socket gets its listener's), kept
//! by the socket after its process exits. [`cgroupfs`] turns the id into
//! the cgroup's path; where there is no id, the path comes from
//! `/proc/<owner pid>/cgroup` of the row's *owner* (never the on-CPU task:
//! most transitions run in softirq context or in the peer process). Both
//! go through a small bounded cache ([`cache`]). [`cgroup`] parses the
//! paths runtimes write; [`select`] is the `--cgroup` / `--container`
//! filter (the loader tells the kernel program which cgroups it rules out).

pub mod cache;
pub mod cgroup;
pub mod cgroupfs;
pub mod select;

use std::{cell::RefCell, rc::Rc};

pub(crate) use cache::Attributor;

/// Where one process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    /// The cgroup-v2 path, as `/proc/<pid>/cgroup` shows it to tcpstate.
    pub cgroup: String,
    pub container_id: Option<String>,
    pub runtime: Option<cgroup::Runtime>,
    pub pod_uid: Option<String>,
    /// The kernel's id of the cgroup, when the attribution came from it
    /// (not from the owner's `/proc/<pid>/cgroup`).
    pub cgroup_id: Option<u64>,
}

impl Attribution {
    pub(crate) fn from_path(path: &str) -> Self {
        let parsed = cgroup::parse(path);
        Attribution {
            cgroup_id: None,
            cgroup: path.to_string(),
            container_id: parsed.container_id,
            runtime: parsed.runtime,
            pod_uid: parsed.pod_uid,
        }
    }

    /// The cgroup with kernel id `id` at `path`.
    pub(crate) fn of_cgroup(id: u64, path: &str) -> Self {
        Attribution {
            cgroup_id: Some(id),
            ..Attribution::from_path(path)
        }
    }

    /// The 12-digit short ID `podman ps` and `docker ps` show.
    pub(crate) fn short_id(&self) -> Option<&str> {
        self.container_id
            .as_deref()
            .map(|id| &id[..12.min(id.len())])
    }
}

/// One attributor shared by the stages that need it (filter, renderers,
/// metrics), all on the reader's thread.
pub type Shared = Rc<RefCell<Attributor>>;

/// The container settings the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Resolve owners at all (something shows or uses the attribution).
    pub enabled: bool,
    pub select: select::Select,
}

impl Options {
    /// The attributor the stages share, when attribution is on.
    pub fn attributor(&self) -> Option<Shared> {
        self.enabled
            .then(|| Rc::new(RefCell::new(Attributor::default())))
    }
}
