//! Child processes of the harness: waiting with a deadline, signals, reading
//! their output on threads, and [`TracerProcess`], the tracer binary run
//! until it says it is tracing, which every way of reading its output
//! ([`crate::Tracer`], [`crate::RawTracer`], [`crate::user::UserTracer`])
//! builds on.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::{EVENT_TIMEOUT, Netns, READY_LINE, READY_TIMEOUT, tracer_bin};

/// `child`'s exit status once it has exited, or `None` if it is still
/// running after `timeout` (then it is killed and reaped).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + crate::scaled(timeout);
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

pub fn signal(pid: u32, sig: libc::c_int) {
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
pub fn line_channel(r: impl Read + Send + 'static) -> Receiver<String> {
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
pub fn collect(r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
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

/// Kills `child` if it is still running and reaps it: what every process
/// the harness starts gets when its owner is dropped, so that no test
/// leaves a process behind, whichever way it ends.
pub fn reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A running `tcpstate ARGS`: each stdout line goes to the handler given to
/// [`TracerProcess::start`] on a reader thread, stderr is collected. Killed
/// on drop if still running.
pub struct TracerProcess {
    child: Child,
    args: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stdout_reader: Option<JoinHandle<()>>,
}

impl TracerProcess {
    /// Starts the tracer with `args`, hands each stdout line to `on_line`,
    /// and returns once it says it is tracing (it has attached: from then
    /// on every state change is seen).
    pub fn start(args: Vec<String>, mut on_line: impl FnMut(String) + Send + 'static) -> Self {
        let bin = tracer_bin();
        let what = format!(
            "the tracer {} (build it or set TCPSTATE_BIN)",
            bin.display()
        );
        let mut child = spawn_piped(Command::new(&bin).args(&args), Stdio::null(), &what);
        let stdout = child.stdout.take().expect("piped stdout");
        let stdout_reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                on_line(line);
            }
        });
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        let mut tracer = TracerProcess {
            child,
            args,
            stderr,
            stdout_reader: Some(stdout_reader),
        };
        tracer.wait_ready();
        tracer
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + crate::scaled(READY_TIMEOUT);
        loop {
            if self.stderr().contains(READY_LINE) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                thread::sleep(Duration::from_millis(50)); // let stderr drain
                panic!(
                    "`tcpstate {}` exited ({status}) before saying {READY_LINE:?}; stderr:\n{}",
                    self.args.join(" "),
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "`tcpstate {}` not ready within {READY_TIMEOUT:?}; stderr so far:\n{}",
                    self.args.join(" "),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The arguments it was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGINT (Ctrl-C: it drains what is pending and exits) and waits
    /// until it has exited and its stdout has been read to the end; `None`
    /// if it was still running after [`EVENT_TIMEOUT`] (then it is killed).
    pub fn interrupt(&mut self) -> Option<ExitStatus> {
        signal(self.child.id(), libc::SIGINT);
        let status = wait_exit(&mut self.child, EVENT_TIMEOUT);
        if let Some(reader) = self.stdout_reader.take() {
            let _ = reader.join();
        }
        thread::sleep(Duration::from_millis(20)); // let the stderr reader finish
        status
    }

    /// Asserts that [`TracerProcess::interrupt`] found it exited with 0, as
    /// Ctrl-C must leave it; `dump` (what it printed) goes into the failure
    /// message, and to stderr when `TCPSTATE_TEST_DUMP` is set.
    pub fn assert_exited_cleanly(&self, status: Option<ExitStatus>, dump: &str) {
        if std::env::var_os("TCPSTATE_TEST_DUMP").is_some() {
            eprintln!("{dump}");
        }
        let Some(status) = status else {
            panic!(
                "`tcpstate {}` did not exit within {EVENT_TIMEOUT:?} of SIGINT\n{dump}",
                self.args.join(" ")
            );
        };
        assert!(
            status.success(),
            "`tcpstate {}` exited with {status} after SIGINT (expected 0)\n{dump}",
            self.args.join(" ")
        );
    }
}

impl Drop for TracerProcess {
    fn drop(&mut self) {
        reap(&mut self.child);
    }
}

/// Calls `probe` every `interval` until it returns `Some`, for at most
/// `timeout`; `None` if it never did. (Every wait of the harness is one of
/// these: the events, rows or lines a test waits for arrive asynchronously.)
pub fn poll<T>(
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + crate::scaled(timeout);
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(interval);
    }
}

/// Starts `cmd` with its stdout and stderr piped (to be read by the caller)
/// and `stdin` as given; panics saying what could not start.
pub fn spawn_piped(cmd: &mut Command, stdin: Stdio, what: &str) -> Child {
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"))
}

/// Waits up to `timeout` until `cond` holds on a fresh `snapshot()` (taken
/// every `interval`) and returns that snapshot; on timeout panics with
/// `dump` of the last one.
pub fn poll_snapshot<T>(
    timeout: Duration,
    interval: Duration,
    what: &str,
    snapshot: impl Fn() -> T,
    cond: impl Fn(&T) -> bool,
    dump: impl Fn(&T) -> String,
) -> T {
    poll(timeout, interval, || Some(snapshot()).filter(|s| cond(s))).unwrap_or_else(|| {
        panic!(
            "timed out after {timeout:?} waiting for {what}\n{}",
            dump(&snapshot())
        )
    })
}

/// A running tracer whose stdout lines are filed into a `P` (a
/// [`crate::Trace`], a [`crate::user::TextTrace`]) as they come; a test
/// reads what it printed so far again and again while it waits for
/// something to show up.
pub struct Collected<P> {
    process: TracerProcess,
    output: Arc<Mutex<P>>,
    stderr_of: fn(&mut P) -> &mut String,
    dump: fn(&P) -> String,
    /// The namespace it traces, kept while it runs.
    _ns: Option<Netns>,
}

impl<P: Clone + Send + 'static> Collected<P> {
    /// Starts the tracer with `args` ([`TracerProcess::start`]); `file`
    /// files each stdout line into `empty`. A snapshot puts stderr into
    /// `stderr_of` its copy; `dump` is what a failure shows of one.
    pub fn spawn(
        args: Vec<String>,
        empty: P,
        file: fn(&mut P, String),
        stderr_of: fn(&mut P) -> &mut String,
        dump: fn(&P) -> String,
    ) -> Self {
        let output = Arc::new(Mutex::new(empty));
        let sink = output.clone();
        let process = TracerProcess::start(args, move |line| file(&mut sink.lock().unwrap(), line));
        Collected {
            process,
            output,
            stderr_of,
            dump,
            _ns: None,
        }
    }

    /// The same, keeping `ns` (which it traces) while it runs.
    pub fn holding(self, ns: &Netns) -> Self {
        Collected {
            _ns: Some(ns.clone()),
            ..self
        }
    }

    /// What it printed so far.
    pub fn snapshot(&self) -> P {
        let mut printed = self.output.lock().unwrap().clone();
        *(self.stderr_of)(&mut printed) = self.process.stderr();
        printed
    }

    /// What it printed so far, looked at in place (no copy).
    pub fn with_output<T>(&self, look: impl FnOnce(&P) -> T) -> T {
        look(&self.output.lock().unwrap())
    }

    /// Waits up to `timeout` until `cond` holds on what it printed so far
    /// (read every 5 ms) and returns that; on timeout panics with all of it.
    pub fn wait_within(&self, timeout: Duration, what: &str, cond: impl Fn(&P) -> bool) -> P {
        let every = Duration::from_millis(5);
        poll_snapshot(timeout, every, what, || self.snapshot(), cond, self.dump)
    }

    /// Stops it with SIGINT (Ctrl-C) and returns everything it printed;
    /// asserts it exited 0.
    pub fn finish(&mut self) -> P {
        let status = self.process.interrupt();
        let printed = self.snapshot();
        self.process
            .assert_exited_cleanly(status, &(self.dump)(&printed));
        printed
    }

    /// Its process.
    pub fn process(&self) -> &TracerProcess {
        &self.process
    }
}
