//! End-to-end test harness for tcpstate.
//!
//! The tests are one binary, `tests/tests/integration/` (a module per
//! scenario family, run in parallel threads). Every test builds its own world:
//! - a [`Netns`]: a fresh network namespace with only `lo` up, removed when
//!   the last of its holders (the test, its peers and tracer) goes;
//! - a [`Tracer`]: the real `tcpstate --json --netns /run/netns/<name>` binary,
//!   started before any traffic and stopped with SIGINT once the scenario is over;
//! - [`Peer`]s: `tcppeer` processes (see `src/bin/tcppeer.rs`) run inside the
//!   namespace and driven line by line through their stdin/stdout.
//!
//! The [`Trace`] that [`Tracer::stop`] returns groups the events per socket
//! ([`Socket`]) and compares whole transition sequences, printing every event
//! seen when an expectation fails. Besides the tracepoint's transitions it
//! keeps the rows of other sources: transitions too (`half-open`,
//! `timewait`, ...) or state rows (`kind: "state"`: `snapshot`,
//! `timewait-socket`, `stuck`), which say which state a socket is in.
//!
//! [`scenario`] holds the openings and endings the scenarios share (a
//! connected client and server under a tracer, closing the listener),
//! [`beyond`] the helpers for rows beyond the tracepoint, [`reliability`]
//! those for running the tracer as a process (errors, BPF objects, load),
//! [`fleet`] those for containers, images and Prometheus.
//!
//! [`user`] runs the tracer the way users do instead: `tcpstate --port P` in
//! the root namespace, text output, started after the servers
//! (`tests/tests/integration/as_users_run_it.rs`).
//!
//! Harness functions panic with a full explanation instead of returning errors:
//! the tests read as specifications and a failure says what went wrong.
//! Set `TCPSTATE_TEST_DUMP=1` (with `--nocapture`) to print every trace.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// TCP state names as tcpstate prints them.
pub mod states {
    pub const CLOSE: &str = "CLOSE";
    pub const SYN_SENT: &str = "SYN_SENT";
    pub const SYN_RECV: &str = "SYN_RECV";
    pub const ESTABLISHED: &str = "ESTABLISHED";
    pub const FIN_WAIT1: &str = "FIN_WAIT1";
    pub const FIN_WAIT2: &str = "FIN_WAIT2";
    pub const CLOSE_WAIT: &str = "CLOSE_WAIT";
    pub const LAST_ACK: &str = "LAST_ACK";
    pub const LISTEN: &str = "LISTEN";
    pub const CLOSING: &str = "CLOSING";
    pub const TIME_WAIT: &str = "TIME_WAIT";
    pub const NEW_SYN_RECV: &str = "NEW_SYN_RECV";
}
use states::*;

pub mod beyond;
pub mod fleet;
pub mod reliability;
pub mod scenario;
pub mod user;

/// How long the tracer may take to attach (it loads and verifies BPF programs,
/// possibly while other tests do the same on the 2 cores).
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a peer may take to answer a command.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long expected events may take to show up in the tracer's output.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The line tcpstate prints on stderr once it is attached.
pub const READY_LINE: &str = "Tracing TCP state changes";

/// Held for their whole run by the tests that load the machine (connection
/// storms, the soak, a stalled consumer, the comparison with another tool),
/// so that no two of them overlap in the one test binary: each counts every
/// event and loss, or waits for every expiry, on 2 CPUs and a tracepoint it
/// shares only with light tests, as when the families were separate binaries.
pub fn exclusive_load() -> std::sync::MutexGuard<'static, ()> {
    static LOAD: Mutex<()> = Mutex::new(());
    LOAD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The tcpstate binary under test: `$TCPSTATE_BIN`, else the workspace's release build.
pub fn tracer_bin() -> PathBuf {
    match std::env::var_os("TCPSTATE_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tcpstate"),
    }
}

/// Runs a command to completion; fails with its output if it does not succeed.
fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {desc}"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .with_context(|| format!("writing to {desc}"))?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{desc} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------

/// A private network namespace `tcpst-<pid>-<n>` with `lo` up. Clones share
/// it; it is deleted when the last clone goes, and the [`Peer`]s and
/// [`Tracer`]s started in it hold one, so it outlives everything in it.
#[derive(Clone)]
pub struct Netns {
    inner: Arc<NetnsName>,
}

struct NetnsName {
    name: String,
}

static NETNS_COUNTER: AtomicUsize = AtomicUsize::new(0);
static STALE_CLEANUP: Once = Once::new();

impl Netns {
    pub fn new() -> Netns {
        STALE_CLEANUP.call_once(remove_stale_namespaces);
        let n = NETNS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("tcpst-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]), None)
            .unwrap_or_else(|e| panic!("cannot create network namespace {name}: {e:#}"));
        let ns = Netns {
            inner: Arc::new(NetnsName { name }),
        };
        run(
            Command::new("ip").args(["-n", ns.name(), "link", "set", "lo", "up"]),
            None,
        )
        .unwrap_or_else(|e| panic!("cannot bring lo up in {}: {e:#}", ns.name()));
        ns
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `/run/netns/<name>`, what `tcpstate --netns` takes.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(self.name())
    }

    /// The namespace's inode number, what tcpstate reports as `netns`.
    pub fn inode(&self) -> u64 {
        std::fs::metadata(self.path())
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path().display()))
            .ino()
    }

    /// A command that runs `program args...` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name()]).arg(program);
        cmd
    }

    /// Runs `args` inside the namespace to completion, returns its stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut cmd = self.command(args[0]);
        cmd.args(&args[1..]);
        run(&mut cmd, None).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Loads an nftables script (`nft -f -`) in the namespace.
    pub fn nft(&self, script: &str) {
        let mut cmd = self.command("nft");
        cmd.args(["-f", "-"]);
        run(&mut cmd, Some(script))
            .unwrap_or_else(|e| panic!("nft script failed: {e:#}\n{script}"));
    }

    /// `ss -tanH` inside the namespace: the sockets as netstat would show them.
    pub fn ss(&self) -> String {
        self.exec(&["ss", "-tanH"])
    }

    /// Drops every FIN matching `selector` (`tcp sport 10050`, ...) on input,
    /// until [`Netns::lift_fin_gate`].
    pub fn drop_fins(&self, selector: &str) {
        self.nft(&format!(
            "table inet tcpst_gate {{
                chain input {{
                    type filter hook input priority 0; policy accept;
                    {selector} tcp flags & fin == fin counter drop
                }}
            }}"
        ));
    }

    /// Lets FINs through again.
    pub fn lift_fin_gate(&self) {
        self.nft("delete table inet tcpst_gate");
    }

    /// Drops the pure ACKs (and data segments) matching `selector` on input
    /// (`tcp dport 10050`, ...): all of them, or with `first` only the first
    /// that many (a client's final handshake ACK and its repetitions).
    pub fn drop_acks(&self, selector: &str, first: Option<u32>) {
        let limit = first.map_or(String::new(), |n| {
            format!("limit rate 1/hour burst {n} packets ")
        });
        self.nft(&format!(
            "table inet tcpst_ack {{
                chain input {{
                    type filter hook input priority 0; policy accept;
                    {selector} tcp flags & (syn|ack|fin|rst) == ack {limit}counter drop
                }}
            }}"
        ));
    }

    /// Sets a per-namespace sysctl, e.g. `net.ipv4.tcp_fin_timeout=1`.
    pub fn sysctl(&self, setting: &str) {
        self.exec(&["sysctl", "-qw", setting]);
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetnsName {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args(["netns", "del", &self.name]), None);
    }
}

/// Deletes `tcpst-<pid>-<n>` namespaces left behind by test runs that died.
fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("tcpst-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(Command::new("ip").args(["netns", "del", &name]), None);
        }
    }
}

// ---------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------

/// A running `tcppeer` process inside a namespace.
pub struct Peer {
    /// The namespace it runs in, kept while it runs (none for a peer in a
    /// container).
    ns: Option<Netns>,
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The peer's pid, as it reported it (the one that owns its sockets).
    pub pid: u32,
    /// `listening` address (server) or local address of the connection (client).
    pub local: SocketAddr,
    /// Client only: the address connected to.
    pub remote: Option<SocketAddr>,
}

/// Both ends of an accepted connection, as the server sees them.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// The `tcppeer` binary: `$TCPPEER_BIN`, else the one Cargo built next to the
/// running test (integration tests live in `target/<profile>/deps/`, the
/// package's binaries in `target/<profile>/`; this is the file that
/// `env!("CARGO_BIN_EXE_tcppeer")` names when compiling the tests).
pub fn tcppeer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TCPPEER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps");
    let bin = profile_dir.join("tcppeer");
    assert!(
        bin.exists(),
        "{} not found: run the tests with cargo, or set TCPPEER_BIN",
        bin.display()
    );
    bin
}

impl Peer {
    /// Starts `tcppeer server ADDR` in `ns`; returns once it is listening.
    pub fn server(ns: &Netns, addr: &str) -> Peer {
        let mut p = Peer::spawn(ns, "server", addr);
        let line = p.expect_line("listening");
        p.local = parse_addr(&line, 1);
        p
    }

    /// Starts `tcppeer client ADDR` in `ns`; returns once it is connected.
    pub fn client(ns: &Netns, addr: &str) -> Peer {
        let mut p = Peer::spawn(ns, "client", addr);
        let line = p.expect_line("connected");
        p.local = parse_addr(&line, 1);
        p.remote = Some(parse_addr(&line, 2));
        p
    }

    /// Starts a client whose connect is expected to fail; returns its
    /// `error connect: ...` line once it has exited.
    pub fn client_failing(ns: &Netns, addr: &str) -> String {
        let mut p = Peer::spawn(ns, "client", addr);
        let line = p.next_line("connect");
        assert!(
            line.starts_with("error connect"),
            "tcppeer client {addr}: expected connect to fail, got {line:?}"
        );
        let status = p.wait_exit();
        assert_eq!(status.code(), Some(1), "tcppeer client {addr}: {status}");
        line
    }

    fn spawn(ns: &Netns, role: &str, addr: &str) -> Peer {
        let mut cmd = ns.command(tcppeer_bin());
        cmd.args([role, addr]);
        let mut p = Peer::spawn_command(cmd, format!("{role} {addr}"));
        p.ns = Some(ns.clone());
        p
    }

    /// Starts a `tcppeer server ADDR` that `cmd` runs (e.g. `podman run -i
    /// IMAGE server ADDR`); returns once it is listening.
    pub fn server_command(cmd: Command, label: &str) -> Peer {
        let mut p = Peer::spawn_command(cmd, label.to_string());
        let line = p.expect_line("listening");
        p.local = parse_addr(&line, 1);
        p
    }

    /// Starts a `tcppeer client ADDR` that `cmd` runs; returns once it is
    /// connected.
    pub fn client_command(cmd: Command, label: &str) -> Peer {
        let mut p = Peer::spawn_command(cmd, label.to_string());
        let line = p.expect_line("connected");
        p.local = parse_addr(&line, 1);
        p.remote = Some(parse_addr(&line, 2));
        p
    }

    /// `cmd` runs tcppeer (in a namespace, a container...). `pid` is what
    /// tcppeer reports: inside a container's PID namespace, not the host's.
    fn spawn_command(mut cmd: Command, label: String) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tcppeer {label}: {e}"));
        let stdin = child.stdin.take();
        let lines = line_channel(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        let mut p = Peer {
            ns: None,
            label,
            child,
            stdin,
            lines,
            stderr,
            pid: 0,
            local: "0.0.0.0:0".parse().unwrap(),
            remote: None,
        };
        let line = p.expect_line("pid");
        p.pid = line[4..]
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("tcppeer {}: bad pid line {line:?}", p.label));
        p
    }

    /// Sends one command and returns its reply; panics on an `error` reply.
    pub fn cmd(&mut self, command: &str) -> String {
        self.send_line(command);
        let reply = self.next_line(command);
        if reply.starts_with("error") {
            panic!("tcppeer {}: `{command}` failed: {reply}", self.label);
        }
        reply
    }

    /// Sends one command and returns its reply, whatever it is.
    pub fn cmd_raw(&mut self, command: &str) -> String {
        self.send_line(command);
        self.next_line(command)
    }

    /// Server: accepts one connection.
    pub fn accept(&mut self) -> Accepted {
        let line = self.cmd("accept");
        Accepted {
            local: parse_addr(&line, 1),
            peer: parse_addr(&line, 2),
        }
    }

    /// Closes the current connection.
    pub fn close(&mut self) {
        self.expect_reply("close", "closed");
    }

    /// Sends a command and checks the reply starts with `expected`.
    pub fn expect_reply(&mut self, command: &str, expected: &str) -> String {
        let reply = self.cmd_raw(command);
        assert!(
            reply.starts_with(expected),
            "tcppeer {}: `{command}` replied {reply:?}, expected {expected:?}",
            self.label
        );
        reply
    }

    /// Sends SIGINT (Ctrl-C) and waits for the process to die of it.
    pub fn sigint(&mut self) {
        signal(self.pid, libc::SIGINT);
        let status = self.wait_exit();
        assert_eq!(
            status.signal(),
            Some(libc::SIGINT),
            "tcppeer {} should have died of SIGINT, got {status}",
            self.label
        );
    }

    /// Asks the process to `exit` (the kernel closes its sockets) and waits.
    pub fn exit(&mut self) {
        self.send_line("exit");
        let status = self.wait_exit();
        assert!(
            status.success(),
            "tcppeer {} exited with {status}",
            self.label
        );
    }

    fn wait_exit(&mut self) -> ExitStatus {
        wait_exit(&mut self.child, PEER_TIMEOUT)
            .unwrap_or_else(|| panic!("tcppeer {} did not exit", self.label))
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        if let Err(e) = writeln!(stdin, "{line}").and_then(|_| stdin.flush()) {
            panic!(
                "tcppeer {}: cannot send `{line}`: {e}; stderr: {}",
                self.label,
                self.stderr.lock().unwrap()
            );
        }
    }

    fn next_line(&mut self, waiting_for: &str) -> String {
        match self.lines.recv_timeout(PEER_TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "tcppeer {}: no reply to `{waiting_for}` within {PEER_TIMEOUT:?}",
                    self.label
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().expect("wait");
                panic!(
                    "tcppeer {}: exited ({status}) while waiting for `{waiting_for}`; stderr: {}",
                    self.label,
                    self.stderr.lock().unwrap()
                )
            }
        }
    }

    fn expect_line(&mut self, word: &str) -> String {
        let line = self.next_line(word);
        assert!(
            line.split_whitespace().next() == Some(word),
            "tcppeer {}: expected `{word} ...`, got {line:?}",
            self.label
        );
        line
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_addr(line: &str, field: usize) -> SocketAddr {
    line.split_whitespace()
        .nth(field)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no address in field {field} of {line:?}"))
}

/// `child`'s exit status once it has exited, or `None` if it is still
/// running after `timeout` (then it is killed and reaped).
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a process this harness started.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Forwards the lines of `r` to a channel (closed at end of stream).
fn line_channel(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Accumulates everything `r` says into a shared string.
pub(crate) fn collect(r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            let mut t = sink.lock().unwrap();
            t.push_str(&line);
            t.push('\n');
        }
    });
    text
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/// One `"type":"event"` line of `tcpstate --json`: a `"source":"tracepoint"`
/// transition, or (in [`Trace::all`]) an event of another source.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub schema: u64,
    pub time: String,
    pub time_ns: u64,
    pub source: String,
    pub skaddr: String,
    pub netns: u64,
    pub family: String,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub cpu_pid: u32,
    pub cpu_comm: String,
    pub laddr: String,
    pub lport: u16,
    pub raddr: String,
    pub rport: u16,
    pub oldstate: String,
    pub newstate: String,
    pub ms: Option<f64>,
    /// What a non-tracepoint event means (`half-open`, `timewait`, ...).
    #[serde(default)]
    pub note: Option<String>,
    /// `transition` (a state change) or `state` (a row that says which state
    /// a socket is in: `snapshot`, `timewait-socket`, `stuck`).
    pub kind: String,
    /// SYN-ACK retransmits: on a `half-open` row, its expiry, and a lingering
    /// connection's SYN_RECV->ESTABLISHED (absent when there were none).
    #[serde(default)]
    pub retransmits: Option<u32>,
    /// `stuck` events: how long the socket has been in its state.
    #[serde(default)]
    pub age_ms: Option<f64>,
    /// On FIN_WAIT2->CLOSE and CLOSING->CLOSE: whether the peer's FIN had arrived.
    #[serde(default)]
    pub peer_fin: Option<bool>,
}

/// Keys every tracepoint event must carry (nullable ones included).
const EVENT_KEYS: &[&str] = &[
    "schema", "time", "time_ns", "source", "skaddr", "netns", "family", "pid", "comm", "cpu_pid",
    "cpu_comm", "laddr", "lport", "raddr", "rport", "oldstate", "newstate", "ms", "kind",
];

impl Event {
    /// `laddr:lport`, when `laddr` parses.
    pub fn local(&self) -> Option<SocketAddr> {
        let ip: std::net::IpAddr = self.laddr.parse().ok()?;
        Some(SocketAddr::new(ip, self.lport))
    }

    /// `raddr:rport`, when `raddr` parses.
    pub fn remote(&self) -> Option<SocketAddr> {
        let ip: std::net::IpAddr = self.raddr.parse().ok()?;
        Some(SocketAddr::new(ip, self.rport))
    }

    pub fn transition(&self) -> String {
        format!("{}->{}", self.oldstate, self.newstate)
    }

    /// Whether this row says which state a socket is in rather than a change
    /// of state (`kind: "state"`; then `oldstate == newstate`).
    pub fn is_state_row(&self) -> bool {
        self.kind == "state"
    }

    /// `source[/note] OLD->NEW` for a transition, e.g.
    /// `synack_tracepoint/half-open LISTEN->SYN_RECV`; `source/note is STATE`
    /// for a state row, e.g. `tracker/timewait-socket is FIN_WAIT2`.
    pub fn labelled(&self) -> String {
        let what = if self.is_state_row() {
            format!("is {}", self.newstate)
        } else {
            self.transition()
        };
        match &self.note {
            Some(n) => format!("{}/{n} {what}", self.source),
            None => format!("{} {what}", self.source),
        }
    }

    /// One line for failure messages.
    pub fn row(&self) -> String {
        let owner = match (&self.pid, &self.comm) {
            (Some(p), Some(c)) => format!("{p}/{c}"),
            (p, c) => format!("{p:?}/{c:?}"),
        };
        let ms = self.ms.map_or("null".to_string(), |m| format!("{m:.3}"));
        let what = if self.is_state_row() {
            format!("is {}", self.newstate)
        } else {
            self.transition()
        };
        format!(
            "{:>20} {:<24} {:<22} {}:{} -> {}:{}  {what} ms={ms}",
            self.time_ns,
            format!("pid {owner}"),
            format!("cpu {}/{}", self.cpu_pid, self.cpu_comm),
            self.laddr,
            self.lport,
            self.raddr,
            self.rport,
        )
    }
}

/// What the reader thread makes of one stdout line.
enum Line {
    Event(Box<Event>),
    /// Another source's line; parsed when it is an event.
    OtherSource(Option<Box<Event>>),
    Bad(String),
}

fn parse_line(line: &str) -> Line {
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Line::Bad(format!("not JSON ({e}): {line}")),
    };
    let Some(obj) = value.as_object() else {
        return Line::Bad(format!("not a JSON object: {line}"));
    };
    if obj.get("source").and_then(|s| s.as_str()) != Some("tracepoint") {
        if obj.get("type").and_then(|t| t.as_str()) != Some("event") {
            return Line::OtherSource(None);
        }
        return match serde_json::from_value(value) {
            Ok(ev) => Line::OtherSource(Some(Box::new(ev))),
            Err(e) => Line::Bad(format!("unexpected field type ({e}): {line}")),
        };
    }
    let missing: Vec<&str> = EVENT_KEYS
        .iter()
        .copied()
        .filter(|k| !obj.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Line::Bad(format!("missing keys {missing:?}: {line}"));
    }
    match serde_json::from_value(value) {
        Ok(ev) => Line::Event(Box::new(ev)),
        Err(e) => Line::Bad(format!("unexpected field type ({e}): {line}")),
    }
}

// ---------------------------------------------------------------------------
// The tracer
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Output {
    events: Vec<Event>,
    other_sources: Vec<String>,
    all: Vec<Event>,
    bad_lines: Vec<String>,
}

/// A running `tcpstate --json --netns <ns>` collecting its events.
pub struct Tracer {
    _ns: Netns,
    child: Child,
    args: Vec<String>,
    output: Arc<Mutex<Output>>,
    stderr: Arc<Mutex<String>>,
    stdout_reader: Option<JoinHandle<()>>,
    netns_inode: u64,
}

impl Tracer {
    /// Starts the tracer on `ns` with `extra` arguments and waits until it
    /// says it is tracing.
    pub fn start(ns: &Netns, extra: &[&str]) -> Tracer {
        let bin = tracer_bin();
        let mut args: Vec<String> = vec!["--json".into(), "--netns".into()];
        args.push(ns.path().to_string_lossy().into_owned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(&bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the tracer {} ({e}); build it or set TCPSTATE_BIN",
                    bin.display()
                )
            });

        let output = Arc::new(Mutex::new(Output::default()));
        let sink = output.clone();
        let stdout = child.stdout.take().expect("piped stdout");
        let stdout_reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut out = sink.lock().unwrap();
                match parse_line(&line) {
                    Line::Event(ev) => {
                        out.all.push((*ev).clone());
                        out.events.push(*ev);
                    }
                    Line::OtherSource(ev) => {
                        out.all.extend(ev.map(|e| *e));
                        out.other_sources.push(line);
                    }
                    Line::Bad(why) => out.bad_lines.push(why),
                }
            }
        });
        let stderr = collect(child.stderr.take().expect("piped stderr"));

        let mut tracer = Tracer {
            _ns: ns.clone(),
            child,
            args,
            output,
            stderr,
            stdout_reader: Some(stdout_reader),
            netns_inode: ns.inode(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if tracer.stderr.lock().unwrap().contains(READY_LINE) {
                return tracer;
            }
            if let Some(status) = tracer.child.try_wait().expect("try_wait") {
                thread::sleep(Duration::from_millis(50)); // let stderr drain
                panic!(
                    "tracer `{} {}` exited ({status}) before saying {READY_LINE:?}; stderr:\n{}",
                    bin.display(),
                    tracer.args.join(" "),
                    tracer.stderr.lock().unwrap()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "tracer `{} {}` not ready within {READY_TIMEOUT:?}; stderr so far:\n{}",
                    bin.display(),
                    tracer.args.join(" "),
                    tracer.stderr.lock().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The events collected so far.
    pub fn snapshot(&self) -> Trace {
        let out = self.output.lock().unwrap();
        Trace {
            events: out.events.clone(),
            other_sources: out.other_sources.clone(),
            all: out.all.clone(),
            bad_lines: out.bad_lines.clone(),
            stderr: self.stderr.lock().unwrap().clone(),
            args: self.args.clone(),
            netns_inode: self.netns_inode,
        }
    }

    /// Waits until `cond` holds on the events collected so far; on timeout
    /// panics with everything seen.
    pub fn wait_until(&self, what: &str, cond: impl Fn(&Trace) -> bool) -> Trace {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let t = self.snapshot();
            if cond(&t) {
                return t;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {EVENT_TIMEOUT:?} waiting for {what}\n{}",
                    t.dump()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the socket whose events carry ports (`lport`, `rport`)
    /// has made the transition `old`->`new`.
    pub fn wait_for(&self, lport: u16, rport: u16, old: &str, new: &str) -> Trace {
        self.wait_until(
            &format!("{old}->{new} on the socket {lport}->{rport}"),
            |t| {
                t.sockets()
                    .iter()
                    .filter(|s| s.has_ports(lport, rport))
                    .any(|s| {
                        s.events
                            .iter()
                            .any(|e| e.oldstate == old && e.newstate == new)
                    })
            },
        )
    }

    /// Waits until `n` transitions into CLOSE have been seen.
    pub fn wait_for_closes(&self, n: usize) -> Trace {
        self.wait_until(&format!("{n} transitions into CLOSE"), |t| {
            t.events.iter().filter(|e| e.newstate == CLOSE).count() >= n
        })
    }

    /// Stops the tracer with SIGINT (it drains what is pending and exits 0)
    /// and returns everything it printed.
    pub fn stop(&mut self) -> Trace {
        signal(self.child.id(), libc::SIGINT);
        let Some(status) = wait_exit(&mut self.child, EVENT_TIMEOUT) else {
            panic!(
                "tracer did not exit within {EVENT_TIMEOUT:?} of SIGINT\n{}",
                self.snapshot().dump()
            );
        };
        if let Some(reader) = self.stdout_reader.take() {
            let _ = reader.join();
        }
        thread::sleep(Duration::from_millis(20)); // let the stderr reader finish
        let trace = self.snapshot();
        if std::env::var_os("TCPSTATE_TEST_DUMP").is_some() {
            eprintln!("{}", trace.dump_all());
        }
        assert!(
            status.success(),
            "tracer exited with {status} after SIGINT (expected 0)\n{}",
            trace.dump()
        );
        assert!(
            trace.bad_lines.is_empty(),
            "tracer printed malformed lines:\n{}\n{}",
            trace.bad_lines.join("\n"),
            trace.dump()
        );
        trace
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
// Traces and sockets
// ---------------------------------------------------------------------------

/// The tracepoint events of one socket's life, in order. A socket address
/// that is reused after reaching CLOSE starts a new `Socket`.
#[derive(Debug, Clone)]
pub struct Socket {
    pub skaddr: String,
    pub events: Vec<Event>,
}

impl Socket {
    /// `["CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED", ...]`.
    pub fn transitions(&self) -> Vec<String> {
        self.events.iter().map(Event::transition).collect()
    }

    /// Whether any event of this socket has this local and remote port.
    pub fn has_ports(&self, lport: u16, rport: u16) -> bool {
        self.events
            .iter()
            .any(|e| e.lport == lport && e.rport == rport)
    }

    pub fn is_listener(&self) -> bool {
        self.events
            .first()
            .is_some_and(|e| e.oldstate == CLOSE && e.newstate == LISTEN)
    }

    pub fn last_state(&self) -> Option<&str> {
        self.events.last().map(|e| e.newstate.as_str())
    }

    fn dump(&self, out: &mut String) {
        let first = &self.events[0];
        let _ = writeln!(
            out,
            "  socket {} ({}, {} events):",
            self.skaddr,
            first.family,
            self.events.len()
        );
        for e in &self.events {
            let _ = writeln!(out, "    {}", e.row());
        }
    }
}

/// Turns a path of states into transitions:
/// `[CLOSE, LISTEN, CLOSE]` -> `["CLOSE->LISTEN", "LISTEN->CLOSE"]`.
pub fn path_to_transitions(path: &[&str]) -> Vec<String> {
    path.windows(2)
        .map(|w| format!("{}->{}", w[0], w[1]))
        .collect()
}

/// Everything a tracer printed.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Tracepoint events, in output order.
    pub events: Vec<Event>,
    /// Raw lines of other sources (ignored by these tests).
    pub other_sources: Vec<String>,
    /// Events of every source (tracepoint, synack_tracepoint, sock_diag,
    /// tracker), transitions and state rows, in output order.
    pub all: Vec<Event>,
    pub bad_lines: Vec<String>,
    pub stderr: String,
    args: Vec<String>,
    netns_inode: u64,
}

impl Trace {
    /// Events grouped per socket life, in order of first appearance.
    pub fn sockets(&self) -> Vec<Socket> {
        let mut sockets: Vec<Socket> = Vec::new();
        let mut current: HashMap<&str, usize> = HashMap::new();
        for e in &self.events {
            let live = current
                .get(e.skaddr.as_str())
                .copied()
                .filter(|&i| sockets[i].last_state() != Some(CLOSE));
            match live {
                Some(i) => sockets[i].events.push(e.clone()),
                None => {
                    current.insert(&e.skaddr, sockets.len());
                    sockets.push(Socket {
                        skaddr: e.skaddr.clone(),
                        events: vec![e.clone()],
                    });
                }
            }
        }
        sockets
    }

    /// The one socket matching `pred`; panics (showing the trace) if there
    /// is none or more than one.
    pub fn socket(&self, what: &str, pred: impl Fn(&Socket) -> bool) -> Socket {
        let mut found: Vec<Socket> = self.sockets().into_iter().filter(|s| pred(s)).collect();
        match found.len() {
            1 => found.remove(0),
            0 => panic!("no socket is the {what}\n{}", self.dump()),
            n => panic!(
                "{n} sockets look like the {what}, expected one\n{}",
                self.dump()
            ),
        }
    }

    /// The listening socket on `port`.
    pub fn listener(&self, port: u16) -> Socket {
        self.socket(&format!("listener on port {port}"), |s| {
            s.is_listener() && s.events.iter().any(|e| e.lport == port)
        })
    }

    /// The connection end whose local address is `local` and remote `remote`.
    pub fn end(&self, what: &str, local: SocketAddr, remote: SocketAddr) -> Socket {
        self.socket(&format!("{what} ({local} -> {remote})"), |s| {
            !s.is_listener() && s.has_ports(local.port(), remote.port())
        })
    }

    /// The client end of a connection made by `client`.
    pub fn client_end(&self, client: &Peer) -> Socket {
        let remote = client.remote.expect("a client peer");
        self.end("client end", client.local, remote)
    }

    /// The server end (accepted child) of a connection.
    pub fn server_end(&self, accepted: &Accepted) -> Socket {
        self.end("server end", accepted.local, accepted.peer)
    }

    /// Asserts that `socket` went exactly through `path`, e.g.
    /// `[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE]`.
    pub fn assert_path(&self, what: &str, socket: &Socket, path: &[&str]) {
        let expected = path_to_transitions(path);
        let actual = socket.transitions();
        if expected != actual {
            panic!(
                "the {what} (socket {}) made the wrong transitions\n  expected: {}\n  actual:   {}\n{}",
                socket.skaddr,
                expected.join(", "),
                actual.join(", "),
                self.dump()
            );
        }
    }

    /// Asserts that exactly `n` sockets appear in the trace.
    pub fn assert_socket_count(&self, n: usize) {
        let found = self.sockets().len();
        assert!(
            found == n,
            "expected exactly {n} sockets in the trace, found {found}\n{}",
            self.dump()
        );
    }

    /// Checks what must hold of every event whatever the scenario: a state
    /// row (`kind: "state"`, never from the tracepoint) has oldstate ==
    /// newstate and a transition has not, each source with its own notes;
    /// schema 1, the test's namespace, a known family and state names, a
    /// chain of transitions per socket in time order, and `ms` null exactly on
    /// a socket's first event (but a folded half-open child's
    /// SYN_RECV->ESTABLISHED) and a finite non-negative number after it.
    pub fn assert_invariants(&self) {
        let known = [
            CLOSE,
            SYN_SENT,
            SYN_RECV,
            ESTABLISHED,
            FIN_WAIT1,
            FIN_WAIT2,
            CLOSE_WAIT,
            LAST_ACK,
            LISTEN,
            CLOSING,
            TIME_WAIT,
            NEW_SYN_RECV,
        ];
        let mut problems = Vec::new();
        for e in &self.all {
            let state_row = match e.kind.as_str() {
                "state" => true,
                "transition" => false,
                other => {
                    problems.push(format!("kind {other:?}: {}", e.row()));
                    continue;
                }
            };
            if state_row != (e.oldstate == e.newstate) {
                problems.push(format!(
                    "a state row has oldstate == newstate, a transition does not: {}",
                    e.labelled()
                ));
            }
            if state_row && e.source == "tracepoint" {
                problems.push(format!("the tracepoint printed a state row: {}", e.row()));
            }
            let notes: &[&str] = if state_row {
                &["snapshot", "timewait-socket", "stuck"]
            } else {
                &[
                    "half-open",
                    "half-open-expired",
                    "timewait",
                    "timewait-expired",
                ]
            };
            match &e.note {
                None if e.source == "tracepoint" => {}
                Some(n) if e.source != "tracepoint" && notes.contains(&n.as_str()) => {}
                _ => problems.push(format!("unexpected source/note: {}", e.labelled())),
            }
        }
        for e in &self.events {
            if e.schema != 1 {
                problems.push(format!("schema {} in {}", e.schema, e.row()));
            }
            if e.netns != self.netns_inode {
                problems.push(format!(
                    "netns {} is not the test's namespace {}: {}",
                    e.netns,
                    self.netns_inode,
                    e.row()
                ));
            }
            if e.family != "ipv4" && e.family != "ipv6" {
                problems.push(format!("family {:?}: {}", e.family, e.row()));
            }
            for s in [&e.oldstate, &e.newstate] {
                if !known.contains(&s.as_str()) {
                    problems.push(format!("unknown state {s:?}: {}", e.row()));
                }
            }
            if !e.skaddr.starts_with("0x") || e.skaddr.len() < 3 {
                problems.push(format!("skaddr {:?} is not hexadecimal", e.skaddr));
            }
        }
        for s in self.sockets() {
            for (i, e) in s.events.iter().enumerate() {
                // A lingering half-open connection's child: its LISTEN->SYN_RECV
                // is folded into the `half-open` row, its SYN_RECV->ESTABLISHED
                // counts from the first SYN-ACK.
                let folded = e.oldstate == SYN_RECV && e.retransmits.is_some_and(|n| n > 0);
                if i == 0 && !folded {
                    if e.ms.is_some() {
                        problems.push(format!(
                            "ms should be null on socket {}'s first event: {}",
                            s.skaddr,
                            e.row()
                        ));
                    }
                    continue;
                }
                match e.ms {
                    Some(ms) if ms.is_finite() && ms >= 0.0 => {}
                    other => problems.push(format!(
                        "ms should be a non-negative number, is {other:?}: {}",
                        e.row()
                    )),
                }
                let Some(prev) = i.checked_sub(1).map(|p| &s.events[p]) else {
                    continue;
                };
                if prev.newstate != e.oldstate {
                    problems.push(format!(
                        "socket {} goes to {} then leaves {}",
                        s.skaddr, prev.newstate, e.oldstate
                    ));
                }
                if e.time_ns < prev.time_ns {
                    problems.push(format!(
                        "socket {}: time goes backwards: {}",
                        s.skaddr,
                        e.row()
                    ));
                }
            }
        }
        assert!(
            problems.is_empty(),
            "invariants violated:\n  {}\n{}",
            problems.join("\n  "),
            self.dump()
        );
    }

    /// The events of every source ([`Trace::all`]) of one connection end:
    /// local address `local`, remote `remote`; in output order.
    pub fn end_events(&self, local: SocketAddr, remote: SocketAddr) -> Vec<&Event> {
        self.all
            .iter()
            .filter(|e| e.local() == Some(local) && e.remote() == Some(remote))
            .collect()
    }

    /// Every event of every source in output order, plus the tracer's
    /// stderr: for failure messages of tests about non-tracepoint events.
    pub fn dump_all(&self) -> String {
        let mut out = format!(
            "--- output of `tcpstate {}`: {} events, {} from the tracepoint ---\n",
            self.args.join(" "),
            self.all.len(),
            self.events.len()
        );
        for e in &self.all {
            let extra = match (e.retransmits, e.age_ms, e.peer_fin) {
                (Some(n), _, _) => format!(" retransmits={n}"),
                (_, Some(a), _) => format!(" age_ms={a:.3}"),
                (_, _, Some(f)) => format!(" peer_fin={f}"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  {} {} [{}]{extra}",
                e.row(),
                e.skaddr,
                e.note
                    .as_ref()
                    .map_or(e.source.clone(), |n| format!("{}/{n}", e.source))
            );
        }
        for b in &self.bad_lines {
            let _ = writeln!(out, "  BAD LINE: {b}");
        }
        let _ = write!(out, "--- tracer stderr ---\n{}--- end ---", self.stderr);
        out
    }

    /// Every event, per socket, plus the tracer's stderr: for failure messages.
    pub fn dump(&self) -> String {
        let mut out = format!(
            "--- trace of `tcpstate {}`: {} tracepoint events ---\n",
            self.args.join(" "),
            self.events.len()
        );
        for s in self.sockets() {
            s.dump(&mut out);
        }
        if !self.other_sources.is_empty() {
            let _ = writeln!(
                out,
                "  ({} lines of other sources)",
                self.other_sources.len()
            );
        }
        for b in &self.bad_lines {
            let _ = writeln!(out, "  BAD LINE: {b}");
        }
        let _ = write!(out, "--- tracer stderr ---\n{}--- end ---", self.stderr);
        out
    }
}
