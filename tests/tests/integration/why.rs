//! Saying why a connection ended: each way a connection ends, made for real
//! in its own namespace and traced by the real binary; the row into CLOSE
//! must carry the reason (and the kernel's reset reason) the kernel gave.
//!
//! Ports 23201-23220 are this file's alone. Peers are short python3 programs
//! (socket options the `tcppeer` commands do not have) or `tcppeer` (a server
//! or client killed with Ctrl-C while connected).

use std::time::Duration;

use serde_json::Value;
use tcpstate_tests::scenario::Side;
use tcpstate_tests::{Netns, Peer, RawTracer};

/// A client's rows up to an established connection.
const CONNECTED: &[&str] = &["CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED"];
/// A server end's rows up to an established connection.
const ACCEPTED: &[&str] = &["LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED"];

/// How long a row may take to show up.
const WAIT: Duration = Duration::from_secs(5);

fn json(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The tracepoint rows of the socket with local port `lport` and remote port
/// `rport` (0: any), as `OLD->NEW reason[/reset_reason]`; a client's first
/// row (local port still 0) is found by its socket address.
fn rows(events: &[Value], lport: u16, rport: u16) -> Vec<String> {
    let tp = || {
        events
            .iter()
            .filter(|e| e["type"] == "event" && e["source"] == "tracepoint")
    };
    let skaddrs: Vec<&Value> = tp()
        .filter(|e| (lport == 0 || e["lport"] == lport) && (rport == 0 || e["rport"] == rport))
        .map(|e| &e["skaddr"])
        .collect();
    tp().filter(|e| skaddrs.contains(&&e["skaddr"]))
        .filter(|e| e["lport"] == 0 || lport == 0 || e["lport"] == lport)
        .map(label)
        .collect()
}

fn label(e: &Value) -> String {
    let mut s = format!(
        "{}->{}",
        e["oldstate"].as_str().unwrap(),
        e["newstate"].as_str().unwrap()
    );
    if let Some(r) = e["reason"].as_str() {
        s.push(' ');
        s.push_str(r);
    }
    if let Some(r) = e["reset_reason"].as_str() {
        s.push('/');
        s.push_str(r);
    }
    s
}

/// The row into CLOSE whose remote port is `rport`.
fn close_row(events: &[Value], rport: u16) -> &Value {
    events
        .iter()
        .find(|e| e["source"] == "tracepoint" && e["newstate"] == "CLOSE" && e["rport"] == rport)
        .unwrap_or_else(|| panic!("no row into CLOSE with rport {rport}"))
}

fn closes(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| l.contains("\"newstate\":\"CLOSE\"") && l.contains("\"reason\""))
        .count()
}

/// Stops `t` once it has printed `n` rows into CLOSE that carry a reason;
/// returns every line it printed, parsed.
fn events_after_closes(t: RawTracer, what: &str, n: usize) -> Vec<Value> {
    t.wait_until(what, WAIT, |l| closes(l) >= n);
    json(&t.stop().0)
}

/// Asserts that the socket `lport` -> `rport` made exactly the rows of
/// `expected`, one part after the other (see [`rows`]).
fn assert_rows(ev: &[Value], what: &str, (lport, rport): (u16, u16), expected: &[&[&str]]) {
    assert_eq!(rows(ev, lport, rport), expected.concat(), "{what}\n{ev:#?}");
}

/// A python3 client connecting to 127.0.0.1:`port` in `ns`; prints
/// `errno N` when the connect fails.
fn python_connect(ns: &Netns, port: u16) -> String {
    python(
        ns,
        &format!(
            "import socket\n\
             s = socket.socket()\n\
             errno_of(lambda: s.connect(('127.0.0.1', {port})))\n"
        ),
    )
}

fn python(ns: &Netns, script: &str) -> String {
    // errno_of(f): runs f and prints the errno of the OSError it raises.
    let prelude = "def errno_of(f):\n    try:\n        f()\n    except OSError as e:\n        print('errno', e.errno)\n";
    ns.exec(&["python3", "-c", &format!("{prelude}{script}")])
}

/// A tracer (`--json`, in `ns`, holding it), then [`python_pair`]: the
/// tracer still running, the script's output and the client's port.
fn traced_pair(ns: &Netns, port: u16, steps: &str) -> (RawTracer, String, u16) {
    let t = RawTracer::start(ns, &["--json"]);
    let (out, client) = python_pair(ns, port, steps);
    (t, out, client)
}

/// Runs a python3 program in `ns`: a listener `l` on 127.0.0.1:`port`, a
/// client `c` connected to it and its accepted end `a`, then `steps`.
/// Returns what it printed and the client's local port.
fn python_pair(ns: &Netns, port: u16, steps: &str) -> (String, u16) {
    let out = python(
        ns,
        &format!(
            "import socket, struct, time\n\
             l = socket.socket(); l.bind(('127.0.0.1', {port})); l.listen()\n\
             c = socket.create_connection(('127.0.0.1', {port})); a, _ = l.accept()\n\
             print('port', c.getsockname()[1], flush=True)\n\
             {steps}"
        ),
    );
    let client_port = port_of(&out);
    (out, client_port)
}

/// The client's local port, as the python peer prints it (`port N`).
fn port_of(out: &str) -> u16 {
    out.lines()
        .find_map(|l| l.strip_prefix("port "))
        .unwrap_or_else(|| panic!("no port line in {out:?}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn connect_to_a_port_with_no_listener_is_refused() {
    let ns = Netns::new();
    let t = RawTracer::start(&ns, &["--json"]);
    let out = python_connect(&ns, 23201);
    assert_eq!(out.trim(), "errno 111", "ECONNREFUSED expected");
    let ev = events_after_closes(t, "the refused row", 1);
    let client_end: [&[&str]; 1] = [&["CLOSE->SYN_SENT", "SYN_SENT->CLOSE refused"]];
    assert_rows(&ev, "client end", (0, 23201), &client_end);
    let c = close_row(&ev, 23201);
    assert_eq!(c["data_retransmits"], 0);
    assert!(c.get("retransmits").is_none(), "no SYN was resent: {c}");
}

#[test]
fn syn_dropped_connect_times_out_with_its_syn_retransmits() {
    let ns = Netns::new();
    ns.sysctl(&["net.ipv4.tcp_syn_retries=1"]);
    ns.nft(
        "table inet why {
            chain input {
                type filter hook input priority 0; policy accept;
                tcp dport 23202 tcp flags & (syn|ack) == syn counter drop
            }
        }",
    );
    let t = RawTracer::start(&ns, &["--json"]);
    let out = python_connect(&ns, 23202);
    assert_eq!(out.trim(), "errno 110", "ETIMEDOUT expected");
    let ev = events_after_closes(t, "the timed-out row", 1);
    // Every SYN the kernel sent was dropped and counted: the first and its
    // retransmits (how many and when depends on tcp_syn_retries and, on
    // newer kernels, tcp_syn_linear_timeouts).
    let nft = ns.exec(&["nft", "list", "table", "inet", "why"]);
    let sent: u64 = nft
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {nft}"));
    assert!(sent >= 2, "at least one SYN retransmit: {nft}");
    let client_end: [&[&str]; 1] = [&["CLOSE->SYN_SENT", "SYN_SENT->CLOSE connect-timeout"]];
    assert_rows(&ev, "client end", (0, 23202), &client_end);
    let c = close_row(&ev, 23202);
    assert_eq!(c["retransmits"], sent - 1, "SYN retransmits: {c}\n{nft}");
    let ms = c["ms"].as_f64().unwrap();
    assert!(ms > 1900.0, "the connect waited for its retransmits: {c}");
}

#[test]
fn close_with_unread_data_sends_a_reset_abort_on_close() {
    let (t, out, port) = traced_pair(
        &Netns::new(),
        23203,
        "\
             c.send(b'unread'); time.sleep(0.1)\n\
             a.close(); time.sleep(0.1)\n\
             errno_of(lambda: c.recv(10))\n\
             c.close(); l.close()\n",
    );
    assert!(out.contains("errno 104"), "ECONNRESET at the client: {out}");
    let ev = events_after_closes(t, "both ends closed", 3);
    // The reason comes from tcp:tcp_send_reset's `reason` (Linux 6.10 and later); an older
    // kernel (Debian 12's 6.1) has none: then "reset sent" alone, never a wrong reason.
    let format = std::fs::read_to_string("/sys/kernel/tracing/events/tcp/tcp_send_reset/format")
        .unwrap_or_default();
    let close: &[&str] = if format.contains("reason") {
        &["ESTABLISHED->CLOSE reset-sent/TCP_ABORT_ON_CLOSE"]
    } else {
        &["ESTABLISHED->CLOSE reset-sent"]
    };
    let server_end = [ACCEPTED, close];
    assert_rows(&ev, "server end", (23203, port), &server_end);
    let client_end = [CONNECTED, &["ESTABLISHED->CLOSE reset-received"]];
    assert_rows(&ev, "client end", (port, 23203), &client_end);
}

/// SO_LINGER {1, 0} then close(): an abortive close. Linux sends the reset
/// from tcp_disconnect(), whose `sk_rst_reason` is TCP_STATE (6.10 and
/// later); TCP_ABORT_ON_LINGER is the reason of a FIN_WAIT2 orphan dropped
/// because TCP_LINGER2 is negative, not of SO_LINGER. The row says what the
/// kernel said.
#[test]
fn so_linger_zero_aborts_with_a_reset() {
    let (t, out, port) = traced_pair(
        &Netns::new(),
        23204,
        "\
             c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n\
             c.close(); time.sleep(0.1)\n\
             errno_of(lambda: a.recv(10))\n\
             a.close(); l.close()\n",
    );
    assert!(out.contains("errno 104"), "ECONNRESET at the server: {out}");
    let ev = events_after_closes(t, "both ends closed", 3);
    let client = rows(&ev, port, 23204);
    assert_eq!(client.len(), 3, "{client:?}");
    assert_eq!(&client[..2], CONNECTED);
    let c = close_row(&ev, 23204);
    assert_eq!(c["reason"], "reset-sent", "{c}");
    let names = std::fs::read_to_string("/sys/kernel/tracing/events/tcp/tcp_send_reset/format")
        .unwrap_or_default();
    if names.contains("TCP_STATE") {
        assert_eq!(c["reset_reason"], "TCP_STATE", "{c}");
    }
    let server_end = [ACCEPTED, &["ESTABLISHED->CLOSE reset-received"]];
    assert_rows(&ev, "server end", (23204, port), &server_end);
}

#[test]
fn keepalive_timeout_when_the_peer_goes_silent() {
    let ns = Netns::new();
    let t = RawTracer::start(&ns, &["--json"]);
    // Once connected, nftables drops everything the server sends: the
    // client's keepalive probe goes unanswered and it gives up.
    let out = python(
        &ns,
        "import socket, subprocess, time\n\
         l = socket.socket(); l.bind(('127.0.0.1', 23205)); l.listen()\n\
         c = socket.socket()\n\
         c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)\n\
         c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)\n\
         c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)\n\
         c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 1)\n\
         c.connect(('127.0.0.1', 23205)); a, _ = l.accept()\n\
         print('port', c.getsockname()[1], flush=True)\n\
         subprocess.run(['nft', 'add table inet ka; add chain inet ka inp { type filter hook input priority 0; }; add rule inet ka inp tcp sport 23205 drop'], check=True)\n\
         c.settimeout(10)\n\
         errno_of(lambda: c.recv(10))\n\
         a.close(); l.close()\n",
    );
    assert!(out.contains("errno 110"), "ETIMEDOUT at the client: {out}");
    let port = port_of(&out);
    let ev = events_after_closes(t, "the client's close", 1);
    let client_end = [CONNECTED, &["ESTABLISHED->CLOSE keepalive-timeout"]];
    assert_rows(&ev, "client end", (port, 23205), &client_end);
}

#[test]
fn orphan_fin_wait2_times_out_after_tcp_fin_timeout() {
    let ns = Netns::new();
    ns.sysctl(&["net.ipv4.tcp_fin_timeout=1"]);
    // The client closes; the server never does while the client's orphan
    // waits, so the orphan FIN_WAIT2 runs out of tcp_fin_timeout.
    let (t, _, port) = traced_pair(
        &ns,
        23206,
        "\
             c.close(); time.sleep(2.5)\n\
             a.close(); l.close()\n",
    );
    let ev = events_after_closes(t, "the server end's close", 4);
    let client_end = [
        CONNECTED,
        &[
            "ESTABLISHED->FIN_WAIT1",
            "FIN_WAIT1->FIN_WAIT2",
            "FIN_WAIT2->CLOSE active-close",
        ],
    ];
    assert_rows(&ev, "client end", (port, 23206), &client_end);
    // The timewait socket that took over: an orphan FIN_WAIT2, then its end.
    let tw: Vec<String> = ev
        .iter()
        .filter(|e| e["source"] != "tracepoint" && e["lport"] == port && e["rport"] == 23206)
        .map(|e| format!("{} {}", e["note"].as_str().unwrap_or("-"), label(e)))
        .collect();
    assert_eq!(tw.len(), 2, "{tw:?}\n{ev:#?}");
    assert!(tw[0].ends_with("FIN_WAIT2->FIN_WAIT2"), "{tw:?}");
    assert!(tw[1].ends_with("FIN_WAIT2->CLOSE orphan-timeout"), "{tw:?}");
    // The server end closes after the orphan is gone: its FIN is answered
    // with a reset.
    let server_end = [
        ACCEPTED,
        &[
            "ESTABLISHED->CLOSE_WAIT",
            "CLOSE_WAIT->LAST_ACK",
            "LAST_ACK->CLOSE reset-received",
        ],
    ];
    assert_rows(&ev, "server end", (23206, port), &server_end);
}

/// The `    # sentence` after the text row that contains every one of `row`.
fn sentence<'a>(lines: &'a [String], row: &[&str]) -> &'a str {
    let i = lines
        .iter()
        .position(|l| !l.starts_with("    #") && row.iter().all(|p| l.contains(p)))
        .unwrap_or_else(|| panic!("no row with {row:?}:\n{}", lines.join("\n")));
    let s = lines.get(i + 1).map(String::as_str).unwrap_or("");
    s.strip_prefix("    # ")
        .unwrap_or_else(|| panic!("row {:?} has no sentence: {s:?}", lines[i]))
}

/// What `--explain` printed around a Ctrl-C to one end of a connection, and
/// the pid and local port of the killed end and of the other.
struct Explained {
    lines: Vec<String>,
    killed: (String, String),
    other: (String, String),
}

/// Ctrl-C to one end (`killed`) of a connection on `port` under
/// `tcpstate --explain`: the killed end closed first, the other waits in
/// CLOSE_WAIT until its own process closes.
fn explain_sigint(port: u16, killed: Side) -> Explained {
    let ns = Netns::new();
    let t = RawTracer::start(&ns, &["--explain"]);
    let mut server = Peer::server(&ns, &format!("0.0.0.0:{port}"));
    let mut client = Peer::client(&ns, &format!("127.0.0.1:{port}"));
    let conn = server.accept();
    let (dead, other, dead_port, other_port) = match killed {
        Side::Server => (&mut server, &mut client, conn.local, conn.peer),
        Side::Client => (&mut client, &mut server, conn.peer, conn.local),
    };
    dead.sigint();
    let cport = conn.peer.port().to_string();
    t.wait_until("the other end's CLOSE_WAIT", WAIT, |l| {
        l.iter()
            .any(|l| l.contains("CLOSE_WAIT") && l.contains(&cport))
    });
    // The dead end's socket is an orphan in FIN_WAIT2 before the other end
    // closes (otherwise the other's FIN can reach it first and it goes
    // straight to TIME_WAIT).
    t.wait_until("the killed end's orphan", WAIT, |l| {
        l.iter().any(|l| l.contains("timewait socket, orphan"))
    });
    other.close();
    t.wait_until("the other end's close", WAIT, |l| {
        l.iter().any(|l| l.contains("LAST_ACK    -> CLOSE"))
    });
    Explained {
        killed: (dead.pid.to_string(), dead_port.port().to_string()),
        other: (other.pid.to_string(), other_port.port().to_string()),
        lines: t.stop().0,
    }
}

impl Explained {
    /// The sentences of a Ctrl-C: the killed end closed first and no
    /// process holds its socket any more; the other end waited for its own
    /// process, which then closed too.
    fn assert_sentences(&self) {
        let lines = &self.lines;
        let ((k, kp), (o, op)) = (&self.killed, &self.other);
        assert_eq!(
            sentence(lines, &[k, "ESTABLISHED -> FIN_WAIT1"]),
            format!("tcppeer, pid {k} closed first; its FIN is on the way to the peer"),
        );
        assert_eq!(
            sentence(lines, &[o, "ESTABLISHED -> CLOSE_WAIT"]),
            format!(
                "the peer closed first; this end waits for its application (tcppeer, pid {o}) to call close()"
            ),
        );
        assert!(
            sentence(lines, &[k, kp, "FIN_WAIT2   -> CLOSE"])
                .contains(&format!("tcppeer, pid {k} no longer holds the socket")),
            "{}",
            lines.join("\n")
        );
        assert!(
            sentence(lines, &[o, op, "CLOSE_WAIT  -> LAST_ACK"])
                .starts_with(&format!("tcppeer, pid {o} closed its end too")),
            "{}",
            lines.join("\n")
        );
    }

    /// The text row of `port`'s socket that contains `transition`.
    fn row(&self, port: &str, transition: &str) -> &str {
        self.lines
            .iter()
            .find(|l| l.contains(port) && l.contains(transition))
            .unwrap_or_else(|| panic!("no {transition} row of port {port}"))
    }
}

/// Server Ctrl-C while a client is connected: the server (dead) closed
/// first, the client waits in CLOSE_WAIT for its own process.
#[test]
fn explain_sigint_to_the_server() {
    let e = explain_sigint(23207, Side::Server);
    e.assert_sentences();
    let killed = e.row(&e.killed.1, "FIN_WAIT2   -> CLOSE");
    assert!(killed.ends_with("closed, this end first"), "{killed}");
    let last = e.row(&e.other.1, "LAST_ACK    -> CLOSE");
    assert!(last.ends_with("closed, peer first"), "{last}");
}

/// The mirror case: client Ctrl-C; the server's process must close.
#[test]
fn explain_sigint_to_the_client() {
    explain_sigint(23208, Side::Client).assert_sentences();
}
