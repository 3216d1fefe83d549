//! Python 3 peers: [`PyServer`], a small server (one process, or a prefork
//! master with workers all accepting on one listener), and [`py_clients`],
//! many connections from one process.

use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::Netns;
use crate::process::{collect, line_channel, spawn_piped};

/// The server: listens on HOST PORT; with WORKERS > 0 it forks that many
/// workers that all accept on the one listener (a prefork server) and the
/// master only waits; else the master serves. Serving a connection: read
/// until end of stream (or reset), then close.
const PY_SERVER: &str = r#"
import os, socket, sys
host, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print("pid", os.getpid(), flush=True)
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(256)
print("listening", flush=True)
def serve():
    while True:
        c, _ = s.accept()
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass
        c.close()
if workers == 0:
    print("ready", flush=True)
    serve()
for _ in range(workers):
    pid = os.fork()
    if pid == 0:
        serve()
    print("worker", pid, flush=True)
print("ready", flush=True)
while True:
    os.wait()
"#;

/// A Python 3 server in a namespace (its COMM is `python3`): one process,
/// or a prefork master and workers. Killed on drop.
pub struct PyServer {
    child: Child,
    /// The master's pid (it owns the listener it created).
    pub pid: u32,
    /// The workers' pids (empty for a one-process server).
    pub workers: Vec<u32>,
    killed: bool,
}

impl PyServer {
    /// Starts a one-process server on `host:port` in `ns`; returns once it listens.
    pub fn start(ns: &Netns, host: &str, port: u16) -> PyServer {
        PyServer::prefork(ns, host, port, 0)
    }

    /// Starts a master listening on `host:port` that forks `workers`
    /// processes all accepting on that listener.
    pub fn prefork(ns: &Netns, host: &str, port: u16, workers: usize) -> PyServer {
        let mut cmd = ns.command("python3");
        cmd.args([
            "-c",
            PY_SERVER,
            host,
            &port.to_string(),
            &workers.to_string(),
        ]);
        let mut child = spawn_piped(&mut cmd, Stdio::null(), "python3");
        let lines = line_channel(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        let mut server = PyServer {
            pid: child.id(),
            child,
            workers: Vec::new(),
            killed: false,
        };
        loop {
            let line = lines
                .recv_timeout(crate::scaled(Duration::from_secs(10)))
                .unwrap_or_else(|_| {
                    thread::sleep(Duration::from_millis(50));
                    panic!(
                        "python3 server on {host}:{port} did not start; stderr:\n{}",
                        stderr.lock().unwrap()
                    )
                });
            if let Some(pid) = line.strip_prefix("pid ") {
                server.pid = pid.trim().parse().expect("master pid");
            } else if let Some(pid) = line.strip_prefix("worker ") {
                server.workers.push(pid.trim().parse().expect("worker pid"));
            } else if line == "ready" {
                return server;
            }
        }
    }

    /// The master and the workers.
    pub fn all_pids(&self) -> Vec<u32> {
        std::iter::once(self.pid)
            .chain(self.workers.iter().copied())
            .collect()
    }

    /// Kills every process of the server (SIGKILL) and waits for the master.
    pub fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        for &w in &self.workers {
            // SAFETY: kill(2) on a process this server forked.
            unsafe { libc::kill(w as libc::pid_t, libc::SIGKILL) };
        }
        // SAFETY: kill(2) on the server's master.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The workers are the master's children: once it is gone they are
        // reparented and reaped by init; wait until they are gone too.
        let deadline = Instant::now() + crate::scaled(Duration::from_secs(5));
        while self
            .workers
            .iter()
            .any(|w| std::path::Path::new(&format!("/proc/{w}")).exists())
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The clients: COUNT connections to HOST PORT one after the other, in one
/// process; each one's way of ending cycles through MODES (comma-separated):
/// `close` (send a byte, close first), `shutdown` (send, shutdown(SHUT_WR),
/// read until the server closed, close), `abort` (send, SO_LINGER {1, 0},
/// close: a reset).
const PY_CLIENTS: &str = r#"
import socket, struct, sys
host, port, count, modes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
for i in range(count):
    c = socket.create_connection((host, port))
    c.sendall(b"x")
    mode = modes[i % len(modes)]
    if mode == "shutdown":
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
    elif mode == "abort":
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
print("done", count, flush=True)
"#;

/// Makes `count` connections to `host:port` from one Python process in
/// `ns`, one after the other, ending them as `modes` says (see
/// [`PY_CLIENTS`]); returns when all were made and closed.
pub fn py_clients(ns: &Netns, host: &str, port: u16, count: usize, modes: &str) {
    let out = ns.exec(&[
        "python3",
        "-c",
        PY_CLIENTS,
        host,
        &port.to_string(),
        &count.to_string(),
        modes,
    ]);
    assert!(out.starts_with("done"), "python3 clients: {out:?}");
}
