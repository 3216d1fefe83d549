use super::*;
use crate::{
    diag::DiagDetail,
    event::TcpState,
    top::model::{ListenerSample, Sample, tests as model_tests},
};

const NS: u32 = model_tests::NS;

fn opts(timewait_top: usize) -> Options {
    Options {
        correct: true,
        timewait_top,
        ..Options::default()
    }
}

/// A listener of `port` with socket `inode`.
fn listener(port: u16, inode: u32, queue: u32, limit: u32, drops: u32) -> ListenerSample {
    ListenerSample {
        inode,
        cgroup_id: 0,
        ..model_tests::listener(port, queue, limit, drops)
    }
}

fn timewait(local: &str, remote: &str) -> (u32, DiagDetail) {
    model_tests::detail(TcpState::TimeWait, local, remote)
}

struct Fixture {
    sampled: Sampled,
    policy: LabelPolicy,
    registry: Registry,
}

impl Fixture {
    fn new(opts: Options, port_cap: usize, container_cap: Option<usize>) -> Self {
        let mut registry = Registry::with_prefix("tcpstate");
        Fixture {
            sampled: Sampled::new(opts, &mut registry),
            policy: LabelPolicy::new(vec![], port_cap, container_cap),
            registry,
        }
    }

    /// One round as the dumps would give it; the exposition after it.
    fn round(&mut self, listeners: Vec<ListenerSample>, sockets: Vec<(u32, DiagDetail)>) -> String {
        self.round_in(listeners, sockets, &mut |_, _| None)
    }

    fn round_in(
        &mut self,
        listeners: Vec<ListenerSample>,
        sockets: Vec<(u32, DiagDetail)>,
        of: &mut AttributionOf<'_>,
    ) -> String {
        self.sampled.model.sampled(Sample {
            listeners,
            sockets: Some(sockets),
            ..Sample::default()
        });
        self.sampled.publish(of, &mut self.policy);
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).unwrap();
        s
    }
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn listeners_queue_limit_and_drops_by_port() {
    let mut f = Fixture::new(opts(10), 64, None);
    let text = f.round(
        vec![listener(10061, 1, 5, 4, 3), listener(80, 2, 0, 128, 0)],
        vec![],
    );
    for line in [
        "tcpstate_listeners{port=\"10061\"} 1",
        "tcpstate_listen_queue{port=\"10061\"} 5",
        "tcpstate_listen_queue_limit{port=\"10061\"} 4",
        "tcpstate_listen_drops_total{port=\"10061\"} 3",
        "tcpstate_listen_queue{port=\"80\"} 0",
        "tcpstate_listen_queue_limit{port=\"80\"} 128",
        "tcpstate_listen_drops_total{port=\"80\"} 0",
    ] {
        assert!(has(&text, line), "no `{line}`:\n{text}");
    }
    // sk_drops grows: the counter follows it, not doubled.
    let text = f.round(vec![listener(10061, 1, 4, 4, 10)], vec![]);
    assert!(
        has(&text, "tcpstate_listen_drops_total{port=\"10061\"} 10"),
        "{text}"
    );
    assert!(
        has(&text, "tcpstate_listen_queue{port=\"10061\"} 4"),
        "{text}"
    );
    // Port 80's listener is gone: its gauges go, its counter stays.
    assert!(
        !text.contains("tcpstate_listen_queue{port=\"80\"}"),
        "{text}"
    );
    assert!(!text.contains("tcpstate_listeners{port=\"80\"}"), "{text}");
    assert!(
        has(&text, "tcpstate_listen_drops_total{port=\"80\"} 0"),
        "{text}"
    );
    // Restarted (a new inode): its drops count on from the old ones.
    let text = f.round(vec![listener(10061, 7, 0, 4, 2)], vec![]);
    assert!(
        has(&text, "tcpstate_listen_drops_total{port=\"10061\"} 12"),
        "{text}"
    );
    // Never an address or an inode in the listener series.
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("tcpstate_listen") && l.contains("127.0.0.1")),
        "{text}"
    );
}

#[test]
fn listeners_of_one_label_set_are_summed() {
    let mut f = Fixture::new(opts(10), 64, None);
    // Two SO_REUSEPORT sockets (or IPv4 and IPv6) of one port.
    let text = f.round(
        vec![listener(443, 1, 2, 128, 1), listener(443, 2, 3, 128, 4)],
        vec![],
    );
    for line in [
        "tcpstate_listeners{port=\"443\"} 2",
        "tcpstate_listen_queue{port=\"443\"} 5",
        "tcpstate_listen_queue_limit{port=\"443\"} 256",
        "tcpstate_listen_drops_total{port=\"443\"} 5",
    ] {
        assert!(has(&text, line), "no `{line}`:\n{text}");
    }
    // One of them closes: the other's drops are not counted again.
    let text = f.round(vec![listener(443, 2, 0, 128, 6)], vec![]);
    assert!(
        has(&text, "tcpstate_listen_drops_total{port=\"443\"} 7"),
        "{text}"
    );
    assert!(has(&text, "tcpstate_listeners{port=\"443\"} 1"), "{text}");
}

#[test]
fn ports_beyond_the_cap_are_one_other_series_and_counted() {
    let mut f = Fixture::new(opts(10), 2, None);
    let all = vec![
        listener(1001, 1, 1, 10, 0),
        listener(1002, 2, 1, 10, 0),
        listener(1003, 3, 1, 10, 1),
        listener(1004, 4, 2, 10, 2),
    ];
    let text = f.round(all.clone(), vec![]);
    for line in [
        "tcpstate_listen_queue{port=\"1001\"} 1",
        "tcpstate_listen_queue{port=\"1002\"} 1",
        "tcpstate_listeners{port=\"other\"} 2",
        "tcpstate_listen_queue{port=\"other\"} 3",
        "tcpstate_listen_queue_limit{port=\"other\"} 20",
        "tcpstate_listen_drops_total{port=\"other\"} 3",
    ] {
        assert!(has(&text, line), "no `{line}`:\n{text}");
    }
    assert_eq!(f.policy.overflow().port, 2, "two listeners overflowed");
    assert!(!text.contains("1003") && !text.contains("1004"), "{text}");
    // The same listeners again: nothing new overflows.
    f.round(all, vec![]);
    assert_eq!(f.policy.overflow().port, 2);
    // The cap is on the run's values: a port once seen keeps its label,
    // and a new port after one went away is still `other`.
    let text = f.round(
        vec![listener(1001, 1, 0, 10, 0), listener(1005, 5, 0, 10, 0)],
        vec![],
    );
    assert!(has(&text, "tcpstate_listeners{port=\"other\"} 1"), "{text}");
    assert_eq!(f.policy.overflow().port, 3);
    let series = text
        .lines()
        .filter(|l| l.starts_with("tcpstate_listen_queue{"))
        .count();
    assert_eq!(series, 2, "at most cap + 1 live series:\n{text}");
}

#[test]
fn listener_series_carry_capped_container_labels_when_asked() {
    let mut f = Fixture::new(opts(10), 64, Some(1));
    let ids = ["a".repeat(64), "b".repeat(64)];
    let attributions: Vec<Arc<Attribution>> = ids
        .iter()
        .map(|id| {
            Arc::new(Attribution::from_path(&format!(
                "/libpod_parent/libpod-{id}"
            )))
        })
        .collect();
    let owner = |pid| {
        Some(Task {
            pid,
            comm: [0; tcpstate_common::COMM_LEN],
        })
    };
    let mut a = listener(80, 1, 1, 4, 0);
    a.owner = owner(1);
    let mut b = listener(81, 2, 2, 4, 0);
    b.owner = owner(2);
    let c = listener(82, 3, 3, 4, 0); // owner unknown
    let text = f.round_in(vec![a, b, c], vec![], &mut |_, t| {
        t.map(|t| attributions[t.pid as usize - 1].clone())
    });
    for line in [
        format!(
            "tcpstate_listen_queue{{port=\"80\",container_id=\"{}\",pod_uid=\"\"}} 1",
            ids[0]
        ),
        "tcpstate_listen_queue{port=\"81\",container_id=\"other\",pod_uid=\"\"} 2".to_string(),
        "tcpstate_listen_queue{port=\"82\",container_id=\"unknown\",pod_uid=\"unknown\"} 3"
            .to_string(),
    ] {
        assert!(has(&text, &line), "no `{line}`:\n{text}");
    }
}

#[test]
fn timewait_per_destination_for_the_top_n_only() {
    let mut f = Fixture::new(opts(2), 64, None);
    let mut sockets = Vec::new();
    for (n, remote) in [(5, "10.0.0.2:80"), (3, "10.0.0.3:443"), (1, "10.0.0.4:22")] {
        for i in 0..n {
            sockets.push(timewait(&format!("10.0.0.1:{}", 40000 + i), remote));
        }
    }
    let text = f.round(vec![], sockets.clone());
    let series = |ip: &str, n: u32| {
        format!(
            "tcpstate_timewait_sockets{{netns=\"{NS}\",local=\"10.0.0.1\",remote=\"{ip}\"}} {n}"
        )
    };
    assert!(has(&text, &series("10.0.0.2:80", 5)), "{text}");
    assert!(has(&text, &series("10.0.0.3:443", 3)), "{text}");
    assert!(!text.contains("10.0.0.4"), "beyond the top 2:\n{text}");
    // The third destination climbs past the second: the series follow.
    for i in 0..4 {
        sockets.push(timewait(&format!("10.0.0.1:{}", 41000 + i), "10.0.0.4:22"));
    }
    let text = f.round(vec![], sockets);
    assert!(has(&text, &series("10.0.0.4:22", 5)), "{text}");
    assert!(has(&text, &series("10.0.0.2:80", 5)), "{text}");
    assert!(!text.contains("10.0.0.3"), "{text}");
    // All expired: no series left.
    let text = f.round(vec![], vec![]);
    assert!(!text.contains("tcpstate_timewait_sockets{"), "{text}");
}

#[test]
fn no_timewait_series_with_a_top_of_zero() {
    let mut f = Fixture::new(opts(0), 64, None);
    let text = f.round(vec![], vec![timewait("10.0.0.1:40000", "10.0.0.2:80")]);
    assert!(!text.contains("tcpstate_timewait_sockets{"), "{text}");
}
