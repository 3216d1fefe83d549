//! Reliability, faults: SIGINT, SIGTERM, SIGHUP and SIGPIPE at any moment
//! (during start-up, once tracing, under traffic), stdout closed by its
//! reader, two instances at once, a consumer that stalls (stdout blocked) and
//! a tracer that is stopped (SIGSTOP). None may leave a BPF program, map or
//! link behind, hang, or grow memory without bound; losses must be counted
//! and shown.
//!
//! Leaks are checked per instance (other tests run tracers concurrently): the
//! ids of every BPF object the instance held are sampled from its fdinfo
//! while it runs, and after it exits the kernel must no longer know any of
//! them (BPF_*_GET_FD_BY_ID answers ENOENT).

use std::io::{BufRead, BufReader};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use tcpstate_tests::process::poll;
use tcpstate_tests::reliability::*;

/// When the signal is sent, relative to the tracer's start.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// This long after spawning (start-up: reading BTF and the format file).
    After(Duration),
    /// This long after the first BPF object appeared in its file table
    /// (creating maps, verifying and attaching programs).
    Loading(Duration),
    /// Once it says it is tracing.
    Ready,
    /// While connections are being traced.
    UnderTraffic,
}

fn moments() -> Vec<Moment> {
    let mut m: Vec<Moment> = [0, 1, 3, 10, 50, 150]
        .into_iter()
        .map(|ms| Moment::After(Duration::from_millis(ms)))
        .collect();
    m.extend(
        [0, 500, 2_000, 5_000, 10_000, 20_000]
            .into_iter()
            .map(|us| Moment::Loading(Duration::from_micros(us))),
    );
    m.extend([Moment::Ready, Moment::UnderTraffic]);
    m
}

/// One run: start, signal at `moment`, check the exit and the leak.
/// Returns a line for the log.
fn signal_run(ns: &Netns, port: u16, sig: libc::c_int, moment: Moment) -> String {
    let netns = ns.path().to_string_lossy().into_owned();
    let mut t = Background::start(&["--netns", &netns], Stdio::null());
    let mut churn = None;
    match moment {
        Moment::After(d) => thread::sleep(d),
        Moment::Loading(d) => {
            let deadline = Instant::now() + tcpstate_tests::READY_TIMEOUT;
            while BpfObjects::of_pid(t.pid()).is_empty() && !t.is_ready() {
                assert!(Instant::now() < deadline, "no BPF object appeared");
                assert!(t.child.try_wait().unwrap().is_none(), "tracer exited");
            }
            thread::sleep(d);
        }
        Moment::Ready => t.wait_ready(),
        Moment::UnderTraffic => {
            t.wait_ready();
            let c = Churn::start(ns, port, 300, 2);
            while c.done() < 50 {
                thread::sleep(Duration::from_millis(1));
            }
            churn = Some(c);
        }
    }
    let was_ready = t.is_ready();
    kill(t.pid(), sig);
    if sig == libc::SIGPIPE {
        // Rust programs ignore SIGPIPE (writes see EPIPE instead) from the
        // start of main: after that the tracer must go on, and still stop
        // cleanly on SIGINT. Before main (right after spawning) the default
        // disposition kills it, which is fine.
        thread::sleep(Duration::from_millis(100));
        match t.child.try_wait().unwrap() {
            Some(s) if s.signal() == Some(libc::SIGPIPE) && !was_ready => {}
            Some(s) => panic!(
                "SIGPIPE at {moment:?} ended the tracer ({}); stderr:\n{}",
                describe(s),
                t.stderr()
            ),
            None => {
                if !t.is_ready() {
                    t.wait_ready();
                }
                kill(t.pid(), libc::SIGINT);
            }
        }
    }
    let (status, objs) = t.wait(HANG_TIMEOUT);
    if let Some(c) = churn {
        c.wait();
    }
    let stderr = t.stderr();
    for bad in ["panicked", "backtrace", "tcpstate: error"] {
        assert!(
            !stderr.contains(bad),
            "signal {sig} at {moment:?}: stderr has {bad:?}:\n{stderr}"
        );
    }
    // Once its handlers are installed it must exit 0 with the summary;
    // before that, dying of the signal (default disposition) is fine.
    let handled = status.code() == Some(0);
    let killed = status.signal() == Some(sig)
        || (sig == libc::SIGPIPE && status.signal() == Some(libc::SIGINT));
    assert!(
        handled || (killed && !matches!(moment, Moment::UnderTraffic)),
        "signal {sig} at {moment:?}: unexpected end {}; stderr:\n{stderr}",
        describe(status)
    );
    if handled && was_ready {
        assert!(
            summary_counts(&stderr).is_some(),
            "signal {sig} at {moment:?}: no summary on exit:\n{stderr}"
        );
    }
    objs.assert_released(&format!("signal {sig} at {moment:?}"));
    format!(
        "signal {sig:>2} at {moment:?}: {}, {} progs / {} maps / {} links seen, all released",
        describe(status),
        objs.progs.len(),
        objs.maps.len(),
        objs.links.len()
    )
}

fn signals_at_every_moment(sig: libc::c_int, port: u16) {
    let ns = Netns::new();
    tune_for_churn(&ns);
    let mut log = Vec::new();
    for moment in moments() {
        log.push(signal_run(&ns, port, sig, moment));
    }
    eprintln!("{}", log.join("\n"));
    assert_no_orphaned_programs();
}

/// One test per signal, each with its own port: [`signals_at_every_moment`].
macro_rules! signal_at_every_moment_test {
    ($($name:ident: $sig:ident on $port:literal;)*) => {$(
        #[test]
        fn $name() {
            signals_at_every_moment(libc::$sig, $port);
        }
    )*};
}

signal_at_every_moment_test! {
    sigint_at_any_moment_leaves_nothing_behind: SIGINT on 43001;
    sigterm_at_any_moment_leaves_nothing_behind: SIGTERM on 43002;
    sighup_at_any_moment_leaves_nothing_behind: SIGHUP on 43003;
    sigpipe_at_any_moment_is_survived_and_leaves_nothing_behind: SIGPIPE on 43004;
}

/// "Tracing TCP state changes. Hit Ctrl-C to end." is a promise: from that
/// line on, Ctrl-C (and SIGTERM, SIGHUP) must stop the tracer cleanly, with
/// its summary and status 0, not kill it by the default disposition. The
/// signal is sent by the stderr reader the moment the line arrives.
#[test]
fn signal_right_after_the_ready_line_is_handled() {
    let ns = Netns::new();
    let netns = ns.path().to_string_lossy().into_owned();
    let mut failures = Vec::new();
    let mut runs = 0;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        for _ in 0..8 {
            let mut cmd = tracer();
            cmd.args(["--netns", &netns]).stdout(Stdio::null());
            let mut t = Background::spawn_signalled_on_ready(cmd, Some(sig));
            let (status, objs) = t.wait(HANG_TIMEOUT);
            objs.assert_released("signal right after the ready line");
            runs += 1;
            let stderr = t.stderr();
            if status.code() != Some(0) || summary_counts(&stderr).is_none() {
                failures.push(format!("signal {sig}: {}", describe(status)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} tracers signalled right after printing the ready line were not \
         stopped cleanly (handlers installed after the line?): {failures:?}",
        failures.len()
    );
}

/// SIGKILL cannot be handled: the kernel must still free everything (nothing
/// is pinned or attached beyond the process's own file descriptors).
#[test]
fn sigkill_leaves_nothing_behind() {
    let ns = Netns::new();
    let netns = ns.path().to_string_lossy().into_owned();
    for delay in [None, Some(20), Some(80)] {
        let mut t = Background::start(&["--netns", &netns], Stdio::null());
        match delay {
            None => t.wait_ready(),
            Some(ms) => thread::sleep(Duration::from_millis(ms)),
        }
        kill(t.pid(), libc::SIGKILL);
        let (_, objs) = t.wait(HANG_TIMEOUT);
        objs.assert_released(&format!("SIGKILL after {delay:?} ms"));
    }
}

/// `tcpstate | head -1`: the reader goes away; the tracer must notice
/// (EPIPE), exit 0 without an error, and release everything.
#[test]
fn stdout_closed_by_its_reader_ends_the_tracer_quietly() {
    let (ns, netns) = churn_netns();
    let mut t = Background::start(&["--netns", &netns], Stdio::piped());
    let mut out = BufReader::new(t.child.stdout.take().unwrap());
    t.wait_ready();
    let mut header = String::new();
    out.read_line(&mut header).unwrap();
    assert!(header.contains("OLDSTATE"), "header: {header:?}");
    drop(out); // like `head -1` exiting
    let churn = Churn::start(&ns, 43010, 200, 1);
    let (status, objs) = t.wait(HANG_TIMEOUT);
    churn.wait();
    let stderr = t.stderr();
    assert_eq!(
        status.code(),
        Some(0),
        "closed stdout: {}\n{stderr}",
        describe(status)
    );
    assert!(
        !stderr.contains("tcpstate: error") && !stderr.contains("panicked"),
        "closed stdout should end quietly:\n{stderr}"
    );
    objs.assert_released("closed stdout");
}

/// Two tracers on the same namespace see the same events, and each one's
/// exit leaves the other running and releases only its own objects.
#[test]
fn two_instances_run_at_once() {
    let (ns, netns) = churn_netns();
    let mut a = Background::start(&["--json", "--netns", &netns], Stdio::piped());
    let mut b = Background::start(&["--json", "--netns", &netns], Stdio::piped());
    let (out_a, out_b) = (a.collect_stdout(), b.collect_stdout());
    a.wait_ready();
    b.wait_ready();
    let n = 50;
    Churn::start(&ns, 43020, n, 2).wait();
    thread::sleep(Duration::from_millis(100));
    let objs_b_live = BpfObjects::of_pid(b.pid());
    let objs_a = a.stop();
    // b keeps running with all its objects after a is gone.
    assert!(b.child.try_wait().unwrap().is_none(), "b died with a");
    assert!(
        objs_b_live.still_existing() == objs_b_live,
        "b's objects vanished when a exited: {objs_b_live:?}"
    );
    assert!(
        objs_a.progs.is_disjoint(&objs_b_live.progs),
        "instances share programs"
    );
    objs_a.assert_released("first instance");
    let objs_b = b.stop();
    objs_b.assert_released("second instance");

    let keys = |out: Vec<u8>| -> Vec<String> {
        let mut v: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["source"] == "tracepoint")
            .map(|e| {
                // Not the time: each instance's program reads the clock itself.
                format!(
                    "{} {}:{} {}:{} {}->{}",
                    e["skaddr"],
                    e["laddr"],
                    e["lport"],
                    e["raddr"],
                    e["rport"],
                    e["oldstate"],
                    e["newstate"]
                )
            })
            .collect();
        v.sort();
        v
    };
    let (ka, kb) = (keys(out_a.join().unwrap()), keys(out_b.join().unwrap()));
    // Events an instance could not get (skipped by the kernel while another
    // BPF program ran on that CPU, e.g. a concurrent test's tracer) are
    // counted in its summary: only those may differ.
    let lost = |t: &Background| summary_counts(&t.stderr()).map_or(0, |(_, l)| l as usize);
    let (la, lb) = (lost(&a), lost(&b));
    let expected = n as usize * 10 + 2;
    assert!(
        ka.len() <= expected && ka.len() + la >= expected,
        "first instance: {} events, {la} lost, {expected} made",
        ka.len()
    );
    assert!(
        kb.len() <= expected && kb.len() + lb >= expected,
        "second instance: {} events, {lb} lost, {expected} made",
        kb.len()
    );
    let only_a: Vec<_> = ka.iter().filter(|k| !kb.contains(k)).collect();
    let only_b: Vec<_> = kb.iter().filter(|k| !ka.contains(k)).collect();
    assert!(
        only_a.len() <= lb && only_b.len() <= la,
        "both instances should see the same events; only the first: {only_a:?}; \
         only the second: {only_b:?} (lost: {la}, {lb})"
    );
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out-array for pipe2.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Peak RSS (KiB) sampled every 20 ms while `f` runs.
fn peak_rss_during<T>(pid: u32, f: impl FnOnce() -> T) -> (T, u64) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let sampler = thread::spawn(move || {
        let mut peak = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some((rss, _)) = rss_kib(pid) {
                peak = peak.max(rss);
            }
            thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    let r = f();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (r, sampler.join().unwrap())
}

/// A consumer that never reads: the reader blocks in write(), the small ring
/// fills, the kernel drops and counts; memory stays bounded. Once the
/// consumer reads again, the tracer stops on SIGINT and its summary reports
/// the losses.
#[test]
fn stalled_consumer_counts_losses_and_bounds_memory() {
    let _load = tcpstate_tests::exclusive_load(); // every event accounted for
    let (ns, netns) = churn_netns();
    let (rd, wr) = pipe();
    let mut t = Background::start(&["--netns", &netns, "--ring-size", "4096"], Stdio::from(wr));
    t.wait_ready();
    let (_, rss0) = rss_kib(t.pid()).unwrap();
    let n = 3000;
    let ((), peak) = peak_rss_during(t.pid(), || Churn::start(&ns, 43030, n, 2).wait());
    // Blocked, not dead.
    assert!(
        t.child.try_wait().unwrap().is_none(),
        "tracer died while stalled"
    );
    kill(t.pid(), libc::SIGINT);
    thread::sleep(Duration::from_millis(200));
    // Unblock: read everything until the tracer exits and closes the pipe.
    let reader = slurp(std::fs::File::from(rd));
    let (status, objs) = t.wait(HANG_TIMEOUT);
    let out = reader.join().unwrap();
    let stderr = t.stderr();
    assert_eq!(status.code(), Some(0), "{}\n{stderr}", describe(status));
    let (events, lost) = summary_counts(&stderr)
        .unwrap_or_else(|| panic!("no summary after a stalled run:\n{stderr}"));
    let produced = n * 10 + 2;
    assert!(
        lost > 0,
        "{produced} events through a 4 KiB ring to a stalled consumer, yet none lost:\n{stderr}"
    );
    assert!(
        events + lost >= produced,
        "events ({events}) + lost ({lost}) should account for all {produced}:\n{stderr}"
    );
    let lines = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64;
    assert!(
        lines >= events.min(1),
        "printed {lines} lines for {events} events"
    );
    eprintln!(
        "stalled consumer: {events} events printed, {lost} lost; RSS {rss0} KiB at start, \
         peak {peak} KiB while stalled"
    );
    assert!(
        peak < rss0 + 16 * 1024,
        "RSS grew from {rss0} KiB to {peak} KiB while stdout was stalled"
    );
    objs.assert_released("stalled consumer");
}

/// While stdout is blocked, SIGTERM (what service managers send) must still
/// end the tracer promptly: a tracer that cannot be stopped without SIGKILL
/// while its consumer is stuck counts as hung.
#[test]
fn sigterm_ends_the_tracer_while_stdout_is_blocked() {
    let (ns, netns) = churn_netns();
    let (rd, wr) = pipe();
    let mut t = Background::start(&["--netns", &netns, "--ring-size", "4096"], Stdio::from(wr));
    t.wait_ready();
    Churn::start(&ns, 43040, 2000, 2).wait();
    kill(t.pid(), libc::SIGTERM);
    let ended = poll(Duration::from_secs(5), Duration::from_millis(10), || {
        t.child.try_wait().unwrap()
    });
    // Unblock it either way so nothing is left running.
    let reader = slurp(std::fs::File::from(rd));
    let (status, objs) = t.wait(HANG_TIMEOUT);
    drop(reader);
    objs.assert_released("SIGTERM while stdout is blocked");
    let status = ended.unwrap_or_else(|| {
        panic!(
            "SIGTERM did not end the tracer within 5 s while its stdout was blocked \
             (it ended only once the pipe was read: {}); stderr:\n{}",
            describe(status),
            t.stderr()
        )
    });
    assert!(
        status.code().is_some() || status.signal() == Some(libc::SIGTERM),
        "{}",
        describe(status)
    );
}

/// A tracer that is stopped (SIGSTOP, a debugger, a frozen cgroup) loses
/// events; once it runs again it says so while running, not only at exit.
#[test]
fn losses_while_stopped_are_reported_live() {
    let (ns, netns) = churn_netns();
    let mut t = Background::start(&["--netns", &netns, "--ring-size", "4096"], Stdio::null());
    t.wait_ready();
    kill(t.pid(), libc::SIGSTOP);
    Churn::start(&ns, 43050, 500, 2).wait();
    kill(t.pid(), libc::SIGCONT);
    let warned = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        t.stderr().contains("events lost so far").then_some(())
    });
    assert!(
        warned.is_some(),
        "no live loss warning within 5 s of resuming:\n{}",
        t.stderr()
    );
    let objs = t.stop();
    let (_, lost) = summary_counts(&t.stderr()).expect("summary");
    assert!(lost > 0, "{}", t.stderr());
    objs.assert_released("SIGSTOP/SIGCONT");
}
