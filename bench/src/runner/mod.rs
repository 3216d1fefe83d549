//! The pieces of the `tcpstate-bench` runner that need root or real processes (the pure ones,
//! unit-tested, are in the library): the namespace, the processes, the variants, the tracer
//! and the load of one run, the machine's state, and the verdict.

pub mod idle;
pub mod load;
pub mod machine;
pub mod netns;
pub mod one;
pub mod procs;
pub mod tracer;
pub mod variants;
pub mod verdict;

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

/// Set by SIGINT: the runner stops between runs and stops waiting, and the namespace and the
/// tracers are still cleaned up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT set the flag [`is_interrupted`] reads instead of killing the runner.
pub fn catch_sigint() {
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
}

pub fn is_interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Err once SIGINT came.
pub fn interrupted() -> Result<()> {
    if is_interrupted() {
        bail!("interrupted");
    }
    Ok(())
}
