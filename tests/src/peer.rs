//! [`Peer`]: a `tcppeer` process (see `src/bin/tcppeer.rs`) in a namespace
//! (or a container), driven line by line through its stdin and stdout.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};

use crate::process::{collect, line_channel, reap, signal, spawn_piped, wait_exit};
use crate::{Netns, PEER_TIMEOUT};

/// A running `tcppeer` process inside a namespace.
pub struct Peer {
    /// The namespace it runs in, kept while it runs (none for a peer in a
    /// container).
    ns: Option<Netns>,
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The peer's pid, as it reported it (the one that owns its sockets).
    pub pid: u32,
    /// `listening` address (server) or local address of the connection (client).
    pub local: SocketAddr,
    /// Client only: the address connected to.
    pub remote: Option<SocketAddr>,
}

/// Both ends of an accepted connection, as the server sees them.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// The `tcppeer` binary: `$TCPPEER_BIN`, else the one Cargo built next to the
/// running test (integration tests live in `target/<profile>/deps/`, the
/// package's binaries in `target/<profile>/`; this is the file that
/// `env!("CARGO_BIN_EXE_tcppeer")` names when compiling the tests).
pub fn tcppeer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TCPPEER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps");
    let bin = profile_dir.join("tcppeer");
    assert!(
        bin.exists(),
        "{} not found: run the tests with cargo, or set TCPPEER_BIN",
        bin.display()
    );
    bin
}

impl Peer {
    /// Starts `tcppeer server ADDR` in `ns`; returns once it is listening.
    pub fn server(ns: &Netns, addr: &str) -> Peer {
        let mut p = Peer::spawn(ns, "server", addr);
        let line = p.expect_line("listening");
        p.local = parse_addr(&line, 1);
        p
    }

    /// Starts `tcppeer client ADDR` in `ns`; returns once it is connected.
    pub fn client(ns: &Netns, addr: &str) -> Peer {
        let mut p = Peer::spawn(ns, "client", addr);
        let line = p.expect_line("connected");
        p.local = parse_addr(&line, 1);
        p.remote = Some(parse_addr(&line, 2));
        p
    }

    /// Starts a client whose connect is expected to fail; returns its
    /// `error connect: ...` line once it has exited.
    pub fn client_failing(ns: &Netns, addr: &str) -> String {
        let mut p = Peer::spawn(ns, "client", addr);
        let line = p.next_line("connect");
        assert!(
            line.starts_with("error connect"),
            "tcppeer client {addr}: expected connect to fail, got {line:?}"
        );
        let status = p.wait_exit();
        assert_eq!(status.code(), Some(1), "tcppeer client {addr}: {status}");
        line
    }

    fn spawn(ns: &Netns, role: &str, addr: &str) -> Peer {
        let mut cmd = ns.command(tcppeer_bin());
        cmd.args([role, addr]);
        let mut p = Peer::spawn_command(cmd, format!("{role} {addr}"));
        p.ns = Some(ns.clone());
        p
    }

    /// Starts a `tcppeer server ADDR` that `cmd` runs (e.g. `podman run -i
    /// IMAGE server ADDR`); returns once it is listening.
    pub fn server_command(cmd: Command, label: &str) -> Peer {
        let mut p = Peer::spawn_command(cmd, label.to_string());
        let line = p.expect_line("listening");
        p.local = parse_addr(&line, 1);
        p
    }

    /// Starts a `tcppeer client ADDR` that `cmd` runs; returns once it is
    /// connected.
    pub fn client_command(cmd: Command, label: &str) -> Peer {
        let mut p = Peer::spawn_command(cmd, label.to_string());
        let line = p.expect_line("connected");
        p.local = parse_addr(&line, 1);
        p.remote = Some(parse_addr(&line, 2));
        p
    }

    /// `cmd` runs tcppeer (in a namespace, a container...). `pid` is what
    /// tcppeer reports: inside a container's PID namespace, not the host's.
    fn spawn_command(mut cmd: Command, label: String) -> Peer {
        let mut child = spawn_piped(&mut cmd, Stdio::piped(), &format!("tcppeer {label}"));
        let stdin = child.stdin.take();
        let lines = line_channel(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        let mut p = Peer {
            ns: None,
            label,
            child,
            stdin,
            lines,
            stderr,
            pid: 0,
            local: "0.0.0.0:0".parse().unwrap(),
            remote: None,
        };
        let line = p.expect_line("pid");
        p.pid = line[4..]
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("tcppeer {}: bad pid line {line:?}", p.label));
        p
    }

    /// Sends one command and returns its reply; panics on an `error` reply.
    pub fn cmd(&mut self, command: &str) -> String {
        self.send_line(command);
        let reply = self.next_line(command);
        if reply.starts_with("error") {
            panic!("tcppeer {}: `{command}` failed: {reply}", self.label);
        }
        reply
    }

    /// Sends one command and returns its reply, whatever it is.
    pub fn cmd_raw(&mut self, command: &str) -> String {
        self.send_line(command);
        self.next_line(command)
    }

    /// Server: accepts one connection.
    pub fn accept(&mut self) -> Accepted {
        let line = self.cmd("accept");
        Accepted {
            local: parse_addr(&line, 1),
            peer: parse_addr(&line, 2),
        }
    }

    /// Closes the current connection.
    pub fn close(&mut self) {
        self.expect_reply("close", "closed");
    }

    /// Sends a command and checks the reply starts with `expected`.
    pub fn expect_reply(&mut self, command: &str, expected: &str) -> String {
        let reply = self.cmd_raw(command);
        assert!(
            reply.starts_with(expected),
            "tcppeer {}: `{command}` replied {reply:?}, expected {expected:?}",
            self.label
        );
        reply
    }

    /// Sends SIGINT (Ctrl-C) and waits for the process to die of it.
    pub fn sigint(&mut self) {
        signal(self.pid, libc::SIGINT);
        let status = self.wait_exit();
        assert_eq!(
            status.signal(),
            Some(libc::SIGINT),
            "tcppeer {} should have died of SIGINT, got {status}",
            self.label
        );
    }

    /// Asks the process to `exit` (the kernel closes its sockets) and waits.
    pub fn exit(&mut self) {
        self.send_line("exit");
        let status = self.wait_exit();
        assert!(
            status.success(),
            "tcppeer {} exited with {status}",
            self.label
        );
    }

    fn wait_exit(&mut self) -> ExitStatus {
        wait_exit(&mut self.child, PEER_TIMEOUT)
            .unwrap_or_else(|| panic!("tcppeer {} did not exit", self.label))
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        if let Err(e) = writeln!(stdin, "{line}").and_then(|_| stdin.flush()) {
            panic!(
                "tcppeer {}: cannot send `{line}`: {e}; stderr: {}",
                self.label,
                self.stderr.lock().unwrap()
            );
        }
    }

    fn next_line(&mut self, waiting_for: &str) -> String {
        match self.lines.recv_timeout(crate::scaled(PEER_TIMEOUT)) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "tcppeer {}: no reply to `{waiting_for}` within {PEER_TIMEOUT:?}",
                    self.label
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().expect("wait");
                panic!(
                    "tcppeer {}: exited ({status}) while waiting for `{waiting_for}`; stderr: {}",
                    self.label,
                    self.stderr.lock().unwrap()
                )
            }
        }
    }

    fn expect_line(&mut self, word: &str) -> String {
        let line = self.next_line(word);
        assert!(
            line.split_whitespace().next() == Some(word),
            "tcppeer {}: expected `{word} ...`, got {line:?}",
            self.label
        );
        line
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        reap(&mut self.child);
    }
}

fn parse_addr(line: &str, field: usize) -> SocketAddr {
    line.split_whitespace()
        .nth(field)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no address in field {field} of {line:?}"))
}
