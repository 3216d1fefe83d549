//! The benchmark's load generator: `loadgen server` accepts and closes, `loadgen client`
//! connects and closes as fast as it can, bounded by a count and a wall time. They run as two
//! processes (the runner pins both to one CPU and puts them in its network namespace).
//!
//! Every connection makes exactly 10 `inet_sock_set_state` transitions: the client closes
//! first, the server reads EOF and closes. The client ends with one *stop* connection that
//! carries its count as payload; the server reads it, closes it and its listener, and reports.
//! Both print one JSON line on stdout ([`tcpstate_bench::loadgen`] has the types).

use std::{
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::FromRawFd as _,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use tcpstate_bench::{
    loadgen::{ClientReport, STOP_MAGIC, ServerReport},
    mono_ns,
};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Loopback connect/close load for tcpstate's benchmark"
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Listen, then accept, read to EOF and close until the client's stop connection.
    Server {
        #[arg(long, default_value_t = Ipv4Addr::LOCALHOST)]
        addr: Ipv4Addr,
        #[arg(long)]
        port: u16,
        /// listen() backlog (the kernel caps it at net.core.somaxconn).
        #[arg(long, default_value_t = 65535)]
        backlog: i32,
    },
    /// Connect and close `count` times (or until `max_secs`), then send the stop connection.
    Client {
        #[arg(long, default_value_t = Ipv4Addr::LOCALHOST)]
        addr: Ipv4Addr,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 60.0)]
        max_secs: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.role {
        Role::Server {
            addr,
            port,
            backlog,
        } => server(SocketAddrV4::new(addr, port), backlog),
        Role::Client {
            addr,
            port,
            count,
            max_secs,
        } => client(
            SocketAddrV4::new(addr, port),
            count,
            Duration::from_secs_f64(max_secs),
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn listen(addr: SocketAddrV4, backlog: i32) -> Result<TcpListener> {
    // std's listen() backlog is fixed; a burst of connects must never overflow the accept
    // queue (a dropped SYN stalls the client for a second and changes nothing else).
    // SAFETY: plain socket calls on a descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("socket");
        }
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        if libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            return Err(io::Error::last_os_error()).with_context(|| format!("bind {addr}"));
        }
        if libc::listen(fd, backlog) != 0 {
            return Err(io::Error::last_os_error()).context("listen");
        }
        Ok(listener)
    }
}

fn server(addr: SocketAddrV4, backlog: i32) -> Result<()> {
    let listener = listen(addr, backlog)?;
    let start_ns = mono_ns();
    {
        let mut out = io::stdout().lock();
        writeln!(out, "ready")?;
        out.flush()?;
    }
    let mut handled = 0u64;
    let mut accept_errors = 0u64;
    let mut buf = [0u8; 64];
    let client_count = loop {
        let (mut s, _) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                accept_errors += 1;
                if accept_errors > 1000 {
                    bail!("accept keeps failing: {e}");
                }
                continue;
            }
        };
        // The client closes first: EOF (usually already queued) means a load connection,
        // payload means the stop connection. Either way read to EOF, then close.
        let n = read_some(&mut s, &mut buf);
        if n == 0 {
            handled += 1;
            continue;
        }
        let mut payload = buf[..n].to_vec();
        loop {
            let m = read_some(&mut s, &mut buf);
            if m == 0 {
                break;
            }
            payload.extend_from_slice(&buf[..m]);
        }
        drop(s);
        handled += 1;
        break parse_stop(&payload);
    };
    drop(listener);
    let report = ServerReport {
        handled,
        accept_errors,
        client_count,
        start_ns,
        end_ns: mono_ns(),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Bytes read, 0 on EOF or error (an error is a reset: the connection is over either way).
fn read_some(s: &mut TcpStream, buf: &mut [u8]) -> usize {
    loop {
        match s.read(buf) {
            Ok(n) => return n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return 0,
        }
    }
}

fn parse_stop(payload: &[u8]) -> Option<u64> {
    let rest = payload.strip_prefix(STOP_MAGIC)?;
    let digits: Vec<u8> = rest
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn client(addr: SocketAddrV4, count: u64, max: Duration) -> Result<()> {
    let start = Instant::now();
    let start_ns = mono_ns();
    let mut ok = 0u64;
    let mut failed = 0u64;
    let mut first_error = None;
    let mut consecutive = 0u32;
    let mut timed_out = false;
    while ok < count {
        match TcpStream::connect(addr) {
            Ok(s) => {
                drop(s);
                ok += 1;
                consecutive = 0;
            }
            Err(e) => {
                failed += 1;
                consecutive += 1;
                first_error.get_or_insert_with(|| e.to_string());
                if consecutive > 1000 {
                    bail!("connect to {addr} keeps failing: {e}");
                }
            }
        }
        if (ok + failed).is_multiple_of(256) && start.elapsed() >= max {
            timed_out = true;
            break;
        }
    }
    let end_ns = mono_ns();
    // The stop connection: the server's last one.
    let mut s = TcpStream::connect(addr).with_context(|| format!("stop connection to {addr}"))?;
    s.write_all(STOP_MAGIC)?;
    s.write_all(format!("{ok}\n").as_bytes())?;
    drop(s);
    let report = ClientReport {
        ok,
        failed,
        first_error,
        timed_out,
        start_ns,
        end_ns,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
