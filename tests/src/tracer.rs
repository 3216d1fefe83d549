//! [`Tracer`]: the real `tcpstate --json --netns NS` started before any
//! traffic, its events collected into a [`Trace`]; and [`RawTracer`], the
//! same with stdout kept as printed (text, CSV, `--explain`).

use std::time::Duration;

use crate::event::{Line, parse_line};
use crate::process::Collected;
use crate::states::*;
use crate::{EVENT_TIMEOUT, Netns, Trace};

impl Trace {
    /// Files one stdout line: a tracepoint event, another source's line
    /// (kept, and parsed when it is an event), or a malformed line.
    fn file(&mut self, line: String) {
        match parse_line(&line) {
            Line::Event(ev) => {
                self.all.push((*ev).clone());
                self.events.push(*ev);
            }
            Line::OtherSource(ev) => {
                self.all.extend(ev.map(|e| *e));
                self.other_sources.push(line);
            }
            Line::Bad(why) => self.bad_lines.push(why),
        }
    }
}

/// `--netns <ns>` after `first`, then `extra`: the arguments of a tracer
/// of one namespace.
fn netns_args(ns: &Netns, first: &[&str], extra: &[&str]) -> Vec<String> {
    let netns = ns.path().to_string_lossy().into_owned();
    let netns = ["--netns", &netns];
    first
        .iter()
        .chain(&netns)
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

/// A running `tcpstate --json --netns <ns>` collecting its events.
pub type Tracer = Collected<Trace>;

impl Tracer {
    /// Starts the tracer on `ns` with `extra` arguments and waits until it
    /// says it is tracing.
    pub fn start(ns: &Netns, extra: &[&str]) -> Tracer {
        let args = netns_args(ns, &["--json"], extra);
        let trace = Trace::empty(args.clone(), ns.inode());
        Collected::spawn(args, trace, Trace::file, |t| &mut t.stderr, Trace::dump_all).holding(ns)
    }

    /// Waits until `cond` holds on the events collected so far; on timeout
    /// panics with everything seen.
    pub fn wait_until(&self, what: &str, cond: impl Fn(&Trace) -> bool) -> Trace {
        self.wait_within(EVENT_TIMEOUT, what, cond)
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

    /// The usual ending: once `n` transitions into CLOSE have been seen (the
    /// scenario's sockets all closed), stops the tracer.
    pub fn stop_after_closes(&mut self, n: usize) -> Trace {
        self.wait_for_closes(n);
        self.stop()
    }

    /// Stops the tracer with SIGINT (it drains what is pending and exits 0)
    /// and returns everything it printed.
    pub fn stop(&mut self) -> Trace {
        let trace = self.finish();
        assert!(
            trace.bad_lines.is_empty(),
            "tracer printed malformed lines:\n{}\n{}",
            trace.bad_lines.join("\n"),
            trace.dump()
        );
        trace
    }
}

/// A running `tcpstate --netns <ns> ARGS` whose stdout lines are kept as
/// printed: for the outputs that are not JSON events (text, CSV,
/// `--explain`) or JSON records the [`Tracer`] does not type.
pub type RawTracer = Collected<(Vec<String>, String)>;

impl RawTracer {
    /// `tcpstate --netns <ns> <args>`, once it says it is tracing.
    pub fn start(ns: &Netns, args: &[&str]) -> RawTracer {
        Collected::spawn(
            netns_args(ns, &[], args),
            (Vec::new(), String::new()),
            |(lines, _), line| lines.push(line),
            |(_, stderr)| stderr,
            |(lines, stderr)| format!("stdout:\n{}\nstderr:\n{stderr}", lines.join("\n")),
        )
        .holding(ns)
    }

    /// Waits up to `timeout` until `cond` holds on the lines printed so far;
    /// on timeout panics with every line and stderr.
    pub fn wait_until(&self, what: &str, timeout: Duration, cond: impl Fn(&[String]) -> bool) {
        self.wait_within(timeout, what, |(lines, _)| cond(lines));
    }

    /// Waits until `n` lines of stdout contain `needle`.
    pub fn wait_for(&self, needle: &str, n: usize) {
        self.wait_until(
            &format!("{n} lines with {needle:?}"),
            EVENT_TIMEOUT,
            |lines| lines.iter().filter(|l| l.contains(needle)).count() >= n,
        );
    }

    /// SIGINT, wait for exit 0; returns (stdout lines, stderr).
    pub fn stop(mut self) -> (Vec<String>, String) {
        self.finish()
    }
}
