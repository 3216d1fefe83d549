//! `ms`, the time spent in the old state: null on a socket's first event
//! (nothing is known about the time before it), a non-negative number of
//! milliseconds on every later one. Also the per-event invariants that hold
//! whatever the scenario (schema, namespace, state names, chained transitions).

use std::thread;
use std::time::Duration;

use tcpstate_tests::scenario::*;
use tcpstate_tests::states::*;

#[test]
fn ms_is_null_first_then_non_negative() {
    let mut w = Connected::loopback(&[]);
    w.client_closes_first();
    let t = w.close_listener_and_stop(3);
    t.assert_socket_count(3);
    t.assert_invariants();
    for s in [
        t.client_end(&w.client),
        t.server_end(&w.conn),
        t.listener(PORT),
    ] {
        let first = &s.events[0];
        assert!(
            first.transition() == "CLOSE->SYN_SENT"
                || first.transition() == "CLOSE->LISTEN"
                || first.transition() == "LISTEN->SYN_RECV",
            "unexpected first event {}\n{}",
            first.transition(),
            t.dump()
        );
    }
}

/// A connection held ESTABLISHED for 300 ms: the close reports at least that
/// long in ESTABLISHED (milliseconds, not seconds or microseconds), on both
/// ends.
#[test]
fn ms_measures_the_time_in_the_old_state() {
    const HELD_MS: f64 = 300.0;
    let mut w = Connected::loopback(&[]);
    thread::sleep(Duration::from_millis(HELD_MS as u64));
    w.client_closes_first();
    let t = w.close_listener_and_stop(3);
    t.assert_invariants();
    w.assert_paths(&t, paths::ACTIVE_CLOSER, paths::PASSIVE_CLOSER_SERVER);
    for (what, end) in [
        ("client end", t.client_end(&w.client)),
        ("server end", t.server_end(&w.conn)),
    ] {
        let established = end
            .events
            .iter()
            .find(|e| e.oldstate == ESTABLISHED)
            .and_then(|e| e.ms)
            .unwrap_or_else(|| panic!("{what}: no ms leaving ESTABLISHED\n{}", t.dump()));
        assert!(
            (HELD_MS..HELD_MS + 10_000.0).contains(&established),
            "the {what} was ESTABLISHED for at least {HELD_MS} ms, tracer says {established} ms\n{}",
            t.dump()
        );
    }
}
