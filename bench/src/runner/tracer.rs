//! The traced side of a run: starting a tracer and waiting until it is attached and ready,
//! waiting for it to drain, stopping it with its resource usage, and the companion tracer run
//! beside it.

use std::{
    fs::{self, File},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use tcpstate_bench::procfs;
use tcpstate_devsupport::bpf::{self, ProgInfo};

use super::{
    is_interrupted,
    one::Ctx,
    procs::{enable_bpf_stats, pin, reap},
    variants::Variant,
};

/// Where host-namespace probe connections go while waiting for a tracer to attach: a port
/// nothing listens on, so each probe is CLOSE->SYN_SENT->CLOSE and nothing else.
const PROBE_PORT: u16 = 1;

/// A started tracer, attached and ready.
pub struct Tracer {
    _child: Child,
    pub pid: u32,
    /// Its stdout and stderr, in the work directory.
    pub out: PathBuf,
    pub err: PathBuf,
    /// From exec until attached and ready.
    pub startup: Duration,
    /// Its CPU time when it became ready, in ns.
    pub cpu_at_ready: u64,
    /// Keeps BPF run statistics on while the load runs (`--bpf-stats` only).
    pub stats_fd: Option<OwnedFd>,
    /// (tracepoint runs, their ns, ns of all the tracer's programs) when it became ready.
    pub runs_at_ready: (u64, u64, u64),
}

/// The last `n` lines of the file at `path`, on one line.
pub fn tail(path: &Path, n: usize) -> String {
    let t = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Starts `v`'s tracer and waits until its program has run on a probe connection and it
/// printed its ready line (if it has one).
pub fn start_tracer(ctx: &Ctx, v: &Variant, round: usize) -> Result<Tracer> {
    let program = v.program.as_ref().expect("a tracer variant");
    let out = ctx.work.join(format!("{}-{round}.out", v.info.id));
    let err = ctx.work.join(format!("{}-{round}.err", v.info.id));
    let mut cmd = Command::new(program);
    cmd.args(&v.args)
        .envs(v.env.iter().map(|(k, x)| (k, x)))
        .stdin(Stdio::null())
        .stdout(File::create(&out)?)
        .stderr(File::create(&err)?);
    pin(&mut cmd, (!v.unpinned).then_some(ctx.cli.tracer_cpu), None);
    let stats_fd = enable_bpf_stats();
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let pid = child.id();
    let probe = SocketAddrV4::new(Ipv4Addr::LOCALHOST, PROBE_PORT);
    let deadline = Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{} exited during startup ({status}): {}",
                v.info.label,
                tail(&err, 5)
            );
        }
        if t0.elapsed() > deadline || is_interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} not attached after {:?}: {}",
                v.info.label,
                t0.elapsed(),
                tail(&err, 5)
            );
        }
        let _ = TcpStream::connect_timeout(&probe.into(), Duration::from_millis(50));
        let progs: Vec<_> = bpf::progs(pid)
            .into_iter()
            .filter(ProgInfo::is_tracepoint)
            .collect();
        let attached = if stats_fd.is_some() {
            progs.iter().any(|p| p.run_cnt > 0)
        } else {
            !progs.is_empty()
        };
        let ready = match v.ready_line {
            Some(line) => fs::read_to_string(&err).is_ok_and(|t| t.contains(line)),
            None => true,
        };
        if attached && ready {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let startup = t0.elapsed();
    let progs = bpf::progs(pid);
    let runs_at_ready = bpf_runs(&progs);
    Ok(Tracer {
        _child: child,
        pid,
        out,
        err,
        startup,
        cpu_at_ready: procfs::cpu_ns(pid).unwrap_or(0),
        stats_fd: if ctx.cli.bpf_stats { stats_fd } else { None },
        runs_at_ready,
    })
}

/// (runs of the tracepoint programs, their run time, run time of all programs), in ns.
pub fn bpf_runs(progs: &[ProgInfo]) -> (u64, u64, u64) {
    progs.iter().fold((0, 0, 0), |a, p| {
        if p.is_tracepoint() {
            (a.0 + p.run_cnt, a.1 + p.run_time_ns, a.2 + p.run_time_ns)
        } else {
            (a.0, a.1, a.2 + p.run_time_ns)
        }
    })
}

/// Waits until the tracer's output and CPU time stop growing (it has drained what the load
/// made), at most `max`.
pub fn wait_quiet(t: &Tracer, max: Duration) -> bool {
    let start = Instant::now();
    let sample = || {
        (
            fs::metadata(&t.out).map(|m| m.len()).unwrap_or(0),
            procfs::cpu_ns(t.pid).unwrap_or(0),
        )
    };
    let mut last = sample();
    let mut still = 0;
    while start.elapsed() < max {
        std::thread::sleep(Duration::from_millis(100));
        let now = sample();
        // CPU time moving by < 1 ms per 100 ms counts as idle (timers, polling).
        if now.0 == last.0 && now.1.saturating_sub(last.1) < 1_000_000 {
            still += 1;
            if still >= 3 {
                return true;
            }
        } else {
            still = 0;
        }
        last = now;
    }
    false
}

/// How a tracer ended.
pub struct Exit {
    pub rss_kb: u64,
    pub cpu_s: f64,
    /// It did not exit on SIGINT within 30 s.
    pub killed: bool,
}

/// SIGINT, then reap with rusage (SIGKILL after 30 s).
pub fn stop_tracer(t: &mut Tracer) -> Result<Exit> {
    let pid = t.pid as libc::pid_t;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let start = Instant::now();
    let mut killed = false;
    loop {
        if let Some(r) = reap(t.pid, libc::WNOHANG)? {
            return Ok(Exit {
                rss_kb: r.max_rss_kb,
                cpu_s: r.cpu_s,
                killed,
            });
        }
        if start.elapsed() > Duration::from_secs(30) && !killed {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A tracer run beside the measured one for a round; stopped when dropped.
pub struct Companion(Child);

impl Companion {
    pub fn start(program: &Path) -> Result<Companion> {
        let child = Command::new(program)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        // libbpf-tools attach in ~20 ms; leave it ample time.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Companion(child))
    }
}

impl Drop for Companion {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
