//! `--metrics ADDR`: Prometheus / OpenMetrics exposition of what tcpstate
//! sees, built on the official `prometheus-client` crate. Documented, with
//! example queries, in docs/metrics.md.
//!
//! - [`Recorder`] turns rows into counters, gauges and histograms;
//! - [`labels`] keeps every label's range bounded;
//! - [`occupancy`] derives the sockets currently in each state;
//! - [`top`] samples listeners and TIME_WAIT per destination as `--top` does;
//! - [`server`] answers `GET /metrics`, in the format [`format`] negotiates.

pub mod format;
pub mod labels;
pub mod occupancy;
pub mod server;
pub mod top;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use prometheus_client::{
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use crate::{
    container::Attribution,
    enrich::TupleKey,
    event::{Note, Source, TcpEvent, TcpState},
    kernel_stats::KernelStats,
};
use labels::{LabelPolicy, Labels};
use occupancy::Occupancy;

/// The metrics settings the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    /// Ports named in a filter: the only values of the `port` label.
    pub ports: Vec<u16>,
    /// Most distinct `port` label values (`--metrics-max-ports`).
    pub port_cap: usize,
    /// `container_id` and `pod_uid` labels, at most this many distinct
    /// values each (`--metrics-container-labels`).
    pub container_cap: Option<usize>,
    /// The listener and TIME_WAIT series: what they sample, their bounds.
    pub top: top::Options,
}

/// Most sockets remembered as stuck at once (their gauge is lowered when
/// they move on); beyond it, a stuck socket is counted but not followed.
const MAX_STUCK: usize = 4096;

fn duration_histogram() -> Histogram {
    // 10 µs to ~170 s, x4 per bucket: the short states (SYN_RECV, FIN_WAIT1,
    // LAST_ACK: microseconds) and the long ones (ESTABLISHED, CLOSE_WAIT).
    Histogram::new(exponential_buckets(1e-5, 4.0, 13))
}

type StateLabels = Vec<(&'static str, String)>;

fn with_states(labels: &Labels, states: &[(&'static str, TcpState)]) -> StateLabels {
    let mut l: StateLabels = states
        .iter()
        .map(|(k, s)| (*k, s.name().to_string()))
        .collect();
    l.extend(labels.iter().cloned());
    l
}

/// Counts rows into the families the registry exposes.
pub struct Recorder {
    policy: LabelPolicy,
    transitions: Family<StateLabels, Counter>,
    durations: Family<StateLabels, Histogram, fn() -> Histogram>,
    sockets: Family<StateLabels, Gauge>,
    stuck: Family<StateLabels, Gauge>,
    stuck_total: Family<StateLabels, Counter>,
    lost: Family<Vec<(&'static str, &'static str)>, Counter>,
    occupancy: Occupancy<Labels>,
    /// Sockets flagged stuck and not moved on yet: (state, labels).
    stuck_now: HashMap<TupleKey, (TcpState, Labels)>,
    lost_seen: [u64; 4],
    /// Label values mapped to `other` by their cap, per label.
    label_overflow: Family<Vec<(&'static str, &'static str)>, Counter>,
    overflow_seen: labels::Overflow,
    sampled: top::Sampled,
}

impl Recorder {
    /// The recorder, and the registry to serve (sharing the same metrics).
    pub fn new(opts: &Options) -> (Recorder, Registry) {
        let mut registry = Registry::with_prefix("tcpstate");
        let sampled = top::Sampled::new(opts.top.clone(), &mut registry);
        let r = Recorder {
            policy: LabelPolicy::new(opts.ports.clone(), opts.port_cap, opts.container_cap),
            transitions: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            sockets: Family::default(),
            stuck: Family::default(),
            stuck_total: Family::default(),
            lost: Family::default(),
            occupancy: Occupancy::default(),
            stuck_now: HashMap::new(),
            lost_seen: [0; 4],
            label_overflow: Family::default(),
            overflow_seen: labels::Overflow::default(),
            sampled,
        };
        // A gauge, not an OpenMetrics `info`: Prometheus' text-format
        // parsers (promtool check metrics among them) reject that type.
        let build: Family<Vec<(&'static str, &'static str)>, Gauge> = Family::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("build_info", "tcpstate's version", build);
        registry.register(
            "transitions",
            "TCP state transitions: the kernel's, and a lingering half-open connection's LISTEN->SYN_RECV and expiry",
            r.transitions.clone(),
        );
        registry.register_with_unit(
            "state_duration",
            "Time sockets spent in a state before leaving it (when known)",
            Unit::Seconds,
            r.durations.clone(),
        );
        registry.register(
            "sockets",
            "Sockets currently in each state, from the events seen (seeded by the start-up snapshot)",
            r.sockets.clone(),
        );
        registry.register(
            "stuck_sockets",
            "Sockets currently flagged by --stuck, by the state they are stuck in",
            r.stuck.clone(),
        );
        registry.register(
            "stuck_flagged",
            "Sockets flagged by --stuck",
            r.stuck_total.clone(),
        );
        registry.register(
            "events_lost",
            "Events that never reached tcpstate, by cause",
            r.lost.clone(),
        );
        registry.register(
            "label_overflow",
            "Rows (and listeners of tcpstate_listen_*, once each) whose port, container_id or pod_uid label became `other` because that label reached its cap of distinct values",
            r.label_overflow.clone(),
        );
        // Present from the start, so rate() has a zero to start from.
        for cause in LOSS_CAUSES {
            let _ = r.lost.get_or_create(&vec![("cause", cause)]);
        }
        for label in ["port", "container_id", "pod_uid"] {
            let _ = r.label_overflow.get_or_create(&vec![("label", label)]);
        }
        (r, registry)
    }

    /// Counts one row (after enrich, after the container filter).
    pub fn record(&mut self, ev: &TcpEvent, container: Option<&Attribution>) {
        self.sampled.event(ev);
        let labels = self.policy.labels(ev, container);
        self.count_overflow();
        let key = TupleKey::of(ev);
        if !matches!(ev.note, Some(Note::Stuck(_)))
            && let Some((state, l)) = self.stuck_now.remove(&key)
        {
            self.stuck
                .get_or_create(&with_states(&l, &[("state", state)]))
                .dec();
        }
        // A half-open connection's row *is* its LISTEN -> SYN_RECV (the
        // child's own is folded into it), and its expiry its SYN_RECV ->
        // CLOSE: transitions like the kernel's.
        let transition = ev.source == Source::Tracepoint
            || matches!(ev.note, Some(Note::HalfOpen(_) | Note::HalfOpenExpired(_)));
        let moves = match ev.note {
            _ if transition => {
                self.transitions
                    .get_or_create(&with_states(
                        &labels,
                        &[("old_state", ev.old), ("new_state", ev.new)],
                    ))
                    .inc();
                if let Some(ns) = ev.dwell_ns {
                    self.durations
                        .get_or_create(&with_states(&labels, &[("state", ev.old)]))
                        .observe(ns as f64 / 1e9);
                }
                self.occupancy.transition(&labels, ev.old, ev.new)
            }
            // Seeds: the socket was there before us; or a timewait socket
            // took over a full socket (which left its state in its own
            // CLOSE transition).
            Some(Note::Snapshot | Note::TimeWaitSocket) => [
                self.occupancy.enter(&labels, ev.new).map(|c| (ev.new, c)),
                None,
            ],
            // A timewait socket moved on (orphan FIN_WAIT2 -> TIME_WAIT).
            Some(Note::TimeWait) => self.occupancy.transition(&labels, ev.old, ev.new),
            Some(Note::TimeWaitExpired) => [
                self.occupancy.leave(&labels, ev.old).map(|c| (ev.old, c)),
                None,
            ],
            Some(Note::Stuck(_)) => {
                let l = with_states(&labels, &[("state", ev.new)]);
                self.stuck_total.get_or_create(&l).inc();
                if self.stuck_now.len() < MAX_STUCK
                    && self
                        .stuck_now
                        .insert(key, (ev.new, labels.clone()))
                        .is_none()
                {
                    self.stuck.get_or_create(&l).inc();
                }
                [None, None]
            }
            _ => [None, None],
        };
        for (state, count) in moves.into_iter().flatten() {
            self.sockets
                .get_or_create(&with_states(&labels, &[("state", state)]))
                .set(count);
        }
    }

    /// Every second: the listeners and TIME_WAIT sockets, through
    /// `attribute` (the container filter, as `--top` applies it) and `of`
    /// (a listener owner's container, for its labels).
    pub fn sample(&mut self, attribute: &mut top::Attribute<'_>, of: &mut top::AttributionOf<'_>) {
        self.sampled.sample(attribute, of, &mut self.policy);
        self.count_overflow();
    }

    /// Adds what the label caps mapped to `other` since the last row.
    fn count_overflow(&mut self) {
        let now = self.policy.overflow();
        let seen = &mut self.overflow_seen;
        for (label, now, seen) in [
            ("port", now.port, &mut seen.port),
            ("container_id", now.container_id, &mut seen.container_id),
            ("pod_uid", now.pod_uid, &mut seen.pod_uid),
        ] {
            if now > *seen {
                self.label_overflow
                    .get_or_create(&vec![("label", label)])
                    .inc_by(now - *seen);
                *seen = now;
            }
        }
    }

    /// The kernel's loss counters (cumulative) and tcpstate's own.
    /// `gaps`: state changes missing between a socket's rows.
    pub fn losses(&mut self, k: &KernelStats, malformed: u64, gaps: u64) {
        let now = [k.ringbuf_full, k.recursion_misses, malformed, gaps];
        for ((cause, seen), now) in LOSS_CAUSES.iter().zip(&mut self.lost_seen).zip(now) {
            if now > *seen {
                self.lost
                    .get_or_create(&vec![("cause", *cause)])
                    .inc_by(now - *seen);
                *seen = now;
            }
        }
    }
}

/// `cause` label values of `tcpstate_events_lost_total`, in the order of
/// [`Recorder::losses`]' counters.
pub(crate) const LOSS_CAUSES: [&str; 4] = [
    "ring_buffer_full",
    "kernel_skipped",
    "malformed",
    "missing_between_rows",
];

/// Binds the endpoint (before tracing starts, so a taken port is a clean
/// start-up error) and serves the registry from then on.
pub async fn serve(addr: SocketAddr, registry: Registry) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    server::spawn(listener, Arc::new(registry));
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::raw_v4;

    fn opts(ports: Vec<u16>) -> Options {
        Options {
            addr: "127.0.0.1:0".parse().unwrap(),
            ports,
            port_cap: 64,
            container_cap: None,
            top: top::Options::default(),
        }
    }

    #[test]
    fn ports_beyond_the_cap_are_other_and_counted() {
        let (mut r, reg) = Recorder::new(&Options {
            port_cap: 2,
            ..opts((1..=1024).collect())
        });
        for port in 1..=1024 {
            let mut e = ev(TcpState::Established, TcpState::FinWait1);
            e.lport = port;
            r.record(&e, None);
        }
        let text = exposition(&reg);
        let series = text
            .lines()
            .filter(|l| l.starts_with("tcpstate_transitions_total{"))
            .count();
        assert_eq!(series, 3, "two ports and `other`:\n{text}");
        assert!(
            text.contains("tcpstate_label_overflow_total{label=\"port\"} 1022"),
            "{text}"
        );
    }

    fn exposition(reg: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, reg).unwrap();
        s
    }

    fn ev(old: TcpState, new: TcpState) -> TcpEvent {
        TcpEvent {
            old,
            new,
            ..TcpEvent::from(&raw_v4())
        }
    }

    #[test]
    fn transitions_durations_and_sockets() {
        let (mut r, reg) = Recorder::new(&opts(vec![10050]));
        r.record(&ev(TcpState::SynRecv, TcpState::Established), None);
        r.record(&ev(TcpState::Established, TcpState::FinWait1), None);
        let text = exposition(&reg);
        assert!(text.contains(
            "tcpstate_transitions_total{old_state=\"ESTABLISHED\",new_state=\"FIN_WAIT1\",port=\"10050\"} 1"
        ), "{text}");
        assert!(
            text.contains(
                "tcpstate_state_duration_seconds_count{state=\"ESTABLISHED\",port=\"10050\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("tcpstate_sockets{state=\"FIN_WAIT1\",port=\"10050\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tcpstate_sockets{state=\"ESTABLISHED\",port=\"10050\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("tcpstate_events_lost_total{cause=\"ring_buffer_full\"} 0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        // No address, no ephemeral port anywhere.
        assert!(
            !text.contains("127.0.0") && !text.contains("48008"),
            "{text}"
        );
    }

    #[test]
    fn stuck_sockets_rise_and_fall() {
        let (mut r, reg) = Recorder::new(&opts(vec![]));
        let base = ev(TcpState::CloseWait, TcpState::CloseWait);
        let stuck = base.derived(
            Source::Tracker,
            Note::Stuck(6_000_000_000),
            TcpState::CloseWait,
            TcpState::CloseWait,
            base.ts_ns,
            None,
        );
        r.record(&stuck, None);
        r.record(&stuck, None); // flagged twice: one socket
        assert!(exposition(&reg).contains("tcpstate_stuck_sockets{state=\"CLOSE_WAIT\"} 1"));
        r.record(&ev(TcpState::CloseWait, TcpState::LastAck), None);
        let text = exposition(&reg);
        assert!(
            text.contains("tcpstate_stuck_sockets{state=\"CLOSE_WAIT\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("tcpstate_stuck_flagged_total{state=\"CLOSE_WAIT\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn losses_are_counted_by_cause_from_cumulative_counters() {
        let (mut r, reg) = Recorder::new(&opts(vec![]));
        let mut k = KernelStats {
            ringbuf_full: 5,
            ..KernelStats::default()
        };
        r.losses(&k, 0, 0);
        k.ringbuf_full = 7;
        k.recursion_misses = 2;
        r.losses(&k, 1, 0);
        let text = exposition(&reg);
        assert!(
            text.contains("tcpstate_events_lost_total{cause=\"ring_buffer_full\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("tcpstate_events_lost_total{cause=\"kernel_skipped\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tcpstate_events_lost_total{cause=\"malformed\"} 1"),
            "{text}"
        );
    }
}
