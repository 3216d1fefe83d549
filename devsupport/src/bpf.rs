//! The BPF objects a process holds descriptors to, read from `/proc/PID/fdinfo/*`: the kernel
//! prints `prog_id:` (with the program's type and run statistics) for a program, `map_id:`
//! for a map, and `link_id:` with its program's `prog_id:` for a link. No BPF system call is
//! needed, so this also works on processes of other users (as root) and after they dropped
//! their capabilities.

use std::{collections::BTreeSet, fs};

/// BPF program types that can hang off a tracepoint such as `sock:inet_sock_set_state`.
pub const TRACEPOINT_TYPES: [u32; 3] = [
    5,  // BPF_PROG_TYPE_TRACEPOINT
    17, // BPF_PROG_TYPE_RAW_TRACEPOINT (and tp_btf on old kernels)
    26, // BPF_PROG_TYPE_TRACING (tp_btf)
];

/// A program as its fdinfo describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    /// `enum bpf_prog_type`.
    pub prog_type: u32,
    /// Runs counted while BPF run statistics were enabled (0 otherwise).
    pub run_cnt: u64,
    /// Their total run time, in ns.
    pub run_time_ns: u64,
    /// Runs the kernel skipped because another BPF program was running on that CPU.
    pub recursion_misses: u64,
}

impl ProgInfo {
    /// One of [`TRACEPOINT_TYPES`].
    pub fn is_tracepoint(&self) -> bool {
        TRACEPOINT_TYPES.contains(&self.prog_type)
    }
}

/// What one BPF file descriptor refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BpfFd {
    Prog(ProgInfo),
    Map {
        id: u32,
    },
    /// A link, and the program it attaches (kept alive by it).
    Link {
        id: u32,
        prog_id: Option<u32>,
    },
}

/// Parses one fdinfo file (`prog_type:\t5`, `prog_id:\t42`, `run_cnt:\t7`, ...); None for a
/// descriptor that is not a BPF program, map or link.
pub fn parse_fdinfo(text: &str) -> Option<BpfFd> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim())
        })
    };
    let id = |name: &str| field(name).and_then(|v| v.parse::<u32>().ok());
    let count = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    if let Some(id_) = id("link_id") {
        return Some(BpfFd::Link {
            id: id_,
            prog_id: id("prog_id"),
        });
    }
    if let Some(id_) = id("map_id") {
        return Some(BpfFd::Map { id: id_ });
    }
    Some(BpfFd::Prog(ProgInfo {
        id: id("prog_id")?,
        prog_type: id("prog_type").unwrap_or(0),
        run_cnt: count("run_cnt"),
        run_time_ns: count("run_time_ns"),
        recursion_misses: count("recursion_misses"),
    }))
}

/// Every BPF descriptor `pid` holds, in descriptor order (the same object may appear more
/// than once). Empty if the process is gone or cannot be read.
pub fn fds(pid: u32) -> Vec<BpfFd> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut entries: Vec<(u32, std::path::PathBuf)> = dir
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect();
    entries.sort();
    entries
        .into_iter()
        .filter_map(|(_, path)| parse_fdinfo(&fs::read_to_string(path).ok()?))
        .collect()
}

/// The programs `pid` holds descriptors to, one entry per program (links are not followed:
/// their fdinfo has no run statistics).
pub fn progs(pid: u32) -> Vec<ProgInfo> {
    let mut out: Vec<ProgInfo> = Vec::new();
    for fd in fds(pid) {
        if let BpfFd::Prog(p) = fd
            && !out.iter().any(|q| q.id == p.id)
        {
            out.push(p);
        }
    }
    out
}

/// The ids of the BPF objects one process (or several) holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BpfObjects {
    /// Programs held directly or through a link.
    pub progs: BTreeSet<u32>,
    pub maps: BTreeSet<u32>,
    pub links: BTreeSet<u32>,
}

impl BpfObjects {
    /// Those `pid` holds descriptors to.
    pub fn of_pid(pid: u32) -> BpfObjects {
        let mut objs = BpfObjects::default();
        for fd in fds(pid) {
            objs.add(&fd);
        }
        objs
    }

    /// Those every process holds (all of /proc).
    pub fn of_all_processes() -> BpfObjects {
        let mut objs = BpfObjects::default();
        for pid in pids() {
            objs.extend(&BpfObjects::of_pid(pid));
        }
        objs
    }

    pub fn add(&mut self, fd: &BpfFd) {
        match fd {
            BpfFd::Prog(p) => {
                self.progs.insert(p.id);
            }
            BpfFd::Map { id } => {
                self.maps.insert(*id);
            }
            BpfFd::Link { id, prog_id } => {
                self.links.insert(*id);
                self.progs.extend(*prog_id);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.progs.is_empty() && self.maps.is_empty() && self.links.is_empty()
    }

    pub fn extend(&mut self, other: &BpfObjects) {
        self.progs.extend(&other.progs);
        self.maps.extend(&other.maps);
        self.links.extend(&other.links);
    }
}

/// The ids of every process in /proc.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROG: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1064\nprog_type:\t5\n\
                        prog_jited:\t1\nprog_tag:\t0123456789abcdef\nmemlock:\t4096\nprog_id:\t42\n\
                        run_time_ns:\t1500\nrun_cnt:\t3\nrecursion_misses:\t1\nverified_insns:\t100\n";

    #[test]
    fn parses_a_program() {
        let Some(BpfFd::Prog(p)) = parse_fdinfo(PROG) else {
            panic!("not a program")
        };
        assert_eq!(
            p,
            ProgInfo {
                id: 42,
                prog_type: 5,
                run_cnt: 3,
                run_time_ns: 1500,
                recursion_misses: 1
            }
        );
        assert!(p.is_tracepoint());
    }

    #[test]
    fn parses_maps_links_and_others() {
        let map = "pos:\t0\nflags:\t02000002\nmap_type:\t27\nkey_size:\t0\nowner_prog_type:\t5\n\
                   map_id:\t7\n";
        assert_eq!(parse_fdinfo(map), Some(BpfFd::Map { id: 7 }));
        let link = "pos:\t0\nlink_type:\tperf\nlink_id:\t9\nprog_tag:\tab\nprog_id:\t42\n";
        assert_eq!(
            parse_fdinfo(link),
            Some(BpfFd::Link {
                id: 9,
                prog_id: Some(42)
            })
        );
        assert_eq!(parse_fdinfo("pos:\t0\nflags:\t02\nmnt_id:\t16\n"), None);
        assert_eq!(parse_fdinfo(""), None);
    }

    #[test]
    fn objects_follow_links_to_their_programs() {
        let mut objs = BpfObjects::default();
        assert!(objs.is_empty());
        for text in [PROG, "link_id:\t9\nprog_id:\t43\n", "map_id:\t7\n"] {
            objs.add(&parse_fdinfo(text).unwrap());
        }
        assert_eq!(objs.progs, BTreeSet::from([42, 43]));
        assert_eq!(objs.maps, BTreeSet::from([7]));
        assert_eq!(objs.links, BTreeSet::from([9]));
        let mut more = BpfObjects::default();
        more.extend(&objs);
        assert_eq!(more, objs);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(fds(me).is_empty());
        assert!(progs(me).is_empty());
        assert!(BpfObjects::of_pid(me).is_empty());
        assert!(pids().contains(&me));
        assert!(fds(u32::MAX).is_empty());
    }
}
