//! Resolves `--netns NAME|PATH|INODE` to the namespace inode number the kernel
//! program compares against.

use std::{os::unix::fs::MetadataExt, path::Path};

use crate::error::UserError;

pub fn resolve(spec: &str) -> Result<u32, UserError> {
    let spec = spec.trim();
    if let Ok(inode) = spec.parse::<u64>() {
        return u32::try_from(inode)
            .ok()
            .filter(|i| *i != 0)
            .ok_or_else(|| UserError::usage(format!("--netns {spec}: not a namespace inode")));
    }
    let path = if spec.contains('/') {
        Path::new(spec).to_path_buf()
    } else {
        Path::new("/run/netns").join(spec)
    };
    let hint = "give a name from `ip netns list`, a path like /proc/PID/ns/net, or an inode";
    let file = std::fs::File::open(&path).map_err(|e| {
        UserError::usage(format!("--netns {spec}: {}: {e}", path.display())).hint(hint)
    })?;
    // NS_GET_NSTYPE (linux/nsfs.h): any other file would be accepted by
    // inode alone and silently match nothing.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl without arguments on a file we own.
    let ty = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&file), NS_GET_NSTYPE) };
    if ty != libc::CLONE_NEWNET {
        return Err(UserError::usage(format!(
            "--netns {spec}: {} is not a network namespace",
            path.display()
        ))
        .hint(hint));
    }
    let meta = file.metadata().map_err(|e| {
        UserError::usage(format!("--netns {spec}: {}: {e}", path.display())).hint(hint)
    })?;
    u32::try_from(meta.ino())
        .map_err(|_| UserError::usage(format!("--netns {spec}: inode out of range")))
}

/// A path through which namespace `inode` can be entered: the --netns path
/// given, a name under /run/netns, or some process's /proc/PID/ns/net.
pub(crate) fn find_path(inode: u32) -> Option<std::path::PathBuf> {
    let matches = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.ino() == inode as u64)
            .unwrap_or(false)
    };
    let own = Path::new("/proc/self/ns/net");
    if matches(own) {
        return Some(own.to_path_buf());
    }
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            if matches(&e.path()) {
                return Some(e.path());
            }
        }
    }
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = e.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            let p = e.path().join("ns/net");
            if matches(&p) {
                return Some(p);
            }
        }
    }
    None
}

/// The network namespaces found by [`discover_all`].
#[derive(Debug, Default)]
pub(crate) struct Discovered {
    /// (inode, a path to enter it): ours first, then those holding a
    /// process, then those only named under /run/netns.
    pub found: Vec<(u32, std::path::PathBuf)>,
    /// Distinct namespaces beyond the limit, not listed.
    pub skipped: usize,
}

/// Every network namespace some process is in, or that has a name under
/// /run/netns: (inode, a path to enter it). At most `limit` namespaces.
pub(crate) fn discover(limit: usize) -> Vec<(u32, std::path::PathBuf)> {
    discover_all(limit).found
}

/// Like [`discover`], and counts what the limit left out. Namespaces that
/// hold a process come first: that is where servers (and containers) run,
/// while thousands of named, empty namespaces must not crowd them out.
pub(crate) fn discover_all(limit: usize) -> Discovered {
    let mut seen = std::collections::HashSet::new();
    let mut out = Discovered::default();
    let mut add = |p: std::path::PathBuf| {
        if let Ok(m) = std::fs::metadata(&p)
            && seen.insert(m.ino() as u32)
        {
            if out.found.len() < limit {
                out.found.push((m.ino() as u32, p));
            } else {
                out.skipped += 1;
            }
        }
    };
    add(Path::new("/proc/self/ns/net").to_path_buf());
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name();
            if name
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            {
                add(e.path().join("ns/net"));
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            add(e.path());
        }
    }
    out
}

/// Runs `f` in the network namespace at `path` (sockets it creates belong
/// to that namespace and stay there), on the one thread that enters
/// namespaces; the rest of the process is untouched (setns only affects the
/// calling thread). Our own namespace needs no setns (nor CAP_SYS_ADMIN):
/// `f` then runs right here.
pub(crate) fn run_in<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let file = std::fs::File::open(path)?;
    let own = std::fs::metadata("/proc/thread-self/ns/net")?;
    if file.metadata()?.ino() == own.ino() {
        return f();
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    enterer()?.run(Box::new(move || {
        let _ = tx.send(enter(&file).and_then(|()| f()));
    }))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("namespace thread panicked"))?
}

fn enter(ns: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid namespace fd; CLONE_NEWNET checks its type.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

type Job = Box<dyn FnOnce() + Send>;

/// The thread that enters namespaces, one job at a time. One long-lived
/// thread rather than one per namespace: a thread that exits after setns
/// costs ~5 ms (measured here, kernel 6.18), entering costs ~30 µs, which is
/// what made start-up with thousands of namespaces take seconds. After each
/// job it goes back to our namespace, so it keeps none alive.
struct Enterer {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
}

impl Enterer {
    fn run(&self, job: Job) -> std::io::Result<()> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|_| std::io::Error::other("namespace thread is gone"))
    }
}

fn enterer() -> std::io::Result<&'static Enterer> {
    static ENTERER: std::sync::OnceLock<Enterer> = std::sync::OnceLock::new();
    if let Some(e) = ENTERER.get() {
        return Ok(e);
    }
    let home = std::fs::File::open("/proc/thread-self/ns/net")?;
    let home_ino = home.metadata()?.ino();
    // Where this thread is now (a job that failed to enter stayed home, and
    // without CAP_SYS_ADMIN even entering our own namespace is refused).
    let here = || std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino());
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("tcpstate-netns".into())
        .spawn(move || {
            for job in rx {
                // A panicking job drops its reply sender: its caller sees
                // the error, and the thread goes on serving.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                if here().ok() != Some(home_ino) && enter(&home).is_err() {
                    // Stuck elsewhere: stop, so no later job runs in the
                    // wrong namespace (callers then get an error).
                    return;
                }
            }
        })?;
    Ok(ENTERER.get_or_init(|| Enterer {
        jobs: std::sync::Mutex::new(tx),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_by_path() {
        let ino = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_eq!(resolve("/proc/self/ns/net").unwrap() as u64, ino);
    }

    #[test]
    fn inode_numbers_pass_through() {
        assert_eq!(resolve("4026531840").unwrap(), 4026531840);
        assert!(resolve("0").is_err());
    }

    #[test]
    fn files_that_are_not_network_namespaces_are_refused() {
        for p in ["/etc/hostname", "/tmp", "/proc/self/ns/mnt"] {
            let e = resolve(p).unwrap_err();
            assert_eq!(e.exit_code, 2, "{p}");
            assert!(
                e.message.contains("not a network namespace"),
                "{p}: {}",
                e.message
            );
        }
    }

    #[test]
    fn missing_names_are_usage_errors() {
        let e = resolve("no-such-namespace-tcpstate").unwrap_err();
        assert_eq!(e.exit_code, 2);
        assert!(e.message.contains("/run/netns/no-such-namespace-tcpstate"));
    }

    #[test]
    fn our_namespace_comes_first_and_the_limit_is_counted() {
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        let all = discover_all(usize::MAX);
        assert_eq!(all.found[0].0, own);
        assert_eq!(all.skipped, 0);
        let one = discover_all(1);
        assert_eq!(one.found.len(), 1);
        assert_eq!(one.skipped, all.found.len() - 1);
    }

    #[test]
    fn our_own_namespace_is_entered_without_setns() {
        let here = std::thread::current().id();
        let ran_on = run_in(Path::new("/proc/self/ns/net"), move || {
            Ok(std::thread::current().id())
        })
        .unwrap();
        assert_eq!(ran_on, here);
    }
}
