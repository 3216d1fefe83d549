//! Running tcpstate the way the README tells users to.
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
//! The text format:
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

pub mod expect;
mod fixture;
mod python;
mod reference;
mod text;

pub use fixture::{AsUsers, LONG, SHORT};
pub use python::{PyServer, py_clients};
pub use reference::{
    RefRow, RefTcpstates, TCPSTATES, TransitionCounts, count_transitions, loadgen_bin,
    multiset_diff,
};
pub use text::{HEADER_WORDS, TextRow, TextTrace, label_matches};

use std::net::SocketAddr;
use std::time::Duration;

use crate::process::{Collected, poll};

impl TextTrace {
    /// Files one stdout line: the header (first), a row, or a line that is
    /// not a row.
    fn file(&mut self, line: String) {
        if self.header.is_none() && self.rows.is_empty() && line.starts_with("TIME") {
            self.header = Some(line);
            return;
        }
        match TextRow::parse(&line) {
            Ok(row) => self.rows.push(row),
            Err(why) => self.bad_lines.push(why),
        }
    }
}

/// A running `tcpstate --port P [extra...]`: root namespace, text output.
pub type UserTracer = Collected<TextTrace>;

impl UserTracer {
    /// Starts `tcpstate --port PORT extra...` and waits until it says it is
    /// tracing.
    pub fn start(port: u16, extra: &[&str]) -> UserTracer {
        let mut args: Vec<String> = vec!["--port".into(), port.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let trace = TextTrace {
            header: None,
            rows: Vec::new(),
            bad_lines: Vec::new(),
            stderr: String::new(),
            args: args.clone(),
        };
        Collected::spawn(
            args,
            trace,
            TextTrace::file,
            |t| &mut t.stderr,
            TextTrace::dump,
        )
    }

    /// Rows so far for which `pred` holds, counted in place (a storm prints
    /// hundreds of thousands: no copy per poll).
    pub fn count(&self, pred: impl Fn(&TextRow) -> bool) -> usize {
        self.with_output(|t| t.rows.iter().filter(|r| pred(r)).count())
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
        if poll(timeout, Duration::from_secs(1), || {
            (self.count(&pred) >= n).then_some(())
        })
        .is_none()
        {
            panic!(
                "timed out after {timeout:?} waiting for {n} {what}: {} so far; stderr:\n{}",
                self.count(&pred),
                self.process().stderr()
            );
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
        self.wait_within(timeout, &format!("`{label}` on {local} -> {remote}"), |t| {
            t.end(local, remote)
                .iter()
                .any(|r| label_matches(label, &r.label()))
        })
    }

    /// Stops it with SIGINT (Ctrl-C) and returns everything it printed;
    /// checks it exited 0, printed the header and no malformed line.
    pub fn stop(&mut self) -> TextTrace {
        let t = self.finish();
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
