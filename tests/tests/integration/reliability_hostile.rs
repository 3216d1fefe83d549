//! Reliability, hostile data: process names (any process can set its own with
//! prctl(PR_SET_NAME)) holding terminal escape sequences, newlines, invalid
//! UTF-8, bidi overrides and CSV/JSON metacharacters. They must never reach
//! the terminal raw, and must stay valid in JSON (and CSV, when the build has
//! it): one event per line, the name escaped as `\xNN` (see
//! tcpstate-user/src/comm.rs).
//!
//! The names are set on threads of this test that entered the test's network
//! namespace; each thread listens, connects, accepts and closes, so it owns
//! every socket of its connection (12 events: listener 2, client 5, server 5).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;

use tcpstate_tests::reliability::*;

/// (raw name as set with PR_SET_NAME, how tcpstate must show it)
const NAMES: &[(&[u8], &str)] = &[
    (b"\x1b[2J\x1b[31mEVIL", "\\x1b[2J\\x1b[31mEVIL"),
    (b"a\nb\r\nc\td", "a\\x0ab\\x0d\\x0ac\\x09d"),
    (b"\xff\xfe\xc3(bad", "\\xff\\xfe\\xc3(bad"),
    ("x\u{202e}gpj.exe".as_bytes(), "x\\xe2\\x80\\xaegpj.exe"),
    (b"q\"u,o;t'e\\", "q\"u,o;t'e\\x5c"),
    (b"\x07\x08\x7f", "\\x07\\x08\\x7f"),
    ("\u{9b}31m".as_bytes(), "\\xc2\\x9b31m"),
    (b"\x9b31m\x1b]0;t\x07", "\\x9b31m\\x1b]0;t\\x07"),
    (b"sp ace,\"x\"", "sp ace,\"x\""),
];

const EVENTS_PER_NAME: usize = 12;

/// How the text printer's 16-wide COMM column shows an escaped name.
fn column(shown: &str) -> String {
    if shown.chars().count() > 16 {
        format!("{}+", shown.chars().take(15).collect::<String>())
    } else {
        shown.to_string()
    }
}

/// One connection whose every socket is owned by a thread named `name`.
fn connection_named(ns: &Netns, name: &'static [u8]) {
    ns.spawn_in(move || {
        set_thread_name(name);
        let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = l.local_addr().unwrap().port();
        let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (mut s, _) = l.accept().expect("accept");
        drop(c);
        let mut buf = [0u8; 16];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        drop(s);
        drop(l);
    })
    .join()
    .expect("connection thread")
    .expect("entering the namespace");
}

/// Bytes a terminal would act on: C0 controls except newline, DEL, C1
/// controls, and the bidi/zero-width format characters.
fn terminal_hazards(bytes: &[u8]) -> Vec<String> {
    let mut bad = Vec::new();
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            bad.push(format!("invalid UTF-8 at byte {}", e.valid_up_to()));
            return bad;
        }
    };
    for (i, c) in text.char_indices() {
        let hazard = (c.is_control() && c != '\n')
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if hazard {
            let line = text[..i].matches('\n').count() + 1;
            bad.push(format!("U+{:04X} on line {line}", c as u32));
        }
    }
    bad
}

/// The option that selects CSV output in this build, if any.
fn csv_args() -> Option<Vec<&'static str>> {
    let help = run_tracer(&["--help"]).stdout_text();
    if !help.to_lowercase().contains("csv") {
        return None;
    }
    let candidates: [&[&'static str]; 4] = [
        &["--csv"],
        &["--format", "csv"],
        &["--output", "csv"],
        &["-o", "csv"],
    ];
    candidates.into_iter().map(|c| c.to_vec()).find(|c| {
        let mut args = c.clone();
        args.extend(["--netns", "/run/netns/tcpstate-no-such-namespace"]);
        let r = run_tracer(&args);
        r.code() == Some(2) && r.stderr.contains("--netns")
    })
}

/// RFC 4180 records of `text` (quoted fields may hold commas, quotes, newlines).
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                other => field.push(other),
            }
            continue;
        }
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            '"' => return Err(format!("stray quote in record {}", records.len() + 1)),
            ',' => {
                record.push(std::mem::take(&mut field));
                at_start = true;
            }
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                at_start = true;
            }
            '\r' => return Err(format!("raw CR in record {}", records.len() + 1)),
            other => {
                field.push(other);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    if !field.is_empty() || !record.is_empty() {
        return Err("last record does not end with a newline".into());
    }
    Ok(records)
}

#[test]
fn hostile_process_names_never_reach_the_output_raw() {
    let ns = Netns::new();
    let netns = ns.path().to_string_lossy().into_owned();
    let mut modes: Vec<(&str, Vec<&str>)> = vec![
        ("text", vec![]),
        ("wide", vec!["--wide"]),
        ("json", vec!["--json"]),
    ];
    match csv_args() {
        Some(a) => modes.push(("csv", a)),
        None => eprintln!("note: this build has no CSV output; CSV not checked"),
    }
    // All modes at once: one tracer each, on the same namespace.
    let mut tracers: Vec<_> = modes
        .iter()
        .map(|(mode, extra)| {
            let mut args = vec!["--netns", netns.as_str()];
            args.extend(extra.iter());
            let mut t = Background::start(&args, Stdio::piped());
            let out = t.collect_stdout();
            (*mode, t, out)
        })
        .collect();
    for (_, t, _) in tracers.iter_mut() {
        t.wait_ready();
    }
    for (name, _) in NAMES {
        connection_named(&ns, name);
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let total = NAMES.len() * EVENTS_PER_NAME;

    for (mode, mut t, out) in tracers {
        t.stop();
        let stdout = out.join().unwrap();
        let stderr = t.stderr();
        let hazards = terminal_hazards(&stdout);
        assert!(
            hazards.is_empty(),
            "{mode}: raw control/format characters reached stdout: {hazards:?}\n{}",
            String::from_utf8_lossy(&stdout)
        );
        let hazards = terminal_hazards(stderr.as_bytes());
        assert!(hazards.is_empty(), "{mode}: stderr: {hazards:?}\n{stderr}");
        let text = String::from_utf8(stdout).unwrap();
        // Events the kernel could not deliver (ring full, or skipped while
        // another BPF program ran on that CPU: concurrent tests' tracers) are
        // counted in the summary; only those may be missing.
        let lost = summary_counts(&stderr).map_or(0, |(_, l)| l as usize);
        match mode {
            "json" => {
                let mut seen = Vec::new();
                for line in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("json: invalid line ({e}): {line}"));
                    if v["source"] == "tracepoint" {
                        seen.push(v["comm"].as_str().unwrap_or("<null>").to_string());
                    }
                }
                assert!(
                    seen.len() <= total && seen.len() + lost >= total,
                    "json: {} events, {lost} lost, {total} made\n{text}",
                    seen.len()
                );
                let odd: Vec<&String> = seen
                    .iter()
                    .filter(|c| !NAMES.iter().any(|(_, shown)| c == shown))
                    .collect();
                assert!(
                    odd.is_empty(),
                    "json: unexpected comm values {odd:?}\n{text}"
                );
                for (raw, shown) in NAMES {
                    let n = seen.iter().filter(|c| c == shown).count();
                    assert!(
                        n == EVENTS_PER_NAME
                            || (n < EVENTS_PER_NAME && n + lost >= EVENTS_PER_NAME),
                        "json: name {raw:?} should show as {shown:?} on all its {EVENTS_PER_NAME} \
                         events, found on {n} ({lost} lost); comms seen: {seen:?}"
                    );
                }
            }
            "csv" => {
                let records =
                    parse_csv(&text).unwrap_or_else(|e| panic!("csv: not RFC 4180: {e}\n{text}"));
                let header = &records[0];
                let comm = header
                    .iter()
                    .position(|h| h == "comm")
                    .unwrap_or_else(|| panic!("csv: no comm column: {header:?}"));
                let rows = &records[1..];
                assert!(rows.len() + lost >= total, "csv: rows\n{text}");
                for row in rows {
                    assert_eq!(row.len(), header.len(), "csv: ragged row {row:?}");
                }
                let source = header.iter().position(|h| h == "source");
                let tracepoint = |r: &&Vec<String>| source.is_none_or(|i| r[i] == "tracepoint");
                for (raw, shown) in NAMES {
                    let n = rows
                        .iter()
                        .filter(tracepoint)
                        .filter(|r| r[comm] == *shown)
                        .count();
                    assert!(
                        n == EVENTS_PER_NAME
                            || (n < EVENTS_PER_NAME && n + lost >= EVENTS_PER_NAME),
                        "csv: name {raw:?} as {shown:?} on {n} rows ({lost} lost)\n{text}"
                    );
                }
            }
            _ => {
                // One header line, then one line per event: transitions
                // (`OLD -> NEW`) and the state rows of other sources (each
                // connection's timewait socket: `is TIME_WAIT`, or `is
                // FIN_WAIT2` when the client's FIN was acked before the
                // server's FIN came). A newline in a name must not split an
                // event's line.
                let lines: Vec<&str> = text.lines().collect();
                let events: Vec<&&str> = lines
                    .iter()
                    .skip(1)
                    .filter(|l| {
                        l.contains(" -> ")
                            || l.contains(" is TIME_WAIT ")
                            || l.contains(" is FIN_WAIT2 ")
                    })
                    .collect();
                let transitions = events.iter().filter(|l| l.contains(" -> ")).count();
                assert!(
                    transitions + lost >= total,
                    "{mode}: expected at least {total} transition lines\n{text}"
                );
                assert_eq!(
                    lines.len(),
                    events.len() + 1,
                    "{mode}: lines that are neither the header nor an event\n{text}"
                );
                for (raw, shown) in NAMES {
                    // The COMM column is 16 wide: a longer escaped name is
                    // cut to 15 and marked `+`, so the columns stay put.
                    let shown = &column(shown);
                    let n = events.iter().filter(|l| l.contains(shown.as_str())).count();
                    assert!(
                        n + lost >= EVENTS_PER_NAME,
                        "{mode}: name {raw:?} should show as {shown:?} on its {EVENTS_PER_NAME} \
                         events, found on {n}\n{text}"
                    );
                }
            }
        }
    }
}
