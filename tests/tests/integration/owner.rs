//! Owner attribution: `pid`/`comm` name the process that owns the socket,
//! not the task that happened to be on the CPU. On loopback most transitions
//! run in softirq context (pid 0, swapper) or in the *peer* process;
//! `cpu_pid`/`cpu_comm` report that task and may differ.

use tcpstate_tests::scenario::*;

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
    let mut w = Connected::loopback(&[]);
    assert_ne!(w.server.pid, w.client.pid);
    w.client.cmd("send 1000");
    w.server.expect_reply("recv 1000", "received 1000");
    w.client_closes_first();
    let t = w.close_listener_and_assert(paths::ACTIVE_CLOSER, paths::PASSIVE_CLOSER_SERVER);
    let (client, server) = (&w.client, &w.server);
    let client_end = t.client_end(client);
    let server_end = t.server_end(&w.conn);
    let listener = t.listener(PORT);
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
    for (what, socket, transition, pid) in [
        ("client end", &client_end, "CLOSE->SYN_SENT", client.pid),
        ("listener", &listener, "CLOSE->LISTEN", server.pid),
        (
            "client end",
            &client_end,
            "ESTABLISHED->FIN_WAIT1",
            client.pid,
        ),
        (
            "server end",
            &server_end,
            "CLOSE_WAIT->LAST_ACK",
            server.pid,
        ),
    ] {
        assert_eq!(
            on_cpu(socket, transition),
            Some(pid),
            "{transition} of the {what} ran in its owner's context\n{}",
            t.dump()
        );
    }
}

/// Two client processes connected to one server: each client socket names
/// its own process, and both accepted sockets name the server.
#[test]
fn each_client_process_owns_its_socket() {
    let ns = Netns::new();
    let mut tracer = Tracer::start(&ns, &[]);
    let two = TwoClients::run(&ns);
    let t = tracer.stop_after_closes(5);
    t.assert_socket_count(5);
    for (what, socket, pid) in &two.assert_paths(&t) {
        assert_owner(&t, what, socket, *pid);
    }
}
