//! Owner attribution: `pid`/`comm` name the process that owns the socket,
//! not the task that happened to be on the CPU. On loopback most transitions
//! run in softirq context (pid 0, swapper) or in the *peer* process (NOTES §3);
//! `cpu_pid`/`cpu_comm` report that task and may differ.

use tcpstate_tests::states::*;
use tcpstate_tests::{Netns, Peer, Socket, Trace, Tracer};

fn assert_owner(t: &Trace, what: &str, socket: &Socket, pid: u32) {
    let wrong: Vec<String> = socket
        .events
        .iter()
        .filter(|e| e.pid != Some(pid) || e.comm.as_deref() != Some("tcppeer"))
        .map(|e| {
            format!(
                "{}: pid {:?} comm {:?} (on cpu: {} {})",
                e.transition(),
                e.pid,
                e.comm,
                e.cpu_pid,
                e.cpu_comm
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "every transition of the {what} should name its owner {pid}/tcppeer, but:\n  {}\n{}",
        wrong.join("\n  "),
        t.dump()
    );
}

/// A client process and a server process: each socket's events carry the
/// pid of the process holding it, whoever's context the kernel ran them in.
#[test]
fn every_transition_names_the_owning_process() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut client = Peer::client(&ns, "127.0.0.1:10050");
    assert_ne!(server.pid, client.pid);
    let conn = server.accept();

    client.cmd("send 1000");
    server.expect_reply("recv 1000", "received 1000");
    client.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(3);
    let t = tracer.stop();
    let client_end = t.client_end(&client);
    let server_end = t.server_end(&conn);
    let listener = t.listener(10050);
    t.assert_path(
        "client end",
        &client_end,
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_path(
        "server end",
        &server_end,
        &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE],
    );
    t.assert_path("listener", &listener, &[CLOSE, LISTEN, CLOSE]);
    t.assert_socket_count(3);
    assert_owner(&t, "client end", &client_end, client.pid);
    assert_owner(&t, "server end", &server_end, server.pid);
    assert_owner(&t, "listener", &listener, server.pid);

    // The owner's own syscalls run in its context: connect (CLOSE->SYN_SENT),
    // listen (CLOSE->LISTEN), close (ESTABLISHED->FIN_WAIT1, CLOSE_WAIT->LAST_ACK).
    let on_cpu = |s: &Socket, transition: &str| {
        s.events
            .iter()
            .find(|e| e.transition() == transition)
            .map(|e| e.cpu_pid)
    };
    assert_eq!(
        on_cpu(&client_end, "CLOSE->SYN_SENT"),
        Some(client.pid),
        "{}",
        t.dump()
    );
    assert_eq!(
        on_cpu(&listener, "CLOSE->LISTEN"),
        Some(server.pid),
        "{}",
        t.dump()
    );
    assert_eq!(
        on_cpu(&client_end, "ESTABLISHED->FIN_WAIT1"),
        Some(client.pid),
        "{}",
        t.dump()
    );
    assert_eq!(
        on_cpu(&server_end, "CLOSE_WAIT->LAST_ACK"),
        Some(server.pid),
        "{}",
        t.dump()
    );
}

/// Two client processes connected to one server: each client socket names
/// its own process, and both accepted sockets name the server.
#[test]
fn each_client_process_owns_its_socket() {
    let ns = Netns::new();
    let tracer = Tracer::start(&ns, &[]);
    let mut server = Peer::server(&ns, "127.0.0.1:10050");
    let mut first = Peer::client(&ns, "127.0.0.1:10050");
    let first_conn = server.accept();
    let mut second = Peer::client(&ns, "127.0.0.1:10050");
    let second_conn = server.accept();

    // The server closes the second connection, the first client closes its own.
    server.close();
    second.expect_reply("wait-eof", "eof 0");
    second.close();
    first.close();
    server.expect_reply("wait-eof", "eof 0");
    server.close();
    server.expect_reply("close-listener", "listener-closed");

    tracer.wait_for_closes(5);
    let t = tracer.stop();
    t.assert_socket_count(5);
    let ends = [
        ("first client end", t.client_end(&first), first.pid),
        ("second client end", t.client_end(&second), second.pid),
        ("first server end", t.server_end(&first_conn), server.pid),
        ("second server end", t.server_end(&second_conn), server.pid),
        ("listener", t.listener(10050), server.pid),
    ];
    t.assert_path(
        "first client end",
        &ends[0].1,
        &[CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_path(
        "second client end",
        &ends[1].1,
        &[CLOSE, SYN_SENT, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE],
    );
    t.assert_path(
        "first server end",
        &ends[2].1,
        &[LISTEN, SYN_RECV, ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE],
    );
    t.assert_path(
        "second server end",
        &ends[3].1,
        &[LISTEN, SYN_RECV, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE],
    );
    t.assert_path("listener", &ends[4].1, &[CLOSE, LISTEN, CLOSE]);
    for (what, socket, pid) in &ends {
        assert_owner(&t, what, socket, *pid);
    }
}
