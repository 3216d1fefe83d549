//! libbpf-tools' `tcpstates`, the reference the kernel rows are compared
//! against ([`RefTcpstates`]), and the multisets of transitions compared.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::READY_TIMEOUT;
use crate::process::{collect, reap, signal, spawn_piped, wait_exit};

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
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", TCPSTATES]);
        let mut child = spawn_piped(&mut cmd, Stdio::null(), TCPSTATES);
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
        let deadline = Instant::now() + crate::scaled(READY_TIMEOUT);
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
        // Killed if it ignores SIGINT: its rows so far are still compared.
        let _ = wait_exit(&mut self.child, Duration::from_secs(10));
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let lines = self.lines.lock().unwrap().clone();
        let parsed = lines
            .iter()
            .filter_map(|l| {
                // SKADDR ... LADDR LPORT RADDR RPORT OLDSTATE -> NEWSTATE MS
                let w: Vec<&str> = l.split_whitespace().collect();
                let n = w.len();
                if n < 8 || w[n - 3] != "->" {
                    return None;
                }
                let row = RefRow {
                    old: w[n - 4].to_string(),
                    new: w[n - 2].to_string(),
                    lport: w[n - 7].parse().ok()?,
                    rport: w[n - 5].parse().ok()?,
                    line: l.clone(),
                };
                Some((w[0].to_string(), row))
            })
            .collect::<Vec<_>>();
        let rows = complete_child_tuples(parsed)
            .into_iter()
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
        reap(&mut self.child);
    }
}

/// On kernels that set a child socket's state before copying its tuple in
/// (6.1, 6.12), the kernel's `LISTEN -> SYN_RECV` carries the listener's
/// remote port 0, and `tcpstates` prints it so; tcpstate completes it from
/// the socket's next change. The reference's rows (with their socket
/// address, tcpstates' first column) are completed the same way, so the
/// two compare as what the kernel reported for each socket.
fn complete_child_tuples(rows: Vec<(String, RefRow)>) -> Vec<RefRow> {
    let mut out: Vec<RefRow> = Vec::with_capacity(rows.len());
    for (i, (sk, row)) in rows.iter().enumerate() {
        let mut row = row.clone();
        if row.old == "LISTEN" && row.new == "SYN_RECV" && row.rport == 0 {
            if let Some((_, next)) = rows[i + 1..].iter().find(|(s, _)| s == sk) {
                row.rport = next.rport;
            }
        }
        out.push(row);
    }
    out
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

    fn row(old: &str, new: &str, lport: u16, rport: u16) -> RefRow {
        RefRow {
            old: old.into(),
            new: new.into(),
            lport,
            rport,
            line: String::new(),
        }
    }

    #[test]
    fn a_child_row_with_its_listener_tuple_takes_the_next_rows_port() {
        let rows = vec![
            ("a".to_string(), row("LISTEN", "SYN_RECV", 10050, 0)),
            (
                "b".to_string(),
                row("SYN_SENT", "ESTABLISHED", 40000, 10050),
            ),
            (
                "a".to_string(),
                row("SYN_RECV", "ESTABLISHED", 10050, 40000),
            ),
        ];
        let done = complete_child_tuples(rows);
        assert_eq!(done[0].rport, 40000);
        assert_eq!(done[1].rport, 10050);
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
