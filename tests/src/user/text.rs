//! The rows of tcpstate's default text output, parsed the way a person
//! reads them: [`TextRow`], and [`TextTrace`], everything a
//! [`super::UserTracer`] printed.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// The header's words, in order.
pub const HEADER_WORDS: &[&str] = &[
    "TIME", "PID", "COMM", "LADDR", "LPORT", "RADDR", "RPORT", "OLDSTATE", "->", "NEWSTATE", "MS",
];

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

/// Everything a [`UserTracer`] printed.
#[derive(Debug, Clone)]
pub struct TextTrace {
    pub header: Option<String>,
    pub rows: Vec<TextRow>,
    pub bad_lines: Vec<String>,
    pub stderr: String,
    pub(crate) args: Vec<String>,
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
}
