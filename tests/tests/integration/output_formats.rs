//! Output formats on real traffic: JSON Lines typed as documented
//! in docs/json.md, CSV with its header, the text TIME column (`-t`, `-T`)
//! and colour. The report outputs (`--lifecycle`, `--trigger`, `--summary`,
//! `--diagram`) are in `output_reports.rs`.
//!
//! The checks use the harness's [`RawTracer`], which keeps stdout lines as
//! printed.

use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use tcpstate_tests::{Accepted, Netns, Peer, RawTracer, Trace, scenario};

pub(crate) const PORT: u16 = 10050;
pub(crate) const ADDR: &str = "127.0.0.1:10050";

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// One connection, the client closes first, then the listener closes:
/// 12 transitions (client and server end 5 each, the listener 2). Returns
/// the client and the accepted end.
pub(crate) fn client_closes_first(ns: &Netns) -> (Peer, Accepted) {
    let mut server = Peer::server(ns, ADDR);
    let mut client = Peer::client(ns, ADDR);
    let conn = server.accept();
    client.cmd("send 1000");
    server.expect_reply("recv 1000", "received 1000");
    scenario::client_closes_first(&mut server, &mut client);
    server.expect_reply("close-listener", "listener-closed");
    (client, conn)
}

/// What `tcpstate --netns NS <args>` printed for [`client_closes_first`]
/// in a fresh namespace, stopped once 3 lines (the three sockets' closes)
/// contain `close`: the namespace, the stdout lines, the client and the
/// accepted end.
pub(crate) fn printed_for_one_connection(
    args: &[&str],
    close: &str,
) -> (Netns, Vec<String>, Peer, Accepted) {
    let ns = Netns::new();
    let tracer = RawTracer::start(&ns, args);
    let (client, conn) = client_closes_first(&ns);
    tracer.wait_for(close, 3);
    let (lines, _) = tracer.stop();
    (ns, lines, client, conn)
}

/// Two connections on one listener: the first closed by the client, the
/// second by the server.
pub(crate) fn both_close_orders(ns: &Netns) -> (Peer, Peer) {
    let mut server = Peer::server(ns, ADDR);
    let mut a = Peer::client(ns, ADDR);
    server.accept();
    scenario::client_closes_first(&mut server, &mut a);
    let mut b = Peer::client(ns, ADDR);
    server.accept();
    scenario::server_closes_first(&mut server, &mut b);
    server.expect_reply("close-listener", "listener-closed");
    (a, b)
}

/// The records of `type` among the harness's non-event lines.
pub(crate) fn records(t: &Trace, kind: &str) -> Vec<Value> {
    t.other_sources
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["type"] == kind)
        .collect()
}

pub(crate) fn path_states(rec: &Value) -> Vec<String> {
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

/// Every key of an event record and the types it may have (docs/json.md),
/// keys of the same types together.
const EVENT_SCHEMA: &[(&[&str], &[&str])] = &[
    (
        &["schema", "time_ns", "netns", "cpu_pid", "lport", "rport"],
        &["integer"],
    ),
    (
        &[
            "type", "time", "source", "skaddr", "family", "cpu_comm", "laddr", "raddr", "oldstate",
            "newstate", "kind",
        ],
        &["string"],
    ),
    (&["pid"], &["integer", "null"]),
    (
        &["comm", "note", "cgroup", "container_id", "pod_uid"],
        &["string", "null"],
    ),
    (&["ms"], &["number", "integer", "null"]),
    (&["replayed"], &["boolean"]),
    (&["peer_fin"], &["boolean", "null"]),
];
/// Each key of [`EVENT_SCHEMA`] with its types.
fn event_schema() -> impl Iterator<Item = (&'static str, &'static [&'static str])> {
    EVENT_SCHEMA
        .iter()
        .flat_map(|&(keys, types)| keys.iter().map(move |&k| (k, types)))
}

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
    let (_, lines, client, conn) =
        printed_for_one_connection(&["--json"], "\"newstate\":\"CLOSE\"");

    let mut transitions = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let obj = v.as_object().unwrap();
        for (key, types) in event_schema() {
            let Some(val) = obj.get(key) else {
                panic!("missing {key}: {line}")
            };
            assert!(
                types.contains(&type_of(val)),
                "{key} is {} ({val}), documented as {types:?}: {line}",
                type_of(val)
            );
        }
        for (key, val) in obj {
            let documented = event_schema().any(|(k, _)| k == key)
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
    let (ns, lines, client, _conn) = printed_for_one_connection(&["--csv"], ",CLOSE,");

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
