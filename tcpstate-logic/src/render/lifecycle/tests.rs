use super::*;
use crate::event::tests::raw_v4;
use crate::event::{Source, Task, TcpState::*};

const START: u64 = 4_000_000_000;

/// Events of one socket: `(ts_ns, old, new)`, with ports filled in from
/// the second event on (the client's first event has local port 0).
fn socket(skaddr: u64, owner: Option<u32>, steps: &[(u64, TcpState, TcpState)]) -> Vec<TcpEvent> {
    let mut prev: Option<u64> = None;
    steps
        .iter()
        .enumerate()
        .map(|(i, &(ts, old, new))| {
            let mut ev = TcpEvent::from(&raw_v4());
            ev.skaddr = skaddr;
            ev.ts_ns = ts;
            ev.old = old;
            ev.new = new;
            ev.dwell_ns = prev.map(|p| ts - p);
            prev = Some(ts);
            ev.owner = owner.map(|pid| Task {
                pid,
                comm: *b"tcppeer\0\0\0\0\0\0\0\0\0",
            });
            if i == 0 {
                ev.lport = 0;
            }
            ev
        })
        .collect()
}

fn client() -> Vec<TcpEvent> {
    socket(
        0xa0,
        Some(77),
        &[
            (START + 1_000_000_000, Close, SynSent),
            (START + 1_000_041_000, SynSent, Established),
            (START + 1_812_386_000, Established, FinWait1),
            (START + 1_812_436_000, FinWait1, FinWait2),
            (START + 1_812_468_000, FinWait2, Close),
        ],
    )
}

fn text() -> Lifecycle {
    let clock = WallClock::with_offset(1_764_000_000_000_000_000, START);
    Lifecycle::text(
        TimeWriter::new(clock, TimeFormat::SinceStart),
        Palette::new(false),
        100,
    )
    .with_now(|| START + 10_000_000_000)
}

fn json() -> Lifecycle {
    Lifecycle::json(
        WallClock::with_offset(1_764_000_000_000_000_000, START),
        100,
    )
    .with_now(|| START + 10_000_000_000)
}

fn run(l: &mut Lifecycle, events: &[TcpEvent], finish: bool) -> String {
    let mut out = Vec::new();
    for ev in events {
        l.event(ev, &mut out);
    }
    if finish {
        l.finish(&mut out, &mut Vec::new());
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn golden_text_client_active_close() {
    let mut l = text();
    let mut events = client();
    events[4].peer_fin = Some(false);
    let mut out = Vec::new();
    l.header(&mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "TIME(s)      PID     COMM             LOCAL                 REMOTE                ROLE     CLOSE        TOTAL       PATH\n"
    );
    assert_eq!(
        run(&mut l, &events, true),
        "1.812468     77      tcppeer          127.0.0.1:10050       127.0.0.2:48008       client   active       812.468ms   \
         SYN_SENT 0.041ms > ESTABLISHED 812.345ms > FIN_WAIT1 0.050ms > FIN_WAIT2 0.032ms > CLOSE (then FIN_WAIT2)\n"
    );
}

#[test]
fn golden_text_server_passive_and_listener_and_unfinished() {
    let mut events = socket(
        0xb0,
        Some(66),
        &[
            (START + 100, Close, Listen),
            (START + 9_000_000_000, Listen, Close),
        ],
    );
    events.extend(socket(
        0xc0,
        None,
        &[
            (START + 1_000_020_000, Listen, SynRecv),
            (START + 1_000_040_000, SynRecv, Established),
            (START + 1_812_400_000, Established, CloseWait),
            (START + 1_900_000_000, CloseWait, LastAck),
            (START + 1_900_050_000, LastAck, Close),
        ],
    ));
    events.extend(socket(
        0xd0,
        Some(77),
        &[
            (START + 2_000_000_000, Close, SynSent),
            (START + 2_000_100_000, SynSent, Established),
        ],
    ));
    events.sort_by_key(|e| e.ts_ns);
    let mut l = text();
    let out = run(&mut l, &events, true);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "1.900050     -       -                127.0.0.1:10050       127.0.0.2:48008       server   passive      900.030ms   \
             SYN_RECV 0.020ms > ESTABLISHED 812.360ms > CLOSE_WAIT 87.600ms > LAST_ACK 0.050ms > CLOSE",
            "9.000000     66      tcppeer          127.0.0.1:10050       127.0.0.2:48008       listener -            9000.000ms  \
             LISTEN 9000.000ms > CLOSE",
            "2.000100     77      tcppeer          127.0.0.1:10050       127.0.0.2:48008       client   -            8000.000ms+ \
             SYN_SENT 0.100ms > ESTABLISHED 7999.900ms+ (unfinished)",
        ]
    );
    assert_eq!(l.open(), 0);
}

#[test]
fn golden_json_record() {
    let mut l = json();
    let mut events = client();
    events[4].peer_fin = Some(true);
    let out = run(&mut l, &events, false);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "schema": 1,
            "type": "lifecycle",
            "time": "2025-11-24T16:00:05.812468Z",
            "time_ns": 5_812_468_000u64,
            "end": "closed",
            "skaddr": "0xa0",
            "netns": 4026531840u32,
            "family": "ipv4",
            "pid": 77,
            "comm": "tcppeer",
            "laddr": "127.0.0.1",
            "lport": 10050,
            "raddr": "127.0.0.2",
            "rport": 48008,
            "role": "client",
            "close": "active",
            "reason": null,
            "data_retransmits": 0,
            "timewait": "TIME_WAIT",
            "complete": true,
            "start_ns": 5_000_000_000u64,
            "ms": 812.468,
            "path": [
                {"state": "SYN_SENT", "ms": 0.041},
                {"state": "ESTABLISHED", "ms": 812.345},
                {"state": "FIN_WAIT1", "ms": 0.05},
                {"state": "FIN_WAIT2", "ms": 0.032},
                {"state": "CLOSE", "ms": null}
            ]
        })
    );
}

#[test]
fn simultaneous_abort_and_late_joiners() {
    let simul = socket(
        0x1,
        None,
        &[
            (START + 10, Established, FinWait1),
            (START + 20, FinWait1, Closing),
            (START + 30, Closing, Close),
        ],
    );
    let abort = socket(
        0x2,
        None,
        &[
            (START + 10, Close, SynSent),
            (START + 20, SynSent, Established),
            (START + 30, Established, Close),
        ],
    );
    let mut l = json();
    let out = run(&mut l, &[simul, abort].concat(), false);
    let recs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs[0]["close"], "simultaneous");
    assert_eq!(recs[0]["role"], "unknown");
    assert_eq!(recs[0]["complete"], false);
    assert_eq!(recs[0]["start_ns"], serde_json::Value::Null);
    assert_eq!(
        recs[0]["path"][0],
        serde_json::json!({"state": "ESTABLISHED", "ms": null})
    );
    assert_eq!(recs[1]["close"], "abort");
    assert_eq!(recs[1]["timewait"], serde_json::Value::Null);
    assert_eq!(recs[1]["role"], "client");
    assert_eq!(recs[1]["complete"], true);
}

#[test]
fn gaps_and_reused_addresses() {
    // FIN_WAIT1 -> FIN_WAIT2 was lost; then the address is reused.
    let mut evs = socket(
        0x5,
        None,
        &[
            (START + 10, Close, SynSent),
            (START + 20, SynSent, Established),
            (START + 30, Established, FinWait1),
        ],
    );
    let mut tail = socket(0x5, None, &[(START + 40, FinWait2, Close)]);
    tail[0].dwell_ns = Some(5);
    evs.extend(tail);
    evs.extend(socket(
        0x5,
        None,
        &[
            (START + 50, Close, SynSent),
            (START + 60, SynSent, Established),
        ],
    ));
    let mut l = text();
    let out = run(&mut l, &evs, false);
    assert!(
        out.ends_with("FIN_WAIT1 0.000ms > ... > FIN_WAIT2 0.000ms > CLOSE\n"),
        "{out}"
    );
    let mut again = socket(0x5, None, &[(START + 70, Close, SynSent)]);
    again[0].lport = 1;
    let out = run(&mut l, &again, false);
    assert!(out.contains("(unfinished)"), "{out}");
    assert_eq!(l.open(), 1);
}

#[test]
fn snapshot_rows_start_histories_and_other_notes_are_ignored() {
    let mut snap = TcpEvent::from(&raw_v4());
    snap.skaddr = 0; // sock_diag does not give the kernel address
    snap.source = Source::SockDiag;
    snap.note = Some(Note::Snapshot);
    snap.old = Established;
    snap.new = Established;
    snap.dwell_ns = None;
    let mut stuck = snap;
    stuck.source = Source::Tracker;
    stuck.note = Some(Note::Stuck(1));
    let mut close = socket(
        0x9,
        None,
        &[
            (START + 5, Established, CloseWait),
            (START + 9, CloseWait, LastAck),
        ],
    );
    close.extend(socket(0x9, None, &[(START + 10, LastAck, Close)]));
    for e in &mut close {
        e.lport = 10050;
    }
    let mut other = snap;
    other.lport = 22;
    other.new = CloseWait;
    let mut timewait = snap;
    timewait.lport = 23;
    timewait.new = TimeWait;
    let mut l = text();
    let out = run(
        &mut l,
        &[&[snap, other, timewait, stuck][..], &close].concat(),
        true,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].ends_with(
            "unknown  passive      ?           ... > ESTABLISHED ? > CLOSE_WAIT 0.000ms > LAST_ACK 0.000ms > CLOSE"
        ),
        "{out}"
    );
    assert!(
        lines[1].ends_with("127.0.0.1:22          127.0.0.2:48008       unknown  passive      ?           ... > CLOSE_WAIT ?+ (unfinished)"),
        "{out}"
    );
}

#[test]
fn bounded_with_evictions_counted() {
    let mut l = Lifecycle::json(WallClock::with_offset(0, 0), 3).with_now(|| 0);
    let mut evs = Vec::new();
    for i in 0..10u64 {
        evs.extend(socket(0x100 + i, None, &[(i, Close, SynSent)]));
    }
    run(&mut l, &evs, false);
    assert_eq!(l.open(), 3);
    assert_eq!(l.evicted, 7);
    assert!(l.order.len() <= 2 * 3 + 64);
    let out = run(&mut l, &[], true);
    let addrs: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["skaddr"].to_string())
        .collect();
    assert_eq!(addrs, ["\"0x107\"", "\"0x108\"", "\"0x109\""]);
}
