//! `cargo xtask compare [--connections N] [--closing N] [--out FILE]`: what polling `ss` sees
//! of short-lived TCP states, against what tcpstate reports, on the same burst of connections.
//!
//! In a private network namespace (loopback only), while `ss -tanH state syn-recv state
//! fin-wait-1 state closing state last-ack` runs back to back as fast as it can and
//! `tcpstate --json --netns` traces:
//! - `--connections` short connections to 127.0.0.1:10050: request, reply, the client closes
//!   first (its socket goes through FIN_WAIT1), the server closes on end of stream (LAST_ACK);
//! - `--closing` connections to 127.0.0.1:10051 where the server closes first and nftables
//!   drops its first FIN once per connection (NOTES §3), so the client's FIN reaches it in
//!   FIN_WAIT1: CLOSING, until the FIN is retransmitted (~200 ms later);
//!
//! and every server end starts as a request socket (SYN_RECV). Each state's column counts the
//! distinct connections (tuples) seen in it; `ss only` counts those ss saw and tcpstate did not
//! (it should be 0). The markdown table is printed and written to `bench-results/polling.md`.

use std::{
    collections::HashSet,
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{build, util};

/// The report, linked from the README.
pub const REPORT: &str = "bench-results/polling.md";

const PLAIN_PORT: u16 = 10050;
const CLOSING_PORT: u16 = 10051;
/// The states compared, as tcpstate names them and as `ss` prints them.
const STATES: [(&str, &str); 4] = [
    ("SYN_RECV", "SYN-RECV"),
    ("FIN_WAIT1", "FIN-WAIT-1"),
    ("CLOSING", "CLOSING"),
    ("LAST_ACK", "LAST-ACK"),
];
const CLIENT_THREADS: u64 = 4;
const MESSAGE: usize = 64;

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Short connections where the client closes first (FIN_WAIT1, LAST_ACK).
    #[arg(long, default_value_t = 20_000)]
    pub connections: u64,
    /// Connections that go through CLOSING (the server's first FIN dropped by nftables).
    #[arg(long, default_value_t = 2_000)]
    pub closing: u64,
    /// Where to write the markdown report (default: bench-results/polling.md).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Use this tcpstate binary instead of building target/release/tcpstate.
    #[arg(long)]
    pub tcpstate: Option<PathBuf>,
}

pub fn run(opts: &Options) -> Result<()> {
    if !util::is_root() {
        bail!("compare needs root: it creates a network namespace and runs tcpstate");
    }
    for tool in ["ip", "ss", "nft"] {
        if util::which(tool).is_none() {
            bail!("`{tool}` not found; run `cargo xtask setup`");
        }
    }
    let tcpstate = match &opts.tcpstate {
        Some(p) => p.clone(),
        None => build::build()?,
    };
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| util::repo_root().join(REPORT));
    let work = util::target_dir().join("compare");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let ns = Netns::create()?;
    ns.setup()?;
    let result = measure(opts, &tcpstate, &ns, &work)?;
    drop(ns);

    let report = result.markdown(opts);
    println!("{report}");
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    println!("compare: wrote {}", out.display());
    Ok(())
}

// ---------------------------------------------------------------------------
// The namespace
// ---------------------------------------------------------------------------

struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Result<Netns> {
        let name = format!("tcpst-compare-{}", std::process::id());
        util::run_captured(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        util::run_captured(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    fn exec(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// A wide port range (the burst leaves thousands of TIME_WAITs), no TIME_WAIT reuse, and
    /// the FIN-drop rule:
    /// the first FIN the server sends on each CLOSING_PORT connection is dropped once (a
    /// dynamic set remembers the client ports already served), the retransmission passes.
    fn setup(&self) -> Result<()> {
        // No reuse of a TIME_WAIT tuple by a new connection (loopback allows it by default):
        // connections are counted by tuple, so each must have its own.
        util::run_captured(&mut self.exec(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_local_port_range=10100 65000",
            "net.ipv4.tcp_tw_reuse=0",
        ]))?;
        let script = format!(
            "table inet tcpst_compare {{
                set fin_dropped {{
                    type inet_service
                    flags dynamic,timeout
                    timeout 10m
                }}
                chain input {{
                    type filter hook input priority 0; policy accept;
                    tcp sport {CLOSING_PORT} tcp flags & fin == fin tcp dport @fin_dropped accept
                    tcp sport {CLOSING_PORT} tcp flags & fin == fin update @fin_dropped {{ tcp dport }} drop
                }}
            }}\n"
        );
        let mut child = self
            .exec(&["nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run nft")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(script.as_bytes())?;
        let outp = child.wait_with_output()?;
        if !outp.status.success() {
            bail!(
                "nft failed: {}\n{script}",
                String::from_utf8_lossy(&outp.stderr)
            );
        }
        Ok(())
    }

    /// Moves the calling thread into the namespace (sockets it creates then live there).
    fn enter(path: &Path) -> Result<()> {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: setns on a namespace file descriptor we hold open; affects this thread only.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns");
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

// ---------------------------------------------------------------------------
// The measurement
// ---------------------------------------------------------------------------

/// Distinct connections seen in a state: (state, local, remote).
type Seen = HashSet<(String, SocketAddr, SocketAddr)>;

struct Measured {
    ss: Seen,
    tcpstate: Seen,
    polls: u64,
    load_time: Duration,
    poll_time: Duration,
    tracer_summary: String,
    kernel: String,
}

fn measure(opts: &Options, tcpstate: &Path, ns: &Netns, work: &Path) -> Result<Measured> {
    let events = work.join("tcpstate.jsonl");
    let mut tracer = Tracer::start(tcpstate, ns, &events)?;

    let stop = Arc::new(AtomicBool::new(false));
    let ss_seen = Arc::new(Mutex::new(Seen::new()));
    let polls = Arc::new(AtomicU64::new(0));
    let poller = {
        let (stop, seen, polls, name) = (
            stop.clone(),
            ss_seen.clone(),
            polls.clone(),
            ns.name.clone(),
        );
        thread::spawn(move || poll_ss(&name, &stop, &seen, &polls))
    };
    // Let the poller get going before the burst.
    thread::sleep(Duration::from_millis(200));
    let poll_start = Instant::now();
    let polls_before = polls.load(Ordering::Relaxed);

    let start = Instant::now();
    load(&ns.path(), opts.connections, opts.closing)?;
    let load_time = start.elapsed();
    // The last CLOSING sockets last until their FIN is retransmitted.
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    poller
        .join()
        .map_err(|_| anyhow::anyhow!("ss poller panicked"))??;
    let poll_time = poll_start.elapsed();
    let polls = polls.load(Ordering::Relaxed) - polls_before;

    let tracer_summary = tracer.stop()?;
    let tcpstate_seen = parse_events(&events)?;
    let ss = Arc::try_unwrap(ss_seen)
        .map_err(|_| anyhow::anyhow!("poller still holds its results"))?
        .into_inner()
        .expect("not poisoned");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok(Measured {
        ss,
        tcpstate: tcpstate_seen,
        polls,
        load_time,
        poll_time,
        tracer_summary,
        kernel,
    })
}

/// Runs `ss` back to back until `stop`, recording every (state, local, peer) it lists.
fn poll_ss(name: &str, stop: &AtomicBool, seen: &Mutex<Seen>, polls: &AtomicU64) -> Result<()> {
    let mut args = vec!["-N", name, "-tanH"];
    for (_, ss_name) in STATES {
        args.extend(["state", ss_name]);
    }
    while !stop.load(Ordering::Relaxed) {
        let out = Command::new("ss")
            .args(&args)
            .output()
            .context("cannot run ss")?;
        if !out.status.success() {
            bail!(
                "`ss {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        polls.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut seen = seen.lock().expect("not poisoned");
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 {
                continue;
            }
            let Some((state, _)) = STATES.iter().find(|(_, s)| *s == f[0]) else {
                continue;
            };
            if let (Ok(l), Ok(r)) = (f[3].parse(), f[4].parse()) {
                seen.insert((state.to_string(), l, r));
            }
        }
    }
    Ok(())
}

/// Every (state, local, remote) tcpstate reported a socket entering, any source.
fn parse_events(path: &Path) -> Result<Seen> {
    let mut seen = Seen::new();
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    for line in BufReader::new(f).lines() {
        let line = line?;
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("tcpstate printed {line:?}"))?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let newstate = s("newstate");
        if !STATES.iter().any(|(st, _)| *st == newstate) {
            continue;
        }
        let addr = |a: &str, p: &str| -> Option<SocketAddr> {
            let ip: std::net::IpAddr = s(a).parse().ok()?;
            Some(SocketAddr::new(ip, v[p].as_u64()? as u16))
        };
        if let (Some(l), Some(r)) = (addr("laddr", "lport"), addr("raddr", "rport")) {
            seen.insert((newstate, l, r));
        }
    }
    Ok(seen)
}

// ---------------------------------------------------------------------------
// The tracer
// ---------------------------------------------------------------------------

struct Tracer {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Tracer {
    fn start(bin: &Path, ns: &Netns, events: &Path) -> Result<Tracer> {
        let out = File::create(events).with_context(|| format!("creating {}", events.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(["--json", "--no-snapshot", "--ring-size", "64M", "--netns"])
            .arg(ns.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::piped());
        println!("compare: $ {}", util::display(&cmd));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped");
        let sink = stderr.clone();
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("not poisoned")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut t = Tracer {
            child,
            stderr,
            reader: Some(reader),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !t
            .stderr
            .lock()
            .expect("not poisoned")
            .contains("Tracing TCP state changes")
        {
            if let Some(status) = t.child.try_wait()? {
                bail!(
                    "tcpstate exited ({status}) before tracing:\n{}",
                    t.stderr.lock().expect("not poisoned")
                );
            }
            if Instant::now() > deadline {
                bail!("tcpstate not ready within 30 s");
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(t)
    }

    /// SIGINT, wait, and return its exit summary line (events, lost).
    fn stop(&mut self) -> Result<String> {
        // SAFETY: kill(2) on the child we started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let status = self.child.wait()?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let stderr = self.stderr.lock().expect("not poisoned").clone();
        if !status.success() {
            bail!("tcpstate exited with {status}:\n{stderr}");
        }
        Ok(stderr
            .lines()
            .filter(|l| {
                l.starts_with("tcpstate: ") && l.contains("events") && !l.contains("warning")
            })
            .map(|l| l.trim_start_matches("tcpstate: "))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------

/// Runs both kinds of connections concurrently, each with CLIENT_THREADS clients and as many
/// server threads, all inside the namespace; returns when every connection is done.
fn load(ns: &Path, plain: u64, closing: u64) -> Result<()> {
    let mut threads: Vec<thread::JoinHandle<Result<()>>> = Vec::new();
    for (port, total, server_first) in [(PLAIN_PORT, plain, false), (CLOSING_PORT, closing, true)] {
        if total == 0 {
            continue;
        }
        let ns_path = ns.to_path_buf();
        let bound = thread::spawn(move || -> Result<TcpListener> {
            Netns::enter(&ns_path)?;
            Ok(TcpListener::bind(("127.0.0.1", port))?)
        });
        let listener = bound
            .join()
            .map_err(|_| anyhow::anyhow!("bind thread panicked"))??;
        let accepted = Arc::new(AtomicU64::new(0));
        for _ in 0..CLIENT_THREADS {
            let l = listener.try_clone()?;
            let accepted = accepted.clone();
            threads.push(thread::spawn(move || {
                serve(&l, &accepted, total, server_first)
            }));
        }
        drop(listener);
        for i in 0..CLIENT_THREADS {
            let n = total / CLIENT_THREADS + u64::from(i < total % CLIENT_THREADS);
            let ns_path = ns.to_path_buf();
            threads.push(thread::spawn(move || {
                Netns::enter(&ns_path)?;
                for _ in 0..n {
                    client(port, server_first)?;
                }
                Ok(())
            }));
        }
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    }
    Ok(())
}

/// One server thread: accepts until `total` connections have been taken by all threads.
fn serve(l: &TcpListener, accepted: &AtomicU64, total: u64, server_first: bool) -> Result<()> {
    let mut buf = [0u8; MESSAGE];
    while accepted.fetch_add(1, Ordering::SeqCst) < total {
        let (mut s, _) = l.accept()?;
        s.read_exact(&mut buf)?;
        s.write_all(&buf)?;
        if !server_first {
            // Wait for the client's FIN, then close: CLOSE_WAIT -> LAST_ACK.
            while s.read(&mut buf)? > 0 {}
        }
        drop(s);
    }
    Ok(())
}

/// One connection: request, reply, close. For CLOSING connections the client closes shortly
/// after the reply, while the server's (dropped) FIN is waiting for its retransmission.
fn client(port: u16, server_first: bool) -> Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let mut buf = [7u8; MESSAGE];
    s.write_all(&buf)?;
    s.read_exact(&mut buf)?;
    if server_first {
        thread::sleep(Duration::from_millis(2));
    }
    drop(s);
    Ok(())
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

impl Measured {
    fn markdown(&self, opts: &Options) -> String {
        let mut md = String::new();
        md.push_str("# What polling `ss` sees of short-lived TCP states\n\n");
        md.push_str(&format!(
            "Generated by `cargo xtask compare --connections {} --closing {}` (xtask/src/compare.rs) \
             on Linux {}, {} CPUs. In a private network namespace, on loopback: {} connections to \
             :{PLAIN_PORT} (request, reply, the client closes first) and {} to :{CLOSING_PORT} \
             (the server closes first and nftables drops its first FIN once, so the client's FIN \
             crosses it: CLOSING), {} client threads each, in {:.2} s. Meanwhile `ss -N NS -tanH \
             state syn-recv state fin-wait-1 state closing state last-ack` ran back to back: {} \
             polls in {:.2} s (one every {:.2} ms), and `tcpstate --json --netns NS` traced.\n\n",
            opts.connections,
            opts.closing,
            self.kernel,
            thread::available_parallelism().map_or(0, |n| n.get()),
            opts.connections,
            opts.closing,
            CLIENT_THREADS,
            self.load_time.as_secs_f64(),
            self.polls,
            self.poll_time.as_secs_f64(),
            self.poll_time.as_secs_f64() * 1e3 / self.polls.max(1) as f64,
        ));
        md.push_str(&format!(
            "Each cell counts distinct connection ends (state, local, remote) seen in the state. \
             tcpstate counts every source: the tracepoint (for SYN_RECV, the child socket's \
             LISTEN -> SYN_RECV, or the half-open row of a request socket whose SYN-ACK was \
             resent). `load made`: how many pass through the state by design (every \
             connection's server end is first a request socket; the client closes first on \
             :{PLAIN_PORT}; both ends send a FIN first on :{CLOSING_PORT}); `ss caught`: the share \
             of tcpstate's that ss saw; `ss only`: seen by ss but not by tcpstate.\n\n",
        ));
        md.push_str("| state | load made | tcpstate | ss polling | ss caught | ss only |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|\n");
        let (n, c) = (opts.connections, opts.closing);
        for ((state, _), made) in STATES.into_iter().zip([n + c, n + 2 * c, c, n]) {
            let t: HashSet<_> = self.tcpstate.iter().filter(|k| k.0 == state).collect();
            let s: HashSet<_> = self.ss.iter().filter(|k| k.0 == state).collect();
            let only = s.difference(&t).count();
            let pct = if t.is_empty() {
                "-".to_string()
            } else {
                format!(
                    "{:.1}%",
                    100.0 * s.intersection(&t).count() as f64 / t.len() as f64
                )
            };
            md.push_str(&format!(
                "| {state} | {made} | {} | {} | {pct} | {only} |\n",
                t.len(),
                s.len()
            ));
        }
        md.push_str(&format!("\ntcpstate: {}.\n", self.tracer_summary));
        md
    }
}
