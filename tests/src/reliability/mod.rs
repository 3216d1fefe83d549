//! Helpers shared by the `reliability_*` tests: running the tracer
//! with a deadline, checking its one-line errors, finding the kernel objects
//! one instance created and proving they are gone after it exits, reading map
//! occupancy, and generating TCP connections from threads that entered a test
//! namespace (with a chosen, possibly hostile, thread name).
//!
//! Kernel objects are identified per instance, never by name alone: other
//! tests run tracers concurrently. While an instance runs, a sampler reads
//! `/proc/PID/fdinfo/*` (which names each BPF prog/map/link id it holds);
//! after it exits, `BPF_*_GET_FD_BY_ID` must answer ENOENT for every one.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

mod bpf;
mod traffic;

pub use bpf::*;
pub use traffic::*;

pub use crate::files::{TempDir, write_file};
use crate::process::{reap, spawn_piped, wait_exit};
pub use crate::procfs::rss_kib;
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

    /// Asserts that stderr contains `text`.
    pub fn assert_stderr_contains(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "{}: stderr should contain {text:?}:\n{}",
            self.what,
            self.stderr
        );
        self
    }

    /// Asserts that there is a `hint:` line and that it contains `text`.
    pub fn assert_hint_contains(&self, text: &str) -> &Self {
        assert!(
            self.hint().is_some_and(|h| h.contains(text)),
            "{}: the hint should contain {text:?}:\n{}",
            self.what,
            self.stderr
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
    let mut child = spawn_piped(&mut cmd, Stdio::null(), &what);
    let out = slurp(child.stdout.take().unwrap());
    let err = slurp(child.stderr.take().unwrap());
    let status = wait_exit(&mut child, timeout)
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
        let deadline = Instant::now() + crate::scaled(crate::READY_TIMEOUT);
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
        let status = wait_exit(&mut self.child, timeout).unwrap_or_else(|| {
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
        reap(&mut self.child);
    }
}
