//! `--top` in a real terminal: tmux (80x24) runs `tcpstate --top --netns`
//! on a namespace this test fills with what the view is for: a listener with
//! backlog 4 that never calls accept() and 20 clients (accept queue full,
//! drops counted), 5 connections a process leaves in CLOSE_WAIT, 3,000
//! TIME_WAITs to one destination with a small `ip_local_port_range`, and a
//! port that refuses. The pane must show the kernel's own numbers (`ss`,
//! `/proc/net/netstat`), and `q` and Ctrl-C must each leave the terminal as
//! it was (`stty -a` in the pane, before and after). The non-terminal mode
//! prints plain snapshots instead.

use std::{
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tcpstate_tests::{Netns, files, process, tracer_bin};

pub(crate) const FULL: u16 = 10061;
const HOLD: u16 = 10062;
pub(crate) const TW: u16 = 10063;
const REFUSED: u16 = 10064;

/// The process that listens with backlog 4 and never accepts, and leaves 5
/// accepted connections in CLOSE_WAIT (its own clients close them).
pub(crate) const HOLDER: &str = r#"
import socket, sys
full = socket.socket(); full.bind(("127.0.0.1", FULL)); full.listen(4)
hold = socket.socket(); hold.bind(("127.0.0.1", HOLD)); hold.listen(16)
kept = []
for _ in range(5):
    c = socket.create_connection(("127.0.0.1", HOLD))
    a, _ = hold.accept()
    c.close()          # the peer closes: `a` goes to CLOSE_WAIT
    kept.append(a)     # and is never closed
print("ready", flush=True)
sys.stdin.read()
"#;

/// 20 clients of the full listener (kept open), 3,000 connections closed
/// client first (TIME_WAIT on the client's ephemeral port), 3 refused.
pub(crate) const TRAFFIC: &str = r#"
import errno, socket, sys
clients = []
for _ in range(20):
    c = socket.socket(); c.setblocking(False)
    c.connect_ex(("127.0.0.1", FULL))
    clients.append(c)
srv = socket.socket(); srv.bind(("127.0.0.1", TW)); srv.listen(128)
for _ in range(3000):
    c = socket.create_connection(("127.0.0.1", TW))
    a, _ = srv.accept()
    c.close(); a.close()
refused = 0
for _ in range(3):
    try:
        socket.create_connection(("127.0.0.1", REFUSED)).close()
    except ConnectionRefusedError:
        refused += 1
print("done", refused, flush=True)
sys.stdin.read()
"#;

pub(crate) fn python(ns: &Netns, script: &str, ready: &str) -> Child {
    let script = script
        .replace("FULL", &FULL.to_string())
        .replace("HOLD", &HOLD.to_string())
        .replace("REFUSED", &REFUSED.to_string())
        .replace("TW", &TW.to_string());
    let mut child = process::spawn_piped(
        ns.command("python3").args(["-c", &script]),
        Stdio::piped(),
        "python3",
    );
    let lines = process::line_channel(child.stdout.take().expect("stdout"));
    let line = lines
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("python3 never said `{ready}`: {e}"));
    assert!(line.starts_with(ready), "python3 said {line:?}");
    child
}

/// A tmux server of our own (its own socket), one 80x24 window running a
/// shell.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        let t = Tmux {
            socket: format!("tcpst-top-{}", std::process::id()),
        };
        t.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "80",
            "-y",
            "24",
            "sh",
        ]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("tmux {args:?}: {e}"));
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend(keys);
        self.run(&args);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// Waits until the screen satisfies `cond`; panics with the last one.
    fn wait(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        self.wait_for(|| what.to_string(), cond)
    }

    /// [`Tmux::wait`], saying `what` was awaited as it stands at the end.
    fn wait_for(&self, what: impl Fn() -> String, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        process::poll(Duration::from_secs(30), Duration::from_millis(250), || {
            last = self.screen();
            cond(&last).then(|| last.clone())
        })
        .unwrap_or_else(|| panic!("the pane never showed {}:\n{last}", what()))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// Runs `tcpstate --top` in the pane between two `stty -a`, ends it with
/// `keys`, and checks the terminal settings came back unchanged. Before
/// ending it, `look` gets the pane.
fn run_top(tmux: &Tmux, ns: &Netns, dir: &Path, keys: &[&str], look: impl FnOnce(&Tmux)) {
    let (before, after) = (dir.join("before"), dir.join("after"));
    let _ = fs::remove_file(&after);
    let cmd = format!(
        "stty -a > {b}; {bin} --top --netns {ns} 2> {err}; stty -a > {a}.tmp; mv {a}.tmp {a}",
        b = before.display(),
        a = after.display(),
        bin = tracer_bin().display(),
        ns = ns.path().display(),
        err = dir.join("stderr").display(),
    );
    tmux.keys(&[&cmd, "Enter"]);
    tmux.wait("the Listeners pane", |s| {
        s.contains("Listeners") && s.contains("QUEUE")
    });
    look(tmux);
    tmux.keys(keys);
    process::poll(Duration::from_secs(15), Duration::from_millis(100), || {
        after.exists().then_some(())
    })
    .unwrap_or_else(|| panic!("tcpstate did not exit on {keys:?}:\n{}", tmux.screen()));
    let (b, a) = (read(&before), read(&after));
    assert_eq!(
        b, a,
        "stty -a changed across tcpstate --top ended by {keys:?}"
    );
    let stderr = read(&dir.join("stderr"));
    assert!(
        stderr.contains(" events, "),
        "no exit report after {keys:?}:\n{stderr}"
    );
    // The normal screen is back: the shell's prompt, not the view.
    let screen = tmux.screen();
    assert!(
        !screen.contains("QUEUE"),
        "the view is still on screen:\n{screen}"
    );
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The namespace's `ListenOverflows` (`/proc/net/netstat`, TcpExt).
pub(crate) fn listen_overflows(ns: &Netns) -> u64 {
    let text = ns.exec(&["cat", "/proc/net/netstat"]);
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")
        .expect("ListenOverflows");
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// The pane's row for listening port `port`, split into cells.
fn listener_row(screen: &str, port: u16) -> Option<Vec<String>> {
    screen
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|c| c.len() >= 10 && c[0] == port.to_string() && c[1] == "127.0.0.1")
}

pub(crate) fn tuned_netns() -> Netns {
    let ns = Netns::new();
    // 5,000 ephemeral ports, so 3,000 TIME_WAITs are over half; one SYN
    // retry, so the clients of the full queue give up (and the drops stop
    // growing) within seconds.
    ns.sysctl(&[
        "net.ipv4.ip_local_port_range=40000 44999",
        "net.ipv4.tcp_syn_retries=1",
        // No reuse of TIME_WAIT ports (on by default for loopback): each of
        // the 3,000 connections leaves its own.
        "net.ipv4.tcp_tw_reuse=0",
    ]);
    ns
}

#[test]
fn top_shows_queue_drops_holders_pressure_and_failures_in_80x24_and_restores_the_terminal() {
    let _load = tcpstate_tests::exclusive_load();
    let ns = tuned_netns();
    let mut holder = python(&ns, HOLDER, "ready");
    let tmp = files::TempDir::new("top");
    let dir = tmp.path();
    let tmux = Tmux::new();

    let mut traffic = None;
    run_top(&tmux, &ns, dir, &["q"], |tmux| {
        traffic = Some(python(&ns, TRAFFIC, "done 3"));
        // The 15 clients beyond the queue give up after one SYN retry;
        // then the drops stop growing and must equal the namespace's count.
        let what = || format!("drops equal to ListenOverflows {}", listen_overflows(&ns));
        let screen = tmux.wait_for(what, |s| {
            listener_row(s, FULL).is_some_and(|row| {
                let drops: u64 = row.last().unwrap().parse().unwrap_or(0);
                drops > 0 && drops == listen_overflows(&ns)
            }) && s.contains(" 3000 ")
        });
        eprintln!("tcpstate --top, 80x24:\n{screen}");
        let ss = ns.exec(&["ss", "-tlnH", &format!("sport = :{FULL}")]);
        let ss: Vec<&str> = ss.split_whitespace().collect();
        let queue = format!("{}/{}", ss[1], ss[2]);
        assert_eq!(queue, "5/4", "ss: backlog 4 holds 5 connections\n{ss:?}");
        let row = listener_row(&screen, FULL).unwrap();
        assert_eq!(row[3..5], [holder.id().to_string(), "python3".into()][..]);
        assert_eq!(row[5], queue, "{row:?}\n{screen}");
        // The holder's five CLOSE_WAIT connections, in one row.
        let held = format!("{} python3", holder.id());
        assert!(
            screen.lines().any(|l| l.trim_start().starts_with(&held)
                && l.contains("CLOSE_WAIT")
                && l.split_whitespace().nth(4) == Some("5")),
            "no holder row with 5 CLOSE_WAIT for pid {}:\n{screen}",
            holder.id()
        );
        // 3,000 TIME_WAITs of 5,000 ports: 60%, warned.
        assert!(
            screen
                .lines()
                .any(|l| l.contains(&format!("127.0.0.1>127.0.0.1:{TW}"))
                    && l.contains(" 3000 ")
                    && l.contains(" 5000 ")
                    && l.contains("60%!")),
            "no TIME_WAIT pressure row:\n{screen}"
        );
        // Failures share their lines with Pressure: read from the WHAT column.
        let refused = format!("refused 127.0.0.1:{REFUSED} 3 ");
        assert!(
            screen
                .lines()
                .any(|l| l.find("refused").is_some_and(|at| l[at..]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .starts_with(&refused))),
            "no `{refused}`:\n{screen}"
        );
        // Keys: help and back, Tab and sort.
        tmux.keys(&["?"]);
        tmux.wait("the help", |s| s.contains("tcpstate --top: keys"));
        tmux.keys(&["Escape", "Tab", "s"]);
        tmux.wait("Listeners sorted by PORT", |s| {
            s.contains("Listeners by PORT")
        });
    });
    // Again, ended by Ctrl-C (a key in raw mode, not a signal).
    run_top(&tmux, &ns, dir, &["C-c"], |_| {});

    for child in [Some(&mut holder), traffic.as_mut()].into_iter().flatten() {
        drop(child.stdin.take());
        process::reap(child);
    }
}

#[test]
fn top_prints_plain_snapshots_when_stdout_is_not_a_terminal() {
    let ns = tuned_netns();
    let mut holder = python(&ns, HOLDER, "ready");
    let out = Command::new(tracer_bin())
        .args([
            "--top",
            "--interval",
            "1s",
            "--duration",
            "3500ms",
            "--netns",
        ])
        .arg(ns.path())
        .stdin(Stdio::null())
        .output()
        .expect("tcpstate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !text.contains('\x1b'),
        "escape sequences in a file:\n{text}"
    );
    let snapshots = text.matches("tcpstate --top ").count();
    assert!(
        (4..=6).contains(&snapshots),
        "{snapshots} snapshots:\n{text}"
    );
    let last = text.rsplit("tcpstate --top ").next().unwrap();
    let row = listener_row(last, FULL).unwrap_or_else(|| panic!("no row for {FULL}:\n{last}"));
    assert_eq!(
        row[5], "0/4",
        "nobody connected to the full listener yet\n{last}"
    );
    assert!(
        last.lines()
            .any(|l| l.contains("CLOSE_WAIT") && l.split_whitespace().nth(4) == Some("5")),
        "{last}"
    );
    assert!(last.contains("events 0  lost 0 "), "{last}");
    drop(holder.stdin.take());
    process::reap(&mut holder);
}
