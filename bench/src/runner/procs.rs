//! The processes of a run: pinning them to a CPU (and into the bench namespace), BPF run
//! statistics, and reaping children with their resource usage.

use std::{
    os::{
        fd::{FromRawFd as _, OwnedFd, RawFd},
        unix::process::{CommandExt as _, ExitStatusExt as _},
    },
    process::{Command, ExitStatus},
};

use anyhow::{Context as _, Result};
use tcpstate_devsupport::Netns;

fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Pins the calling thread (and what it later spawns) to `cpu`.
pub fn pin_self(cpu: usize) -> Result<()> {
    let set = cpu_set(cpu);
    // SAFETY: valid set for the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("pinning to CPU {cpu}"));
    }
    Ok(())
}

/// Makes `cmd`'s process start inside `netns` if given, pinned to `cpu` (any CPU when
/// `None`).
pub fn pin(cmd: &mut Command, cpu: Option<usize>, netns: Option<&Netns>) {
    if let Some(ns) = netns {
        ns.enter_on_exec(cmd);
    }
    let Some(set) = cpu.map(cpu_set) else {
        return;
    };
    // SAFETY: only an async-signal-safe system call between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// BPF run statistics (run_cnt / run_time_ns), enabled while the returned fd is open.
pub fn enable_bpf_stats() -> Option<OwnedFd> {
    const BPF_ENABLE_STATS: libc::c_long = 32;
    // union bpf_attr { struct { __u32 type; } enable_stats; }, type 0 = BPF_STATS_RUN_TIME.
    let attr = [0u8; 16];
    // SAFETY: a zeroed attr of the size we pass.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_ENABLE_STATS, attr.as_ptr(), 16u32) };
    // SAFETY: on success the kernel returned a new descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// How a reaped child ended and what it used.
pub struct Reaped {
    pub status: ExitStatus,
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// Peak resident set, in KiB.
    pub max_rss_kb: u64,
}

/// One `wait4` on our child `pid` (`flags`: 0 or `WNOHANG`): Some once it has exited, None
/// while it runs (with `WNOHANG`) or when the wait was interrupted by a signal.
pub fn reap(pid: u32, flags: libc::c_int) -> Result<Option<Reaped>> {
    let pid = pid as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is valid; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our own child; valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, flags, &mut ru) };
    if r == pid {
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        return Ok(Some(Reaped {
            status: ExitStatus::from_raw(status),
            cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
            max_rss_kb: ru.ru_maxrss as u64,
        }));
    }
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("wait4");
        }
    }
    Ok(None)
}

/// Reaps `child` with its rusage: (exit status, user + system CPU seconds).
pub fn wait_rusage(child: &std::process::Child) -> Result<(ExitStatus, f64)> {
    loop {
        if let Some(r) = reap(child.id(), 0)? {
            return Ok((r.status, r.cpu_s));
        }
    }
}
