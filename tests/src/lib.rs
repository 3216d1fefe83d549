//! End-to-end test harness for tcpstate.
//!
//! The tests are one binary, `tests/tests/integration/` (a module per
//! scenario family, run in parallel threads). Every test builds its own world:
//! - a [`Netns`]: a fresh network namespace with only `lo` up, removed when
//!   the last of its holders (the test, its peers and tracer) goes;
//! - a [`Tracer`]: the real `tcpstate --json --netns /run/netns/<name>` binary,
//!   started before any traffic and stopped with SIGINT once the scenario is over;
//! - [`Peer`]s: `tcppeer` processes (see `src/bin/tcppeer.rs`) run inside the
//!   namespace and driven line by line through their stdin/stdout.
//!
//! The [`Trace`] that [`Tracer::stop`] returns groups the events per socket
//! ([`Socket`]) and compares whole transition sequences, printing every event
//! seen when an expectation fails. Besides the tracepoint's transitions it
//! keeps the rows of other sources: transitions too (`half-open`,
//! `timewait`, ...) or state rows (`kind: "state"`: `snapshot`,
//! `timewait-socket`, `stuck`), which say which state a socket is in.
//!
//! The modules, by concern:
//! - [`netns`]: the namespaces; [`process`]: child processes, and the tracer
//!   process every way of reading its output builds on
//!   ([`process::Collected`]); [`procfs`] and [`files`]: what `/proc` says
//!   about a process, temporary files;
//! - `peer`: [`Peer`]; `event`: [`Event`], one JSON line parsed and checked;
//!   `tracer`: [`Tracer`], and [`RawTracer`] for output kept as printed;
//!   `trace`: [`Trace`] and [`Socket`], with the assertions on them;
//! - [`scenario`]: the openings and endings the scenarios share (a
//!   connected client and server under a tracer, closing the listener);
//!   [`beyond`]: the helpers for rows beyond the tracepoint;
//!   [`reliability`]: running the tracer as a process (errors, BPF objects,
//!   load); [`fleet`]: containers, images and Prometheus;
//! - [`user`]: the tracer the way users run it instead: `tcpstate --port P`
//!   in the root namespace, text output, started after the servers
//!   (`tests/tests/integration/as_users_run_it.rs`), and its fixture
//!   [`user::AsUsers`].
//!
//! Harness functions panic with a full explanation instead of returning errors:
//! the tests read as specifications and a failure says what went wrong.
//! Set `TCPSTATE_TEST_DUMP=1` (with `--nocapture`) to print every trace.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// TCP state names as tcpstate prints them, from the one definition the
/// tracer uses (`tcpstate_common::TcpState`).
pub mod states {
    use tcpstate_common::TcpState as S;

    macro_rules! names {
        ($($name:ident: $state:ident),* $(,)?) => {
            $(pub const $name: &str = S::$state.name();)*
        };
    }

    names! {
        CLOSE: Close, SYN_SENT: SynSent, SYN_RECV: SynRecv, ESTABLISHED: Established,
        FIN_WAIT1: FinWait1, FIN_WAIT2: FinWait2, CLOSE_WAIT: CloseWait, LAST_ACK: LastAck,
        LISTEN: Listen, CLOSING: Closing, TIME_WAIT: TimeWait, NEW_SYN_RECV: NewSynRecv,
    }
}

pub mod beyond;
mod event;
pub mod files;
pub mod fleet;
pub mod netns;
mod peer;
pub mod process;
pub mod procfs;
pub mod reliability;
pub mod scenario;
mod trace;
mod tracer;
pub mod user;

pub use event::Event;
pub use netns::Netns;
pub use peer::{Accepted, Peer, tcppeer_bin};
pub use trace::{Socket, Trace, path_to_transitions};
pub use tracer::{RawTracer, Tracer};

/// How long the tracer may take to attach (it loads and verifies BPF programs,
/// possibly while other tests do the same on the 2 cores).
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a peer may take to answer a command.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long expected events may take to show up in the tracer's output.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// `d` scaled by `$TCPSTATE_TEST_TIME_SCALE` (a factor, default 1): the kernel matrix
/// (`cargo xtask vm-test`) runs these tests in QEMU's software emulation, 7-15x slower than
/// native, where BPF verification alone can take tens of seconds. Every deadline of the
/// harness ([`process::poll`], [`process::wait_exit`], the ready and peer waits) goes through
/// it, so a slow machine stretches the waits instead of failing them.
pub fn scaled(d: Duration) -> Duration {
    static SCALE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let scale = *SCALE.get_or_init(|| {
        std::env::var("TCPSTATE_TEST_TIME_SCALE")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|f| f.is_finite() && *f >= 1.0)
            .unwrap_or(1.0)
    });
    d.mul_f64(scale)
}

/// The line tcpstate prints on stderr once it is attached.
pub const READY_LINE: &str = "Tracing TCP state changes";

/// Held for their whole run by the tests that load the machine (connection
/// storms, the soak, a stalled consumer, the comparison with another tool),
/// so that no two of them overlap in the one test binary: each counts every
/// event and loss, or waits for every expiry, on 2 CPUs and a tracepoint it
/// shares only with light tests, as when the families were separate binaries.
pub fn exclusive_load() -> std::sync::MutexGuard<'static, ()> {
    static LOAD: Mutex<()> = Mutex::new(());
    LOAD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The tcpstate binary under test: `$TCPSTATE_BIN`, else the workspace's release build.
pub fn tracer_bin() -> PathBuf {
    match std::env::var_os("TCPSTATE_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tcpstate"),
    }
}
