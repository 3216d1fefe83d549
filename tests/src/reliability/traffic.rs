//! TCP traffic from threads that entered a test namespace (with a chosen,
//! possibly hostile, thread name), and namespace settings for long runs of
//! connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::Netns;

/// Sets the calling thread's `comm` (what the kernel reports as the process
/// name for sockets it owns); at most 15 bytes are kept.
pub fn set_thread_name(name: &[u8]) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name[..n]);
    // SAFETY: buf is NUL-terminated.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_NAME)");
}

/// Sets sysctls inside a namespace: a wide ephemeral port range and no
/// TIME_WAIT sockets, so a long run of connections cannot run out of ports.
pub fn tune_for_churn(ns: &Netns) {
    ns.sysctl(&[
        "net.ipv4.ip_local_port_range=1024 65535",
        "net.ipv4.tcp_max_tw_buckets=0",
    ]);
}

/// A fresh namespace tuned for long runs of connections
/// ([`tune_for_churn`]), and its path as `--netns` takes it.
pub fn churn_netns() -> (Netns, String) {
    let ns = Netns::new();
    tune_for_churn(&ns);
    let netns = ns.path().to_string_lossy().into_owned();
    (ns, netns)
}

/// Like [`tune_for_churn`] but keeping TIME_WAIT sockets (reused by new
/// connections after a second, `tcp_tw_reuse`), as on a real busy host.
pub fn tune_for_churn_with_timewait(ns: &Netns) {
    ns.sysctl(&[
        "net.ipv4.ip_local_port_range=1024 65535",
        "net.ipv4.tcp_tw_reuse=1",
    ]);
}

/// A running connection generator: `total` loopback connections to
/// 127.0.0.1:`port`, each opened by a client thread, accepted by a server
/// thread, and closed at once by both (10 transitions each).
pub struct Churn {
    pub done: Arc<AtomicU64>,
    /// connect() calls that failed and were retried (ports exhausted).
    pub retries: Arc<AtomicU64>,
    pub total: u64,
    handles: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Churn {
    /// Starts `threads` client and `threads` server threads in `ns`. The
    /// listener is bound before this returns and closed when all is done.
    pub fn start(ns: &Netns, port: u16, total: u64, threads: usize) -> Churn {
        use std::net::{TcpListener, TcpStream};
        let listener = ns
            .spawn_in(move || TcpListener::bind(("127.0.0.1", port)).expect("bind"))
            .join()
            .unwrap()
            .expect("entering the namespace");
        let listener = Arc::new(listener);
        let accepted = Arc::new(AtomicU64::new(0));
        let started = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let retries = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for _ in 0..threads {
            let (l, accepted) = (listener.clone(), accepted.clone());
            handles.push(thread::spawn(move || {
                while accepted.fetch_add(1, Ordering::Relaxed) < total {
                    // Closed at once: whichever side closes first, each
                    // end makes 5 transitions (a simultaneous close goes
                    // through CLOSING instead of FIN_WAIT2/CLOSE_WAIT).
                    let (s, _) = l.accept().expect("accept");
                    drop(s);
                }
                // The listener closes when the last server thread drops it.
                Ok(())
            }));
        }
        drop(listener);
        for _ in 0..threads {
            let (started, done, retries) = (started.clone(), done.clone(), retries.clone());
            handles.push(ns.spawn_in(move || {
                while started.fetch_add(1, Ordering::Relaxed) < total {
                    let mut tries = 0;
                    loop {
                        match TcpStream::connect(("127.0.0.1", port)) {
                            Ok(s) => {
                                drop(s);
                                break;
                            }
                            Err(e) => {
                                tries += 1;
                                retries.fetch_add(1, Ordering::Relaxed);
                                assert!(tries < 1000, "connect keeps failing: {e}");
                                thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        Churn {
            done,
            retries,
            total,
            handles,
        }
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    pub fn wait(self) {
        for h in self.handles {
            h.join()
                .expect("churn thread panicked")
                .expect("entering the namespace");
        }
    }
}
