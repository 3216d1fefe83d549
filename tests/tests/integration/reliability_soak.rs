//! Reliability, long runs: a bounded soak. A connection generator (client and
//! server threads inside the test's namespace, 10 transitions per
//! connection, TIME_WAIT sockets kept as on a busy host) runs
//! `TCPSTATE_SOAK_CONNECTIONS` connections (default 200 000; `cargo xtask
//! soak` runs 2 000 000) through one tracer. At the end:
//! - the tracer's RSS is flat: after the warm-up it never exceeds the
//!   warm-up's peak plus a small margin (its buffers are bounded, nothing
//!   grows per connection). The warm-up is 10 % of the run, but at least
//!   until the ephemeral ports have cycled twice: tcpstate follows every
//!   live timewait socket (by design, up to `--max-tracked`), and with
//!   `tcp_tw_reuse` there is at most one per port, so that set stops growing
//!   only then; its tables grow and shrink, hence the peak, not one sample;
//! - the kernel maps are back to (nearly) empty: SOCKS and LISTENERS hold
//!   nothing once every connection and the listener are closed;
//! - every event is accounted for: printed + counted as lost = produced.
//!
//! A second test checks that every map of an instance is bounded, sized by
//! the flags, and reports its size (printed for the closing note).

use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use tcpstate_common::names;
use tcpstate_tests::reliability::*;

/// The ephemeral ports `tune_for_churn_with_timewait` allows (1024-65535):
/// at most that many TIME_WAIT sockets are alive at once.
const EPHEMERAL_PORTS: u64 = 65535 - 1024 + 1;

fn soak_connections() -> u64 {
    std::env::var("TCPSTATE_SOAK_CONNECTIONS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(200_000)
}

/// Entries of the instance's map called `name`, and the map's capacity.
fn occupancy(maps: &[MapInfo], name: &str) -> Option<(usize, u32)> {
    let m = maps.iter().find(|m| m.name == name)?;
    let n = map_entries(m.id, m.max_entries as usize + 1)
        .unwrap_or_else(|e| panic!("counting entries of map {name} ({}): {e}", m.id));
    Some((n, m.max_entries))
}

/// Hash-like maps whose entries can be counted with GET_NEXT_KEY.
fn is_hash(map_type: u32) -> bool {
    // HASH, PERCPU_HASH, LRU_HASH, LRU_PERCPU_HASH
    matches!(map_type, 1 | 5 | 9 | 10)
}

#[test]
fn soak_keeps_memory_and_maps_flat() {
    let _load = tcpstate_tests::exclusive_load(); // 200k connections, every event accounted for
    let total = soak_connections();
    let ns = Netns::new();
    tune_for_churn_with_timewait(&ns);
    let netns = ns.path().to_string_lossy().into_owned();
    let mut t = Background::start(&["--netns", &netns], Stdio::null());
    t.wait_ready();
    let pid = t.pid();
    let (rss_start, _) = rss_kib(pid).unwrap();
    let start = Instant::now();
    let churn = Churn::start(&ns, 44001, total, 2);
    let warm_up = (total / 10).max(2 * EPHEMERAL_PORTS).min(total / 2);

    let mut rss_warm = 0;
    let mut rss_max = 0;
    let mut last_report = Instant::now();
    while churn.done() < total {
        let done = churn.done();
        let (rss, _) = rss_kib(pid).expect("tracer alive");
        rss_max = rss_max.max(rss);
        if done < warm_up {
            rss_warm = rss_max;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "soak: {done}/{total} connections, {:.0}/s, RSS {rss} KiB",
                done as f64 / start.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        assert!(
            t.child.try_wait().unwrap().is_none(),
            "tracer died during the soak:\n{}",
            t.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let retries = churn.retries.load(std::sync::atomic::Ordering::Relaxed);
    churn.wait();
    let elapsed = start.elapsed();
    // Let the last closes (LAST_ACK -> CLOSE on the final ACK) and the reader
    // catch up.
    thread::sleep(Duration::from_millis(500));

    let (rss_end, hwm) = rss_kib(pid).unwrap();
    let objs = BpfObjects::of_pid(pid);
    let maps = maps_of(&objs);
    let socks = occupancy(&maps, names::SOCKS).expect("the instance has a SOCKS map");
    let listeners = occupancy(&maps, "LISTENERS");
    let mut table = String::new();
    for m in &maps {
        let used = if is_hash(m.map_type) {
            map_entries(m.id, m.max_entries as usize + 1)
                .map(|n| n.to_string())
                .unwrap_or_else(|e| e.to_string())
        } else {
            "-".into()
        };
        table.push_str(&format!(
            "    {:<16} type {:>2} max_entries {:>9} entries now {}\n",
            m.name, m.map_type, m.max_entries, used
        ));
    }

    let objs_all = t.stop();
    let stderr = t.stderr();
    let (events, lost) = summary_counts(&stderr).unwrap_or_else(|| panic!("no summary:\n{stderr}"));
    let produced = total * 10 + 2;
    eprintln!(
        "soak: {total} connections in {:.1} s ({:.0}/s, {retries} connects retried); RSS {rss_start} KiB at start, \
         at most {rss_warm} KiB in the warm-up ({warm_up} connections), {rss_end} KiB at the end, max {rss_max} KiB (HWM {hwm} KiB); \
         SOCKS {}/{} entries, LISTENERS {:?}; {events} events printed, {lost} lost\n\
         maps of the instance at the end:\n{table}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        socks.0,
        socks.1,
        listeners
    );

    let rss_bound = rss_warm + (rss_warm / 4).max(8 * 1024);
    assert!(
        rss_max.max(rss_end) <= rss_bound,
        "RSS grew from at most {rss_warm} KiB in the first {warm_up} connections to \
         {rss_max} KiB (end: {rss_end} KiB) over {total} connections"
    );
    // An entry is removed by its socket's CLOSE event; one can only stay
    // behind when the kernel skipped the program for that event (counted as
    // lost). The LRU bounds them anyway.
    assert!(
        socks.0 as u64 <= 16 + lost,
        "SOCKS still holds {} entries after every connection closed, more than the {lost} \
         events lost can explain:\n{table}",
        socks.0
    );
    if let Some((n, _)) = listeners {
        assert_eq!(
            n, 0,
            "LISTENERS not empty after the listener closed:\n{table}"
        );
    }
    // Known kernel behaviour, measured here: when state changes nest on a
    // CPU (a softirq interrupting the program), the kernel skips the running
    // program for them (the nested-run program handles those, the rest are
    // counted as lost), and a few nested hits are dropped before any BPF
    // program sees them, which nothing counts: 1-8 % of the nested runs at
    // this rate. Allow that much unexplained shortfall against all nested
    // runs (handled + lost), never more; with no nesting, none.
    let rescued = stderr
        .split("records (")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let unexplained = produced.saturating_sub(events + lost);
    assert!(
        unexplained <= (lost + rescued) / 10 && events <= produced + produced / 100,
        "{produced} transitions were made: printed {events} + lost {lost} do not add up \
         ({unexplained} unaccounted)\n{stderr}"
    );
    objs_all.assert_released("soak");
}

/// Every map is bounded and sized from the flags (the ring buffer from
/// `--ring-size`, socket tracking from `--max-sockets`), and when one fills,
/// the exit report says how often it did.
#[test]
fn every_map_is_bounded_and_sized_by_the_flags() {
    let ns = Netns::new();
    let netns = ns.path().to_string_lossy().into_owned();
    let mut t = Background::start(
        &[
            "--netns",
            &netns,
            "--ring-size",
            "64K",
            "--max-sockets",
            "1024",
            "-p",
            "1",
            "-p",
            "2",
            "-p",
            "3",
        ],
        Stdio::null(),
    );
    t.wait_ready();
    let maps = maps_of(&BpfObjects::of_pid(t.pid()));
    let mut table = String::new();
    for m in &maps {
        table.push_str(&format!(
            "    {:<16} type {:>2} key {:>3} value {:>5} max_entries {:>9}\n",
            m.name, m.map_type, m.key_size, m.value_size, m.max_entries
        ));
    }
    eprintln!("maps with --ring-size 64K --max-sockets 1024 -p 1 -p 2 -p 3:\n{table}");
    let get = |name: &str| {
        maps.iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no map {name}:\n{table}"))
    };
    assert_eq!(get(names::EVENTS).max_entries, 64 << 10, "EVENTS\n{table}");
    assert_eq!(get(names::SOCKS).max_entries, 1024, "SOCKS\n{table}");
    // One byte per possible port: the filter is an array indexed by port.
    assert_eq!(get("PORTS").max_entries, 65536, "PORTS\n{table}");
    assert!(get("LISTENERS").max_entries <= 1024, "LISTENERS\n{table}");
    for m in &maps {
        // Ring buffers are sized in bytes; everything else in entries. None
        // may be larger than what the flags allow (16 Mi entries, 1 GiB).
        assert!(
            m.max_entries <= 1 << 30,
            "map {} has max_entries {}\n{table}",
            m.name,
            m.max_entries
        );
    }
    t.stop();
}

/// More sockets open at once than `--max-sockets`: the socket map is full
/// (an LRU map evicts the oldest entries); the exit report must say how many
/// sockets lost their tracking, and the affected events show the dwell time
/// as unknown rather than wrong.
#[test]
fn socket_map_overflow_is_counted_in_the_report() {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    let ns = Netns::new();
    let netns = ns.path().to_string_lossy().into_owned();
    let mut t = Background::start(
        &["--json", "--netns", &netns, "--max-sockets", "64"],
        Stdio::piped(),
    );
    let out = t.collect_stdout();
    t.wait_ready();
    let n = 300;
    ns.spawn_in(move || {
        let l = TcpListener::bind(("127.0.0.1", 44002)).unwrap();
        let mut conns = Vec::new();
        for _ in 0..n {
            let c = TcpStream::connect(("127.0.0.1", 44002)).unwrap();
            let (s, _) = l.accept().unwrap();
            conns.push((c, s));
        }
        // 2n sockets open at once, then all closed.
        for (c, mut s) in conns {
            drop(c);
            let mut buf = [0u8; 8];
            while matches!(s.read(&mut buf), Ok(k) if k > 0) {}
        }
    })
    .join()
    .unwrap()
    .expect("entering the namespace");
    thread::sleep(Duration::from_millis(300));
    t.stop();
    let stderr = t.stderr();
    let text = String::from_utf8(out.join().unwrap()).unwrap();
    let unknown = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["source"] == "tracepoint" && e["oldstate"] != "CLOSE" && e["ms"].is_null())
        .filter(|e| !(e["oldstate"] == "LISTEN" && e["newstate"] == "SYN_RECV"))
        .count();
    eprintln!(
        "{} sockets through a 64-entry socket map: {unknown} later events with unknown dwell\n{stderr}",
        2 * n
    );
    assert!(
        unknown > 0,
        "600 sockets open at once in a 64-entry map, yet no event lost its tracking?\n{stderr}"
    );
    let reported = stderr
        .lines()
        .any(|l| l.contains("max-sockets") || l.contains("socket-tracking"));
    assert!(
        reported,
        "{unknown} events lost their socket tracking (the 64-entry map overflowed), \
         but the exit report does not say so:\n{stderr}"
    );
}
