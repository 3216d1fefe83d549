//! Drains the ring buffer and writes rendered events, one write per batch.
//!
//! The kernel side submits with BPF_RB_NO_WAKEUP until the buffer is a quarter
//! full, so the reader is woken either by that (a burst) or by its own timer
//! (`--flush-interval`). This keeps the per-event cost off the traced
//! workload: a wakeup per event costs an irq_work plus a cross-CPU interrupt.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};

use crate::{
    clock::boot_ns,
    enrich::{Enricher, Filter},
    error::UserError,
    event::{TcpEvent, decode},
    gate::Gate,
    output::{Flush, Output},
    probe::{KernelStats, Probe},
    render::{Flow, Live, Render},
    summary::Summary,
};

/// Why tracing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Signal,
    Duration,
    /// stdout was closed (e.g. `| head`): exit quietly.
    ClosedPipe,
    /// A stop signal during the start-up read, before tracing began.
    Interrupted,
}

pub struct Options {
    pub flush_interval: Duration,
    pub duration: Option<Duration>,
    /// List existing sockets of this namespace (inode; 0 = ours) first.
    /// What to read of the sockets that exist at start.
    pub start: Start,
}

/// The start-up read of existing sockets (see `Enricher::start`).
pub struct Start {
    /// Namespace inode to read (`--netns`), 0 = every namespace.
    pub netns: u32,
    pub filter: Filter,
    /// Print a state row per existing socket the filter matches.
    pub rows: bool,
}

/// After stopping, how long the output may take to drain before we give up
/// (a consumer that stays stalled must not keep tcpstate from exiting).
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Ok(false) when stdout was closed; an error when writing failed otherwise.
fn flushed(out: &mut Output) -> Result<bool, UserError> {
    match out.flush() {
        Flush::Closed => match out.error() {
            Some(e) => Err(UserError::runtime(format!("writing output: {e}"))),
            None => Ok(false),
        },
        Flush::Done | Flush::Busy => Ok(true),
    }
}

/// The stages after decoding: enrich, then the gate (container filter,
/// metrics), then count and render.
pub struct Stages<'a> {
    pub enrich: &'a mut Enricher,
    pub gate: &'a mut Gate,
    pub render: &'a mut dyn Render,
    pub summary: &'a mut Summary,
}

impl Stages<'_> {
    fn emitter<'b>(
        gate: &'b mut Gate,
        render: &'b mut dyn Render,
        summary: &'b mut Summary,
        out: &'b mut Vec<u8>,
    ) -> impl FnMut(&TcpEvent) + 'b {
        move |e: &TcpEvent| {
            if !gate.pass(e) {
                return;
            }
            summary.record(e);
            render.event(e, out);
        }
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>, out: &mut Vec<u8>) {
        let mut bad = 0;
        let mut received = 0;
        while let Some(item) = ring.next() {
            received += 1;
            match decode(&item) {
                Ok(ev) => {
                    // Seen as it arrived, before enrichment folds any (one
                    // record at a time: nothing is buffered per drain).
                    self.summary.arrived(&ev);
                    let mut emit =
                        Self::emitter(&mut *self.gate, &mut *self.render, &mut *self.summary, out);
                    self.enrich.on_event(&ev, &mut emit)
                }
                Err(_) => bad += 1,
            }
        }
        self.summary.decode_errors += bad;
        self.summary.received += received;
    }

    fn tick(&mut self, out: &mut Vec<u8>) {
        let mut emit = Self::emitter(&mut *self.gate, &mut *self.render, &mut *self.summary, out);
        self.enrich.on_tick(boot_ns(), &mut emit);
    }

    /// Releases the rows the enricher still holds (CLOSE rows waiting for
    /// their cause), at exit.
    fn finish(&mut self, out: &mut Vec<u8>) {
        let mut emit = Self::emitter(&mut *self.gate, &mut *self.render, &mut *self.summary, out);
        self.enrich.finish(&mut emit);
    }

    /// Runs the start-up snapshot through the same stages.
    pub fn start(&mut self, start: &Start, out: &mut Vec<u8>) -> crate::enrich::snapshot::Snapshot {
        let mut emit = Self::emitter(&mut *self.gate, &mut *self.render, &mut *self.summary, out);
        self.enrich.start(
            start.netns,
            &start.filter,
            start.rows,
            &crate::interrupt::requested,
            &mut emit,
        )
    }
}

/// Warns on stderr when the kernel's loss counters grow, while running
/// (unless a full-screen view shows them: `quiet`).
/// Losses so far: the kernel's counts and the changes missing between a
/// socket's rows.
struct Losses {
    kernel: KernelStats,
    gaps: u64,
}

impl Losses {
    /// As the exit report counts them (see `Summary::lost`).
    fn total(&self) -> u64 {
        self.kernel.lost().max(self.gaps)
    }
}

fn warn_new_losses(prev: &mut Losses, now: Losses, quiet: bool) {
    if now.total() > prev.total() && !quiet {
        eprintln!(
            "tcpstate: warning: {} events lost so far (ring buffer full: {}, skipped by the kernel: {}, missing between a socket's rows: {}); \
             try a larger --ring-size or a faster output",
            now.total(),
            now.kernel.ringbuf_full,
            now.kernel.recursion_misses,
            now.gaps
        );
    }
    *prev = now;
}

pub async fn run(
    probe: &mut Probe,
    ring: RingBuf<MapData>,
    stages: &mut Stages<'_>,
    opts: Options,
) -> Result<Stop, UserError> {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged
    // for as long as the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| UserError::runtime(format!("polling the ring buffer: {e}")))?;
    // Handlers first, then the ready line: a signal sent as soon as the user
    // (or a script) sees it must stop us cleanly, not kill us.
    let sig =
        |k| signal(k).map_err(|e| UserError::runtime(format!("installing signal handler: {e}")));
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sigterm = sig(SignalKind::terminate())?;
    let mut sighup = sig(SignalKind::hangup())?;
    // The start-up read is synchronous: it polls this flag instead.
    crate::interrupt::watch()
        .map_err(|e| UserError::runtime(format!("installing signal handler: {e}")))?;
    let mut out = Output::stdout();
    stages.render.header(out.buf());
    // Listeners that predate tracing: tell the kernel side their owners so
    // the connections they accept are credited to them from now on (the few
    // accepted meanwhile get them in userspace).
    let t0 = std::time::Instant::now();
    let snap = stages.start(&opts.start, out.buf());
    if probe.verbose {
        eprintln!(
            "tcpstate: start-up read of existing sockets: {} listener owners, {} rows ({:.1} ms)",
            snap.listeners.len(),
            snap.rows.len(),
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
    if snap.interrupted {
        // Stopped before tracing began: nothing to drain, nothing to report
        // but that; dropping the probe releases every kernel object.
        return Ok(Stop::Interrupted);
    }
    if snap.skipped_namespaces > 0 {
        eprintln!(
            "tcpstate: warning: more than {} network namespaces; {} not read at start (no snapshot rows or listener owners there; those holding a process were read first)",
            crate::enrich::MAX_NAMESPACES,
            snap.skipped_namespaces
        );
    }
    let denied = snap
        .failed
        .iter()
        .filter(|(_, e)| e.kind() == std::io::ErrorKind::PermissionDenied)
        .count();
    if let Some(line) = crate::privileges::degraded_line(denied, snap.unreadable_processes) {
        eprintln!("{line}");
    }
    for (netns, e) in &snap.failed {
        if probe.verbose {
            eprintln!("tcpstate: network namespace {netns} not read at start: {e}");
        }
    }
    probe.seed_listeners(&snap.listeners);
    // Ready only once what exists is known: traffic started after this line
    // is never mistaken for (or listed with) the sockets that predate it.
    eprintln!("Tracing TCP state changes. Hit Ctrl-C to end.");
    if !flushed(&mut out)? {
        return Ok(Stop::ClosedPipe);
    }

    let deadline = opts.duration.map(|d| Instant::now() + d);
    let far = Instant::now() + Duration::from_secs(100 * 365 * 86400);
    let mut tick = interval(opts.flush_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stats_tick = interval(Duration::from_secs(1));
    stats_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_stats = Losses {
        kernel: KernelStats::default(),
        gaps: 0,
    };
    // Half-open/timewait/stuck follow-ups: their lookups are due-based, so a
    // tenth of a second is plenty.
    let mut enrich_tick = interval(Duration::from_millis(100));
    enrich_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let stop = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|e| UserError::runtime(format!("polling the ring buffer: {e}")))?;
                guard.clear_ready();
            }
            _ = tick.tick() => {}
            _ = enrich_tick.tick() => {
                if !out.stalled() {
                    stages.drain(ring.get_mut(), out.buf());
                    stages.tick(out.buf());
                }
            }
            _ = stats_tick.tick() => {
                let now = Losses {
                    kernel: probe.stats(),
                    gaps: stages.summary.gaps.found,
                };
                warn_new_losses(&mut last_stats, now, stages.render.owns_terminal());
                if let Some(m) = stages.gate.metrics() {
                    m.losses(
                        &last_stats.kernel,
                        stages.summary.decode_errors,
                        last_stats.gaps,
                    );
                }
                stages.gate.sample_metrics();
                if out.reader_gone() {
                    break Stop::ClosedPipe;
                }
            }
            _ = sigint.recv() => break Stop::Signal,
            _ = sigterm.recv() => break Stop::Signal,
            _ = sighup.recv() => break Stop::Signal,
            _ = sleep_until(deadline.unwrap_or(far)) => break Stop::Duration,
        }
        // While stdout is stalled the ring buffer is left to fill: the
        // kernel then drops and counts new events instead of us buffering
        // without bound.
        if !out.stalled() {
            stages.drain(ring.get_mut(), out.buf());
        }
        let live = Live {
            kernel: &last_stats.kernel,
            summary: stages.summary,
            trackers: &stages.enrich.counters,
        };
        let flow = stages.render.live(&live, out.buf());
        if !flushed(&mut out)? {
            break Stop::ClosedPipe;
        }
        if flow == Flow::Quit {
            break Stop::Signal;
        }
    };
    if stop == Stop::ClosedPipe {
        // Nobody reads stdout any more, but renderers may also write files
        // (--diagram): let them finish, and drop what they print.
        let mut discard = Vec::new();
        stages
            .render
            .finish(&mut discard, &mut stages.summary.notes);
    } else {
        // Detach first, then drain: every event the kernel produced while we
        // were attached is delivered, none is left in the buffer.
        probe.detach();
        stages.drain(ring.get_mut(), out.buf());
        stages.finish(out.buf());
        stages.render.finish(out.buf(), &mut stages.summary.notes);
        match out.finish(FINISH_TIMEOUT) {
            Flush::Done => {}
            // The last flush can be the first write that fails (an idle run
            // on a full disk): an error then, not a quiet closed pipe.
            Flush::Closed => {
                return match out.error() {
                    Some(e) => Err(UserError::runtime(format!("writing output: {e}"))),
                    None => Ok(Stop::ClosedPipe),
                };
            }
            Flush::Busy => {
                eprintln!(
                    "tcpstate: warning: stdout stayed blocked; the last events were not written"
                )
            }
        }
    }
    Ok(stop)
}
