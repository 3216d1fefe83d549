//! Socket inode -> owning process, for sockets found by sock_diag (which
//! reports inodes, not processes): the same walk of /proc/*/fd as `ss -p`.

use std::collections::{HashMap, HashSet};

use crate::event::Task;

/// Finds the processes holding the given socket inodes. One pass over /proc;
/// a process that exits meanwhile is skipped.
pub(crate) fn owners_of(inodes: &HashSet<u32>) -> HashMap<u32, Task> {
    owners_counted(inodes).0
}

/// Like [`owners_of`], and how many processes' fd tables we may not read
/// (another user's, or one with more capabilities: CAP_SYS_PTRACE reads them).
pub(crate) fn owners_counted(inodes: &HashSet<u32>) -> (HashMap<u32, Task>, usize) {
    let mut found = HashMap::new();
    let mut denied = 0;
    if inodes.is_empty() {
        return (found, denied);
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return (found, denied);
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let fds = match std::fs::read_dir(p.path().join("fd")) {
            Ok(fds) => fds,
            Err(e) => {
                denied += usize::from(e.kind() == std::io::ErrorKind::PermissionDenied);
                continue;
            }
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            if inodes.contains(&inode) && !found.contains_key(&inode) {
                found.insert(inode, task(pid));
            }
        }
        if found.len() == inodes.len() {
            break;
        }
    }
    (found, denied)
}

fn task(pid: u32) -> Task {
    let mut comm = [0u8; tcpstate_common::COMM_LEN];
    if let Ok(name) = std::fs::read(format!("/proc/{pid}/comm")) {
        let name = name.strip_suffix(b"\n").unwrap_or(&name);
        let n = name.len().min(comm.len());
        comm[..n].copy_from_slice(&name[..n]);
    }
    Task { pid, comm }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn finds_our_own_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = {
            use std::os::fd::AsRawFd;
            l.as_raw_fd()
        };
        let ino = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino() as u32;
        let got = owners_of(&HashSet::from([ino]));
        assert_eq!(got[&ino].pid, std::process::id());
    }
}
