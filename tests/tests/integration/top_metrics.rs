//! `--metrics` carries `--top`'s listener and TIME_WAIT facts: on the
//! traffic of [`super::top`] in a namespace of this test's own (a listener
//! with backlog 4 that never calls accept() and 20 clients, 3,000
//! TIME_WAITs to one destination with a small `ip_local_port_range`), a
//! scrape of `tcpstate --metrics --quiet --netns` (no `--top`) shows the
//! accept queue and its limit as `ss` does, the drops equal to the
//! namespace's `ListenOverflows`, the TIME_WAITs of that destination, and
//! passes `promtool check metrics`. Metrics on 127.0.0.1:23304.

use std::{process::Stdio, time::Duration};

use tcpstate_tests::{fleet::promtool_check, process::poll, reliability::Background, scaled};

use super::{
    kernels::{scrape, value},
    top::{FULL, HOLDER, TRAFFIC, TW, listen_overflows, python, tuned_netns},
};

const METRICS: &str = "127.0.0.1:23304";

/// The body of a scrape (after the HTTP head).
fn body(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map_or(response, |(_, body)| body)
}

#[test]
fn metrics_show_the_accept_queue_drops_and_timewait_per_destination() {
    let _load = tcpstate_tests::exclusive_load();
    let ns = tuned_netns();
    let mut holder = python(&ns, HOLDER, "ready");
    let path = ns.path().display().to_string();
    let mut tracer = Background::start(
        &[
            "--metrics",
            METRICS,
            "--quiet",
            "--netns",
            &path,
            "--metrics-timewait-top",
            "3",
        ],
        Stdio::null(),
    );
    tracer.wait_ready();
    let mut traffic = python(&ns, TRAFFIC, "done 3");

    let series = |name: &str| format!("{name}{{port=\"{FULL}\"}}");
    let drops = series("tcpstate_listen_drops_total");
    let timewait = format!(
        "tcpstate_timewait_sockets{{netns=\"{}\",local=\"127.0.0.1\",remote=\"127.0.0.1:{TW}\"}}",
        ns.inode()
    );
    // The 15 clients beyond the queue give up after one SYN retry; then the
    // drops stop growing and must equal the namespace's count.
    let mut last = String::new();
    let text = poll(
        scaled(Duration::from_secs(30)),
        Duration::from_millis(500),
        || {
            last = body(&scrape(METRICS).ok()?).to_string();
            let d = value(&last, &drops)?;
            (d > 0.0 && d == listen_overflows(&ns) as f64 && value(&last, &timewait)? == 3000.0)
                .then(|| last.clone())
        },
    )
    .unwrap_or_else(|| {
        panic!(
            "no `{drops}` equal to ListenOverflows {} and `{timewait} 3000` in the scrape:\n{last}\n{}",
            listen_overflows(&ns),
            tracer.stderr()
        )
    });
    let shown: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("tcpstate_listen")
                || l.starts_with("tcpstate_timewait_sockets")
                || l.starts_with("tcpstate_label_overflow")
        })
        .collect();
    eprintln!(
        "tcpstate --metrics, the listener and TIME_WAIT series:\n{}",
        shown.join("\n")
    );

    // Queue and limit as `ss -tln` shows them: backlog 4 holds 5.
    let ss = ns.exec(&["ss", "-tlnH", &format!("sport = :{FULL}")]);
    let ss: Vec<&str> = ss.split_whitespace().collect();
    assert_eq!(ss[1..3], ["5", "4"], "ss: {ss:?}");
    assert_eq!(
        value(&text, &series("tcpstate_listen_queue")),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &series("tcpstate_listen_queue_limit")),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &series("tcpstate_listeners")),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(&text, &drops).unwrap() >= 15.0,
        "15 clients beyond the queue, each SYN dropped at least once:\n{text}"
    );
    // Every listener of the namespace has its port; none overflowed the cap.
    for port in [FULL, FULL + 1, TW] {
        assert!(
            value(&text, &format!("tcpstate_listeners{{port=\"{port}\"}}")).is_some(),
            "no listener series for port {port}:\n{text}"
        );
    }
    assert_eq!(
        value(&text, "tcpstate_label_overflow_total{label=\"port\"}"),
        Some(0.0),
        "{text}"
    );
    // Top 3 destinations at most; never an ephemeral port as a listener label.
    let destinations = text
        .lines()
        .filter(|l| l.starts_with("tcpstate_timewait_sockets{"))
        .count();
    assert!((1..=3).contains(&destinations), "{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("tcpstate_listen") && l.contains("port=\"4")),
        "an ephemeral port (40000-44999) as a listener's label:\n{text}"
    );
    promtool_check(&text);

    tracer.stop();
    for child in [&mut holder, &mut traffic] {
        drop(child.stdin.take());
        tcpstate_tests::process::reap(child);
    }
}
