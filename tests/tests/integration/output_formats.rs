//! Output formats on real traffic: JSON Lines typed as documented
//! in docs/json.md, CSV with its header, the text TIME column (`-t`, `-T`)
//! and colour, `--lifecycle` (JSON and text), `--trigger`, `--summary` and
//! `--diagram` of known scenarios.
//!
//! The JSON-based checks go through the harness's [`Tracer`] (which always
//! passes `--json`; lifecycle and summary records land in `other_sources`).
//! The text and CSV checks use the harness's [`RawTracer`], which keeps
//! stdout lines as printed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tcpstate_tests::states::*;
use tcpstate_tests::{Accepted, Netns, Peer, RawTracer, Trace, Tracer};

const PORT: u16 = 10050;
const ADDR: &str = "127.0.0.1:10050";

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// One connection, the client closes first, then the listener closes:
/// 12 transitions (client and server end 5 each, the listener 2). Returns
/// the client and the accepted end.
fn client_closes_first(ns: &Netns) -> (Peer, Accepted) {
    let mut server = Peer::server(ns, ADDR);
    let mut client = Peer::client(ns, ADDR);
    let conn = server.accept();
    client.cmd("send 1000");
    server.expect_reply("recv 1000", "received 1000");
    client.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
    server.expect_reply("close-listener", "listener-closed");
    (client, conn)
}

/// Two connections on one listener: the first closed by the client, the
/// second by the server.
fn both_close_orders(ns: &Netns) -> (Peer, Peer) {
    let mut server = Peer::server(ns, ADDR);
    let mut a = Peer::client(ns, ADDR);
    server.accept();
    a.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
    let mut b = Peer::client(ns, ADDR);
    server.accept();
    server.close();
    b.expect_reply("wait-eof", "eof 0");
    b.close();
    server.expect_reply("close-listener", "listener-closed");
    (a, b)
}

/// The records of `type` among the harness's non-event lines.
fn records(t: &Trace, kind: &str) -> Vec<Value> {
    t.other_sources
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["type"] == kind)
        .collect()
}

fn path_states(rec: &Value) -> Vec<String> {
    rec["path"]
        .as_array()
        .unwrap_or_else(|| panic!("no path in {rec}"))
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/// JSON type names as docs/json.md gives them.
fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every key of an event record and the types it may have (docs/json.md).
const EVENT_SCHEMA: &[(&str, &[&str])] = &[
    ("schema", &["integer"]),
    ("type", &["string"]),
    ("time", &["string"]),
    ("time_ns", &["integer"]),
    ("source", &["string"]),
    ("skaddr", &["string"]),
    ("netns", &["integer"]),
    ("family", &["string"]),
    ("pid", &["integer", "null"]),
    ("comm", &["string", "null"]),
    ("cpu_pid", &["integer"]),
    ("cpu_comm", &["string"]),
    ("laddr", &["string"]),
    ("lport", &["integer"]),
    ("raddr", &["string"]),
    ("rport", &["integer"]),
    ("oldstate", &["string"]),
    ("newstate", &["string"]),
    ("ms", &["number", "integer", "null"]),
    ("replayed", &["boolean"]),
    ("note", &["string", "null"]),
    ("peer_fin", &["boolean", "null"]),
    ("kind", &["string"]),
    ("cgroup", &["string", "null"]),
    ("container_id", &["string", "null"]),
    ("pod_uid", &["string", "null"]),
];
const OPTIONAL_EVENT_KEYS: &[(&str, &str)] = &[
    ("retransmits", "integer"),
    ("age_ms", "number"),
    ("reason", "string"),
    ("reset_reason", "string"),
    ("error", "integer"),
    ("data_retransmits", "integer"),
];

#[test]
fn json_lines_of_real_traffic_have_the_documented_fields_and_types() {
    let ns = Netns::new();
    let tracer = RawTracer::start(&ns, &["--json"]);
    let (client, conn) = client_closes_first(&ns);
    tracer.wait_for("\"newstate\":\"CLOSE\"", 3);
    let (lines, _) = tracer.stop();

    let mut transitions = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let obj = v.as_object().unwrap();
        for (key, types) in EVENT_SCHEMA {
            let Some(val) = obj.get(*key) else {
                panic!("missing {key}: {line}")
            };
            assert!(
                types.contains(&type_of(val)),
                "{key} is {} ({val}), documented as {types:?}: {line}",
                type_of(val)
            );
        }
        for (key, val) in obj {
            let documented = EVENT_SCHEMA.iter().any(|(k, _)| k == key)
                || OPTIONAL_EVENT_KEYS
                    .iter()
                    .any(|(k, t)| k == key && type_of(val).starts_with(&t[..3]));
            assert!(documented, "undocumented key {key}: {line}");
        }
        assert_eq!(v["schema"], 1);
        assert_eq!(v["type"], "event");
        // RFC 3339, UTC, microseconds.
        let time = v["time"].as_str().unwrap();
        assert!(
            time.len() == 27 && time.ends_with('Z') && time.as_bytes()[19] == b'.',
            "{time}"
        );
        // A state row says which state a socket is in (oldstate ==
        // newstate); only other sources print them.
        let state_row = v["kind"] == "state";
        assert!(state_row || v["kind"] == "transition", "{line}");
        assert_eq!(state_row, v["oldstate"] == v["newstate"], "{line}");
        if v["source"] == "tracepoint" {
            assert!(!state_row, "{line}");
            assert_eq!(v["note"], Value::Null, "{line}");
            transitions.push(format!(
                "{}->{}",
                v["oldstate"].as_str().unwrap(),
                v["newstate"].as_str().unwrap()
            ));
        } else {
            assert!(v["note"].is_string(), "non-tracepoint without note: {line}");
        }
    }
    transitions.sort();
    let mut expected: Vec<String> = [
        "CLOSE->LISTEN",
        "CLOSE->SYN_SENT",
        "SYN_SENT->ESTABLISHED",
        "ESTABLISHED->FIN_WAIT1",
        "FIN_WAIT1->FIN_WAIT2",
        "FIN_WAIT2->CLOSE",
        "LISTEN->SYN_RECV",
        "SYN_RECV->ESTABLISHED",
        "ESTABLISHED->CLOSE_WAIT",
        "CLOSE_WAIT->LAST_ACK",
        "LAST_ACK->CLOSE",
        "LISTEN->CLOSE",
    ]
    .map(String::from)
    .to_vec();
    expected.sort();
    assert_eq!(transitions, expected, "{}", lines.join("\n"));
    // The owner is the peer process, for both ends.
    let client_port = client.local.port().to_string();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("\"pid\":{}", client.pid))
                && l.contains(&format!("\"lport\":{client_port}"))),
        "{}",
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("\"rport\":{}", conn.peer.port())))
    );
}

// ---------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------

/// Splits one CSV row (RFC 4180 quoting).
fn csv_cells(row: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells
}

#[test]
fn csv_has_a_header_and_the_json_fields_per_row() {
    let ns = Netns::new();
    let tracer = RawTracer::start(&ns, &["--csv"]);
    let (client, _conn) = client_closes_first(&ns);
    tracer.wait_for(",CLOSE,", 3);
    let (lines, _) = tracer.stop();

    let header = csv_cells(&lines[0]);
    assert_eq!(
        header.join(","),
        "time,time_ns,source,skaddr,netns,family,pid,comm,cpu_pid,cpu_comm,laddr,lport,raddr,rport,\
         oldstate,newstate,ms,replayed,note,peer_fin,retransmits,age_ms,cgroup,container_id,pod_uid,reason,reset_reason,error,data_retransmits"
    );
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<Vec<String>> = lines[1..].iter().map(|l| csv_cells(l)).collect();
    assert!(rows.len() >= 12, "{}", lines.join("\n"));
    for (row, line) in rows.iter().zip(&lines[1..]) {
        assert_eq!(row.len(), header.len(), "{line}");
        assert_eq!(row[col("netns")], ns.inode().to_string(), "{line}");
        assert!(row[col("time_ns")].parse::<u64>().is_ok(), "{line}");
        assert!(row[col("skaddr")].starts_with("0x"), "{line}");
        let ms = &row[col("ms")];
        assert!(
            ms.is_empty() || ms.parse::<f64>().is_ok_and(|m| m >= 0.0),
            "{line}"
        );
    }
    let client_rows: Vec<String> = rows
        .iter()
        .filter(|r| {
            r[col("source")] == "tracepoint"
                && r[col("pid")] == client.pid.to_string()
                && r[col("rport")] == PORT.to_string()
        })
        .map(|r| format!("{}->{}", r[col("oldstate")], r[col("newstate")]))
        .collect();
    assert_eq!(
        client_rows,
        [
            "CLOSE->SYN_SENT",
            "SYN_SENT->ESTABLISHED",
            "ESTABLISHED->FIN_WAIT1",
            "FIN_WAIT1->FIN_WAIT2",
            "FIN_WAIT2->CLOSE"
        ],
        "{}",
        lines.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Text: TIME column and colour
// ---------------------------------------------------------------------------

#[test]
fn text_time_columns_since_start_and_full_date() {
    let ns = Netns::new();
    let relative = RawTracer::start(&ns, &["-t"]);
    let absolute = RawTracer::start(&ns, &["-T", "--color", "always"]);
    let started = Instant::now();
    client_closes_first(&ns);
    relative.wait_for("-> CLOSE", 3);
    absolute.wait_for("CLOSE\x1b[0m", 3);
    let elapsed = started.elapsed().as_secs_f64();
    let (rel, _) = relative.stop();
    let (abs, _) = absolute.stop();

    // -t: seconds since start with microseconds, in order, within the run.
    assert!(rel[0].starts_with("TIME(s) "), "{}", rel[0]);
    let mut last = 0.0;
    for line in &rel[1..] {
        let t = line.split_whitespace().next().unwrap();
        let (_, micros) = t.split_once('.').unwrap();
        assert_eq!(micros.len(), 6, "{line}");
        let secs: f64 = t.parse().unwrap();
        assert!(secs >= last && secs < 60.0 + elapsed, "{line}");
        last = secs;
        assert!(
            !line.contains('\x1b'),
            "piped text must not be coloured: {line:?}"
        );
    }
    // -T: local date and time with microseconds; --color always colours states.
    let today = chrono_like_today();
    for line in &abs[1..] {
        let t = line.split_whitespace().next().unwrap();
        assert_eq!(t.len(), 26, "{line}");
        assert_eq!(&t[10..11], "T", "{line}");
        assert!(t.starts_with(&today[..7]), "{t} vs {today}");
        assert!(line.contains("\x1b["), "{line:?}");
    }
}

/// `YYYY-MM-DD` of now, local time, from date(1) (the tests crate has no
/// date library).
fn chrono_like_today() -> String {
    let out = Command::new("date").arg("+%Y-%m-%d").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

// ---------------------------------------------------------------------------
// --lifecycle
// ---------------------------------------------------------------------------

#[test]
fn lifecycle_json_of_one_connection_and_its_listener() {
    let ns = Netns::new();
    let mut tracer = Tracer::start(&ns, &["--lifecycle"]);
    let (client, conn) = client_closes_first(&ns);
    tracer.wait_until("3 lifecycle records", |t| {
        records(t, "lifecycle").len() >= 3
    });
    let t = tracer.stop();
    assert!(t.events.is_empty(), "--lifecycle prints no event lines");
    let recs = records(&t, "lifecycle");
    assert_eq!(recs.len(), 3, "{recs:#?}");
    let by_role: BTreeMap<String, &Value> = recs
        .iter()
        .map(|r| (r["role"].as_str().unwrap().to_string(), r))
        .collect();

    let c = by_role["client"];
    assert_eq!(
        path_states(c),
        [SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE]
    );
    assert_eq!(c["close"], "active");
    assert_eq!(c["end"], "closed");
    assert_eq!(c["complete"], true);
    assert_eq!(c["pid"], client.pid);
    assert_eq!(c["lport"], client.local.port());
    assert_eq!(c["rport"], PORT);

    let s = by_role["server"];
    assert_eq!(
        path_states(s),
        [SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE]
    );
    assert_eq!(s["close"], "passive");
    assert_eq!(s["lport"], PORT);
    assert_eq!(s["rport"], conn.peer.port());

    let l = by_role["listener"];
    assert_eq!(path_states(l), [LISTEN, CLOSE]);
    assert_eq!(l["close"], Value::Null);

    for r in &recs {
        // Every state but the final CLOSE has a time; they add up to the total.
        let path = r["path"].as_array().unwrap();
        let (last, rest) = path.split_last().unwrap();
        assert_eq!(last["ms"], Value::Null, "{r}");
        let sum: f64 = rest.iter().map(|s| s["ms"].as_f64().unwrap()).sum();
        let total = r["ms"].as_f64().unwrap();
        assert!((sum - total).abs() < 0.01, "{sum} vs {total}: {r}");
        assert!(rest.iter().all(|s| s["ms"].as_f64().unwrap() >= 0.0), "{r}");
        assert_eq!(r["netns"], ns.inode());
    }
}

#[test]
fn lifecycle_marks_who_closed_first_and_prints_unfinished_at_exit() {
    let ns = Netns::new();
    let mut tracer = Tracer::start(&ns, &["--lifecycle"]);
    let (a, b) = both_close_orders(&ns);
    // A third connection stays open until the tracer stops.
    let _server = Peer::server(&ns, "127.0.0.1:10051");
    let mut server = _server;
    let open = Peer::client(&ns, "127.0.0.1:10051");
    let open_conn = server.accept();
    tracer.wait_until("4 closed connections and a listener", |t| {
        records(t, "lifecycle").len() >= 5
    });
    let t = tracer.stop();
    let recs = records(&t, "lifecycle");
    let find = |lport: u16, rport: u16| {
        recs.iter()
            .find(|r| r["lport"] == lport && r["rport"] == rport)
            .unwrap_or_else(|| panic!("no record {lport}->{rport}: {recs:#?}"))
    };
    let a_rec = find(a.local.port(), PORT);
    assert_eq!(
        (a_rec["role"].as_str(), a_rec["close"].as_str()),
        (Some("client"), Some("active"))
    );
    let b_rec = find(b.local.port(), PORT);
    assert_eq!(
        (b_rec["role"].as_str(), b_rec["close"].as_str()),
        (Some("client"), Some("passive"))
    );
    let b_server = find(PORT, b.local.port());
    assert_eq!(b_server["close"], "active");
    assert_eq!(
        path_states(b_server),
        [SYN_RECV, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE]
    );

    // Still open at exit: printed as unfinished, the last state timed so far.
    for (lport, rport) in [(open.local.port(), 10051), (10051, open_conn.peer.port())] {
        let r = find(lport, rport);
        assert_eq!(r["end"], "unfinished", "{r}");
        assert_eq!(r["close"], Value::Null, "{r}");
        let path = r["path"].as_array().unwrap();
        assert_eq!(path.last().unwrap()["state"], ESTABLISHED, "{r}");
        assert!(path.last().unwrap()["ms"].as_f64().unwrap() > 0.0, "{r}");
    }
    let listener = recs
        .iter()
        .find(|r| r["role"] == "listener" && r["lport"] == 10051)
        .unwrap();
    assert_eq!(listener["end"], "unfinished");
}

#[test]
fn lifecycle_text_line_per_connection() {
    let ns = Netns::new();
    let tracer = RawTracer::start(&ns, &["--lifecycle", "-t"]);
    let (client, _) = client_closes_first(&ns);
    tracer.wait_for("> CLOSE", 3);
    let (lines, _) = tracer.stop();
    assert!(
        lines[0].split_whitespace().eq([
            "TIME(s)", "PID", "COMM", "LOCAL", "REMOTE", "ROLE", "CLOSE", "TOTAL", "PATH"
        ]),
        "{}",
        lines[0]
    );
    let line = lines
        .iter()
        .find(|l| {
            l.contains(&format!("127.0.0.1:{}", client.local.port())) && l.contains(" client ")
        })
        .unwrap_or_else(|| panic!("no client line:\n{}", lines.join("\n")));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[1], client.pid.to_string(), "{line}");
    assert_eq!(words[2], "tcppeer", "{line}");
    assert_eq!(words[6], "active", "{line}");
    // SYN_SENT 0.041ms > ESTABLISHED 1.234ms > FIN_WAIT1 ... > CLOSE
    let path = line.split_once("SYN_SENT").map(|(_, p)| p).unwrap();
    let states: Vec<&str> = std::iter::once("SYN_SENT")
        .chain(
            path.split(" > ")
                .skip(1)
                .map(|s| s.split_whitespace().next().unwrap()),
        )
        .collect();
    assert_eq!(
        states,
        [SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
        "{line}"
    );
    // The client closed first: its timewait socket took over in TIME_WAIT,
    // and the line ends with how the connection ended.
    assert!(
        line.ends_with("> CLOSE (then TIME_WAIT): closed, this end first"),
        "{line}"
    );
    assert!(path.contains("ms > "), "{line}");
}

// ---------------------------------------------------------------------------
// --trigger
// ---------------------------------------------------------------------------

/// Drops every FIN from the server (port 10050) on input, as closing.rs does.
fn drop_server_fins(ns: &Netns) {
    ns.nft(
        "table inet tcpst_gate {
            chain input {
                type filter hook input priority 0; policy accept;
                tcp sport 10050 tcp flags & fin == fin counter drop
            }
        }",
    );
}

#[test]
fn trigger_prints_only_the_history_of_sockets_that_reach_closing() {
    let ns = Netns::new();
    let mut tracer = Tracer::start(&ns, &["--trigger", "CLOSING"]);
    let mut server = Peer::server(&ns, ADDR);
    // A plain connection first: never reaches CLOSING, never printed.
    let mut plain = Peer::client(&ns, ADDR);
    server.accept();
    plain.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
    // Then a simultaneous close: the server's FIN is lost, the client closes.
    let mut client = Peer::client(&ns, ADDR);
    let conn = server.accept();
    drop_server_fins(&ns);
    server.close();
    thread::sleep(Duration::from_millis(50));
    client.close();
    tracer.wait_for(conn.local.port(), conn.peer.port(), FIN_WAIT1, CLOSING);
    ns.nft("delete table inet tcpst_gate");
    tracer.wait_for(conn.local.port(), conn.peer.port(), CLOSING, CLOSE);
    server.expect_reply("close-listener", "listener-closed");
    let t = tracer.stop();

    // Only the server end went through CLOSING: its whole history, from the
    // handshake on, and nothing else.
    t.assert_socket_count(1);
    t.assert_path(
        "server end (triggered by CLOSING)",
        &t.server_end(&conn),
        &[LISTEN, SYN_RECV, ESTABLISHED, FIN_WAIT1, CLOSING, CLOSE],
    );
    t.assert_invariants();
}

// ---------------------------------------------------------------------------
// --summary
// ---------------------------------------------------------------------------

#[test]
fn summary_replaces_event_lines_with_counts_and_histograms() {
    let ns = Netns::new();
    let mut tracer = Tracer::start(&ns, &["--summary"]);
    both_close_orders(&ns);
    thread::sleep(Duration::from_millis(200));
    let t = tracer.stop();
    assert!(t.events.is_empty(), "--summary prints no event lines");
    let recs = records(&t, "summary");
    assert_eq!(recs.len(), 1, "{:#?}", t.other_sources);
    let s = &recs[0];
    assert_eq!(s["schema"], 1);
    let counts: BTreeMap<String, u64> = s["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                format!(
                    "{}->{}",
                    e["old"].as_str().unwrap(),
                    e["new"].as_str().unwrap()
                ),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect();
    for (tr, n) in [
        ("CLOSE->LISTEN", 1),
        ("CLOSE->SYN_SENT", 2),
        ("SYN_SENT->ESTABLISHED", 2),
        ("LISTEN->SYN_RECV", 2),
        ("SYN_RECV->ESTABLISHED", 2),
        ("ESTABLISHED->FIN_WAIT1", 2),
        ("ESTABLISHED->CLOSE_WAIT", 2),
        ("FIN_WAIT1->FIN_WAIT2", 2),
        ("FIN_WAIT2->CLOSE", 2),
        ("CLOSE_WAIT->LAST_ACK", 2),
        ("LAST_ACK->CLOSE", 2),
        ("LISTEN->CLOSE", 1),
    ] {
        assert_eq!(counts.get(tr), Some(&n), "{tr} in {counts:?}");
    }
    assert_eq!(s["transitions_total"], 22);
    // Histograms: ESTABLISHED was left 4 times with a known dwell time.
    let est = s["states"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["state"] == ESTABLISHED)
        .unwrap();
    assert_eq!(est["count"], 4);
    assert_eq!(est["unit"], "us");
    let total: u64 = est["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 4);
}

#[test]
fn summary_text_has_bcc_style_histograms() {
    let ns = Netns::new();
    let tracer = RawTracer::start(&ns, &["--summary"]);
    client_closes_first(&ns);
    thread::sleep(Duration::from_millis(200));
    let (lines, _) = tracer.stop();
    let text = lines.join("\n");
    // 12 kernel transitions; half-open rows (SYN-ACK retransmits) may come on top.
    assert!(
        lines[0].starts_with("tcpstate summary: ") && lines[0].contains(": 12 transitions"),
        "{text}"
    );
    assert!(text.contains("state = ESTABLISHED"), "{text}");
    assert!(
        text.contains("     usecs               : count     distribution"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("1  ESTABLISHED -> FIN_WAIT1")),
        "{text}"
    );
    assert!(!text.contains("-> NEWSTATE"), "no per-event header: {text}");
}

// ---------------------------------------------------------------------------
// --diagram
// ---------------------------------------------------------------------------

/// `"A" -> "B" [label="N\n..."...]` lines of a DOT file: ((A, B), N).
fn dot_edges(dot: &str) -> BTreeMap<(String, String), u64> {
    dot.lines()
        .filter(|l| l.contains("\" -> \"") && l.contains("label="))
        .map(|l| {
            let q: Vec<&str> = l.split('"').collect();
            let label = l.split("label=\"").nth(1).unwrap();
            let count = label
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap();
            ((q[1].to_string(), q[3].to_string()), count)
        })
        .collect()
}

#[test]
fn diagram_of_both_close_orders() {
    let ns = Netns::new();
    let dir = std::env::temp_dir().join(format!("tcpstate-diagram-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dot_path: PathBuf = dir.join("states.dot");
    let svg_path = dir.join("states.svg");
    let _ = std::fs::remove_file(&svg_path);
    let mut tracer = Tracer::start(&ns, &["--diagram", dot_path.to_str().unwrap()]);
    both_close_orders(&ns);
    tracer.wait_for_closes(5);
    let t = tracer.stop();
    assert!(t.stderr.contains("wrote the state diagram"), "{}", t.stderr);

    let dot = std::fs::read_to_string(&dot_path).unwrap();
    let edges = dot_edges(&dot);
    let e = |a: &str, b: &str| (a.to_string(), b.to_string());
    let expected: BTreeMap<(String, String), u64> = [
        (e("CLOSED_start", LISTEN), 1),
        (e("CLOSED_start", SYN_SENT), 2),
        (e(SYN_SENT, ESTABLISHED), 2),
        (e(LISTEN, SYN_RECV), 2),
        (e(SYN_RECV, ESTABLISHED), 2),
        (e(ESTABLISHED, FIN_WAIT1), 2),
        (e(ESTABLISHED, CLOSE_WAIT), 2),
        (e(FIN_WAIT1, FIN_WAIT2), 2),
        (e(FIN_WAIT2, "CLOSED_end"), 2),
        (e(CLOSE_WAIT, LAST_ACK), 2),
        (e(LAST_ACK, "CLOSED_end"), 2),
        (e(LISTEN, "CLOSED_end"), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(edges, expected, "{dot}");
    // Median times on every edge out of a state the socket was seen entering.
    for l in dot.lines().filter(|l| l.contains("\"ESTABLISHED\" -> ")) {
        assert!(l.contains("ms\""), "no median on {l}");
    }
    // The classic layout: client path left, server path right.
    assert!(
        dot.contains("{ rank=same; r1; \"SYN_SENT\"; \"LISTEN\"; }"),
        "{dot}"
    );
    assert!(
        dot.contains("{ rank=same; r4; \"FIN_WAIT1\"; \"CLOSE_WAIT\"; }"),
        "{dot}"
    );

    // `cargo xtask setup` installs graphviz for the tests, so the SVG is
    // always checked here (without `dot`, tcpstate writes only the .dot file;
    // render::diagram's unit tests cover that).
    assert!(
        Command::new("dot").arg("-V").output().is_ok(),
        "graphviz's `dot` is missing: run `cargo xtask setup`"
    );
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.contains("<svg") && svg.contains("ESTABLISHED"), "{svg}");
    std::fs::remove_dir_all(&dir).unwrap();
}
