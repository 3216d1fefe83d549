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
    exit_report::ExitReport,
    gate::Gate,
    output::{Flush, Output},
    probe::{KernelStats, Probe},
    render::{Flow, Live, Render},
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
    pub report: &'a mut ExitReport,
}

impl Stages<'_> {
    fn emitter<'b>(
        gate: &'b mut Gate,
        render: &'b mut dyn Render,
        report: &'b mut ExitReport,
        out: &'b mut Vec<u8>,
    ) -> impl FnMut(&TcpEvent) + 'b {
        move |e: &TcpEvent| {
            if !gate.pass(e) {
                return;
            }
            report.record(e);
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
                    self.report.arrived(&ev);
                    let mut emit =
                        Self::emitter(&mut *self.gate, &mut *self.render, &mut *self.report, out);
                    self.enrich.on_event(&ev, &mut emit)
                }
                Err(_) => bad += 1,
            }
        }
        self.report.decode_errors += bad;
        self.report.received += received;
    }

    fn tick(&mut self, out: &mut Vec<u8>) {
        let mut emit = Self::emitter(&mut *self.gate, &mut *self.render, &mut *self.report, out);
        self.enrich.on_tick(boot_ns(), &mut emit);
    }

    /// Releases the rows the enricher still holds (CLOSE rows waiting for
    /// their cause), at exit.
    fn finish(&mut self, out: &mut Vec<u8>) {
        let mut emit = Self::emitter(&mut *self.gate, &mut *self.render, &mut *self.report, out);
        self.enrich.finish(&mut emit);
    }

    /// Runs the start-up snapshot through the same stages.
    /// `netns`: the `--netns` namespace's inode (resolved by the probe),
    /// 0 = every namespace.
    pub fn start(
        &mut self,
        netns: u32,
        start: &Start,
        out: &mut Vec<u8>,
    ) -> crate::enrich::snapshot::Snapshot {
        let mut emit = Self::emitter(&mut *self.gate, &mut *self.render, &mut *self.report, out);
        self.enrich.start(
            netns,
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
    /// As the exit report counts them (see `ExitReport::lost`).
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
    let mut signals = Signals::install()?;
    let mut out = Output::stdout();
    stages.render.header(out.buf());
    if let Some(stop) = start_up(probe, stages, &opts.start, &mut out)? {
        return Ok(stop);
    }
    let stop = trace(probe, &mut ring, stages, &opts, &mut out, &mut signals).await?;
    finish(probe, ring.get_mut(), stages, &mut out, stop)
}

/// The signals that end a run.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, UserError> {
        let sig = |k| {
            signal(k).map_err(|e| UserError::runtime(format!("installing signal handler: {e}")))
        };
        let signals = Signals {
            int: sig(SignalKind::interrupt())?,
            term: sig(SignalKind::terminate())?,
            hup: sig(SignalKind::hangup())?,
        };
        // The start-up read is synchronous: it polls this flag instead.
        crate::interrupt::watch()
            .map_err(|e| UserError::runtime(format!("installing signal handler: {e}")))?;
        Ok(signals)
    }

    async fn any(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

/// The start-up read of existing sockets, its warnings, and the ready line.
/// Listeners that predate tracing: the kernel side is told their owners so
/// the connections they accept are credited to them from now on (the few
/// accepted meanwhile get them in userspace). `Some` when the run ends here.
fn start_up(
    probe: &mut Probe,
    stages: &mut Stages<'_>,
    start: &Start,
    out: &mut Output,
) -> Result<Option<Stop>, UserError> {
    let t0 = std::time::Instant::now();
    let snap = stages.start(probe.netns, start, out.buf());
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
        return Ok(Some(Stop::Interrupted));
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
    Ok((!flushed(out)?).then_some(Stop::ClosedPipe))
}

/// The timers of the tracing loop.
struct Ticks {
    /// Drain and flush (`--flush-interval`).
    flush: tokio::time::Interval,
    /// Loss warnings and metrics samples, every second.
    stats: tokio::time::Interval,
    /// Half-open/timewait/stuck follow-ups: their lookups are due-based,
    /// so a tenth of a second is plenty.
    enrich: tokio::time::Interval,
}

impl Ticks {
    fn new(flush: Duration) -> Ticks {
        let every = |d| {
            let mut t = interval(d);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        };
        Ticks {
            flush: every(flush),
            stats: every(Duration::from_secs(1)),
            enrich: every(Duration::from_millis(100)),
        }
    }
}

/// Events until a signal, the duration, a closed stdout or the renderer
/// (`--top`'s q) ends the run.
async fn trace(
    probe: &mut Probe,
    ring: &mut AsyncFd<RingBuf<MapData>>,
    stages: &mut Stages<'_>,
    opts: &Options,
    out: &mut Output,
    signals: &mut Signals,
) -> Result<Stop, UserError> {
    let deadline = opts.duration.map(|d| Instant::now() + d);
    let far = Instant::now() + Duration::from_secs(100 * 365 * 86400);
    let mut ticks = Ticks::new(opts.flush_interval);
    let mut last_stats = Losses {
        kernel: KernelStats::default(),
        gaps: 0,
    };
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|e| UserError::runtime(format!("polling the ring buffer: {e}")))?;
                guard.clear_ready();
            }
            _ = ticks.flush.tick() => {}
            _ = ticks.enrich.tick() => {
                if !out.stalled() {
                    stages.drain(ring.get_mut(), out.buf());
                    stages.tick(out.buf());
                }
            }
            _ = ticks.stats.tick() => {
                every_second(probe, stages, &mut last_stats);
                if out.reader_gone() {
                    return Ok(Stop::ClosedPipe);
                }
            }
            _ = signals.any() => return Ok(Stop::Signal),
            _ = sleep_until(deadline.unwrap_or(far)) => return Ok(Stop::Duration),
        }
        // While stdout is stalled the ring buffer is left to fill: the
        // kernel then drops and counts new events instead of us buffering
        // without bound.
        if !out.stalled() {
            stages.drain(ring.get_mut(), out.buf());
        }
        let live = Live {
            kernel: &last_stats.kernel,
            report: stages.report,
            trackers: &stages.enrich.counters,
        };
        let flow = stages.render.live(&live, out.buf());
        if !flushed(out)? {
            return Ok(Stop::ClosedPipe);
        }
        if flow == Flow::Quit {
            return Ok(Stop::Signal);
        }
    }
}

/// Once a second: new losses said, the metrics' loss counters and samples.
fn every_second(probe: &Probe, stages: &mut Stages<'_>, last: &mut Losses) {
    let now = Losses {
        kernel: probe.stats(),
        gaps: stages.report.gaps.found,
    };
    warn_new_losses(last, now, stages.render.owns_terminal());
    if let Some(m) = stages.gate.metrics() {
        m.losses(&last.kernel, stages.report.decode_errors, last.gaps);
    }
    stages.gate.sample_metrics();
}

/// The end of a run: detach, then drain, so every event the kernel produced
/// while attached is delivered; the renderers' last output.
fn finish(
    probe: &mut Probe,
    ring: &mut RingBuf<MapData>,
    stages: &mut Stages<'_>,
    out: &mut Output,
    stop: Stop,
) -> Result<Stop, UserError> {
    if stop == Stop::ClosedPipe {
        // Nobody reads stdout any more, but renderers may also write files
        // (--diagram): let them finish, and drop what they print.
        let mut discard = Vec::new();
        stages.render.finish(&mut discard, &mut stages.report.notes);
        return Ok(stop);
    }
    probe.detach();
    stages.drain(ring, out.buf());
    stages.finish(out.buf());
    stages.render.finish(out.buf(), &mut stages.report.notes);
    match out.finish(FINISH_TIMEOUT) {
        Flush::Done => {}
        // The last flush can be the first write that fails (an idle run on
        // a full disk): an error then, not a quiet closed pipe.
        Flush::Closed => {
            return match out.error() {
                Some(e) => Err(UserError::runtime(format!("writing output: {e}"))),
                None => Ok(Stop::ClosedPipe),
            };
        }
        Flush::Busy => {
            eprintln!("tcpstate: warning: stdout stayed blocked; the last events were not written")
        }
    }
    Ok(stop)
}
