//! Whether the user asked us to stop (SIGINT, SIGTERM, SIGHUP), readable
//! from synchronous code. The start-up read of thousands of namespaces runs
//! before the event loop, where tokio's signal streams are not polled: it
//! checks [`requested`] between namespaces, so Ctrl-C ends it at once.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Starts recording the stop signals (beside tokio's own handlers, which
/// still see them). Call once, before the start-up read.
pub fn watch() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the action only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            signal_hook_registry::register(sig, || REQUESTED.store(true, Ordering::Relaxed))
        }?;
    }
    Ok(())
}

/// True once a stop signal arrived after [`watch`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}
