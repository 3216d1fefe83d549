//! Counting what each tracer delivered, from its own output.
//!
//! tcpstate reports its count and losses in its exit summary (and its `--netns` filter keeps
//! other namespaces out). The peers have no namespace filter, so their delivered events are the
//! lines whose local or remote port is the benchmark's port: with every peer's default columns
//! (`... LADDR LPORT RADDR RPORT OLDSTATE -> NEWSTATE MS`), found from the `->`.

use std::io::BufRead;

/// tcpstate's exit summary on stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpstateSummary {
    pub events: u64,
    pub lost: u64,
    pub ringbuf_full: u64,
    pub recursion_misses: u64,
    /// Events that are not kernel transitions (`tcpstate: N more rows beyond the tracepoint`:
    /// timewait hand-overs, half-open sockets, ...); not part of `events`.
    pub extra_events: u64,
    /// (old, new, count) from the per-transition table.
    pub transitions: Vec<(String, String, u64)>,
}

impl TcpstateSummary {
    pub fn count(&self, old: &str, new: &str) -> u64 {
        self.transitions
            .iter()
            .filter(|(o, n, _)| o == old && n == new)
            .map(|t| t.2)
            .sum()
    }
}

fn first_number(s: &str) -> Option<u64> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let digits: String = s[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Parses `tcpstate: N events, M lost (ring buffer full: A, skipped ...: B)` and the
/// `COUNT  OLD -> NEW` lines after it.
pub fn tcpstate_summary(stderr: &str) -> Option<TcpstateSummary> {
    let mut lines = stderr.lines();
    let head = lines.find(|l| l.starts_with("tcpstate: ") && l.contains(" events, "))?;
    let rest = head.strip_prefix("tcpstate: ")?;
    let (events, rest) = rest.split_once(" events, ")?;
    let (lost, detail) = rest.split_once(" lost")?;
    let mut s = TcpstateSummary {
        events: events.trim().parse().ok()?,
        lost: lost.trim().parse().ok()?,
        ..Default::default()
    };
    if let Some(i) = detail.find("full:") {
        s.ringbuf_full = first_number(&detail[i..]).unwrap_or(0);
    }
    if let Some(i) = detail.rfind(':') {
        s.recursion_misses = first_number(&detail[i..]).unwrap_or(0);
    }
    for l in lines {
        if let Some(rest) = l.strip_prefix("tcpstate: ")
            && let Some((n, _)) = rest.split_once(" more rows")
        {
            s.extra_events += n.trim().parse::<u64>().unwrap_or(0);
            continue;
        }
        let t: Vec<&str> = l.split_whitespace().collect();
        if let [n, old, "->", new] = t[..]
            && let Ok(n) = n.parse()
        {
            s.transitions.push((old.to_string(), new.to_string(), n));
        }
    }
    Some(s)
}

/// Whether an output line is an event with `port` as its local or remote port.
pub fn line_has_port(line: &str, port: u16) -> bool {
    let t: Vec<&str> = line.split_whitespace().collect();
    let Some(arrow) = t.iter().position(|w| *w == "->") else {
        return false;
    };
    if arrow < 4 {
        return false;
    }
    let p = port.to_string();
    t[arrow - 4] == p || t[arrow - 2] == p
}

/// Event lines of a peer's output with `port` at either end.
pub fn port_lines(r: impl BufRead, port: u16) -> std::io::Result<u64> {
    let mut n = 0;
    for line in r.split(b'\n') {
        let line = line?;
        if line_has_port(&String::from_utf8_lossy(&line), port) {
            n += 1;
        }
    }
    Ok(n)
}

/// Lines of a file that look like events (hold ` -> `, or `  is ` for a state row such as
/// `is TIME_WAIT`), whatever their port; column headings (`OLDSTATE -> NEWSTATE`) are not
/// events.
pub fn event_lines(r: impl BufRead) -> std::io::Result<u64> {
    let mut n = 0;
    for line in r.split(b'\n') {
        let line = line?;
        let has = |pat: &[u8]| line.windows(pat.len()).any(|w| w == pat);
        if (has(b" -> ") || has(b"  is ")) && !has(b"OLDSTATE") {
            n += 1;
        }
    }
    Ok(n)
}

/// Losses a peer reports on stderr: libbpf-tools `lost N events on CPU #C`, bcc `Possibly lost
/// N samples`, bpftrace `Lost N events`. Summed.
pub fn reported_lost(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| {
            let low = l.to_ascii_lowercase();
            let i = low.find("lost ")?;
            first_number(&low[i..]).filter(|_| {
                // the number must follow "lost " directly
                low[i + 5..].starts_with(|c: char| c.is_ascii_digit())
            })
        })
        .sum()
}

/// A bpftrace map printed at exit: `@name: N`.
pub fn bpftrace_scalar(stdout: &str, name: &str) -> Option<u64> {
    let prefix = format!("@{name}: ");
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix)?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "Tracing TCP state changes. Hit Ctrl-C to end.\n\
tcpstate: 1012 events, 3 lost (ring buffer full: 1, skipped by the kernel while another BPF program ran: 2)\n\
tcpstate: 101 more rows beyond the tracepoint (half-open, timewait, snapshot, stuck)\n\
     COUNT  TRANSITION\n\
       101  CLOSE -> SYN_SENT\n\
       101  LAST_ACK -> CLOSE\n\
         1  CLOSE -> LISTEN\n";

    #[test]
    fn parses_tcpstate_summary() {
        let s = tcpstate_summary(SUMMARY).unwrap();
        assert_eq!((s.events, s.lost), (1012, 3));
        assert_eq!((s.ringbuf_full, s.recursion_misses), (1, 2));
        assert_eq!(s.extra_events, 101);
        assert_eq!(s.transitions.len(), 3);
        assert_eq!(s.count("CLOSE", "SYN_SENT"), 101);
        assert_eq!(s.count("CLOSE", "LISTEN"), 1);
        assert_eq!(s.count("LISTEN", "CLOSE"), 0);
        assert!(tcpstate_summary("Tracing TCP state changes.\n").is_none());
    }

    #[test]
    fn finds_ports_in_peer_lines() {
        // libbpf-tools tcpstates
        let l = "ffff9d5b8b0d0000 1234    loadgen    127.0.0.1       0     127.0.0.1       7201  CLOSE       -> SYN_SENT    0.000";
        assert!(line_has_port(l, 7201));
        assert!(!line_has_port(l, 7202));
        // server side: local port
        let l = "ffff9d5b8b0d0000 0       swapper/0  127.0.0.1       7201  127.0.0.1       40000 LAST_ACK    -> CLOSE       0.010";
        assert!(line_has_port(l, 7201));
        assert!(line_has_port(l, 40000));
        // a comm with a space still parses from the arrow
        let l = "ffff9d5b8b0d0000 77      my prog    127.0.0.1       5 127.0.0.1       7201  CLOSE -> SYN_SENT 0.0";
        assert!(line_has_port(l, 7201));
        // header and junk
        assert!(!line_has_port(
            "SKADDR PID COMM LADDR LPORT RADDR RPORT OLDSTATE -> NEWSTATE MS",
            7201
        ));
        assert!(!line_has_port("Lost 5 events", 7201));
        let text = format!("OLDSTATE -> NEWSTATE\n{l}\n{l}\nnope 7201\n");
        assert_eq!(port_lines(text.as_bytes(), 7201).unwrap(), 2);
        assert_eq!(event_lines(text.as_bytes()).unwrap(), 2);
    }

    #[test]
    fn sums_reported_losses() {
        let e = "lost 144 events on CPU #0\nPossibly lost 5 samples\nLost 7 events\nWARNING: something\n";
        assert_eq!(reported_lost(e), 156);
        assert_eq!(reported_lost("Attaching 1 probe...\n"), 0);
    }

    #[test]
    fn reads_bpftrace_scalar() {
        let out = "Attaching 2 probes...\n\n\n@events: 1000012\n";
        assert_eq!(bpftrace_scalar(out, "events"), Some(1_000_012));
        assert_eq!(bpftrace_scalar(out, "other"), None);
    }
}
