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
pub fn find_path(inode: u32) -> Option<std::path::PathBuf> {
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

/// Every network namespace some process is in, or that has a name under
/// /run/netns: (inode, a path to enter it). At most `limit` namespaces.
pub fn discover(limit: usize) -> Vec<(u32, std::path::PathBuf)> {
    let mut seen = std::collections::HashMap::new();
    let mut add = |p: std::path::PathBuf| {
        if seen.len() < limit
            && let Ok(m) = std::fs::metadata(&p)
        {
            seen.entry(m.ino() as u32).or_insert(p);
        }
    };
    add(Path::new("/proc/self/ns/net").to_path_buf());
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            add(e.path());
        }
    }
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
    let mut all: Vec<_> = seen.into_iter().collect();
    all.sort_unstable_by_key(|(i, _)| *i);
    all
}

/// Runs `f` on a thread that has entered the network namespace at `path`
/// (sockets it creates belong to that namespace and stay there). setns only
/// affects the calling thread, so the rest of the process is untouched.
pub fn run_in<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let file = std::fs::File::open(path)?;
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid namespace fd; CLONE_NEWNET checks its type.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?
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
}
