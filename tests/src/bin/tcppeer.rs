//! `tcppeer`: a scriptable TCP endpoint for tcpstate's end-to-end tests.
//!
//! The tests run a server and its clients as separate processes (inside a
//! network namespace, via `ip netns exec`) and drive them line by line, so that
//! every step of a scenario happens at a known point without sleeping.
//!
//! ```text
//! tcppeer server ADDR:PORT   listen on ADDR:PORT (`[::]:P` is dual-stack)
//! tcppeer client ADDR:PORT   connect to ADDR:PORT
//! ```
//!
//! Two unscripted modes, for many short connections inside a container:
//!
//! ```text
//! tcppeer serve ADDR:PORT      listen; each connection is read to its end,
//!                              then closed (the client closes first); forever
//! tcppeer burst N ADDR:PORT    run N `tcppeer once` processes at the same
//!                              time, print `client PID LOCAL` for each, exit
//! tcppeer once ADDR:PORT       connect, print `client PID LOCAL`, close, exit
//! ```
//!
//! A `once` process exits within a millisecond of closing: the rest of its
//! connection's changes happen after its owner is gone.
//!
//! Standard output, one line per fact, flushed line by line:
//! `pid N` first, then `listening LOCAL` (server) or `connected LOCAL PEER`
//! (client), then exactly one reply per command read from standard input:
//!
//! | command          | effect                                              | reply                      |
//! |------------------|-----------------------------------------------------|----------------------------|
//! | `accept`         | accept one connection (it becomes the current one)  | `accepted LOCAL PEER`      |
//! | `send N`         | write N bytes on the current connection             | `sent N`                   |
//! | `recv N`         | read exactly N bytes                                | `received N` / `eof K`     |
//! | `wait-eof`       | read and discard until end of stream                | `eof K` (K bytes read)     |
//! | `wait-unread N`  | wait until N bytes are queued, without reading them | `unread N`                 |
//! | `shutdown HOW`   | shutdown(2) with HOW = `rd`, `wr` or `rdwr`         | `shutdown HOW`             |
//! | `close`          | close(2) the current connection                     | `closed`                   |
//! | `abort`          | SO_LINGER {on, 0} then close(2): sends a RST        | `aborted`                  |
//! | `close-listener` | close(2) the listening socket                       | `listener-closed`          |
//! | `exit`           | exit(0), leaving the kernel to close the sockets    | `exiting`                  |
//!
//! Failures reply `error COMMAND: KIND: MESSAGE` (KIND is the `io::ErrorKind`,
//! e.g. `ConnectionReset`) and the program goes on reading commands. End of
//! input exits like `exit`. `exit` runs no destructors: the kernel closes the
//! sockets while tearing the process down, as it does for a killed process. Signals keep their default disposition: SIGINT
//! kills the process and the kernel closes its sockets, like Ctrl-C on a
//! server or client run from a terminal.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long `wait-unread` waits before giving up.
const WAIT_LIMIT: Duration = Duration::from_secs(20);

fn say(line: &str) {
    let mut out = io::stdout().lock();
    // If the test harness went away there is nobody left to tell.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [mode, addr] if mode == "serve" => return with_addr(addr, serve),
        [mode, addr] if mode == "once" => return with_addr(addr, once),
        [mode, n, addr] if mode == "burst" => match n.parse::<usize>() {
            Ok(n) => return with_addr(addr, |a| burst(n, a)),
            Err(e) => return usage(&format!("bad count {n:?}: {e}")),
        },
        _ => {}
    }
    let (role, addr) = match args.as_slice() {
        [role, addr] if role == "server" || role == "client" => match addr.parse::<SocketAddr>() {
            Ok(addr) => (role.as_str(), addr),
            Err(e) => return usage(&format!("bad address {addr:?}: {e}")),
        },
        _ => return usage("expected `server ADDR:PORT` or `client ADDR:PORT`"),
    };
    say(&format!("pid {}", std::process::id()));

    let mut peer = Peer::default();
    if role == "server" {
        match TcpListener::bind(addr) {
            Ok(listener) => {
                say(&format!("listening {}", local(&listener.local_addr())));
                peer.listener = Some(listener);
            }
            Err(e) => {
                say(&format!("error listen: {:?}: {e}", e.kind()));
                return ExitCode::FAILURE;
            }
        }
    } else {
        match TcpStream::connect(addr) {
            Ok(stream) => {
                say(&format!(
                    "connected {} {}",
                    local(&stream.local_addr()),
                    local(&stream.peer_addr())
                ));
                peer.conns.push(stream);
            }
            Err(e) => {
                say(&format!("error connect: {:?}: {e}", e.kind()));
                return ExitCode::FAILURE;
            }
        }
    }

    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "exit" {
            say("exiting");
            // No destructors: the kernel closes the sockets, as when a process dies.
            std::process::exit(0);
        }
        match peer.run(line) {
            Ok(reply) => say(&reply),
            Err(e) => say(&format!("error {line}: {:?}: {e}", e.kind())),
        }
    }
    // End of input: same as `exit`.
    std::process::exit(0)
}

fn with_addr(addr: &str, f: impl FnOnce(SocketAddr) -> ExitCode) -> ExitCode {
    match addr.parse::<SocketAddr>() {
        Ok(a) => f(a),
        Err(e) => usage(&format!("bad address {addr:?}: {e}")),
    }
}

/// Accepts forever; each connection on its own thread, read to the end of
/// stream and then closed.
fn serve(addr: SocketAddr) -> ExitCode {
    say(&format!("pid {}", std::process::id()));
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            say(&format!("error listen: {:?}: {e}", e.kind()));
            return ExitCode::FAILURE;
        }
    };
    say(&format!("listening {}", local(&listener.local_addr())));
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = io::copy(&mut conn, &mut io::sink());
        });
    }
    ExitCode::SUCCESS
}

/// One connection, closed at once by this side; the process exits right
/// after.
fn once(addr: SocketAddr) -> ExitCode {
    match TcpStream::connect(addr) {
        Ok(stream) => {
            say(&format!(
                "client {} {}",
                std::process::id(),
                local(&stream.local_addr())
            ));
            drop(stream);
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("error connect: {:?}: {e}", e.kind()));
            ExitCode::FAILURE
        }
    }
}

/// `n` `once` processes at the same time; their lines passed on.
fn burst(n: usize, addr: SocketAddr) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return usage(&format!("own executable: {e}")),
    };
    let children: Vec<_> = (0..n)
        .filter_map(|_| {
            std::process::Command::new(&exe)
                .args(["once", &addr.to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .ok()
        })
        .collect();
    let mut ok = children.len() == n;
    for child in children {
        match child.wait_with_output() {
            Ok(out) if out.status.success() => {
                print!("{}", String::from_utf8_lossy(&out.stdout));
            }
            _ => ok = false,
        }
    }
    let _ = io::stdout().flush();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("tcppeer: {why}\nusage: tcppeer server|client ADDR:PORT (commands on stdin)");
    ExitCode::from(2)
}

fn local(addr: &io::Result<SocketAddr>) -> String {
    match addr {
        Ok(a) => a.to_string(),
        Err(e) => format!("?({e})"),
    }
}

#[derive(Default)]
struct Peer {
    listener: Option<TcpListener>,
    /// Open connections; commands act on the last one.
    conns: Vec<TcpStream>,
}

impl Peer {
    fn run(&mut self, line: &str) -> io::Result<String> {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or_default();
        let arg = words.next();
        let count = || -> io::Result<usize> {
            arg.and_then(|a| a.parse().ok())
                .ok_or_else(|| invalid(format!("`{cmd}` needs a byte count")))
        };
        match cmd {
            "accept" => {
                let listener = self
                    .listener
                    .as_ref()
                    .ok_or_else(|| invalid("no listener"))?;
                let (stream, peer) = listener.accept()?;
                let reply = format!("accepted {} {peer}", local(&stream.local_addr()));
                self.conns.push(stream);
                Ok(reply)
            }
            "send" => {
                let n = count()?;
                self.conn()?.write_all(&vec![b'x'; n])?;
                Ok(format!("sent {n}"))
            }
            "recv" => {
                let n = count()?;
                let stream = self.conn()?;
                let mut buf = vec![0u8; n];
                let mut got = 0;
                while got < n {
                    match stream.read(&mut buf[got..])? {
                        0 => return Ok(format!("eof {got}")),
                        k => got += k,
                    }
                }
                Ok(format!("received {n}"))
            }
            "wait-eof" => {
                let stream = self.conn()?;
                let mut buf = [0u8; 4096];
                let mut total = 0;
                loop {
                    match stream.read(&mut buf)? {
                        0 => return Ok(format!("eof {total}")),
                        k => total += k,
                    }
                }
            }
            "wait-unread" => {
                let n = count()?;
                let fd = self.conn()?.as_raw_fd();
                let start = Instant::now();
                loop {
                    let mut queued: libc::c_int = 0;
                    // SAFETY: FIONREAD writes one c_int to the pointer given.
                    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) } < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    if queued as usize >= n {
                        return Ok(format!("unread {n}"));
                    }
                    if start.elapsed() > WAIT_LIMIT {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("only {queued} bytes queued"),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            "shutdown" => {
                let how = match arg {
                    Some("rd") => Shutdown::Read,
                    Some("wr") => Shutdown::Write,
                    Some("rdwr") => Shutdown::Both,
                    _ => return Err(invalid("`shutdown` needs rd, wr or rdwr")),
                };
                self.conn()?.shutdown(how)?;
                Ok(format!("shutdown {}", arg.unwrap_or_default()))
            }
            "close" => {
                drop(self.conns.pop().ok_or_else(|| invalid("no connection"))?);
                Ok("closed".into())
            }
            "abort" => {
                let stream = self.conns.pop().ok_or_else(|| invalid("no connection"))?;
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: the option value is a `struct linger` of the size given.
                let rc = unsafe {
                    libc::setsockopt(
                        stream.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&linger as *const libc::linger).cast(),
                        size_of::<libc::linger>() as libc::socklen_t,
                    )
                };
                if rc < 0 {
                    return Err(io::Error::last_os_error());
                }
                drop(stream);
                Ok("aborted".into())
            }
            "close-listener" => {
                drop(self.listener.take().ok_or_else(|| invalid("no listener"))?);
                Ok("listener-closed".into())
            }
            _ => Err(invalid(format!("unknown command `{cmd}`"))),
        }
    }

    fn conn(&mut self) -> io::Result<&mut TcpStream> {
        self.conns
            .last_mut()
            .ok_or_else(|| invalid("no connection"))
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}
