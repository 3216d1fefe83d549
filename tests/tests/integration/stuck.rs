//! `--stuck DURATION`: a socket that stays in a state only its application
//! or its peer can end (CLOSE_WAIT, FIN_WAIT2 including an orphaned timewait
//! socket, LAST_ACK, SYN_SENT) longer than the threshold is flagged once
//! with a state row (`tracker`, note `stuck`, `is STATE`, `age_ms`) naming
//! the process that owns it.

use std::thread;
use std::time::Duration;

use tcpstate_tests::beyond::*;

/// The client closes, the server leaves its end in CLOSE_WAIT on purpose.
/// After 1 s both ends are flagged: the server's CLOSE_WAIT (its owner is
/// the server, which must call close()) and the client's orphaned FIN_WAIT2
/// (owner: the client that closed it; it waits for the server's FIN). Each
/// once only, however long they stay.
#[test]
fn close_wait_left_open_is_flagged_with_its_owner() {
    let mut w = Connected::loopback(&["--stuck", "1s"]);
    let (s, c) = (w.s, w.c);

    w.client.close();
    w.server.expect_reply("wait-eof", "eof 0");
    w.tracer.wait_for(c.port(), PORT, FIN_WAIT2, CLOSE);
    let early = w.tracer.snapshot();
    assert!(
        !early.all.iter().any(|e| e.note.as_deref() == Some("stuck")),
        "nothing is stuck yet\n{}",
        early.dump_all()
    );
    wait_end(&w.tracer, 5, s, c, "tracker/stuck is CLOSE_WAIT");
    wait_end(&w.tracer, 5, c, s, "tracker/stuck is FIN_WAIT2");
    assert_eq!(ss_state(&w.ns, s, c).as_deref(), Some("CLOSE-WAIT"));
    // Flagged once: nothing more while they stay stuck.
    thread::sleep(Duration::from_millis(2500));
    w.server.close();
    wait_end(&w.tracer, 5, c, s, "tracker/timewait FIN_WAIT2->TIME_WAIT");
    let t = w.tracer.stop();

    let srv = w.assert_server_end(
        &t,
        &[
            ACCEPTED,
            &[
                "tracepoint ESTABLISHED->CLOSE_WAIT",
                "tracker/stuck is CLOSE_WAIT",
                "tracepoint CLOSE_WAIT->LAST_ACK",
                "tracepoint LAST_ACK->CLOSE",
            ],
        ],
    );
    let stuck = &srv[3];
    assert_owner(&t, "stuck CLOSE_WAIT", stuck, w.server.pid);
    assert_ms(&t, "stuck CLOSE_WAIT age_ms", stuck.age_ms, 1000.0, 2000.0);
    assert_eq!(stuck.ms, stuck.age_ms, "{}", stuck.row());
    assert!(stuck.time_ns - srv[2].time_ns >= 1_000_000_000);

    let cli = w.assert_client_end(
        &t,
        &[
            OPENED,
            ACTIVE_CLOSE,
            &[
                "tracker/timewait-socket is FIN_WAIT2",
                "tracker/stuck is FIN_WAIT2",
                "tracker/timewait FIN_WAIT2->TIME_WAIT",
            ],
        ],
    );
    assert_owner(&t, "stuck orphaned FIN_WAIT2", &cli[6], w.client.pid);
    assert_ms(&t, "stuck FIN_WAIT2 age_ms", cli[6].age_ms, 1000.0, 2000.0);
    t.assert_invariants();
}

/// A connection closed promptly on both sides is never flagged, and neither
/// is a listener or an idle ESTABLISHED connection, however long they last.
#[test]
fn prompt_close_and_idle_connections_are_not_flagged() {
    let mut w = Connected::loopback(&["--stuck", "1s"]);
    let mut quick = Peer::client(&w.ns, LOOPBACK);
    w.server.accept();
    quick.cmd("shutdown wr");
    w.server.expect_reply("wait-eof", "eof 0");
    server_closes_first(&mut w.server, &mut quick);
    w.tracer
        .wait_for(quick.local.port(), PORT, FIN_WAIT2, CLOSE);
    thread::sleep(Duration::from_millis(2500));
    w.client.exit(); // the idle connection
    w.server.exit();
    let t = w.tracer.stop();
    let stuck: Vec<String> = t
        .all
        .iter()
        .filter(|e| e.note.as_deref() == Some("stuck"))
        .map(|e| e.row())
        .collect();
    assert!(
        stuck.is_empty(),
        "nothing should be flagged as stuck:\n  {}\n{}",
        stuck.join("\n  "),
        t.dump_all()
    );
}
