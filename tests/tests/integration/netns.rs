//! `--netns`: only the given namespace's sockets, stamped with its inode.
//! (Every other test relies on this to run in parallel.)

use tcpstate_tests::scenario::*;

#[test]
fn only_the_traced_namespace_is_shown() {
    let traced = Netns::new();
    let other = Netns::new();
    let mut tracer = Tracer::start(&traced, &[]);

    // The same addresses and port in both namespaces; the other one first.
    for ns in [&other, &traced] {
        closed_connection(ns, LOOPBACK);
    }

    let t = tracer.stop_after_closes(3);
    t.assert_socket_count(3);
    t.assert_path("listener", &t.listener(PORT), paths::LISTENER);
    let inode = traced.inode();
    assert!(
        t.events.iter().all(|e| e.netns == inode),
        "every event should carry netns {inode} (the other is {})\n{}",
        other.inode(),
        t.dump()
    );
    t.assert_invariants();
}
