//! The BPF objects one tracer instance holds, read from its fdinfo while it
//! runs and looked up by id (`BPF_*_GET_FD_BY_ID`) after it exits; map
//! occupancy; programs no process holds.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use tcpstate_devsupport::bpf::BpfObjects;

/// What the tests ask of a tracer's BPF objects once it has exited.
pub trait Released {
    /// Those of these objects that still exist in the kernel.
    fn still_existing(&self) -> BpfObjects;
    /// Asserts that every one of these objects is gone from the kernel
    /// (freeing is deferred after the last fd closes, so allow a moment).
    fn assert_released(&self, what: &str);
}

impl Released for BpfObjects {
    fn still_existing(&self) -> BpfObjects {
        BpfObjects {
            progs: self
                .progs
                .iter()
                .copied()
                .filter(|&id| bpf_object_exists(BPF_PROG_GET_FD_BY_ID, id))
                .collect(),
            maps: self
                .maps
                .iter()
                .copied()
                .filter(|&id| bpf_object_exists(BPF_MAP_GET_FD_BY_ID, id))
                .collect(),
            links: self
                .links
                .iter()
                .copied()
                .filter(|&id| bpf_object_exists(BPF_LINK_GET_FD_BY_ID, id))
                .collect(),
        }
    }

    fn assert_released(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.still_existing();
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let mut detail = String::new();
                for id in &left.progs {
                    detail.push_str(&bpftool(&["prog", "show", "id", &id.to_string()]));
                }
                for id in &left.maps {
                    detail.push_str(&bpftool(&["map", "show", "id", &id.to_string()]));
                }
                for id in &left.links {
                    detail.push_str(&bpftool(&["link", "show", "id", &id.to_string()]));
                }
                panic!(
                    "{what}: BPF objects left behind after the tracer exited: {left:?} \
                     (of {self:?})\n{detail}"
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Samples a process's BPF objects every millisecond until it is gone, so
/// objects it creates and holds even briefly are recorded.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<BpfObjects>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut all = BpfObjects::default();
            while !flag.load(Ordering::Relaxed) && Path::new(&format!("/proc/{pid}/fd")).exists() {
                all.extend(&BpfObjects::of_pid(pid));
                thread::sleep(Duration::from_millis(1));
            }
            all
        });
        Sampler { stop, handle }
    }

    pub fn finish(self) -> BpfObjects {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;

fn bpf(cmd: libc::c_long, attr: &mut [u64; 8]) -> std::io::Result<i64> {
    // SAFETY: attr is a zero-padded bpf_attr prefix large enough for the
    // commands used here; the kernel checks the rest is zero.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as u32,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_by_id(cmd: libc::c_long, id: u32) -> std::io::Result<OwnedFd> {
    let mut attr = [0u64; 8];
    attr[0] = id as u64; // { u32 id; u32 next_id; u32 open_flags; }
    // SAFETY: on success the syscall returned a new fd that we own.
    bpf(cmd, &mut attr).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether a prog/map/link with this id exists (ENOENT: it does not).
fn bpf_object_exists(cmd: libc::c_long, id: u32) -> bool {
    match fd_by_id(cmd, id) {
        Ok(_) => true,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => false,
        Err(e) => panic!("bpf(GET_FD_BY_ID, {id}): {e}"),
    }
}

/// What the kernel says about a map (`struct bpf_map_info` prefix).
#[derive(Debug, Clone)]
pub struct MapInfo {
    pub id: u32,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub name: String,
}

/// `struct bpf_map_info` up to and including `name`, padded.
#[repr(C)]
#[derive(Default)]
struct RawMapInfo {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: [u8; 16],
    rest: [u64; 8],
}

fn map_info_fd(fd: &OwnedFd) -> std::io::Result<MapInfo> {
    let mut info = RawMapInfo::default();
    let mut attr = [0u64; 8];
    // { u32 bpf_fd; u32 info_len; u64 info; }
    attr[0] = fd.as_raw_fd() as u64 | ((std::mem::size_of::<RawMapInfo>() as u64) << 32);
    attr[1] = &mut info as *mut RawMapInfo as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let end = info.name.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(MapInfo {
        id: info.id,
        map_type: info.map_type,
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
        name: String::from_utf8_lossy(&info.name[..end]).into_owned(),
    })
}

/// Info about the map with this id, if it exists.
pub fn map_info(id: u32) -> Option<MapInfo> {
    let fd = fd_by_id(BPF_MAP_GET_FD_BY_ID, id).ok()?;
    map_info_fd(&fd).ok()
}

/// The maps of one instance, by id.
pub fn maps_of(objs: &BpfObjects) -> Vec<MapInfo> {
    objs.maps.iter().filter_map(|&id| map_info(id)).collect()
}

/// Counts the entries of a hash-type map by walking its keys
/// (BPF_MAP_GET_NEXT_KEY), up to `limit`.
pub fn map_entries(id: u32, limit: usize) -> std::io::Result<usize> {
    let fd = fd_by_id(BPF_MAP_GET_FD_BY_ID, id)?;
    let info = map_info_fd(&fd)?;
    let mut key = vec![0u8; info.key_size as usize];
    let mut next = vec![0u8; info.key_size as usize];
    let mut n = 0;
    let mut first = true;
    while n < limit {
        let mut attr = [0u64; 8];
        // { u32 map_fd; u64 key (aligned at 8); u64 next_key; }
        attr[0] = fd.as_raw_fd() as u64;
        attr[1] = if first { 0 } else { key.as_ptr() as u64 };
        attr[2] = next.as_mut_ptr() as u64;
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(_) => {
                n += 1;
                first = false;
                std::mem::swap(&mut key, &mut next);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `bpftool -j ARGS` output (for failure messages; empty if it fails).
pub fn bpftool(args: &[&str]) -> String {
    Command::new("bpftool")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Ids of loaded programs named like ours (`inet_sock_set_state`, possibly
/// truncated to the kernel's 15 characters).
fn our_named_progs() -> BTreeSet<u32> {
    let json = bpftool(&["-j", "prog", "show"]);
    let Ok(serde_json::Value::Array(progs)) = serde_json::from_str(&json) else {
        return BTreeSet::new();
    };
    progs
        .iter()
        .filter(|p| {
            p.get("name")
                .and_then(|n| n.as_str())
                // The kernel keeps 15 characters of a name: the three
                // state-change programs all start with the classic one's.
                .is_some_and(|n| {
                    n.len() >= 15 && tcpstate_common::names::CLASSIC_PROGRAM.starts_with(n)
                })
        })
        .filter_map(|p| p.get("id").and_then(|i| i.as_u64()).map(|i| i as u32))
        .collect()
}

/// Asserts that no program named like ours lives on without any process
/// holding it (a leak: pinned or otherwise orphaned). Concurrent tests' tracers
/// may be exiting, so an orphan only counts if it outlives a grace period.
pub fn assert_no_orphaned_programs() {
    let orphans: BTreeSet<u32> = our_named_progs()
        .difference(&BpfObjects::of_all_processes().progs)
        .copied()
        .collect();
    if orphans.is_empty() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let still: BTreeSet<u32> = orphans
            .iter()
            .copied()
            .filter(|&id| bpf_object_exists(BPF_PROG_GET_FD_BY_ID, id))
            .filter(|id| !BpfObjects::of_all_processes().progs.contains(id))
            .collect();
        if still.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "programs named inet_sock_set_state outlive every process (leaked): {still:?}\n{}",
            bpftool(&["prog", "show"])
        );
        thread::sleep(Duration::from_millis(50));
    }
}
