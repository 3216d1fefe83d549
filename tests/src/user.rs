//! Running tcpstate the way the README tells users to (issue 9, item 6).
//!
//! [`super::Tracer`] runs `tcpstate --json --netns <ns>` and is started
//! before any server: convenient, and not what users do. A [`UserTracer`]
//! runs `tcpstate --port P` (plus only the flags a scenario needs, like
//! `--stuck 2s`) in the root network namespace, without `--netns` or
//! `--json`, and is started *after* the servers (and, where the scenario
//! says so, the connections) already exist. Its default text output is
//! parsed the way a person reads it, into [`TextRow`]s.
//!
//! Also here: [`PyServer`], a small Python server (one process, or a prefork
//! master with workers all accepting on one listener), [`py_clients`], a
//! Python client making many connections in one process, and
//! [`RefTcpstates`], libbpf-tools' `tcpstates`, the reference the kernel
//! rows are compared against.
//!
//! The text format (after issue 9):
//!
//! ```text
//! TIME            PID     COMM             LADDR           LPORT RADDR           RPORT OLDSTATE    -> NEWSTATE    MS
//! 14:05:40.666811 8013    python3          127.0.0.1       54574 127.0.0.1       10050 FIN_WAIT2   -> CLOSE       0.021
//! 14:05:40.666811 8013    python3          127.0.0.1       54574 127.0.0.1       10050             is TIME_WAIT   - (timewait socket)
//! ```
//!
//! A transition row is `OLD -> NEW MS [(note)]`, a state row (a socket seen
//! in a state, not a change) `is NEW MS [(note)]`; PID, COMM and MS are `-`
//! when unknown. Rows are parsed from the right (addresses wider than their
//! column push the later ones), COMM is whatever lies between PID and LADDR.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{
    Netns, READY_LINE, READY_TIMEOUT, collect, line_channel, signal, tracer_bin, wait_exit,
};

/// The header's words, in order.
pub const HEADER_WORDS: &[&str] = &[
    "TIME", "PID", "COMM", "LADDR", "LPORT", "RADDR", "RPORT", "OLDSTATE", "->", "NEWSTATE", "MS",
];

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

/// One row of tcpstate's default text output.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRow {
    /// The line as printed.
    pub line: String,
    /// `HH:MM:SS.uuuuuu`, the event's wall-clock time.
    pub time: String,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub laddr: String,
    pub lport: u16,
    pub raddr: String,
    pub rport: u16,
    /// `Some` on a transition row (`OLD -> NEW`), `None` on a state row (`is NEW`).
    pub old: Option<String>,
    pub new: String,
    pub ms: Option<f64>,
    /// The text in parentheses at the end of the row, if any.
    pub note: Option<String>,
    /// Why a connection ended, on rows into CLOSE: the words after MS
    /// (`closed, this end first`, `reset sent: TCP_ABORT_ON_CLOSE`, ...).
    pub reason: Option<String>,
}

impl TextRow {
    /// Parses a data row; `Err` says why it is not one.
    pub fn parse(line: &str) -> Result<TextRow, String> {
        let bad = |why: &str| Err(format!("{why}: {line:?}"));
        let mut body = line.trim_end();
        let mut note = None;
        if body.ends_with(')') {
            let Some(open) = body.rfind(" (") else {
                return bad("`)` without `(`");
            };
            note = Some(body[open + 2..body.len() - 1].to_string());
            body = body[..open].trim_end();
        }
        // Words with their byte offsets, to cut COMM out of the line.
        let mut words: Vec<(usize, &str)> = Vec::new();
        let mut start = None;
        for (i, ch) in body.char_indices() {
            match (ch.is_whitespace(), start) {
                (true, Some(s)) => {
                    words.push((s, &body[s..i]));
                    start = None;
                }
                (false, None) => start = Some(i),
                _ => {}
            }
        }
        if let Some(s) = start {
            words.push((s, &body[s..]));
        }
        // `... OLD -> NEW MS [reason words]` or `... is NEW MS [reason words]`:
        // find the state column from the right (a reason may follow MS).
        let is_state = |w: &str| {
            w.chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
                || w.starts_with("UNKNOWN(")
        };
        let is_ms = |w: &str| w == "-" || w.parse::<f64>().is_ok();
        let n = words.len();
        if n < 10 {
            return bad("too few columns");
        }
        let Some(arrow) = (7..n.saturating_sub(2)).rev().find(|&j| {
            matches!(words[j].1, "->" | "is") && is_state(words[j + 1].1) && is_ms(words[j + 2].1)
        }) else {
            return bad("neither `->` nor `is` before NEWSTATE");
        };
        let reason = (arrow + 3 < n).then(|| body[words[arrow + 3].0..].trim().to_string());
        let ms_word = words[arrow + 2].1;
        let new = words[arrow + 1].1.to_string();
        let (old, rest) = match words[arrow].1 {
            "->" => (Some(words[arrow - 1].1.to_string()), arrow - 1),
            _ => (None, arrow),
        };
        if rest < 7 {
            return bad("too few columns before the state");
        }
        let (rport, raddr, lport, laddr) = (
            words[rest - 1].1,
            words[rest - 2].1,
            words[rest - 3].1,
            words[rest - 4],
        );
        let comm_end = laddr.0;
        let (time, pid) = (words[0].1, words[1]);
        if pid.0 + pid.1.len() > comm_end || rest - 4 < 3 {
            return bad("no COMM column");
        }
        let comm = body[pid.0 + pid.1.len()..comm_end].trim();
        let port = |w: &str| {
            w.parse::<u16>()
                .map_err(|_| format!("bad port {w:?}: {line:?}"))
        };
        let ms = match ms_word {
            "-" => None,
            w => Some(
                w.parse::<f64>()
                    .map_err(|_| format!("bad MS {w:?}: {line:?}"))?,
            ),
        };
        let pid = match pid.1 {
            "-" => None,
            w => Some(
                w.parse::<u32>()
                    .map_err(|_| format!("bad PID {w:?}: {line:?}"))?,
            ),
        };
        if time.len() != 15 || time.as_bytes()[2] != b':' || time.as_bytes()[8] != b'.' {
            return bad("TIME is not HH:MM:SS.uuuuuu");
        }
        Ok(TextRow {
            line: line.to_string(),
            time: time.to_string(),
            pid,
            comm: (comm != "-").then(|| comm.to_string()),
            laddr: laddr.1.to_string(),
            lport: port(lport)?,
            raddr: raddr.to_string(),
            rport: port(rport)?,
            old,
            new,
            ms,
            reason,
            note,
        })
    }

    /// A transition (`OLD -> NEW`), as opposed to a state row (`is NEW`).
    pub fn is_transition(&self) -> bool {
        self.old.is_some()
    }

    /// `OLD -> NEW` of a transition row, without its note.
    pub fn transition(&self) -> Option<String> {
        self.old
            .as_ref()
            .map(|old| format!("{old} -> {}", self.new))
    }

    /// `OLD -> NEW [(note)]` or `is NEW [(note)]`: the row without its
    /// time, owner, addresses and MS.
    pub fn label(&self) -> String {
        let mut s = match &self.old {
            Some(old) => format!("{old} -> {}", self.new),
            None => format!("is {}", self.new),
        };
        if let Some(n) = &self.note {
            let _ = write!(s, " ({n})");
        }
        s
    }

    /// `LADDR:LPORT`, when LADDR parses.
    pub fn local(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(
            self.laddr.parse::<IpAddr>().ok()?,
            self.lport,
        ))
    }

    /// `RADDR:RPORT`, when RADDR parses.
    pub fn remote(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(
            self.raddr.parse::<IpAddr>().ok()?,
            self.rport,
        ))
    }

    /// TIME as seconds since midnight.
    pub fn seconds(&self) -> f64 {
        let f: Vec<f64> = self
            .time
            .split(':')
            .map(|x| x.parse().unwrap_or(f64::NAN))
            .collect();
        f[0] * 3600.0 + f[1] * 60.0 + f[2]
    }

    /// `PID/COMM` as printed.
    pub fn owner(&self) -> String {
        format!(
            "{}/{}",
            self.pid.map_or("-".into(), |p| p.to_string()),
            self.comm.as_deref().unwrap_or("-")
        )
    }
}

/// Whether a row's label matches an expected one: equal, or, when
/// `expected` ends with `*`, starting with what precedes it.
pub fn label_matches(expected: &str, actual: &str) -> bool {
    match expected.strip_suffix('*') {
        Some(prefix) => actual.starts_with(prefix),
        None => actual == expected,
    }
}

// ---------------------------------------------------------------------------
// The tracer as users run it
// ---------------------------------------------------------------------------

#[derive(Default)]
struct TextOutput {
    header: Option<String>,
    rows: Vec<TextRow>,
    bad_lines: Vec<String>,
}

/// A running `tcpstate --port P [extra...]`: root namespace, text output.
pub struct UserTracer {
    child: Child,
    args: Vec<String>,
    output: Arc<Mutex<TextOutput>>,
    stderr: Arc<Mutex<String>>,
    stdout_reader: Option<JoinHandle<()>>,
}

impl UserTracer {
    /// Starts `tcpstate --port PORT extra...` and waits until it says it is
    /// tracing.
    pub fn start(port: u16, extra: &[&str]) -> UserTracer {
        let bin = tracer_bin();
        let mut args: Vec<String> = vec!["--port".into(), port.to_string()];
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
        let output = Arc::new(Mutex::new(TextOutput::default()));
        let sink = output.clone();
        let stdout = child.stdout.take().expect("piped stdout");
        let stdout_reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut out = sink.lock().unwrap();
                if out.header.is_none() && out.rows.is_empty() && line.starts_with("TIME") {
                    out.header = Some(line);
                    continue;
                }
                match TextRow::parse(&line) {
                    Ok(row) => out.rows.push(row),
                    Err(why) => out.bad_lines.push(why),
                }
            }
        });
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        let mut tracer = UserTracer {
            child,
            args,
            output,
            stderr,
            stdout_reader: Some(stdout_reader),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if tracer.stderr.lock().unwrap().contains(READY_LINE) {
                return tracer;
            }
            if let Some(status) = tracer.child.try_wait().expect("try_wait") {
                thread::sleep(Duration::from_millis(50));
                panic!(
                    "`tcpstate {}` exited ({status}) before saying {READY_LINE:?}; stderr:\n{}",
                    tracer.args.join(" "),
                    tracer.stderr.lock().unwrap()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "`tcpstate {}` not ready within {READY_TIMEOUT:?}; stderr so far:\n{}",
                    tracer.args.join(" "),
                    tracer.stderr.lock().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// What it printed so far.
    pub fn snapshot(&self) -> TextTrace {
        let out = self.output.lock().unwrap();
        TextTrace {
            header: out.header.clone(),
            rows: out.rows.clone(),
            bad_lines: out.bad_lines.clone(),
            stderr: self.stderr.lock().unwrap().clone(),
            args: self.args.clone(),
        }
    }

    /// Rows so far for which `pred` holds, counted in place (a storm prints
    /// hundreds of thousands: no copy per poll).
    pub fn count(&self, pred: impl Fn(&TextRow) -> bool) -> usize {
        self.output
            .lock()
            .unwrap()
            .rows
            .iter()
            .filter(|r| pred(r))
            .count()
    }

    /// Waits up to `timeout` until `count(pred)` reaches `n`; on timeout
    /// panics with the count and stderr (not every row: there are many).
    pub fn wait_count(
        &self,
        timeout: Duration,
        what: &str,
        n: usize,
        pred: impl Fn(&TextRow) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.count(&pred);
            if got >= n {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {n} {what}: {got} so far; stderr:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
            thread::sleep(Duration::from_secs(1));
        }
    }

    /// Waits up to `timeout` until `cond` holds on the rows so far; on
    /// timeout panics with every row seen.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&TextTrace) -> bool,
    ) -> TextTrace {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.snapshot();
            if cond(&t) {
                return t;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    t.dump()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the end `local` -> `remote` has a row whose label matches
    /// `label` (see [`label_matches`]).
    pub fn wait_row(
        &self,
        timeout: Duration,
        local: SocketAddr,
        remote: SocketAddr,
        label: &str,
    ) -> TextTrace {
        self.wait_until(timeout, &format!("`{label}` on {local} -> {remote}"), |t| {
            t.end(local, remote)
                .iter()
                .any(|r| label_matches(label, &r.label()))
        })
    }

    /// Stops it with SIGINT (Ctrl-C) and returns everything it printed;
    /// checks it exited 0, printed the header and no malformed line.
    pub fn stop(mut self) -> TextTrace {
        signal(self.child.id(), libc::SIGINT);
        let Some(status) = wait_exit(&mut self.child, Duration::from_secs(10)) else {
            panic!(
                "tcpstate did not exit within 10 s of SIGINT\n{}",
                self.snapshot().dump()
            );
        };
        if let Some(reader) = self.stdout_reader.take() {
            let _ = reader.join();
        }
        thread::sleep(Duration::from_millis(20)); // let the stderr reader finish
        let t = self.snapshot();
        if std::env::var_os("TCPSTATE_TEST_DUMP").is_some() {
            eprintln!("{}", t.dump());
        }
        assert!(
            status.success(),
            "tcpstate exited with {status} after SIGINT (expected 0)\n{}",
            t.dump()
        );
        let header: Vec<&str> = t
            .header
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(header, HEADER_WORDS, "the header row\n{}", t.dump());
        assert!(
            t.bad_lines.is_empty(),
            "tcpstate printed lines that are not rows:\n  {}\n{}",
            t.bad_lines.join("\n  "),
            t.dump()
        );
        t
    }
}

impl Drop for UserTracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Everything a [`UserTracer`] printed.
#[derive(Debug, Clone)]
pub struct TextTrace {
    pub header: Option<String>,
    pub rows: Vec<TextRow>,
    pub bad_lines: Vec<String>,
    pub stderr: String,
    args: Vec<String>,
}

impl TextTrace {
    /// The events the tracer's exit summary reports lost
    /// (`tcpstate: N events, M lost ...`), 0 if it printed none.
    pub fn lost(&self) -> u64 {
        self.stderr
            .lines()
            .find_map(|l| {
                let rest = l.strip_prefix("tcpstate: ")?;
                let (_, after) = rest.split_once(" events, ")?;
                after.split_once(" lost")?.0.trim().parse().ok()
            })
            .unwrap_or(0)
    }

    /// The rows of one connection end: local `local`, remote `remote`, in
    /// output order. (A client's `CLOSE -> SYN_SENT`, printed with local
    /// port 0, is not among them.)
    pub fn end(&self, local: SocketAddr, remote: SocketAddr) -> Vec<&TextRow> {
        self.rows
            .iter()
            .filter(|r| r.local() == Some(local) && r.remote() == Some(remote))
            .collect()
    }

    /// The labels of one end's rows.
    pub fn end_labels(&self, local: SocketAddr, remote: SocketAddr) -> Vec<String> {
        self.end(local, remote).iter().map(|r| r.label()).collect()
    }

    /// Asserts that the end `local` -> `remote` printed exactly rows
    /// matching `expected` (labels, see [`label_matches`]); returns them.
    pub fn assert_end(
        &self,
        what: &str,
        local: SocketAddr,
        remote: SocketAddr,
        expected: &[&str],
    ) -> Vec<TextRow> {
        let rows: Vec<TextRow> = self.end(local, remote).into_iter().cloned().collect();
        let ok = rows.len() == expected.len()
            && rows
                .iter()
                .zip(expected)
                .all(|(r, e)| label_matches(e, &r.label()));
        if !ok {
            panic!(
                "the {what} ({local} -> {remote}) printed the wrong rows\n  expected:\n    {}\n  actual:\n    {}\n{}",
                expected.join("\n    "),
                rows.iter()
                    .map(|r| r.label())
                    .collect::<Vec<_>>()
                    .join("\n    "),
                self.dump()
            );
        }
        rows
    }

    /// Asserts that every row in `rows` names one of `pids` with COMM `comm`.
    pub fn assert_owner<'a>(
        &self,
        what: &str,
        rows: impl IntoIterator<Item = &'a TextRow>,
        pids: &[u32],
        comm: &str,
    ) {
        let mut total = 0;
        let wrong: Vec<&TextRow> = rows
            .into_iter()
            .inspect(|_| total += 1)
            .filter(|r| {
                !(r.pid.is_some_and(|p| pids.contains(&p)) && r.comm.as_deref() == Some(comm))
            })
            .collect();
        assert!(
            total > 0,
            "no rows to check the owner of: {what}\n{}",
            self.dump()
        );
        if !wrong.is_empty() {
            panic!(
                "{what}: {} of {total} rows ({:.0}% right) do not name the owner {}/{comm}:\n  {}\n{}",
                wrong.len(),
                100.0 * (total - wrong.len()) as f64 / total as f64,
                pids.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
                wrong
                    .iter()
                    .map(|r| r.line.as_str())
                    .collect::<Vec<_>>()
                    .join("\n  "),
                self.dump()
            );
        }
    }

    /// Rows whose local port is `port`: the server side of a server on it.
    pub fn server_side(&self, port: u16) -> Vec<&TextRow> {
        self.rows.iter().filter(|r| r.lport == port).collect()
    }

    /// How many rows have this label (exactly) among `rows`.
    pub fn count_label<'a>(rows: impl IntoIterator<Item = &'a TextRow>, label: &str) -> usize {
        rows.into_iter()
            .filter(|r| label_matches(label, &r.label()))
            .count()
    }

    /// Every row as printed, plus stderr: for failure messages.
    pub fn dump(&self) -> String {
        let mut out = format!(
            "--- output of `tcpstate {}`: {} rows ---\n",
            self.args.join(" "),
            self.rows.len()
        );
        if let Some(h) = &self.header {
            let _ = writeln!(out, "  {h}");
        }
        for r in &self.rows {
            let _ = writeln!(out, "  {}", r.line);
        }
        for b in &self.bad_lines {
            let _ = writeln!(out, "  NOT A ROW: {b}");
        }
        let _ = write!(out, "--- tcpstate stderr ---\n{}--- end ---", self.stderr);
        out
    }
}

// ---------------------------------------------------------------------------
// Python servers and clients
// ---------------------------------------------------------------------------

/// The server: listens on HOST PORT; with WORKERS > 0 it forks that many
/// workers that all accept on the one listener (a prefork server) and the
/// master only waits; else the master serves. Serving a connection: read
/// until end of stream (or reset), then close.
const PY_SERVER: &str = r#"
import os, socket, sys
host, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print("pid", os.getpid(), flush=True)
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(256)
print("listening", flush=True)
def serve():
    while True:
        c, _ = s.accept()
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass
        c.close()
if workers == 0:
    print("ready", flush=True)
    serve()
for _ in range(workers):
    pid = os.fork()
    if pid == 0:
        serve()
    print("worker", pid, flush=True)
print("ready", flush=True)
while True:
    os.wait()
"#;

/// A Python 3 server in a namespace (its COMM is `python3`): one process,
/// or a prefork master and workers. Killed on drop.
pub struct PyServer {
    child: Child,
    /// The master's pid (it owns the listener it created).
    pub pid: u32,
    /// The workers' pids (empty for a one-process server).
    pub workers: Vec<u32>,
    killed: bool,
}

impl PyServer {
    /// Starts a one-process server on `host:port` in `ns`; returns once it listens.
    pub fn start(ns: &Netns, host: &str, port: u16) -> PyServer {
        PyServer::prefork(ns, host, port, 0)
    }

    /// Starts a master listening on `host:port` that forks `workers`
    /// processes all accepting on that listener.
    pub fn prefork(ns: &Netns, host: &str, port: u16, workers: usize) -> PyServer {
        let mut child = ns
            .command("python3")
            .args([
                "-c",
                PY_SERVER,
                host,
                &port.to_string(),
                &workers.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3: {e}"));
        let lines = line_channel(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        let mut server = PyServer {
            pid: child.id(),
            child,
            workers: Vec::new(),
            killed: false,
        };
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| {
                    thread::sleep(Duration::from_millis(50));
                    panic!(
                        "python3 server on {host}:{port} did not start; stderr:\n{}",
                        stderr.lock().unwrap()
                    )
                });
            if let Some(pid) = line.strip_prefix("pid ") {
                server.pid = pid.trim().parse().expect("master pid");
            } else if let Some(pid) = line.strip_prefix("worker ") {
                server.workers.push(pid.trim().parse().expect("worker pid"));
            } else if line == "ready" {
                return server;
            }
        }
    }

    /// The master and the workers.
    pub fn all_pids(&self) -> Vec<u32> {
        std::iter::once(self.pid)
            .chain(self.workers.iter().copied())
            .collect()
    }

    /// Kills every process of the server (SIGKILL) and waits for the master.
    pub fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        for &w in &self.workers {
            // SAFETY: kill(2) on a process this server forked.
            unsafe { libc::kill(w as libc::pid_t, libc::SIGKILL) };
        }
        // SAFETY: kill(2) on the server's master.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The workers are the master's children: once it is gone they are
        // reparented and reaped by init; wait until they are gone too.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self
            .workers
            .iter()
            .any(|w| std::path::Path::new(&format!("/proc/{w}")).exists())
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The clients: COUNT connections to HOST PORT one after the other, in one
/// process; each one's way of ending cycles through MODES (comma-separated):
/// `close` (send a byte, close first), `shutdown` (send, shutdown(SHUT_WR),
/// read until the server closed, close), `abort` (send, SO_LINGER {1, 0},
/// close: a reset).
const PY_CLIENTS: &str = r#"
import socket, struct, sys
host, port, count, modes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
for i in range(count):
    c = socket.create_connection((host, port))
    c.sendall(b"x")
    mode = modes[i % len(modes)]
    if mode == "shutdown":
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
    elif mode == "abort":
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
print("done", count, flush=True)
"#;

/// Makes `count` connections to `host:port` from one Python process in
/// `ns`, one after the other, ending them as `modes` says (see
/// [`PY_CLIENTS`]); returns when all were made and closed.
pub fn py_clients(ns: &Netns, host: &str, port: u16, count: usize, modes: &str) {
    let out = ns.exec(&[
        "python3",
        "-c",
        PY_CLIENTS,
        host,
        &port.to_string(),
        &count.to_string(),
        modes,
    ]);
    assert!(out.starts_with("done"), "python3 clients: {out:?}");
}

// ---------------------------------------------------------------------------
// libbpf-tools' tcpstates, the reference
// ---------------------------------------------------------------------------

/// The benchmark's load generator (`bench/src/bin/loadgen.rs`), built by the
/// same `cargo test --release` that builds these tests.
pub fn loadgen_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/loadgen")
}

/// Where Debian's libbpf-tools installs `tcpstates`.
pub const TCPSTATES: &str = "/usr/sbin/tcpstates";

/// One row of `tcpstates`: (OLDSTATE, NEWSTATE, LPORT, RPORT) and the line.
#[derive(Debug, Clone)]
pub struct RefRow {
    pub old: String,
    pub new: String,
    pub lport: u16,
    pub rport: u16,
    pub line: String,
}

/// A running libbpf-tools `tcpstates` (every namespace, every port; line
/// buffered with `stdbuf -oL`).
pub struct RefTcpstates {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl RefTcpstates {
    /// Starts it and waits for its header (printed once attached).
    pub fn start() -> RefTcpstates {
        assert!(
            std::path::Path::new(TCPSTATES).exists(),
            "{TCPSTATES} is missing: `cargo xtask setup` installs libbpf-tools"
        );
        let mut child = Command::new("stdbuf")
            .args(["-oL", TCPSTATES])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {TCPSTATES}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().expect("piped stdout");
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        let r = RefTcpstates {
            child,
            lines,
            stderr,
            reader: Some(reader),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !r
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("OLDSTATE"))
        {
            assert!(
                Instant::now() < deadline,
                "{TCPSTATES} printed no header within {READY_TIMEOUT:?}; stderr:\n{}",
                r.stderr.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(10));
        }
        r
    }

    /// Stops it with SIGINT and returns its rows touching one of `ports`
    /// (at either end), plus every line it printed (for failure messages).
    pub fn stop(mut self, ports: &[u16]) -> (Vec<RefRow>, String) {
        signal(self.child.id(), libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let lines = self.lines.lock().unwrap().clone();
        let rows = lines
            .iter()
            .filter_map(|l| {
                // ... LADDR LPORT RADDR RPORT OLDSTATE -> NEWSTATE MS
                let w: Vec<&str> = l.split_whitespace().collect();
                let n = w.len();
                if n < 8 || w[n - 3] != "->" {
                    return None;
                }
                Some(RefRow {
                    old: w[n - 4].to_string(),
                    new: w[n - 2].to_string(),
                    lport: w[n - 7].parse().ok()?,
                    rport: w[n - 5].parse().ok()?,
                    line: l.clone(),
                })
            })
            .filter(|r| ports.contains(&r.lport) || ports.contains(&r.rport))
            .collect::<Vec<_>>();
        let all = format!(
            "--- {TCPSTATES}: {} lines, {} rows on ports {ports:?} ---\n  {}\n--- its stderr ---\n{}--- end ---",
            lines.len(),
            rows.len(),
            rows.iter()
                .map(|r| r.line.as_str())
                .collect::<Vec<_>>()
                .join("\n  "),
            self.stderr.lock().unwrap()
        );
        (rows, all)
    }
}

impl Drop for RefTcpstates {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A multiset of `(OLD, NEW, LPORT, RPORT)`, counted.
pub type TransitionCounts = BTreeMap<(String, String, u16, u16), usize>;

/// Counts `(old, new, lport, rport)` tuples.
pub fn count_transitions<'a>(
    items: impl IntoIterator<Item = (&'a str, &'a str, u16, u16)>,
) -> TransitionCounts {
    let mut m = TransitionCounts::new();
    for (o, n, l, r) in items {
        *m.entry((o.to_string(), n.to_string(), l, r)).or_default() += 1;
    }
    m
}

/// What differs between two multisets, one line per tuple, empty if equal.
pub fn multiset_diff(
    a_name: &str,
    a: &TransitionCounts,
    b_name: &str,
    b: &TransitionCounts,
) -> String {
    let mut out = String::new();
    for key in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (x, y) = (
            a.get(key).copied().unwrap_or(0),
            b.get(key).copied().unwrap_or(0),
        );
        if x != y {
            let _ = writeln!(
                out,
                "  {} -> {} lport {} rport {}: {a_name} {x}, {b_name} {y}",
                key.0, key.1, key.2, key.3
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transition_and_state_rows() {
        let t = TextRow::parse("14:05:40.666811 8013    python3          127.0.0.1       54574 127.0.0.1       10050 FIN_WAIT2   -> CLOSE       0.021").unwrap();
        assert_eq!(t.pid, Some(8013));
        assert_eq!(t.comm.as_deref(), Some("python3"));
        assert_eq!((t.lport, t.rport), (54574, 10050));
        assert_eq!(t.label(), "FIN_WAIT2 -> CLOSE");
        assert_eq!(t.ms, Some(0.021));
        let s = TextRow::parse("14:05:40.666811 -       -                127.0.0.1       54574 127.0.0.1       10050             is TIME_WAIT   - (timewait socket)").unwrap();
        assert_eq!((s.pid, s.comm.as_deref(), s.ms), (None, None, None));
        assert_eq!(s.label(), "is TIME_WAIT (timewait socket)");
        let c = TextRow::parse("14:05:40.666811 12      my server x      ::ffff:127.0.0.1 10050 ::ffff:127.0.0.1 40000 LISTEN      -> SYN_RECV    - (half-open, SYN-ACK retransmit #1)").unwrap();
        assert_eq!(c.comm.as_deref(), Some("my server x"));
        assert_eq!(
            c.label(),
            "LISTEN -> SYN_RECV (half-open, SYN-ACK retransmit #1)"
        );
        assert!(TextRow::parse("Tracing TCP state changes. Hit Ctrl-C to end.").is_err());
        assert!(label_matches(
            "is CLOSE_WAIT (stuck*",
            "is CLOSE_WAIT (stuck for 2.0s)"
        ));
    }

    #[test]
    fn multisets_differ_by_count() {
        let a = count_transitions([("LISTEN", "SYN_RECV", 1, 2), ("LISTEN", "SYN_RECV", 1, 2)]);
        let b = count_transitions([("LISTEN", "SYN_RECV", 1, 2)]);
        assert_eq!(multiset_diff("a", &a, "b", &a), "");
        assert_eq!(
            multiset_diff("a", &a, "b", &b),
            "  LISTEN -> SYN_RECV lport 1 rport 2: a 2, b 1\n"
        );
    }
}
