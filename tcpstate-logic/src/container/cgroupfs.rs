//! Cgroup ids to cgroup paths, through the cgroup2 mount.
//!
//! The kernel program gives each row its socket's cgroup-v2 id, which is the
//! inode number of the cgroup's directory in the cgroup2 filesystem (64-bit
//! kernfs ids, unique for the boot). An id is turned into its path the way
//! systemd and bpftool do it: the id is also the directory's file handle
//! (`FILEID_KERNFS`), so `open_by_handle_at` opens it and `/proc/self/fd`
//! names it, one lookup however many cgroups there are. Where handles are
//! refused (no CAP_DAC_READ_SEARCH, an old kernel), the tree is walked and
//! indexed by inode instead, at most once per [`REWALK`].

use std::{
    collections::HashMap,
    ffi::CString,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// `FILEID_KERNFS` in include/linux/exportfs.h: a kernfs file handle is
/// the node's 64-bit id.
const FILEID_KERNFS: i32 = 0xfe;

/// The fallback walk goes no deeper (Kubernetes nests about 5 levels).
const MAX_DEPTH: usize = 12;
/// Nor past this many cgroups (a busy node has a few thousand).
const MAX_CGROUPS: usize = 65_536;
/// The fallback walk runs again on a miss no sooner than this.
pub(crate) const REWALK: Duration = Duration::from_millis(500);

/// Where the cgroup2 hierarchy is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` in a hybrid layout.
    pub point: PathBuf,
    /// The cgroup the mount shows as its root (`/` unless it is a bind
    /// mount of a sub-tree or seen from a cgroup namespace).
    pub root: String,
}

/// The cgroup2 mount in a `/proc/self/mountinfo` text that shows the most
/// of the hierarchy (the shortest root; the first of those). In a container
/// the runtime's own mount shows only the container's cgroup, while a
/// mount of the host's (a DaemonSet's hostPath volume) shows all.
pub(crate) fn find_mount(mountinfo: &str) -> Option<Mount> {
    mountinfo
        .lines()
        .filter_map(cgroup2_mount)
        .min_by_key(|m| m.root.trim_end_matches('/').len())
}

fn cgroup2_mount(line: &str) -> Option<Mount> {
    let (fields, rest) = line.split_once(" - ")?;
    if rest.split(' ').next()? != "cgroup2" {
        return None;
    }
    let mut f = fields.split(' ');
    let root = f.nth(3)?;
    let point = f.next()?;
    Some(Mount {
        point: PathBuf::from(unescape(point)),
        root: unescape(root),
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup path of a directory under the mount point, as
/// `/proc/<pid>/cgroup` shows it (`/` for the root).
fn cgroup_path(mount: &Mount, dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(&mount.point).ok()?;
    let root = mount.root.trim_end_matches('/');
    let rel = rel.to_string_lossy();
    let path = if rel.is_empty() {
        root.to_string()
    } else {
        format!("{root}/{rel}")
    };
    Some(if path.is_empty() { "/".into() } else { path })
}

/// Resolves cgroup ids on one cgroup2 mount.
pub(crate) struct Cgroupfs {
    mount: Mount,
    /// The mount point, opened: `open_by_handle_at`'s mount descriptor.
    mount_fd: Option<OwnedFd>,
    /// Handles refused once: use the walk from then on.
    handles_refused: bool,
    index: HashMap<u64, String>,
    walked_at: Option<Instant>,
}

impl Cgroupfs {
    /// The machine's cgroup2 mount, if it has one.
    pub fn system() -> Option<Cgroupfs> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        Some(Cgroupfs::new(find_mount(&mountinfo)?))
    }

    pub fn new(mount: Mount) -> Cgroupfs {
        let mount_fd = CString::new(mount.point.as_os_str().as_bytes())
            .ok()
            .and_then(|c| {
                // SAFETY: a NUL-terminated path; the descriptor is owned below.
                let fd = unsafe {
                    libc::open(
                        c.as_ptr(),
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    )
                };
                // SAFETY: a fresh descriptor nothing else owns.
                (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
            });
        Cgroupfs {
            mount,
            handles_refused: mount_fd.is_none(),
            mount_fd,
            index: HashMap::new(),
            walked_at: None,
        }
    }

    /// The path of cgroup `id`, or `None` when no cgroup has it now (it was
    /// removed, or is not on this mount).
    pub(crate) fn path_of(&mut self, id: u64) -> Option<String> {
        if !self.handles_refused {
            match self.by_handle(id) {
                Ok(path) => return path,
                Err(()) => self.handles_refused = true,
            }
        }
        if let Some(p) = self.index.get(&id) {
            return Some(p.clone());
        }
        if self.walked_at.is_none_or(|t| t.elapsed() >= REWALK) {
            self.index = self.walk().into_iter().collect();
            self.walked_at = Some(Instant::now());
        }
        self.index.get(&id).cloned()
    }

    /// `Ok(None)`: no such cgroup. `Err`: this kernel or these privileges
    /// do not open cgroups by handle.
    fn by_handle(&self, id: u64) -> Result<Option<String>, ()> {
        let Some(mount_fd) = &self.mount_fd else {
            return Err(());
        };
        #[repr(C)]
        struct Handle {
            bytes: u32,
            kind: i32,
            id: u64,
        }
        let mut handle = Handle {
            bytes: 8,
            kind: FILEID_KERNFS,
            id,
        };
        // SAFETY: `Handle` is `struct file_handle` with its 8 bytes of
        // `f_handle`; the kernel reads `bytes` of them.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount_fd.as_raw_fd(),
                (&raw mut handle).cast::<libc::file_handle>(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::ESTALE | libc::ENOENT) => Ok(None),
                _ => Err(()),
            };
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let dir =
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|_| ())?;
        Ok(cgroup_path(&self.mount, &dir))
    }

    /// Every cgroup on the mount: (id, path), bounded in depth and count.
    pub(crate) fn walk(&self) -> Vec<(u64, String)> {
        let mut found = Vec::new();
        let mut stack = vec![(self.mount.point.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            if found.len() >= MAX_CGROUPS {
                break;
            }
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            if let Some(path) = cgroup_path(&self.mount, &dir) {
                found.push((meta.ino(), path));
            }
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 24 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 35 0:39 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,name=systemd
";

    #[test]
    fn the_cgroup2_mount_is_found_in_a_hybrid_layout() {
        let m = find_mount(HYBRID).unwrap();
        assert_eq!(m.point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m.root, "/");
        assert_eq!(find_mount("41 31 0:38 / /x rw - cgroup cgroup rw\n"), None);
        let container = "50 40 0:38 /libpod_parent/libpod-1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
                         51 40 0:38 / /host/sys/fs/cgroup/unified ro - cgroup2 cgroup2 rw\n";
        let m = find_mount(container).unwrap();
        assert_eq!(m.point, PathBuf::from("/host/sys/fs/cgroup/unified"));
        let escaped = "41 31 0:38 /a\\040b /mnt/c\\040g rw - cgroup2 cgroup2 rw\n";
        let m = find_mount(escaped).unwrap();
        assert_eq!(
            (m.point, m.root),
            (PathBuf::from("/mnt/c g"), "/a b".into())
        );
    }

    #[test]
    fn paths_are_as_proc_shows_them() {
        let m = Mount {
            point: "/sys/fs/cgroup".into(),
            root: "/".into(),
        };
        assert_eq!(cgroup_path(&m, Path::new("/sys/fs/cgroup")).unwrap(), "/");
        assert_eq!(
            cgroup_path(&m, Path::new("/sys/fs/cgroup/libpod_parent/libpod-1")).unwrap(),
            "/libpod_parent/libpod-1"
        );
        assert_eq!(cgroup_path(&m, Path::new("/elsewhere")), None);
        let sub = Mount {
            point: "/sys/fs/cgroup".into(),
            root: "/kubepods.slice".into(),
        };
        assert_eq!(
            cgroup_path(&sub, Path::new("/sys/fs/cgroup/a.scope")).unwrap(),
            "/kubepods.slice/a.scope"
        );
        assert_eq!(
            cgroup_path(&sub, Path::new("/sys/fs/cgroup")).unwrap(),
            "/kubepods.slice"
        );
    }

    /// On this machine's own cgroup2 mount: tcpstate's cgroup, by its id
    /// (the directory's inode), by handle and by walk alike.
    #[test]
    fn an_id_resolves_to_its_path_on_this_machine() {
        let Some(mut fs) = Cgroupfs::system() else {
            return;
        };
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let Some(path) = super::super::cgroup::proc_cgroup_path(&own).map(str::to_string) else {
            return;
        };
        let dir = fs.mount.point.join(path.trim_start_matches('/'));
        let Ok(meta) = std::fs::metadata(&dir) else {
            return;
        };
        assert_eq!(fs.path_of(meta.ino()).as_deref(), Some(path.as_str()));
        assert!(fs.walk().contains(&(meta.ino(), path.clone())));
        fs.handles_refused = true;
        assert_eq!(fs.path_of(meta.ino()).as_deref(), Some(path.as_str()));
        assert_eq!(fs.path_of(u64::MAX - 1), None);
    }
}
