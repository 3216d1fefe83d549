//! `tcpstate-bench`: how much each tracer slows the workload it watches (issue #5).
//!
//! One run = one variant (no tracer, tcpstate, tcpstate `--port` on an idle port, or a peer
//! tool) watching one load: `loadgen server` and `loadgen client` in a network namespace of our
//! own, both pinned to the load CPU, the tracer pinned to the other. Every round runs every
//! variant once, in an order rotated each round, so slow drift of the machine hits all alike.
//!
//! Per run: connections/s, events received against the exact expected count, losses the tool
//! reported (plus the kernel's `recursion_misses` of its programs), the tracer's CPU time and
//! peak RSS, and its startup: exec until its program has run on a probe connection (BPF run
//! statistics enabled just for that) and, for tcpstate, until it printed its ready line.
//! Prints the markdown report and writes it (and the raw runs as JSON) to `--out`.

use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader, Read as _},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser;
use tcpstate_bench::{
    CONNECTION_TRANSITIONS, LISTENER_TRANSITIONS,
    count::{self, TcpstateSummary},
    loadgen::{ClientReport, Load, ServerReport},
    procfs,
    report::{MicroBench, Report, Role, RunResult, VariantInfo},
};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "tcpstate-bench",
    about = "Measure how much tcpstate and its peers slow a connect/close workload",
    long_about = "Measure how much tcpstate and its peers slow a connect/close workload. \
                  Needs root (network namespace, BPF). Usually run as `cargo xtask bench`."
)]
struct Cli {
    /// A short correctness run for CI: few connections, one round, no peers; fails unless
    /// tcpstate delivered exactly the expected events.
    #[arg(long)]
    smoke: bool,
    /// Rounds; each runs every variant once.
    #[arg(long)]
    rounds: Option<usize>,
    /// Connections per run (the client's count).
    #[arg(long)]
    connections: Option<u64>,
    /// Wall-time bound of one load run, in seconds.
    #[arg(long, default_value_t = 60.0)]
    max_secs: f64,
    /// The tracer (default: `tcpstate` next to this binary).
    #[arg(long)]
    tcpstate: Option<PathBuf>,
    /// The load generator (default: `loadgen` next to this binary).
    #[arg(long)]
    loadgen: Option<PathBuf>,
    /// Write the markdown report here (and the raw runs as JSON beside it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Scratch directory for tracer output (default: target/bench).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Do not run the peer tools even if installed.
    #[arg(long)]
    no_peers: bool,
    /// Only these variants (comma-separated ids: untraced, tcpstate, tcpstate-port,
    /// libbpf-tcpstates, bcc-tcpstates, bpftrace, bpftrace-count).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// CPU for the load generator (client and server).
    #[arg(long, default_value_t = 0)]
    load_cpu: usize,
    /// CPU for the tracer.
    #[arg(long, default_value_t = 1)]
    tracer_cpu: usize,
    /// The load's server port.
    /// (The peers cannot filter by namespace: they count this port's lines in every namespace,
    /// so it should be one nothing else on the machine uses.)
    #[arg(long, default_value_t = 23571)]
    port: u16,
    /// The port given to `tcpstate --port` in the idle-port variant (carries no load).
    #[arg(long, default_value_t = 23579)]
    idle_port: u16,
    /// Keep BPF run statistics on during the load and report ns per program run (adds a
    /// little overhead to every traced run).
    #[arg(long)]
    bpf_stats: bool,
    /// Pause between runs, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Keep the tracers' output files.
    #[arg(long)]
    keep_output: bool,
    /// Before each run, wait up to this many seconds for both CPUs to be idle (other work on
    /// the machine skews every figure); a run that starts busy says so in its note.
    /// Default 600 (smoke: 0).
    #[arg(long)]
    idle_wait: Option<u64>,
    /// Most CPU use (percent, each of the two CPUs) that counts as idle.
    #[arg(long, default_value_t = 10.0)]
    idle_threshold: f64,
    /// Most NET_RX softirqs per second (all CPUs) that count as idle.
    #[arg(long, default_value_t = 300.0)]
    idle_net_rx: f64,
    /// Where criterion keeps its results (default: <target>/criterion); the decode/format
    /// micro-benchmark's figures found there are added to the report.
    #[arg(long)]
    criterion_dir: Option<PathBuf>,
}

/// Where host-namespace probe connections go while waiting for a tracer to attach: a port
/// nothing listens on, so each probe is CLOSE->SYN_SENT->CLOSE and nothing else.
const PROBE_PORT: u16 = 1;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tcpstate-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes: pinning, namespaces

fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Pins the calling thread (and what it later spawns) to `cpu`.
fn pin_self(cpu: usize) -> Result<()> {
    let set = cpu_set(cpu);
    // SAFETY: valid set for the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("pinning to CPU {cpu}"));
    }
    Ok(())
}

/// Makes `cmd`'s process start pinned to `cpu` (any CPU when `None`), inside
/// `netns` if given.
fn pin(cmd: &mut Command, cpu: Option<usize>, netns: Option<RawFd>) {
    let set = cpu.map(cpu_set);
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = netns
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(set) = &set
                && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The benchmark's network namespace, deleted on drop.
struct Netns {
    name: String,
    file: File,
}

/// Settings inside the namespace, so the load never waits on the kernel. The client closes
/// first, so its side ends in TIME_WAIT: a wide ephemeral range and quick reuse of TIME_WAIT
/// ports keep a 60k connections/s client from running out of ports (each connection still
/// makes the same 10 transitions; TIME_WAIT is not one of them). A deep accept queue keeps
/// bursts from dropping SYNs (a dropped SYN stalls the client for a second).
const NETNS_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv4/ip_local_port_range", "1024 65535"),
    ("net/ipv4/tcp_tw_reuse", "1"),
    ("net/ipv4/tcp_tw_reuse_delay", "1"),
    ("net/core/somaxconn", "65535"),
    ("net/ipv4/tcp_max_syn_backlog", "65535"),
];

impl Netns {
    fn create(name: &str) -> Result<(Netns, Vec<String>)> {
        let _ = Command::new("ip")
            .args(["netns", "delete", name])
            .stderr(Stdio::null())
            .status();
        run_quiet(Command::new("ip").args(["netns", "add", name]))
            .context("creating the bench network namespace (needs root and iproute2)")?;
        let path = format!("/run/netns/{name}");
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let ns = Netns {
            name: name.to_string(),
            file,
        };
        run_quiet(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        let mut notes = Vec::new();
        for (key, value) in NETNS_SYSCTLS {
            match ns.write_sysctl(key, value) {
                Ok(()) => notes.push(format!("{}={value}", key.replace('/', "."))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => bail!("setting {key} in the bench namespace: {e}"),
            }
        }
        Ok((ns, notes))
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Writes /proc/sys/<key> as seen from inside the namespace (from a thread that joins
    /// it: /proc/sys/net follows the writer's namespace).
    fn write_sysctl(&self, key: &str, value: &str) -> std::io::Result<()> {
        let fd = self.fd();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on this short-lived thread only.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let path = format!("/proc/sys/{key}");
                fs::write(&path, value)?;
                let back = fs::read_to_string(&path)?;
                if back.split_whitespace().collect::<Vec<_>>()
                    != value.split_whitespace().collect::<Vec<_>>()
                {
                    return Err(std::io::Error::other(format!("{path} reads back {back:?}")));
                }
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("sysctl thread panicked")))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// BPF run statistics (run_cnt / run_time_ns), enabled while the returned fd is open.
fn enable_bpf_stats() -> Option<OwnedFd> {
    const BPF_ENABLE_STATS: libc::c_long = 32;
    // union bpf_attr { struct { __u32 type; } enable_stats; }, type 0 = BPF_STATS_RUN_TIME.
    let attr = [0u8; 16];
    // SAFETY: a zeroed attr of the size we pass.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_ENABLE_STATS, attr.as_ptr(), 16u32) };
    // SAFETY: on success the kernel returned a new descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// (busy, total) jiffies of each CPU from /proc/stat.
fn cpu_jiffies() -> Vec<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

/// NET_RX softirqs so far, all CPUs (loopback traffic in any namespace raises them).
fn net_rx_softirqs() -> u64 {
    fs::read_to_string("/proc/softirqs")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("NET_RX:"))
        .map_or(0, |l| {
            l.split_whitespace()
                .filter_map(|x| x.parse::<u64>().ok())
                .sum()
        })
}

/// The busiest of `cpus` over `window` (a fraction), and NET_RX softirqs per second.
fn busiest(cpus: &[usize], window: Duration) -> (f64, f64) {
    let a = cpu_jiffies();
    let n0 = net_rx_softirqs();
    std::thread::sleep(window);
    let b = cpu_jiffies();
    let n1 = net_rx_softirqs();
    let busy = cpus
        .iter()
        .filter_map(|&c| {
            let (b0, t0) = *a.get(c)?;
            let (b1, t1) = *b.get(c)?;
            (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64)
        })
        .fold(0.0, f64::max);
    (busy, n1.saturating_sub(n0) as f64 / window.as_secs_f64())
}

/// Waits until `cpus` are idle and the machine carries little network traffic (other TCP
/// traffic costs every tracer, and the peers, which cannot filter by namespace, print it)
/// for a whole window; Err(why) after `max`.
fn wait_idle(cpus: &[usize], threshold: f64, net_rx: f64, max: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut told = false;
    loop {
        let (busy, rx) = busiest(cpus, Duration::from_millis(500));
        let why = format!("CPU {:.0}% busy, {rx:.0} NET_RX softirqs/s", busy * 100.0);
        if busy <= threshold && rx <= net_rx {
            return Ok(());
        }
        if start.elapsed() >= max || INTERRUPTED.load(Ordering::SeqCst) {
            return Err(why);
        }
        if !told {
            eprintln!(
                "tcpstate-bench: waiting for the machine to be idle ({why}; up to {} s)",
                max.as_secs()
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ---------------------------------------------------------------------------------------------
// Variants

#[derive(Debug, Clone, Copy, PartialEq)]
enum Counting {
    None,
    /// tcpstate's exit summary; `all` when every bench event is expected (else none is).
    Tcpstate {
        all: bool,
    },
    /// Output lines with the bench port at either end.
    PortLines,
    /// A bpftrace map printed at exit.
    BpftraceScalar(&'static str),
}

#[derive(Debug, Clone)]
struct Variant {
    info: VariantInfo,
    program: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    counting: Counting,
    /// A line the tool prints on stderr once it is ready.
    ready_line: Option<&'static str>,
    /// Another tracer run for the whole round, its output discarded: what
    /// a production host with other BPF agents looks like.
    companion: Option<PathBuf>,
    /// Load and tracer on any CPU, as the scheduler likes (nested state
    /// changes on one CPU are much more frequent than when pinned apart).
    unpinned: bool,
}

impl Variant {
    fn new(id: &str, label: &str, role: Role, program: Option<PathBuf>, args: &[String]) -> Self {
        let command = match &program {
            Some(p) => std::iter::once(p.display().to_string())
                .chain(args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" "),
            None => "(no tracer)".into(),
        };
        Variant {
            info: VariantInfo {
                id: id.into(),
                label: label.into(),
                role,
                command,
            },
            program,
            args: args.to_vec(),
            env: Vec::new(),
            counting: Counting::None,
            ready_line: None,
            companion: None,
            unpinned: false,
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Debian's split kernel headers (`linux-headers-<ver>-<arch>` holds the generated files and
/// points at `linux-headers-<ver>-common`), merged into one tree of symlinks bcc can use as
/// `BCC_KERNEL_SOURCE`. None when the running kernel's own headers are installed (bcc finds
/// them) or when there are none.
fn bcc_kernel_source(work: &Path) -> Result<Option<PathBuf>, String> {
    let release = uname_release();
    if Path::new(&format!("/lib/modules/{release}/build/include")).is_dir() {
        return Ok(None);
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/src")
        .map_err(|e| format!("no kernel headers (/usr/src: {e})"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("linux-headers-") && n.ends_with(&format!("-{arch}"))
        })
        .collect();
    found.sort();
    let Some(arch_dir) = found.pop() else {
        return Err(format!(
            "no kernel headers for {release} or in /usr/src (apt-get install linux-headers-{arch})"
        ));
    };
    let makefile = fs::read_to_string(arch_dir.join("Makefile")).unwrap_or_default();
    let common = makefile
        .split_whitespace()
        .find_map(|w| w.strip_suffix("/Makefile"))
        .map(PathBuf::from)
        .filter(|p| p.is_dir());
    let name = arch_dir.file_name().unwrap_or_default();
    let merged = work.join("kheaders").join(name);
    if !merged.join("include/generated").exists() || !merged.join("include/linux").exists() {
        let _ = fs::remove_dir_all(&merged);
        fs::create_dir_all(&merged).map_err(|e| e.to_string())?;
        let link_tree = |from: &Path| {
            run_quiet(
                Command::new("cp")
                    .arg("-rsf")
                    .arg(format!("{}/.", from.display()))
                    .arg(&merged),
            )
            .map_err(|e| e.to_string())
        };
        if let Some(c) = &common {
            link_tree(c)?;
        }
        link_tree(&arch_dir)?;
    }
    Ok(Some(merged))
}

fn uname_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A bpftrace script printing every TCP transition in the peers' column layout.
fn bpftrace_print_script() -> String {
    let states = [
        (1, "ESTABLISHED"),
        (2, "SYN_SENT"),
        (3, "SYN_RECV"),
        (4, "FIN_WAIT1"),
        (5, "FIN_WAIT2"),
        (6, "TIME_WAIT"),
        (7, "CLOSE"),
        (8, "CLOSE_WAIT"),
        (9, "LAST_ACK"),
        (10, "LISTEN"),
        (11, "CLOSING"),
        (12, "NEW_SYN_RECV"),
    ];
    let mut s = String::from("BEGIN\n{\n");
    for (n, name) in states {
        s.push_str(&format!("  @st[{n}] = \"{name}\";\n"));
    }
    s.push_str(
        r#"}

tracepoint:sock:inet_sock_set_state
/args->protocol == 6/
{
  // Every field read up front: bpftrace 0.17 cannot read args after a printf.
  $sk = (uint64)args->skaddr;
  $old = args->oldstate;
  $new = args->newstate;
  $sport = args->sport;
  $dport = args->dport;
  $family = args->family;
  $us = @start[$sk] ? (nsecs - @start[$sk]) / 1000 : 0;
  if ($family == 2) {
    printf("%lx %d %s %s %d %s %d %s -> %s %d.%03d\n", $sk, pid, comm,
      ntop(2, args->saddr), $sport, ntop(2, args->daddr), $dport,
      @st[$old], @st[$new], $us / 1000, $us % 1000);
  } else {
    printf("%lx %d %s %s %d %s %d %s -> %s %d.%03d\n", $sk, pid, comm,
      ntop(10, args->saddr_v6), $sport, ntop(10, args->daddr_v6), $dport,
      @st[$old], @st[$new], $us / 1000, $us % 1000);
  }
  if ($new == 7) {
    delete(@start[$sk]);
  } else {
    @start[$sk] = nsecs;
  }
}

END
{
  clear(@start);
  clear(@st);
}
"#,
    );
    s
}

fn bpftrace_count_script(port: u16) -> String {
    format!(
        "tracepoint:sock:inet_sock_set_state\n\
         /args->protocol == 6 && (args->sport == {port} || args->dport == {port})/\n\
         {{\n  @events = count();\n}}\n"
    )
}

/// Peers not run: (name, why).
type Skipped = Vec<(String, String)>;

fn variants(
    cli: &Cli,
    tcpstate: &Path,
    netns_path: &str,
    work: &Path,
) -> Result<(Vec<Variant>, Skipped)> {
    let mut v = Vec::new();
    let mut skipped = Vec::new();
    v.push(Variant::new(
        "untraced",
        "untraced",
        Role::Baseline,
        None,
        &[],
    ));
    let mut ts = Variant::new(
        "tcpstate",
        "tcpstate (all events to a file)",
        Role::Tcpstate,
        Some(tcpstate.to_path_buf()),
        &["--netns".into(), netns_path.into()],
    );
    ts.counting = Counting::Tcpstate { all: true };
    ts.ready_line = Some("Tracing TCP state changes");
    v.push(ts);
    let mut idle = Variant::new(
        "tcpstate-port",
        &format!("tcpstate --port {} (idle port)", cli.idle_port),
        Role::TcpstateIdlePort,
        Some(tcpstate.to_path_buf()),
        &["--port".into(), cli.idle_port.to_string()],
    );
    idle.counting = Counting::Tcpstate { all: false };
    idle.ready_line = Some("Tracing TCP state changes");
    v.push(idle);

    if !cli.no_peers && !cli.smoke {
        match which("tcpstates") {
            Some(p) => {
                let mut x = Variant::new(
                    "libbpf-tcpstates",
                    "libbpf-tools tcpstates",
                    Role::Peer,
                    Some(p.clone()),
                    &[],
                );
                x.counting = Counting::PortLines;
                v.push(x);
                // Beside another BPF agent, on unpinned load: nothing may be
                // skipped (a classic tracepoint would be, whenever the other
                // tool's program runs on the same CPU).
                let mut both = Variant::new(
                    "tcpstate-alongside",
                    "tcpstate (all events) beside libbpf-tools tcpstates, unpinned",
                    Role::TcpstateAlongside,
                    Some(tcpstate.to_path_buf()),
                    &["--netns".into(), netns_path.into()],
                );
                both.counting = Counting::Tcpstate { all: true };
                both.ready_line = Some("Tracing TCP state changes");
                both.companion = Some(p.clone());
                both.unpinned = true;
                v.push(both);
            }
            None => skipped.push((
                "libbpf-tools tcpstates".into(),
                "not installed (`cargo xtask setup --bench`)".into(),
            )),
        }
        match which("tcpstates-bpfcc") {
            Some(p) => match bcc_kernel_source(work) {
                Ok(src) => {
                    let mut x = Variant::new(
                        "bcc-tcpstates",
                        "bcc tcpstates-bpfcc",
                        Role::Peer,
                        Some(p),
                        &[],
                    );
                    if let Some(src) = src {
                        x.info.command =
                            format!("BCC_KERNEL_SOURCE={} {}", src.display(), x.info.command);
                        x.env
                            .push(("BCC_KERNEL_SOURCE".into(), src.display().to_string()));
                    }
                    x.counting = Counting::PortLines;
                    v.push(x);
                }
                Err(why) => skipped.push(("bcc tcpstates-bpfcc".into(), why)),
            },
            None => skipped.push((
                "bcc tcpstates-bpfcc".into(),
                "not installed (`cargo xtask setup --bench`)".into(),
            )),
        }
        match which("bpftrace") {
            Some(p) => {
                let print = work.join("tcpstates.bt");
                fs::write(&print, bpftrace_print_script())?;
                let mut x = Variant::new(
                    "bpftrace",
                    "bpftrace script (prints every event)",
                    Role::Peer,
                    Some(p.clone()),
                    &[print.display().to_string()],
                );
                x.counting = Counting::PortLines;
                v.push(x);
                let countf = work.join("tcpcount.bt");
                fs::write(&countf, bpftrace_count_script(cli.port))?;
                let mut x = Variant::new(
                    "bpftrace-count",
                    "bpftrace, in-kernel count only (no output)",
                    Role::Peer,
                    Some(p),
                    &[countf.display().to_string()],
                );
                x.counting = Counting::BpftraceScalar("events");
                v.push(x);
            }
            None => skipped.push((
                "bpftrace".into(),
                "not installed (`cargo xtask setup --bench`)".into(),
            )),
        }
    }
    if !cli.only.is_empty() {
        for id in &cli.only {
            if !v.iter().any(|x| &x.info.id == id) {
                bail!("--only: no variant `{id}` here");
            }
        }
        v.retain(|x| x.info.role == Role::Baseline || cli.only.contains(&x.info.id));
    }
    Ok((v, skipped))
}

// ---------------------------------------------------------------------------------------------
// One run

struct Ctx<'a> {
    cli: &'a Cli,
    loadgen: PathBuf,
    netns: &'a Netns,
    work: PathBuf,
    connections: u64,
}

struct Tracer {
    _child: Child,
    pid: u32,
    out: PathBuf,
    err: PathBuf,
    startup: Duration,
    cpu_at_ready: u64,
    stats_fd: Option<OwnedFd>,
    /// (tracepoint runs, their ns, ns of all the tracer's programs) when it became ready.
    runs_at_ready: (u64, u64, u64),
}

fn tail(path: &Path, n: usize) -> String {
    let t = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn start_tracer(ctx: &Ctx, v: &Variant, round: usize) -> Result<Tracer> {
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
        if t0.elapsed() > deadline || INTERRUPTED.load(Ordering::SeqCst) {
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
        let progs: Vec<_> = procfs::bpf_progs(pid)
            .into_iter()
            .filter(procfs::ProgInfo::is_tracepoint)
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
    let progs = procfs::bpf_progs(pid);
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
fn bpf_runs(progs: &[procfs::ProgInfo]) -> (u64, u64, u64) {
    progs.iter().fold((0, 0, 0), |a, p| {
        if p.is_tracepoint() {
            (a.0 + p.run_cnt, a.1 + p.run_time_ns, a.2 + p.run_time_ns)
        } else {
            (a.0, a.1, a.2 + p.run_time_ns)
        }
    })
}

fn spawn_loadgen(ctx: &Ctx, pinned: bool, args: &[String]) -> Result<Child> {
    let mut cmd = Command::new(&ctx.loadgen);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    pin(
        &mut cmd,
        pinned.then_some(ctx.cli.load_cpu),
        Some(ctx.netns.fd()),
    );
    cmd.spawn()
        .with_context(|| format!("cannot start {}", ctx.loadgen.display()))
}

fn child_stderr(c: &mut Child) -> String {
    let mut s = String::new();
    if let Some(e) = c.stderr.as_mut() {
        let _ = e.read_to_string(&mut s);
    }
    s.trim().to_string()
}

/// Server, then client; returns their reports and the share of the load CPU their processes
/// got while the load ran (well under 1: something else ran there too).
fn run_load(ctx: &Ctx, pinned: bool) -> Result<(ClientReport, ServerReport, f64)> {
    let port = ctx.cli.port.to_string();
    let mut server = spawn_loadgen(
        ctx,
        pinned,
        &["server".into(), "--port".into(), port.clone()],
    )?;
    let mut sout = BufReader::new(server.stdout.take().expect("piped"));
    let mut line = String::new();
    sout.read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = server.kill();
        let _ = server.wait();
        bail!(
            "loadgen server did not start: {}",
            child_stderr(&mut server)
        );
    }
    let mut client = spawn_loadgen(
        ctx,
        pinned,
        &[
            "client".into(),
            "--port".into(),
            port,
            "--count".into(),
            ctx.connections.to_string(),
            "--max-secs".into(),
            ctx.cli.max_secs.to_string(),
        ],
    )?;
    let mut cout = String::new();
    client
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut cout)?;
    let (cstatus, ccpu) = wait_rusage(&mut client)?;
    if !cstatus.success() {
        let _ = server.kill();
        let _ = server.wait();
        bail!(
            "loadgen client failed ({cstatus}): {}",
            child_stderr(&mut client)
        );
    }
    let mut sjson = String::new();
    sout.read_to_string(&mut sjson)?;
    let (sstatus, scpu) = wait_rusage(&mut server)?;
    if !sstatus.success() {
        bail!(
            "loadgen server failed ({sstatus}): {}",
            child_stderr(&mut server)
        );
    }
    let c: ClientReport =
        serde_json::from_str(cout.trim()).with_context(|| format!("client report {cout:?}"))?;
    let s: ServerReport =
        serde_json::from_str(sjson.trim()).with_context(|| format!("server report {sjson:?}"))?;
    if s.handled != c.ok + 1 || s.client_count != Some(c.ok) {
        bail!(
            "server handled {} connections, client made {} + 1",
            s.handled,
            c.ok
        );
    }
    let share = (ccpu + scpu) / (s.end_ns.saturating_sub(c.start_ns) as f64 / 1e9);
    Ok((c, s, share))
}

/// Reaps `child` with its rusage: (exit status, user + system CPU seconds).
fn wait_rusage(child: &mut Child) -> Result<(std::process::ExitStatus, f64)> {
    use std::os::unix::process::ExitStatusExt as _;
    let pid = child.id() as libc::pid_t;
    loop {
        let mut status = 0;
        // SAFETY: zeroed rusage is valid; wait4 fills it.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: our own child; valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            return Ok((
                std::process::ExitStatus::from_raw(status),
                tv(ru.ru_utime) + tv(ru.ru_stime),
            ));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("wait4");
        }
    }
}

/// Waits until the tracer's output and CPU time stop growing (it has drained what the load
/// made), at most `max`.
fn wait_quiet(t: &Tracer, max: Duration) -> bool {
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

struct Exit {
    rss_kb: u64,
    cpu_s: f64,
    killed: bool,
}

/// SIGINT, then reap with rusage (SIGKILL after 30 s).
fn stop_tracer(t: &mut Tracer) -> Result<Exit> {
    let pid = t.pid as libc::pid_t;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let start = Instant::now();
    let mut killed = false;
    loop {
        let mut status = 0;
        // SAFETY: zeroed rusage is valid; wait4 fills it.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: our own child; valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            return Ok(Exit {
                rss_kb: ru.ru_maxrss as u64,
                cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
                killed,
            });
        }
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context("wait4");
        }
        if start.elapsed() > Duration::from_secs(30) && !killed {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run_one(ctx: &Ctx, v: &Variant, round: usize) -> RunResult {
    let mut r = RunResult {
        variant: v.info.id.clone(),
        round,
        ..Default::default()
    };
    if let Err(e) = run_one_inner(ctx, v, &mut r) {
        r.error = Some(format!("{e:#}"));
    }
    r
}

/// A tracer run beside the measured one for a round; stopped when dropped.
struct Companion(Child);

impl Companion {
    fn start(program: &Path) -> Result<Companion> {
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

fn run_one_inner(ctx: &Ctx, v: &Variant, r: &mut RunResult) -> Result<()> {
    let companion = v.companion.as_deref().map(Companion::start).transpose()?;
    let mut tracer = match v.program {
        Some(_) => Some(start_tracer(ctx, v, r.round)?),
        None => None,
    };
    if let Some(t) = &tracer {
        r.startup_ms = Some(t.startup.as_secs_f64() * 1e3);
    }
    let j0 = cpu_jiffies();
    let load = run_load(ctx, !v.unpinned);
    drop(companion);
    let j1 = cpu_jiffies();
    let busy = |cpu: usize| {
        let (b0, t0) = *j0.get(cpu)?;
        let (b1, t1) = *j1.get(cpu)?;
        (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64)
    };
    r.load_cpu_busy = busy(ctx.cli.load_cpu);
    r.tracer_cpu_busy = busy(ctx.cli.tracer_cpu);
    let mut notes = Vec::new();
    let Some(t) = tracer.as_mut() else {
        let (c, s, share) = load?;
        fill_load(r, &c, &s, &mut notes);
        r.load_cpu_share = Some(share);
        r.note = (!notes.is_empty()).then(|| notes.join("; "));
        return Ok(());
    };
    let quiet = wait_quiet(t, Duration::from_secs(120));
    if !quiet {
        notes.push("output still growing after 120 s".into());
    }
    let cpu_end = procfs::cpu_ns(t.pid).unwrap_or(0);
    let progs = procfs::bpf_progs(t.pid);
    let misses: u64 = progs.iter().map(|p| p.recursion_misses).sum();
    let mut bpf_ns_all = None;
    if t.stats_fd.is_some() {
        let (cnt, ns, all) = bpf_runs(&progs);
        let (c0, n0, a0) = t.runs_at_ready;
        if cnt > c0 {
            r.bpf_ns_per_run = Some((ns - n0) as f64 / (cnt - c0) as f64);
        }
        bpf_ns_all = Some(all.saturating_sub(a0));
    }
    let exit = stop_tracer(t)?;
    t.stats_fd = None;
    if exit.killed {
        notes.push("did not exit on SIGINT; killed".into());
    }
    r.rss_kb = Some(exit.rss_kb);
    r.total_cpu_s = Some(exit.cpu_s);
    r.cpu_s = Some(cpu_end.saturating_sub(t.cpu_at_ready) as f64 / 1e9);
    r.recursion_misses = Some(misses);
    let (c, s, share) = load?;
    fill_load(r, &c, &s, &mut notes);
    r.load_cpu_share = Some(share);
    if let Some(ns) = bpf_ns_all {
        r.bpf_ns_per_conn = Some(ns as f64 / r.connections as f64);
    }
    let expected = Load::from_reports(&c, &s).expected_events();
    let stderr = fs::read_to_string(&t.err).unwrap_or_default();
    match v.counting {
        Counting::None => {}
        Counting::Tcpstate { all } => {
            let sum = count::tcpstate_summary(&stderr)
                .ok_or_else(|| anyhow!("no exit summary from tcpstate: {}", tail(&t.err, 5)))?;
            r.received = Some(sum.events);
            r.expected = Some(if all { expected } else { 0 });
            r.lost = Some(sum.lost);
            let lines = count::event_lines(BufReader::new(File::open(&t.out)?))?;
            if lines != sum.events + sum.extra_events {
                notes.push(format!(
                    "{lines} event lines in the output, summary says {} + {}",
                    sum.events, sum.extra_events
                ));
            } else if sum.extra_events > 0 {
                notes.push(format!(
                    "also {} non-transition events (timewait, ...)",
                    sum.extra_events
                ));
            }
            if all && let Some(bad) = check_transitions(&sum, c.ok + 1) {
                notes.push(bad);
            }
        }
        Counting::PortLines => {
            r.received = Some(count::port_lines(
                BufReader::new(File::open(&t.out)?),
                ctx.cli.port,
            )?);
            r.expected = Some(expected);
            r.lost = Some(count::reported_lost(&stderr) + misses);
        }
        Counting::BpftraceScalar(name) => {
            let out = fs::read_to_string(&t.out).unwrap_or_default();
            r.received = count::bpftrace_scalar(&out, name);
            r.expected = Some(expected);
            r.lost = Some(count::reported_lost(&stderr) + misses);
        }
    }
    if let Ok(f) = File::open(&t.out) {
        let _ = f.sync_all();
    }
    if !ctx.cli.keep_output {
        let _ = fs::remove_file(&t.out);
    }
    r.note = (!notes.is_empty()).then(|| notes.join("; "));
    Ok(())
}

fn fill_load(r: &mut RunResult, c: &ClientReport, s: &ServerReport, notes: &mut Vec<String>) {
    let load = Load::from_reports(c, s);
    r.connections = load.connections;
    r.failed_connects = load.failed_connects;
    r.seconds = load.seconds;
    r.rate = load.rate();
    if c.failed > 0 {
        notes.push(format!(
            "{} failed connects (first: {})",
            c.failed,
            c.first_error.as_deref().unwrap_or("?")
        ));
    }
    if c.timed_out {
        notes.push("stopped by --max-secs".into());
    }
}

/// Every connection's 10 transitions exactly `n` times, the listener's once.
fn check_transitions(sum: &TcpstateSummary, n: u64) -> Option<String> {
    let mut bad = Vec::new();
    for (o, w) in CONNECTION_TRANSITIONS {
        let got = sum.count(o, w);
        if got != n {
            bad.push(format!("{o}->{w} {got}"));
        }
    }
    for (o, w) in LISTENER_TRANSITIONS {
        let got = sum.count(o, w);
        if got != 1 {
            bad.push(format!("{o}->{w} {got}"));
        }
    }
    (!bad.is_empty()).then(|| format!("transitions off (want {n} each): {}", bad.join(", ")))
}

// ---------------------------------------------------------------------------------------------
// The whole benchmark

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.with_file_name(name))
}

fn cmd_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The decode/format micro-benchmark's results, if criterion left them in `dir`.
fn micro_benches(dir: &Path) -> Vec<MicroBench> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir.join("decode_format")) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let new = p.join("new");
        let (Ok(b), Ok(e)) = (
            fs::read_to_string(new.join("benchmark.json")),
            fs::read_to_string(new.join("estimates.json")),
        ) else {
            continue;
        };
        let (Ok(b), Ok(e)) = (
            serde_json::from_str::<serde_json::Value>(&b),
            serde_json::from_str::<serde_json::Value>(&e),
        ) else {
            continue;
        };
        let Some(elements) = b["throughput"]["Elements"].as_f64() else {
            continue;
        };
        let Some(ns) = e["median"]["point_estimate"].as_f64() else {
            continue;
        };
        let when = fs::metadata(new.join("estimates.json"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| format_utc(d.as_secs()))
            .unwrap_or_default();
        out.push(MicroBench {
            name: b["function_id"].as_str().unwrap_or("?").to_string(),
            events_per_s: elements / (ns / 1e9),
            measured: format!(
                "criterion medians from {} (`cargo bench -p tcpstate-user --bench decode_format`), {when}",
                dir.display()
            ),
        });
    }
    out
}

fn format_utc(secs: u64) -> String {
    // SAFETY: gmtime_r with valid pointers.
    let tm = unsafe {
        let t = secs as libc::time_t;
        let mut tm: libc::tm = std::mem::zeroed();
        libc::gmtime_r(&t, &mut tm);
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

fn run(cli: &Cli) -> Result<bool> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (network namespace and BPF)");
    }
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cli.load_cpu == cli.tracer_cpu || cli.load_cpu.max(cli.tracer_cpu) >= ncpu {
        bail!(
            "--load-cpu {} and --tracer-cpu {} must be two different CPUs of the {ncpu} here",
            cli.load_cpu,
            cli.tracer_cpu
        );
    }
    let tcpstate = match &cli.tcpstate {
        Some(p) => p.clone(),
        None => sibling("tcpstate")?,
    };
    let loadgen = match &cli.loadgen {
        Some(p) => p.clone(),
        None => sibling("loadgen")?,
    };
    for p in [&tcpstate, &loadgen] {
        if !p.is_file() {
            bail!(
                "{} not found (build with `cargo build --release -p tcpstate-user -p tcpstate-bench`)",
                p.display()
            );
        }
    }
    // Run private copies: the tree's target/release may be rebuilt while the benchmark runs,
    // and every run must use the same binaries.
    let bin_dir = work_dir_for(cli, &tcpstate).join("bin");
    fs::create_dir_all(&bin_dir)?;
    let original = tcpstate.clone();
    let tcpstate = copy_to(&tcpstate, &bin_dir)?;
    let loadgen = copy_to(&loadgen, &bin_dir)?;
    let target = original
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf);
    let work = work_dir_for(cli, &original);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let rounds = cli.rounds.unwrap_or(if cli.smoke { 1 } else { 3 });
    let connections = cli
        .connections
        .unwrap_or(if cli.smoke { 300 } else { 100_000 });

    let idle_wait = Duration::from_secs(cli.idle_wait.unwrap_or(if cli.smoke { 0 } else { 600 }));
    // The runner itself stays off the tracer's CPU; it sleeps while the load runs.
    pin_self(cli.load_cpu)?;
    let (netns, sysctls) = Netns::create(&format!("tcpstate-bench-{}", std::process::id()))?;
    let (variants, skipped) = variants(cli, &tcpstate, &netns.path(), &work)?;
    let ctx = Ctx {
        cli,
        loadgen,
        netns: &netns,
        work: work.clone(),
        connections,
    };

    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut report = Report {
        title: if cli.smoke {
            "tcpstate benchmark (smoke run)".into()
        } else {
            "tcpstate benchmark: overhead on a connect/close workload".into()
        },
        meta: vec![
            ("date".into(), format_utc(now_secs())),
            (
                "machine".into(),
                format!(
                    "{} CPUs ({}), kernel {}",
                    ncpu,
                    cpu_model(),
                    uname_release()
                ),
            ),
            (
                "tcpstate".into(),
                format!(
                    "{} ({}, {} bytes, copied for the runs), commit {}",
                    original.display(),
                    cmd_output(&tcpstate.display().to_string(), &["--version"]).unwrap_or_default(),
                    fs::metadata(&tcpstate).map_or(0, |m| m.len()),
                    git_describe()
                ),
            ),
            (
                "load".into(),
                format!(
                    "{connections} connections per run (+1 stop connection), {rounds} rounds, \
                     variants alternating (order rotated each round); loopback 127.0.0.1:{} in \
                     network namespace `{}` ({}); client and server are separate processes \
                     pinned to CPU {}, the tracer to CPU {}",
                    cli.port,
                    netns.name,
                    sysctls.join(", "),
                    cli.load_cpu,
                    cli.tracer_cpu
                ),
            ),
            (
                "load average at start".into(),
                loadavg
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ],
        variants: variants.iter().map(|v| v.info.clone()).collect(),
        skipped,
        ..Default::default()
    };
    if cli.bpf_stats {
        report.meta.push((
            "BPF stats".into(),
            "enabled during the load (`--bpf-stats`): every traced run pays for them".into(),
        ));
    }
    for (name, why) in &report.skipped {
        eprintln!("tcpstate-bench: skipping {name}: {why}");
    }

    for round in 0..rounds {
        for i in 0..variants.len() {
            interrupted()?;
            let v = &variants[(i + round) % variants.len()];
            let cpus = [cli.load_cpu, cli.tracer_cpu];
            let busy = if idle_wait.is_zero() {
                None
            } else {
                wait_idle(
                    &cpus,
                    cli.idle_threshold / 100.0,
                    cli.idle_net_rx,
                    idle_wait,
                )
                .err()
            };
            let mut r = run_one(&ctx, v, round);
            if let Some(b) = busy {
                let n = format!("machine busy before the run ({b})");
                r.note = Some(match r.note.take() {
                    Some(x) => format!("{n}; {x}"),
                    None => n,
                });
            }
            print_progress(&r, &v.info.label, round, rounds);
            report.runs.push(r);
            std::thread::sleep(Duration::from_millis(cli.settle_ms));
        }
    }
    interrupted()?;
    drop(netns);

    let criterion = cli
        .criterion_dir
        .clone()
        .unwrap_or_else(|| target.join("criterion"));
    report.micro = micro_benches(&criterion);
    let md = report.render();
    println!("\n{md}");
    if let Some(out) = &cli.out {
        if let Some(dir) = out.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
        let json = out.with_extension("json");
        fs::write(&json, serde_json::to_string_pretty(&report)?)?;
        println!(
            "tcpstate-bench: wrote {} and {}",
            out.display(),
            json.display()
        );
    }
    Ok(if cli.smoke {
        smoke_verdict(&report)
    } else {
        true
    })
}

/// `--work-dir`, else `<target>/bench` for the target directory holding `tcpstate`.
fn work_dir_for(cli: &Cli, tcpstate: &Path) -> PathBuf {
    cli.work_dir.clone().unwrap_or_else(|| {
        tcpstate
            .parent()
            .and_then(Path::parent)
            .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
            .join("bench")
    })
}

fn copy_to(bin: &Path, dir: &Path) -> Result<PathBuf> {
    let dest = dir.join(bin.file_name().unwrap_or_default());
    let tmp = dest.with_extension("tmp");
    fs::copy(bin, &tmp).with_context(|| format!("copying {}", bin.display()))?;
    fs::rename(&tmp, &dest)?;
    Ok(dest)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn git_describe() -> String {
    let Some(rev) = cmd_output("git", &["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = cmd_output("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{rev} (with uncommitted changes)")
    } else {
        rev
    }
}

fn print_progress(r: &RunResult, label: &str, round: usize, rounds: usize) {
    let mut line = format!("tcpstate-bench: round {}/{rounds} {label}: ", round + 1);
    if let Some(e) = &r.error {
        line.push_str(&format!("FAILED: {e}"));
    } else {
        line.push_str(&format!(
            "{} connections in {:.2} s = {:.0}/s",
            r.connections, r.seconds, r.rate
        ));
        if let (Some(a), Some(b)) = (r.received, r.expected) {
            line.push_str(&format!(", events {a}/{b}"));
        }
        if let Some(l) = r.lost {
            line.push_str(&format!(", lost {l}"));
        }
        if let Some(s) = r.startup_ms {
            line.push_str(&format!(", startup {s:.1} ms"));
        }
        if let Some(k) = r.rss_kb {
            line.push_str(&format!(", RSS {:.1} MB", k as f64 / 1024.0));
        }
        if let Some(c) = r.cpu_s {
            line.push_str(&format!(", CPU {c:.2} s"));
        }
        if let Some(n) = r.bpf_ns_per_run {
            line.push_str(&format!(", BPF {n:.0} ns/run"));
        }
        if let Some(n) = r.bpf_ns_per_conn {
            line.push_str(&format!(" ({n:.0} ns/connection, all programs)"));
        }
        if let Some(n) = &r.note {
            line.push_str(&format!(" [{n}]"));
        }
    }
    eprintln!("{line}");
}

/// The smoke run passes when every run worked and tcpstate delivered exactly what the kernel
/// made (a shortfall fully explained by the kernel's recursion misses is reported, not failed:
/// another BPF program on the machine can cause it).
fn smoke_verdict(report: &Report) -> bool {
    let mut ok = true;
    for r in &report.runs {
        if let Some(e) = &r.error {
            eprintln!("tcpstate-bench: smoke: {} failed: {e}", r.variant);
            ok = false;
            continue;
        }
        if r.rate <= 0.0 {
            eprintln!("tcpstate-bench: smoke: {} measured no rate", r.variant);
            ok = false;
        }
        let is_tcpstate = report.variants.iter().any(|v| {
            v.id == r.variant
                && matches!(
                    v.role,
                    Role::Tcpstate | Role::TcpstateIdlePort | Role::TcpstateAlongside
                )
        });
        if !is_tcpstate {
            continue;
        }
        let (Some(rec), Some(exp)) = (r.received, r.expected) else {
            eprintln!("tcpstate-bench: smoke: {}: no event count", r.variant);
            ok = false;
            continue;
        };
        let misses = r.recursion_misses.unwrap_or(0);
        // Missing events that tcpstate itself reported as skipped by the kernel.
        let explained = rec < exp && exp - rec <= misses.min(r.lost.unwrap_or(0));
        if rec != exp {
            if explained {
                eprintln!(
                    "tcpstate-bench: smoke: {}: {rec}/{exp} events, the shortfall is the \
                     kernel's recursion misses (another BPF program ran): reported, not failed",
                    r.variant
                );
            } else {
                eprintln!(
                    "tcpstate-bench: smoke: {}: received {rec} events, expected {exp}",
                    r.variant
                );
                ok = false;
            }
        }
        if let Some(n) = r
            .note
            .as_deref()
            .filter(|n| n.contains("transitions off") && !explained)
        {
            eprintln!("tcpstate-bench: smoke: {}: {n}", r.variant);
            ok = false;
        }
    }
    eprintln!(
        "tcpstate-bench: smoke: {}",
        if ok { "ok" } else { "FAILED" }
    );
    ok
}
