//! The burst of connections: plain ones (the client closes first) and CLOSING ones (the
//! server closes first and its first FIN is dropped), from threads inside the namespace.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Result;
use tcpstate_devsupport::Netns;

use super::{CLIENT_THREADS, CLOSING_PORT, MESSAGE, PLAIN_PORT};

/// Runs both kinds of connections concurrently, each with CLIENT_THREADS clients and as many
/// server threads, all inside the namespace; returns when every connection is done.
pub fn load(ns: &Netns, plain: u64, closing: u64) -> Result<()> {
    let mut threads: Vec<thread::JoinHandle<Result<()>>> = Vec::new();
    for (port, total, server_first) in [(PLAIN_PORT, plain, false), (CLOSING_PORT, closing, true)] {
        if total == 0 {
            continue;
        }
        let listener = ns.run_in(|| TcpListener::bind(("127.0.0.1", port)))?;
        let accepted = Arc::new(AtomicU64::new(0));
        for _ in 0..CLIENT_THREADS {
            let l = listener.try_clone()?;
            let accepted = accepted.clone();
            threads.push(thread::spawn(move || {
                serve(&l, &accepted, total, server_first)
            }));
        }
        drop(listener);
        for i in 0..CLIENT_THREADS {
            let n = total / CLIENT_THREADS + u64::from(i < total % CLIENT_THREADS);
            let ns = ns.clone();
            threads.push(thread::spawn(move || {
                ns.enter()?;
                for _ in 0..n {
                    client(port, server_first)?;
                }
                Ok(())
            }));
        }
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    }
    Ok(())
}

/// One server thread: accepts until `total` connections have been taken by all threads.
fn serve(l: &TcpListener, accepted: &AtomicU64, total: u64, server_first: bool) -> Result<()> {
    let mut buf = [0u8; MESSAGE];
    while accepted.fetch_add(1, Ordering::SeqCst) < total {
        let (mut s, _) = l.accept()?;
        s.read_exact(&mut buf)?;
        s.write_all(&buf)?;
        if !server_first {
            // Wait for the client's FIN, then close: CLOSE_WAIT -> LAST_ACK.
            while s.read(&mut buf)? > 0 {}
        }
        drop(s);
    }
    Ok(())
}

/// One connection: request, reply, close. For CLOSING connections the client closes shortly
/// after the reply, while the server's (dropped) FIN is waiting for its retransmission.
fn client(port: u16, server_first: bool) -> Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let mut buf = [7u8; MESSAGE];
    s.write_all(&buf)?;
    s.read_exact(&mut buf)?;
    if server_first {
        thread::sleep(Duration::from_millis(2));
    }
    drop(s);
    Ok(())
}
