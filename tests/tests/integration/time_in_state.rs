//! `ms`, the time spent in the old state: null on a socket's first event
//! (nothing is known about the time before it), a non-negative number of
//! milliseconds on every later one. Also the per-event invariants that hold
//! whatever the scenario (schema, namespace, state names, chained transitions).

use std::thread;
use std::time::Duration;

use tcpstate_tests::states::*;
use tcpstate_tests::{Netns, Peer, Tracer};

#[test]
fn ms_is_null_first_then_non_negative() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();
    client.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(3);
    let t = tracer.stop();
    t.assert_socket_count(3);
    t.assert_invariants();
    for s in [
        t.client_end(&client),
        t.server_end(&conn),
        t.listener(10050),
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
/// long in ESTABLISHED (milliseconds, not seconds or microseconds).
#[test]
fn ms_measures_the_time_in_the_old_state() {
    const HELD_MS: f64 = 300.0;
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    let conn = server.accept();
    thread::sleep(Duration::from_millis(HELD_MS as u64));
    client.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(3);
    let t = tracer.stop();
    t.assert_invariants();
    let client_end = t.client_end(&client);
    t.assert_path(
        "client end",
        &client_end,
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    let established = client_end
        .events
        .iter()
        .find(|e| e.oldstate == ESTABLISHED)
        .and_then(|e| e.ms)
        .expect("ms of ESTABLISHED->FIN_WAIT1");
    assert!(
        (HELD_MS..HELD_MS + 10_000.0).contains(&established),
        "the client was ESTABLISHED for at least {HELD_MS} ms, tracer says {established} ms\n{}",
        t.dump()
    );
    let server_end = t.server_end(&conn);
    let server_established = server_end
        .events
        .iter()
        .find(|e| e.oldstate == ESTABLISHED)
        .and_then(|e| e.ms)
        .expect("ms of ESTABLISHED->CLOSE_WAIT");
    assert!(
        (HELD_MS..HELD_MS + 10_000.0).contains(&server_established),
        "the server end was ESTABLISHED for at least {HELD_MS} ms, tracer says {server_established} ms\n{}",
        t.dump()
    );
}
