//! Issue 11, "say why": each way a connection ends, made for real in its own
//! namespace and traced by the real binary; the row into CLOSE must carry the
//! reason (and the kernel's reset reason) the kernel gave.
//!
//! Ports 23201-23220 are this file's alone. Peers are short python3 programs
//! (socket options the `tcppeer` commands do not have) or `tcppeer` (the seed
//! article's SIGINT cases).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tcpstate_tests::{Netns, Peer, READY_LINE, READY_TIMEOUT, tracer_bin};

/// A running `tcpstate --netns NS ARGS...` collecting its stdout lines.
struct Run {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Run {
    fn start(ns: &Netns, args: &[&str]) -> Run {
        let mut child = Command::new(tracer_bin())
            .arg("--netns")
            .arg(ns.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcpstate (build it, or set TCPSTATE_BIN)");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let out = child.stdout.take().unwrap();
        let reader = thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                sink.lock().unwrap().push(l);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        thread::spawn(move || {
            for l in BufReader::new(err).lines() {
                let Ok(l) = l else { break };
                let mut s = err_sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        while !stderr.lock().unwrap().contains(READY_LINE) {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("tcpstate exited ({st}): {}", stderr.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "tcpstate not ready");
            thread::sleep(Duration::from_millis(5));
        }
        Run {
            child,
            lines,
            stderr,
            reader: Some(reader),
        }
    }

    /// Waits (up to `secs`) until `cond` holds on the lines so far.
    fn wait(&self, what: &str, secs: u64, cond: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if cond(&self.lines.lock().unwrap()) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}:\n{}",
                    self.lines.lock().unwrap().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGINT (drains, releases held rows, exits 0); all stdout lines.
    fn stop(mut self) -> Vec<String> {
        // SAFETY: kill(2) on the child this test started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let st = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        let lines = self.lines.lock().unwrap().clone();
        if std::env::var_os("TCPSTATE_TEST_DUMP").is_some() {
            eprintln!("{}", lines.join("\n"));
        }
        assert!(
            st.success(),
            "tcpstate: {st}\n{}",
            self.stderr.lock().unwrap()
        );
        lines
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

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

fn python(ns: &Netns, script: &str) -> String {
    ns.exec(&["python3", "-c", script])
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
    let t = Run::start(&ns, &["--json"]);
    let out = python(
        &ns,
        "import socket\n\
         s = socket.socket()\n\
         try:\n    s.connect(('127.0.0.1', 23201))\n\
         except OSError as e:\n    print('errno', e.errno)\n",
    );
    assert_eq!(out.trim(), "errno 111", "ECONNREFUSED expected");
    t.wait("the refused row", 5, |l| closes(l) >= 1);
    let ev = json(&t.stop());
    assert_eq!(
        rows(&ev, 0, 23201),
        ["CLOSE->SYN_SENT", "SYN_SENT->CLOSE refused"],
        "{ev:#?}"
    );
    let c = close_row(&ev, 23201);
    assert_eq!(c["data_retransmits"], 0);
    assert!(c.get("retransmits").is_none(), "no SYN was resent: {c}");
}

#[test]
fn syn_dropped_connect_times_out_with_its_syn_retransmits() {
    let ns = Netns::new();
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_syn_retries=1"]);
    ns.nft(
        "table inet why {
            chain input {
                type filter hook input priority 0; policy accept;
                tcp dport 23202 tcp flags & (syn|ack) == syn counter drop
            }
        }",
    );
    let t = Run::start(&ns, &["--json"]);
    let out = python(
        &ns,
        "import socket\n\
         s = socket.socket()\n\
         try:\n    s.connect(('127.0.0.1', 23202))\n\
         except OSError as e:\n    print('errno', e.errno)\n",
    );
    assert_eq!(out.trim(), "errno 110", "ETIMEDOUT expected");
    t.wait("the timed-out row", 5, |l| closes(l) >= 1);
    let ev = json(&t.stop());
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
    assert_eq!(
        rows(&ev, 0, 23202),
        ["CLOSE->SYN_SENT", "SYN_SENT->CLOSE connect-timeout"],
        "{ev:#?}"
    );
    let c = close_row(&ev, 23202);
    assert_eq!(c["retransmits"], sent - 1, "SYN retransmits: {c}\n{nft}");
    let ms = c["ms"].as_f64().unwrap();
    assert!(ms > 1900.0, "the connect waited for its retransmits: {c}");
}

#[test]
fn close_with_unread_data_sends_a_reset_abort_on_close() {
    let ns = Netns::new();
    let t = Run::start(&ns, &["--json"]);
    let out = python(
        &ns,
        "import socket, time\n\
         l = socket.socket(); l.bind(('127.0.0.1', 23203)); l.listen()\n\
         c = socket.create_connection(('127.0.0.1', 23203)); a, _ = l.accept()\n\
         print('port', c.getsockname()[1])\n\
         c.send(b'unread'); time.sleep(0.1)\n\
         a.close(); time.sleep(0.1)\n\
         try:\n    c.recv(10)\n\
         except OSError as e:\n    print('errno', e.errno)\n\
         c.close(); l.close()\n",
    );
    assert!(out.contains("errno 104"), "ECONNRESET at the client: {out}");
    let port = port_of(&out);
    t.wait("both ends closed", 5, |l| closes(l) >= 3);
    let ev = json(&t.stop());
    assert_eq!(
        rows(&ev, 23203, port),
        [
            "LISTEN->SYN_RECV",
            "SYN_RECV->ESTABLISHED",
            "ESTABLISHED->CLOSE reset-sent/TCP_ABORT_ON_CLOSE"
        ],
        "server end\n{ev:#?}"
    );
    assert_eq!(
        rows(&ev, port, 23203),
        [
            "CLOSE->SYN_SENT",
            "SYN_SENT->ESTABLISHED",
            "ESTABLISHED->CLOSE reset-received"
        ],
        "client end\n{ev:#?}"
    );
}

/// SO_LINGER {1, 0} then close(): an abortive close. Linux sends the reset
/// from tcp_disconnect(), whose `sk_rst_reason` is TCP_STATE (6.10 and
/// later); TCP_ABORT_ON_LINGER is the reason of a FIN_WAIT2 orphan dropped
/// because TCP_LINGER2 is negative, not of SO_LINGER. The row says what the
/// kernel said.
#[test]
fn so_linger_zero_aborts_with_a_reset() {
    let ns = Netns::new();
    let t = Run::start(&ns, &["--json"]);
    let out = python(
        &ns,
        "import socket, struct, time\n\
         l = socket.socket(); l.bind(('127.0.0.1', 23204)); l.listen()\n\
         c = socket.create_connection(('127.0.0.1', 23204)); a, _ = l.accept()\n\
         print('port', c.getsockname()[1])\n\
         c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n\
         c.close(); time.sleep(0.1)\n\
         try:\n    a.recv(10)\n\
         except OSError as e:\n    print('errno', e.errno)\n\
         a.close(); l.close()\n",
    );
    assert!(out.contains("errno 104"), "ECONNRESET at the server: {out}");
    let port = port_of(&out);
    t.wait("both ends closed", 5, |l| closes(l) >= 3);
    let ev = json(&t.stop());
    let client = rows(&ev, port, 23204);
    assert_eq!(client.len(), 3, "{client:?}");
    assert_eq!(&client[..2], ["CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED"]);
    let c = close_row(&ev, 23204);
    assert_eq!(c["reason"], "reset-sent", "{c}");
    let names = std::fs::read_to_string("/sys/kernel/tracing/events/tcp/tcp_send_reset/format")
        .unwrap_or_default();
    if names.contains("TCP_STATE") {
        assert_eq!(c["reset_reason"], "TCP_STATE", "{c}");
    }
    assert_eq!(
        rows(&ev, 23204, port),
        [
            "LISTEN->SYN_RECV",
            "SYN_RECV->ESTABLISHED",
            "ESTABLISHED->CLOSE reset-received"
        ],
        "server end\n{ev:#?}"
    );
}

#[test]
fn keepalive_timeout_when_the_peer_goes_silent() {
    let ns = Netns::new();
    let t = Run::start(&ns, &["--json"]);
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
         try:\n    c.recv(10)\n\
         except OSError as e:\n    print('errno', e.errno)\n\
         a.close(); l.close()\n",
    );
    assert!(out.contains("errno 110"), "ETIMEDOUT at the client: {out}");
    let port = port_of(&out);
    t.wait("the client's close", 5, |l| closes(l) >= 1);
    let ev = json(&t.stop());
    assert_eq!(
        rows(&ev, port, 23205),
        [
            "CLOSE->SYN_SENT",
            "SYN_SENT->ESTABLISHED",
            "ESTABLISHED->CLOSE keepalive-timeout"
        ],
        "client end\n{ev:#?}"
    );
}

#[test]
fn orphan_fin_wait2_times_out_after_tcp_fin_timeout() {
    let ns = Netns::new();
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_fin_timeout=1"]);
    let t = Run::start(&ns, &["--json"]);
    // The client closes; the server never does while the client's orphan
    // waits, so the orphan FIN_WAIT2 runs out of tcp_fin_timeout.
    let out = python(
        &ns,
        "import socket, time\n\
         l = socket.socket(); l.bind(('127.0.0.1', 23206)); l.listen()\n\
         c = socket.create_connection(('127.0.0.1', 23206)); a, _ = l.accept()\n\
         print('port', c.getsockname()[1])\n\
         c.close(); time.sleep(2.5)\n\
         a.close(); l.close()\n",
    );
    let port = port_of(&out);
    t.wait("the server end's close", 5, |l| closes(l) >= 4);
    let ev = json(&t.stop());
    assert_eq!(
        rows(&ev, port, 23206),
        [
            "CLOSE->SYN_SENT",
            "SYN_SENT->ESTABLISHED",
            "ESTABLISHED->FIN_WAIT1",
            "FIN_WAIT1->FIN_WAIT2",
            "FIN_WAIT2->CLOSE active-close"
        ],
        "client end\n{ev:#?}"
    );
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
    assert_eq!(
        rows(&ev, 23206, port),
        [
            "LISTEN->SYN_RECV",
            "SYN_RECV->ESTABLISHED",
            "ESTABLISHED->CLOSE_WAIT",
            "CLOSE_WAIT->LAST_ACK",
            "LAST_ACK->CLOSE reset-received"
        ],
        "server end\n{ev:#?}"
    );
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

/// The seed article, server Ctrl-C while a client is connected: the server
/// (dead) closed first, the client waits in CLOSE_WAIT for its own process.
#[test]
fn explain_sigint_to_the_server() {
    let ns = Netns::new();
    let t = Run::start(&ns, &["--explain"]);
    let mut server = Peer::server(&ns, "0.0.0.0:23207");
    let mut client = Peer::client(&ns, "127.0.0.1:23207");
    let conn = server.accept();
    server.sigint();
    let cport = client.local.port().to_string();
    t.wait("the client's CLOSE_WAIT", 5, |l| {
        l.iter()
            .any(|l| l.contains("CLOSE_WAIT") && l.contains(&cport))
    });
    // The seed case proper: the dead server's socket is an orphan in
    // FIN_WAIT2 before the client closes (otherwise the client's FIN can
    // reach it first and it goes straight to TIME_WAIT).
    t.wait("the server's orphan", 5, |l| {
        l.iter().any(|l| l.contains("timewait socket, orphan"))
    });
    client.close();
    t.wait("the client's close", 5, |l| {
        l.iter().any(|l| l.contains("LAST_ACK    -> CLOSE"))
    });
    let lines = t.stop();
    let (s, c) = (server.pid.to_string(), client.pid.to_string());
    let sp = conn.local.port().to_string();
    let cp = client.local.port().to_string();
    assert_eq!(
        sentence(&lines, &[&s, "ESTABLISHED -> FIN_WAIT1"]),
        format!("tcppeer, pid {s} closed first; its FIN is on the way to the peer"),
    );
    assert_eq!(
        sentence(&lines, &[&c, "ESTABLISHED -> CLOSE_WAIT"]),
        format!(
            "the peer closed first; this end waits for its application (tcppeer, pid {c}) to call close()"
        ),
    );
    assert!(
        sentence(&lines, &[&s, &sp, "FIN_WAIT2   -> CLOSE"])
            .contains(&format!("tcppeer, pid {s} no longer holds the socket")),
        "{}",
        lines.join("\n")
    );
    assert!(
        sentence(&lines, &[&c, &cp, "CLOSE_WAIT  -> LAST_ACK"])
            .starts_with(&format!("tcppeer, pid {c} closed its end too")),
        "{}",
        lines.join("\n")
    );
    let killed = lines
        .iter()
        .find(|l| l.contains(&sp) && l.contains("FIN_WAIT2   -> CLOSE"))
        .unwrap();
    assert!(killed.ends_with("closed, this end first"), "{killed}");
    let last = lines
        .iter()
        .find(|l| l.contains(&cp) && l.contains("LAST_ACK    -> CLOSE"))
        .unwrap();
    assert!(last.ends_with("closed, peer first"), "{last}");
}

/// The mirror case: client Ctrl-C; the server's process must close.
#[test]
fn explain_sigint_to_the_client() {
    let ns = Netns::new();
    let t = Run::start(&ns, &["--explain"]);
    let mut server = Peer::server(&ns, "0.0.0.0:23208");
    let mut client = Peer::client(&ns, "127.0.0.1:23208");
    let conn = server.accept();
    client.sigint();
    let sp = conn.peer.port().to_string();
    t.wait("the server end's CLOSE_WAIT", 5, |l| {
        l.iter()
            .any(|l| l.contains("CLOSE_WAIT") && l.contains(&sp))
    });
    // The dead client's socket is an orphan in FIN_WAIT2 before the server
    // closes (see explain_sigint_to_the_server).
    t.wait("the client's orphan", 5, |l| {
        l.iter().any(|l| l.contains("timewait socket, orphan"))
    });
    server.close();
    t.wait("the server end's close", 5, |l| {
        l.iter().any(|l| l.contains("LAST_ACK    -> CLOSE"))
    });
    let lines = t.stop();
    let (s, c) = (server.pid.to_string(), client.pid.to_string());
    assert_eq!(
        sentence(&lines, &[&c, "ESTABLISHED -> FIN_WAIT1"]),
        format!("tcppeer, pid {c} closed first; its FIN is on the way to the peer"),
    );
    assert_eq!(
        sentence(&lines, &[&s, "ESTABLISHED -> CLOSE_WAIT"]),
        format!(
            "the peer closed first; this end waits for its application (tcppeer, pid {s}) to call close()"
        ),
    );
    assert!(
        sentence(&lines, &[&c, "FIN_WAIT2   -> CLOSE"])
            .contains(&format!("tcppeer, pid {c} no longer holds the socket")),
        "{}",
        lines.join("\n")
    );
    assert!(
        sentence(&lines, &[&s, "CLOSE_WAIT  -> LAST_ACK"])
            .starts_with(&format!("tcppeer, pid {s} closed its end too")),
        "{}",
        lines.join("\n")
    );
}
