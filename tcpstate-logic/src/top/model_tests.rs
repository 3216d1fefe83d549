use super::*;
use crate::{diag::DiagSocket, event::tests::raw_v4};

const S: u64 = 1_000_000_000;
pub(crate) const NS: u32 = 4026531840;

/// A kernel transition of socket `addr` at second `sec`.
fn ev(addr: u64, old: TcpState, new: TcpState, sec: u64) -> TcpEvent {
    let mut e = TcpEvent::from(&raw_v4());
    e.skaddr = addr;
    e.old = old;
    e.new = new;
    e.ts_ns = sec * S;
    e
}

fn between(mut e: TcpEvent, local: &str, remote: &str) -> TcpEvent {
    let (l, r): (SocketAddr, SocketAddr) = (local.parse().unwrap(), remote.parse().unwrap());
    (e.laddr, e.lport, e.raddr, e.rport) = (l.ip(), l.port(), r.ip(), r.port());
    e
}

fn closed(e: TcpEvent, reason: Reason) -> TcpEvent {
    TcpEvent {
        new: TcpState::Close,
        reason: Some(reason),
        ..e
    }
}

pub(crate) fn detail(state: TcpState, local: &str, remote: &str) -> (u32, DiagDetail) {
    let local: SocketAddr = local.parse().unwrap();
    (
        NS,
        DiagDetail {
            sock: DiagSocket {
                family: tcpstate_common::AF_INET,
                state,
                local,
                remote: remote.parse().unwrap(),
                inode: 0,
                uid: 0,
                cgroup_id: 0,
            },
            rqueue: 0,
            wqueue: 0,
            drops: None,
        },
    )
}

/// A listener of `NS` on 127.0.0.1 (its inode: the port).
pub(crate) fn listener(port: u16, queue: u32, limit: u32, drops: u32) -> ListenerSample {
    ListenerSample {
        key: ListenKey {
            netns: NS,
            port,
            family: tcpstate_common::AF_INET,
        },
        inode: u32::from(port),
        cgroup_id: 0,
        addr: "127.0.0.1".parse().unwrap(),
        owner: None,
        container: None,
        queue,
        limit,
        drops: Some(drops),
    }
}

#[test]
fn counts_follow_rows_and_a_dump_corrects_them() {
    use TcpState::*;
    let mut m = Model::new(100 * S);
    // A listener's children do not take it out of LISTEN.
    m.event(&ev(1, Close, Listen, 100), None);
    m.event(&ev(2, Listen, SynRecv, 100), None);
    m.event(&ev(2, SynRecv, Established, 100), None);
    m.event(&ev(3, Listen, SynRecv, 101), None);
    m.event(&ev(3, SynRecv, Established, 101), None);
    m.event(&ev(3, Established, CloseWait, 101), None);
    // A flagged row is a socket already counted.
    let mut stuck = ev(3, CloseWait, CloseWait, 102);
    stuck.note = Some(Note::Stuck(S));
    m.event(&stuck, None);
    m.tick(103 * S);
    assert_eq!(
        (
            m.count(Listen),
            m.count(Established),
            m.count(CloseWait),
            m.count(SynRecv)
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(m.entries_per_sec(Established), 2.0 / 3.0);
    assert_eq!(m.change(Established), 0, "the first second is the baseline");

    // Events were lost: the dump says what there is.
    let sample = Sample {
        sockets: Some(vec![
            detail(Listen, "127.0.0.1:10050", "0.0.0.0:0"),
            detail(Established, "127.0.0.1:10050", "127.0.0.2:1"),
            detail(Established, "127.0.0.1:10050", "127.0.0.2:2"),
            detail(Established, "127.0.0.1:10050", "127.0.0.2:3"),
        ]),
        ..Default::default()
    };
    m.sampled(sample);
    m.tick(104 * S);
    assert_eq!((m.count(Established), m.count(CloseWait)), (3, 0));
    assert_eq!(m.change(Established), 2, "against a minute ago");
    assert!(
        m.holders().is_empty(),
        "the dump no longer lists the CLOSE_WAIT"
    );
}

#[test]
fn without_dumps_that_stand_for_the_filter_counts_stay_the_rows() {
    use TcpState::*;
    let mut m = Model::new(0);
    m.event(&ev(1, SynSent, Established, 1), None);
    m.sampled(Sample {
        sockets: None,
        listeners: vec![listener(80, 0, 128, 0)],
        ..Default::default()
    });
    assert_eq!(m.count(Established), 1);
    assert_eq!(m.listeners().len(), 1);
}

#[test]
fn listeners_show_the_queue_drops_and_their_rates() {
    use TcpState::*;
    let mut m = Model::new(10 * S);
    m.sampled(Sample {
        listeners: vec![listener(10050, 4, 4, 16)],
        sockets: Some(vec![
            detail(SynRecv, "127.0.0.1:10050", "127.0.0.2:1"),
            detail(SynRecv, "127.0.0.1:10050", "127.0.0.2:2"),
        ]),
        ..Default::default()
    });
    for (addr, sec) in [(1, 10), (2, 11), (3, 11)] {
        m.event(&ev(addr, SynRecv, Established, sec), None);
    }
    let mut half_open = ev(4, Listen, SynRecv, 11);
    half_open.source = Source::SynackTracepoint;
    half_open.note = Some(Note::HalfOpen(1));
    m.event(&half_open, None);
    let mut completed = ev(4, SynRecv, Established, 12);
    completed.retransmits = 3;
    m.event(&completed, None);
    m.event(
        &closed(ev(5, Established, Close, 12), Reason::ResetSent(None)),
        None,
    );
    // Refused at this listener's port, by a client in the same namespace.
    let refused = between(
        ev(6, SynSent, Close, 12),
        "127.0.0.2:40000",
        "127.0.0.1:10050",
    );
    m.event(&closed(refused, Reason::Refused), None);
    m.tick(13 * S);
    let rows = m.listeners();
    let l = &rows[0];
    assert_eq!(
        (l.sample.queue, l.sample.limit, l.sample.drops),
        (4, 4, Some(16))
    );
    assert_eq!(l.half_open, 2);
    let r = l.rates.unwrap();
    assert_eq!(r.accepts.total, 4);
    assert_eq!(
        r.synack_retransmits.total, 3,
        "1 seen, then 2 more at completion"
    );
    assert_eq!(r.resets.total, 2);
    assert_eq!(m.per_sec(&r.accepts), 4.0 / 3.0);
}

#[test]
fn holders_group_by_owner_and_state_oldest_first() {
    use TcpState::*;
    let mut m = Model::new(0);
    let owned = |addr, pid: u32, state, sec| {
        let mut e = ev(addr, Established, state, sec);
        e.owner.as_mut().unwrap().pid = pid;
        e
    };
    for addr in 1..=5 {
        m.event(&owned(addr, 100, CloseWait, 10 + addr), Some("abc"));
    }
    m.event(&owned(9, 200, FinWait2, 20), None);
    m.event(&owned(10, 200, SynSent, 1), None);
    // One of the five closes: no longer held.
    m.event(&ev(5, CloseWait, LastAck, 30), None);
    m.event(&ev(5, LastAck, Close, 30), None);
    m.tick(40 * S);
    let rows = m.holders();
    let got: Vec<_> = rows
        .iter()
        .map(|h| (h.owner.unwrap().pid, h.state, h.count, h.oldest_ns / S))
        .collect();
    assert_eq!(
        got,
        vec![
            (200, SynSent, 1, 39),
            (100, CloseWait, 4, 29),
            (200, FinWait2, 1, 20)
        ]
    );
    assert_eq!(rows[1].container.as_deref(), Some("abc"));
}

#[test]
fn pressure_warns_when_one_destination_holds_over_half_the_port_range() {
    use TcpState::*;
    let mut m = Model::new(0);
    let mut socks = Vec::new();
    for p in 0..600u16 {
        socks.push(detail(
            TimeWait,
            &format!("10.0.0.1:{}", 40000 + p),
            "10.0.0.2:80",
        ));
    }
    for p in 0..10u16 {
        socks.push(detail(
            TimeWait,
            &format!("10.0.0.1:{}", 40700 + p),
            "10.0.0.3:443",
        ));
    }
    // A server's TIME_WAIT: on its listening port, not an ephemeral one.
    socks.push(detail(TimeWait, "10.0.0.1:80", "10.0.0.4:50000"));
    m.sampled(Sample {
        sockets: Some(socks),
        port_ranges: [(NS, PortRange::parse("40000\t40999\n").unwrap())].into(),
        ..Default::default()
    });
    let rows = m.pressure();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].timewait, rows[0].dest.remote.port()), (600, 80));
    assert_eq!(rows[0].share(), Some(0.6));
    assert!(rows[0].warn() && !rows[1].warn());
    assert_eq!(m.count(TimeWait), 611);
}

#[test]
fn timewait_rows_count_per_destination_between_dumps() {
    use TcpState::*;
    let mut m = Model::new(0);
    let tw = |sec, note, old, new| {
        let mut e = between(ev(0, old, new, sec), "10.0.0.1:40000", "10.0.0.2:80");
        e.source = Source::SockDiag;
        e.note = Some(note);
        e
    };
    m.event(&tw(1, Note::TimeWaitSocket, TimeWait, TimeWait), None);
    m.event(&tw(1, Note::TimeWaitSocket, FinWait2, FinWait2), None);
    m.event(&tw(2, Note::TimeWait, FinWait2, TimeWait), None);
    assert_eq!(m.pressure()[0].timewait, 2);
    assert_eq!((m.count(TimeWait), m.count(FinWait2)), (2, 0));
    m.event(&tw(61, Note::TimeWaitExpired, TimeWait, Close), None);
    m.event(&tw(62, Note::TimeWaitExpired, TimeWait, Close), None);
    assert!(m.pressure().is_empty());
    assert_eq!(m.count(TimeWait), 0);
}

#[test]
fn failures_count_refused_and_timed_out_connects_per_destination_and_resets_per_reason() {
    use TcpState::*;
    let mut m = Model::new(0);
    let to = |dest: &str, reason| {
        closed(
            between(ev(1, SynSent, Close, 1), "10.0.0.1:40000", dest),
            reason,
        )
    };
    m.event(&to("10.0.0.2:81", Reason::Refused), None);
    m.event(&to("10.0.0.2:81", Reason::Refused), None);
    m.event(&to("10.0.0.9:80", Reason::ConnectTimeout), None);
    m.event(
        &closed(
            ev(2, Established, Close, 1),
            Reason::ResetSent(Some("NO_SOCKET")),
        ),
        None,
    );
    m.event(
        &closed(ev(3, Established, Close, 1), Reason::ResetReceived),
        None,
    );
    let connects: Vec<_> = m
        .connect_failures()
        .into_iter()
        .map(|(f, _, d, n, _)| (f, d.to_string(), n))
        .collect();
    assert_eq!(
        connects,
        vec![
            (ConnectFailure::Refused, "10.0.0.2:81".to_string(), 2),
            (ConnectFailure::TimedOut, "10.0.0.9:80".to_string(), 1)
        ]
    );
    let resets: Vec<_> = m
        .resets()
        .into_iter()
        .map(|(r, n, _)| (r.to_string(), n))
        .collect();
    assert_eq!(
        resets,
        vec![
            ("connect refused".to_string(), 2),
            ("received".to_string(), 1),
            ("sent NO_SOCKET".to_string(), 1)
        ]
    );
}

#[test]
fn port_ranges_parse_or_say_no() {
    assert_eq!(
        PortRange::parse("32768\t60999\n").map(PortRange::size),
        Some(28232)
    );
    assert_eq!(PortRange::parse("5 4"), None);
    assert_eq!(PortRange::parse("x 4"), None);
    assert_eq!(PortRange::parse("1 2 3"), None);
}
