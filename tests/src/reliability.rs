//! Helpers shared by the `reliability_*` tests (issue #6): running the tracer
//! with a deadline, checking its one-line errors, finding the kernel objects
//! one instance created and proving they are gone after it exits, reading map
//! occupancy, and generating TCP connections from threads that entered a test
//! namespace (with a chosen, possibly hostile, thread name).
//!
//! Kernel objects are identified per instance, never by name alone: other
//! tests run tracers concurrently. While an instance runs, a sampler reads
//! `/proc/PID/fdinfo/*` (which names each BPF prog/map/link id it holds);
//! after it exits, `BPF_*_GET_FD_BY_ID` must answer ENOENT for every one.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use crate::{Netns, READY_LINE, tracer_bin};

/// How long any single tracer run may take before it counts as hung.
pub const HANG_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Running the tracer
// ---------------------------------------------------------------------------

/// A finished run: exit status and everything printed.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub what: String,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Asserts the documented error contract: exit status `code`, nothing on
    /// stdout, and on stderr exactly one `tcpstate: error: ...` line (which
    /// contains `needle`) optionally followed by one `  hint: ...` line; never
    /// a panic, a backtrace or clap's multi-line usage text.
    pub fn assert_error(&self, code: i32, needle: &str) -> &Self {
        let ctx = || format!("{}\n--- stderr ---\n{}--- end ---", self.what, self.stderr);
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit status {code}, got {}; {}",
            self.status,
            ctx()
        );
        for bad in [
            "panicked",
            "backtrace",
            "RUST_BACKTRACE",
            "Usage:",
            "\u{1b}",
        ] {
            assert!(
                !self.stderr.contains(bad),
                "stderr contains {bad:?}; {}",
                ctx()
            );
        }
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            matches!(lines.len(), 1 | 2),
            "expected one error line and an optional hint, got {} lines; {}",
            lines.len(),
            ctx()
        );
        assert!(
            lines[0].starts_with("tcpstate: error: ") && lines[0].len() > 20,
            "first line is not `tcpstate: error: <message>`; {}",
            ctx()
        );
        if let Some(h) = lines.get(1) {
            assert!(
                h.starts_with("  hint: ") && h.len() > 10,
                "second line is not `  hint: <text>`; {}",
                ctx()
            );
        }
        assert!(
            lines[0].contains(needle),
            "the error line should mention {needle:?}; {}",
            ctx()
        );
        assert!(
            self.stdout.is_empty(),
            "nothing should be written to stdout on an error, got {:?}; {}",
            self.stdout_text(),
            ctx()
        );
        self
    }

    /// The `hint:` line, if any.
    pub fn hint(&self) -> Option<&str> {
        self.stderr.lines().find_map(|l| l.strip_prefix("  hint: "))
    }

    /// `(events, lost)` from the exit summary (`tcpstate: N events, M lost`).
    pub fn summary_counts(&self) -> Option<(u64, u64)> {
        summary_counts(&self.stderr)
    }
}

/// `(events, lost)` from a `tcpstate: N events, M lost ...` line.
pub fn summary_counts(stderr: &str) -> Option<(u64, u64)> {
    stderr.lines().rev().find_map(|l| {
        let rest = l.strip_prefix("tcpstate: ")?;
        let (events, rest) = rest.split_once(" events, ")?;
        let (lost, _) = rest.split_once(" lost")?;
        Some((events.trim().parse().ok()?, lost.trim().parse().ok()?))
    })
}

/// The tracer command with a clean environment for the variables it reads.
pub fn tracer() -> Command {
    let mut cmd = Command::new(tracer_bin());
    cmd.env_remove("TCPSTATE_TRACEFS")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs `cmd` (stdin null) to completion; panics if it runs longer than
/// `timeout` (a hang), after killing it.
pub fn run_until_exit(mut cmd: Command, timeout: Duration) -> Run {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let out = slurp(child.stdout.take().unwrap());
    let err = slurp(child.stderr.take().unwrap());
    let status = wait_timeout(&mut child, timeout)
        .unwrap_or_else(|| panic!("{what} did not exit within {timeout:?} (hung)"));
    Run {
        status,
        stdout: out.join().unwrap(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        what,
    }
}

/// Runs the tracer with `args` until it exits by itself.
pub fn run_tracer(args: &[&str]) -> Run {
    let mut cmd = tracer();
    cmd.args(args);
    run_until_exit(cmd, HANG_TIMEOUT)
}

/// Reads a pipe to its end on a thread.
pub fn slurp(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Waits for `child` up to `timeout`; kills it and returns None on timeout.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

pub fn kill(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Describes how a process ended, for messages.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// A tracer started in the background, stderr collected.
pub struct Background {
    pub child: Child,
    pub stderr: Arc<Mutex<String>>,
    pub sampler: Option<Sampler>,
}

impl Background {
    /// Starts the tracer with `args`, stdout to `stdout`, sampling its BPF
    /// objects from the first moment.
    pub fn start(args: &[&str], stdout: Stdio) -> Background {
        let mut cmd = tracer();
        cmd.args(args).stdout(stdout);
        Background::spawn(cmd)
    }

    /// Starts `cmd` (its stdout as the caller set it; stdin null, stderr
    /// collected), sampling its BPF objects from the first moment.
    pub fn spawn(cmd: Command) -> Background {
        Background::spawn_signalled_on_ready(cmd, None)
    }

    /// Like [`Background::spawn`]; with `sig`, the stderr reader sends it the
    /// moment the ready line arrives (the tightest "just started" race).
    pub fn spawn_signalled_on_ready(mut cmd: Command, sig: Option<libc::c_int>) -> Background {
        cmd.stdin(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let pid = child.id();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut sent = false;
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut text = sink.lock().unwrap();
                        text.push_str(&String::from_utf8_lossy(&buf[..n]));
                        if let Some(sig) = sig.filter(|_| !sent && text.contains(READY_LINE)) {
                            kill(pid, sig);
                            sent = true;
                        }
                    }
                }
            }
        });
        let sampler = Some(Sampler::start(child.id()));
        Background {
            child,
            stderr,
            sampler,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Collects stdout on a thread (start with `Stdio::piped()`).
    pub fn collect_stdout(&mut self) -> JoinHandle<Vec<u8>> {
        slurp(self.child.stdout.take().expect("stdout is piped"))
    }

    /// SIGINT, then waits for the exit; panics unless it exits 0.
    pub fn stop(&mut self) -> BpfObjects {
        kill(self.pid(), libc::SIGINT);
        let (status, objs) = self.wait(HANG_TIMEOUT);
        assert!(
            status.success(),
            "tracer should exit 0 after SIGINT, got {}; stderr:\n{}",
            describe(status),
            self.stderr()
        );
        objs
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn is_ready(&self) -> bool {
        self.stderr().contains(READY_LINE)
    }

    /// Waits until the tracer says it is tracing, plus a short settle time:
    /// the tracer prints its ready line before it installs its signal
    /// handlers (see `signal_right_after_the_ready_line_is_handled`), and
    /// tests that stop it early must not trip over that. Panics if it exits
    /// first.
    pub fn wait_ready(&mut self) {
        self.wait_ready_line();
        thread::sleep(Duration::from_millis(100));
    }

    /// Waits until the tracer prints its ready line; panics if it exits first.
    pub fn wait_ready_line(&mut self) {
        let deadline = Instant::now() + crate::READY_TIMEOUT;
        while !self.is_ready() {
            if let Some(s) = self.child.try_wait().unwrap() {
                thread::sleep(Duration::from_millis(50));
                panic!(
                    "tracer exited ({}) before it was ready:\n{}",
                    describe(s),
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tracer not ready in time:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for the exit (panics on a hang); returns the status and the BPF
    /// objects the instance was seen holding.
    pub fn wait(&mut self, timeout: Duration) -> (ExitStatus, BpfObjects) {
        let status = wait_timeout(&mut self.child, timeout).unwrap_or_else(|| {
            panic!(
                "tracer did not exit within {timeout:?} (hung); stderr:\n{}",
                self.stderr()
            )
        });
        thread::sleep(Duration::from_millis(30)); // let the stderr reader finish
        let objs = self.sampler.take().map(Sampler::finish).unwrap_or_default();
        (status, objs)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// BPF objects of one instance
// ---------------------------------------------------------------------------

/// BPF object ids held by one process.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BpfObjects {
    pub progs: BTreeSet<u32>,
    pub maps: BTreeSet<u32>,
    pub links: BTreeSet<u32>,
}

impl BpfObjects {
    pub fn is_empty(&self) -> bool {
        self.progs.is_empty() && self.maps.is_empty() && self.links.is_empty()
    }

    pub fn extend(&mut self, other: &BpfObjects) {
        self.progs.extend(&other.progs);
        self.maps.extend(&other.maps);
        self.links.extend(&other.links);
    }

    /// The BPF objects `pid` holds file descriptors to, from its fdinfo.
    pub fn of_pid(pid: u32) -> BpfObjects {
        let mut objs = BpfObjects::default();
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            return objs;
        };
        for entry in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<u32>().ok())
            };
            if let Some(id) = field("link_id:") {
                objs.links.insert(id);
                objs.progs.extend(field("prog_id:"));
            } else if let Some(id) = field("map_id:") {
                objs.maps.insert(id);
            } else if let Some(id) = field("prog_id:") {
                objs.progs.insert(id);
            }
        }
        objs
    }

    /// Those of these objects that still exist in the kernel.
    pub fn still_existing(&self) -> BpfObjects {
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

    /// Asserts that every one of these objects is gone from the kernel
    /// (freeing is deferred after the last fd closes, so allow a moment).
    pub fn assert_released(&self, what: &str) {
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

/// Every BPF prog id held open by any process (fdinfo of every process).
fn progs_held_by_anyone() -> BTreeSet<u32> {
    let mut held = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return held;
    };
    for entry in dir.flatten() {
        if let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() {
            held.extend(BpfObjects::of_pid(pid).progs);
        }
    }
    held
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
                .is_some_and(|n| n.len() >= 15 && "inet_sock_set_state".starts_with(n))
        })
        .filter_map(|p| p.get("id").and_then(|i| i.as_u64()).map(|i| i as u32))
        .collect()
}

/// Asserts that no program named like ours lives on without any process
/// holding it (a leak: pinned or otherwise orphaned). Concurrent tests' tracers
/// may be exiting, so an orphan only counts if it outlives a grace period.
pub fn assert_no_orphaned_programs() {
    let orphans: BTreeSet<u32> = our_named_progs()
        .difference(&progs_held_by_anyone())
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
            .filter(|id| !progs_held_by_anyone().contains(id))
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

// ---------------------------------------------------------------------------
// Process memory
// ---------------------------------------------------------------------------

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let get = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some((get("VmRSS:")?, get("VmHWM:")?))
}

// ---------------------------------------------------------------------------
// Traffic from threads inside a namespace
// ---------------------------------------------------------------------------

/// Moves the calling thread into the network namespace at `ns` (only this
/// thread: setns(CLONE_NEWNET) is per thread).
pub fn enter_netns(ns: &Path) {
    let f = File::open(ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
    // SAFETY: a valid namespace fd.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns({}): {}",
        ns.display(),
        std::io::Error::last_os_error()
    );
}

/// Sets the calling thread's `comm` (what the kernel reports as the process
/// name for sockets it owns); at most 15 bytes are kept.
pub fn set_thread_name(name: &[u8]) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name[..n]);
    // SAFETY: buf is NUL-terminated.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_NAME)");
}

/// Runs `f` on a new thread inside the namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    thread::spawn(move || {
        enter_netns(&ns);
        f()
    })
}

/// Sets sysctls inside a namespace: a wide ephemeral port range and no
/// TIME_WAIT sockets, so a long run of connections cannot run out of ports.
pub fn tune_for_churn(ns: &Netns) {
    ns.exec(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_local_port_range=1024 65535",
        "net.ipv4.tcp_max_tw_buckets=0",
    ]);
}

/// Like [`tune_for_churn`] but keeping TIME_WAIT sockets (reused by new
/// connections after a second, `tcp_tw_reuse`), as on a real busy host.
pub fn tune_for_churn_with_timewait(ns: &Netns) {
    ns.exec(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_local_port_range=1024 65535",
        "net.ipv4.tcp_tw_reuse=1",
    ]);
}

/// A running connection generator: `total` loopback connections to
/// 127.0.0.1:`port`, each opened by a client thread, accepted by a server
/// thread, and closed at once by both (10 transitions each).
pub struct Churn {
    pub done: Arc<AtomicU64>,
    /// connect() calls that failed and were retried (ports exhausted).
    pub retries: Arc<AtomicU64>,
    pub total: u64,
    handles: Vec<JoinHandle<()>>,
}

impl Churn {
    /// Starts `threads` client and `threads` server threads in `ns`. The
    /// listener is bound before this returns and closed when all is done.
    pub fn start(ns: &Netns, port: u16, total: u64, threads: usize) -> Churn {
        use std::net::{TcpListener, TcpStream};
        let path = ns.path();
        let listener = in_netns(path.clone(), move || {
            TcpListener::bind(("127.0.0.1", port)).expect("bind")
        })
        .join()
        .unwrap();
        let listener = Arc::new(listener);
        let accepted = Arc::new(AtomicU64::new(0));
        let started = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let retries = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for _ in 0..threads {
            let (l, accepted) = (listener.clone(), accepted.clone());
            handles.push(thread::spawn(move || {
                while accepted.fetch_add(1, Ordering::Relaxed) < total {
                    // Closed at once: whichever side closes first, each
                    // end makes 5 transitions (a simultaneous close goes
                    // through CLOSING instead of FIN_WAIT2/CLOSE_WAIT).
                    let (s, _) = l.accept().expect("accept");
                    drop(s);
                }
                // The listener closes when the last server thread drops it.
            }));
        }
        drop(listener);
        for _ in 0..threads {
            let (started, done, retries) = (started.clone(), done.clone(), retries.clone());
            handles.push(in_netns(path.clone(), move || {
                while started.fetch_add(1, Ordering::Relaxed) < total {
                    let mut tries = 0;
                    loop {
                        match TcpStream::connect(("127.0.0.1", port)) {
                            Ok(s) => {
                                drop(s);
                                break;
                            }
                            Err(e) => {
                                tries += 1;
                                retries.fetch_add(1, Ordering::Relaxed);
                                assert!(tries < 1000, "connect keeps failing: {e}");
                                thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        Churn {
            done,
            retries,
            total,
            handles,
        }
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    pub fn wait(self) {
        for h in self.handles {
            h.join().expect("churn thread panicked");
        }
    }
}

/// Writes `bytes` to a fresh file under `dir`.
pub fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    File::create(path)
        .and_then(|mut f| f.write_all(bytes))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A fresh empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "tcpstate-rel-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
