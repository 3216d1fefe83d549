//! The report outputs on real traffic: `--lifecycle` (JSON and text),
//! `--trigger`, `--summary` and `--diagram` of known scenarios. The
//! scenarios and record helpers are those of `output_formats.rs`.
//!
//! The JSON records go through the harness's [`Tracer`] (which always passes
//! `--json`; lifecycle and summary records land in `other_sources`), the
//! text ones through [`RawTracer`], which keeps stdout lines as printed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use tcpstate_tests::states::*;
use tcpstate_tests::{Netns, Peer, RawTracer, Tracer, scenario};

use crate::output_formats::{
    ADDR, PORT, both_close_orders, client_closes_first, path_states, printed_for_one_connection,
    records,
};

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
    let (_, lines, client, _) = printed_for_one_connection(&["--lifecycle", "-t"], "> CLOSE");
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
    scenario::client_closes_first(&mut server, &mut plain);
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
    let t = tracer.stop_after_closes(5);
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
