use super::*;
use crate::enrich::table::fake::{FakeTable, sock};
use crate::event::tests::raw_v4;

const NS: u32 = 4026531840;

fn close(old: TcpState, peer_fin: Option<bool>, ts_ns: u64, rport: u16) -> TcpEvent {
    let mut e = TcpEvent::from(&raw_v4());
    e.old = old;
    e.new = TcpState::Close;
    e.peer_fin = peer_fin;
    e.ts_ns = ts_ns;
    e.netns = NS;
    e.rport = rport;
    e
}

fn run_tick(tw: &mut TimeWait, now: u64, t: &mut FakeTable) -> Vec<TcpEvent> {
    let mut out = Vec::new();
    tw.tick(
        now,
        &mut Dumps {
            table: t,
            counters: &mut Counters::default(),
        },
        &mut |e| out.push(*e),
    );
    out
}

fn live(state: TcpState, rport: u16) -> crate::diag::DiagSocket {
    sock(state, "127.0.0.1:10050", &format!("127.0.0.2:{rport}"), 0)
}

#[test]
fn handover_is_a_state_row_of_the_substate_the_kernel_reported() {
    let mut tw = TimeWait::new(16);
    let mut c = Counters::default();
    let row = tw
        .handover(&close(TcpState::FinWait2, Some(true), 5, 1), &mut c)
        .unwrap();
    assert!(row.is_state_row());
    assert_eq!((row.old, row.new), (TcpState::TimeWait, TcpState::TimeWait));
    let row = tw
        .handover(&close(TcpState::FinWait2, Some(false), 5, 2), &mut c)
        .unwrap();
    assert_eq!(row.new, TcpState::FinWait2);
    let row = tw
        .handover(&close(TcpState::Closing, None, 5, 3), &mut c)
        .unwrap();
    assert_eq!(row.new, TcpState::TimeWait);
    assert!(
        tw.handover(&close(TcpState::FinWait2, None, 5, 4), &mut c)
            .is_none()
    );
    assert_eq!(tw.followed(), 3);
}

#[test]
fn a_storm_is_settled_with_one_dump_per_namespace() {
    let mut tw = TimeWait::new(100_000);
    let mut c = Counters::default();
    let mut t = FakeTable::default();
    let mut socks = Vec::new();
    for p in 1..=20_000u16 {
        tw.handover(&close(TcpState::FinWait2, Some(true), 1_000, p), &mut c);
        socks.push(live(TcpState::TimeWait, p));
    }
    // Before 60 s nothing is due: no dump.
    assert!(run_tick(&mut tw, 30_000_000_000, &mut t).is_empty());
    assert!(t.dumps.is_empty());
    // Half of them are gone at 60 s.
    socks.truncate(10_000);
    t.socks.insert(NS, socks);
    let out = run_tick(&mut tw, 60_000_001_000, &mut t);
    assert_eq!(out.len(), 10_000);
    assert!(out.iter().all(|e| e.old == TcpState::TimeWait
        && e.new == TcpState::Close
        && e.note == Some(Note::TimeWaitExpired)
        && e.dwell_ns == Some(60_000_000_000)));
    assert_eq!(t.dumps.len(), 1);
    assert_eq!(tw.followed(), 10_000);
}

#[test]
fn an_orphan_that_gets_the_peers_fin_moves_to_time_wait() {
    let mut tw = TimeWait::new(16);
    let mut c = Counters::default();
    let mut t = FakeTable::default();
    tw.handover(&close(TcpState::FinWait2, Some(false), 0, 7), &mut c);
    t.socks.insert(NS, vec![live(TcpState::FinWait2, 7)]);
    assert!(run_tick(&mut tw, 1_000_000_000, &mut t).is_empty());
    t.socks.insert(NS, vec![live(TcpState::TimeWait, 7)]);
    let out = run_tick(&mut tw, 2_000_000_000, &mut t);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].old, out[0].new),
        (TcpState::FinWait2, TcpState::TimeWait)
    );
    assert_eq!(out[0].note, Some(Note::TimeWait));
    assert_eq!(out[0].dwell_ns, Some(2_000_000_000));
}

#[test]
fn the_local_peers_last_ack_to_close_moves_the_orphan_to_time_wait() {
    let mut tw = TimeWait::new(16);
    let mut c = Counters::default();
    tw.handover(&close(TcpState::FinWait2, Some(false), 1_000, 7), &mut c);
    let mut peer = close(TcpState::LastAck, None, 3_000, 7);
    std::mem::swap(&mut peer.laddr, &mut peer.raddr);
    std::mem::swap(&mut peer.lport, &mut peer.rport);
    let row = tw.peer_closed(&peer).unwrap();
    assert_eq!((row.old, row.new), (TcpState::FinWait2, TcpState::TimeWait));
    assert_eq!((row.ts_ns, row.dwell_ns), (3_000, Some(2_000)));
    assert!(tw.peer_closed(&peer).is_none());
}

#[test]
fn a_full_socket_reusing_the_tuple_means_the_timewait_socket_is_gone() {
    let mut tw = TimeWait::new(16);
    let mut c = Counters::default();
    let mut t = FakeTable::default();
    tw.handover(&close(TcpState::FinWait2, Some(false), 0, 7), &mut c);
    t.socks.insert(
        NS,
        vec![sock(
            TcpState::FinWait2,
            "127.0.0.1:10050",
            "127.0.0.2:7",
            1234,
        )],
    );
    let out = run_tick(&mut tw, 1_000_000_000, &mut t);
    assert_eq!(out[0].note, Some(Note::TimeWaitExpired));
}

#[test]
fn a_new_connection_on_the_tuple_ends_the_timewait_socket() {
    let mut tw = TimeWait::new(16);
    let mut c = Counters::default();
    tw.handover(&close(TcpState::FinWait2, Some(true), 1_000, 7), &mut c);
    let mut open = close(TcpState::SynSent, None, 5_000, 7);
    open.new = TcpState::Established;
    let row = tw.reused(&open).unwrap();
    assert_eq!((row.old, row.new), (TcpState::TimeWait, TcpState::Close));
    assert_eq!(row.note, Some(Note::TimeWaitReused));
    assert_eq!(row.dwell_ns, Some(4_000));
    assert_eq!(tw.followed(), 0);
    assert!(tw.reused(&open).is_none());
}

#[test]
fn beyond_the_limit_sockets_are_counted_not_followed() {
    let mut tw = TimeWait::new(2);
    let mut c = Counters::default();
    for p in 1..=5 {
        tw.handover(&close(TcpState::FinWait2, Some(true), 0, p), &mut c);
    }
    assert_eq!(tw.followed(), 2);
    assert_eq!(c.untracked, 3);
}
