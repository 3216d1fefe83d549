//! Bounded label values. Prometheus keeps one series per distinct label set
//! for as long as it retains data, so every label here has a small, known
//! range: states (a dozen), ports the user named in a filter (capped too:
//! a filter may name 1,024), and, only when asked for, container and pod IDs,
//! each capped at a number of distinct values (the rest are counted under
//! `other`, and the overflow in `tcpstate_label_overflow_total`). Never
//! addresses or ephemeral ports.

use std::collections::HashSet;

use crate::{container::Attribution, event::TcpEvent};

/// The value of every label beyond a cap, and of a port outside the filter.
pub(crate) const OTHER: &str = "other";
/// The container label of a process that runs in no container.
pub(crate) const HOST: &str = "host";
/// The container label of a row whose owner is unknown.
pub(crate) const UNKNOWN: &str = "unknown";

/// Passes the first `cap` distinct values through, maps the rest to `other`.
#[derive(Debug)]
pub(crate) struct Capped {
    cap: usize,
    seen: HashSet<String>,
    /// Values mapped to `other`, for the curious.
    pub overflowed: u64,
}

impl Capped {
    pub fn new(cap: usize) -> Self {
        Capped {
            cap,
            seen: HashSet::new(),
            overflowed: 0,
        }
    }

    pub fn get(&mut self, value: &str) -> String {
        if self.seen.contains(value) {
            return value.to_string();
        }
        if self.seen.len() < self.cap {
            self.seen.insert(value.to_string());
            return value.to_string();
        }
        self.overflowed += 1;
        OTHER.to_string()
    }
}

/// Which labels the metrics carry beyond the states, and their bounds.
#[derive(Debug)]
pub(crate) struct LabelPolicy {
    /// Ports named in a filter (`--port`, `--lport`, `--rport`); empty: no
    /// `port` label at all.
    ports: std::collections::HashSet<u16>,
    /// The first `--metrics-max-ports` of them that traffic shows.
    port_values: Capped,
    containers: Option<(Capped, Capped)>,
}

/// Values mapped to `other` so far, per label (cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Overflow {
    pub port: u64,
    pub container_id: u64,
    pub pod_uid: u64,
}

pub(crate) type Labels = Vec<(&'static str, String)>;

impl LabelPolicy {
    pub fn new(ports: Vec<u16>, port_cap: usize, container_cap: Option<usize>) -> Self {
        LabelPolicy {
            ports: ports.into_iter().collect(),
            port_values: Capped::new(port_cap),
            containers: container_cap.map(|cap| (Capped::new(cap), Capped::new(cap))),
        }
    }

    pub(crate) fn overflow(&self) -> Overflow {
        let (container_id, pod_uid) = self
            .containers
            .as_ref()
            .map_or((0, 0), |(i, p)| (i.overflowed, p.overflowed));
        Overflow {
            port: self.port_values.overflowed,
            container_id,
            pod_uid,
        }
    }

    /// A listening port as a `port` value: under the same cap as the
    /// filtered ports (one set of values for the label).
    pub(crate) fn port_label(&mut self, port: u16) -> String {
        self.port_values.get(&port.to_string())
    }

    /// The labels an event's series get besides its states.
    pub fn labels(&mut self, ev: &TcpEvent, container: Option<&Attribution>) -> Labels {
        let mut labels = Labels::new();
        if !self.ports.is_empty() {
            let port = [ev.lport, ev.rport]
                .into_iter()
                .find(|p| self.ports.contains(p))
                .map_or_else(
                    || OTHER.to_string(),
                    |p| self.port_values.get(&p.to_string()),
                );
            labels.push(("port", port));
        }
        labels.extend(self.container_labels(container));
        labels
    }

    /// `container_id` and `pod_uid` of an owner's attribution, when the
    /// metrics label by container (capped); else none.
    pub(crate) fn container_labels(&mut self, container: Option<&Attribution>) -> Labels {
        let mut labels = Labels::new();
        if let Some((ids, pods)) = &mut self.containers {
            let (id, pod) = match container {
                None => (UNKNOWN.to_string(), UNKNOWN.to_string()),
                Some(a) => (
                    a.container_id
                        .as_deref()
                        .map_or_else(|| HOST.to_string(), |id| ids.get(id)),
                    a.pod_uid
                        .as_deref()
                        .map_or_else(String::new, |uid| pods.get(uid)),
                ),
            };
            labels.push(("container_id", id));
            labels.push(("pod_uid", pod));
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::raw_v4;

    #[test]
    fn capped_values_beyond_the_cap_are_other() {
        let mut c = Capped::new(2);
        assert_eq!(c.get("a"), "a");
        assert_eq!(c.get("b"), "b");
        assert_eq!(c.get("c"), OTHER);
        assert_eq!(c.get("a"), "a", "values seen before keep their label");
        assert_eq!(c.get("d"), OTHER);
        assert_eq!(c.overflowed, 2);
    }

    #[test]
    fn no_filter_no_port_label_and_never_addresses() {
        let ev = TcpEvent::from(&raw_v4());
        let mut p = LabelPolicy::new(vec![], 64, None);
        assert!(p.labels(&ev, None).is_empty());
    }

    #[test]
    fn port_label_only_for_filtered_ports() {
        let mut ev = TcpEvent::from(&raw_v4()); // 10050 -> 48008
        let mut p = LabelPolicy::new(vec![10050], 64, None);
        assert_eq!(p.labels(&ev, None), vec![("port", "10050".to_string())]);
        // The ephemeral end never becomes a label value.
        ev.lport = 48009;
        assert_eq!(p.labels(&ev, None), vec![("port", OTHER.to_string())]);
        ev.rport = 10050;
        assert_eq!(p.labels(&ev, None), vec![("port", "10050".to_string())]);
    }

    #[test]
    fn container_labels_are_capped() {
        let ev = TcpEvent::from(&raw_v4());
        let mut p = LabelPolicy::new(vec![], 64, Some(2));
        let ids: Vec<String> = (0..4).map(|i| format!("{i}").repeat(64)).collect();
        let got: Vec<String> = ids
            .iter()
            .map(|id| {
                let a = Attribution::from_path(&format!("/libpod_parent/libpod-{id}"));
                p.labels(&ev, Some(&a))[0].1.clone()
            })
            .collect();
        assert_eq!(got, [ids[0].as_str(), ids[1].as_str(), OTHER, OTHER]);
        let host = Attribution::from_path("/user.slice");
        assert_eq!(p.labels(&ev, Some(&host))[0].1, HOST);
        assert_eq!(p.labels(&ev, None)[0].1, UNKNOWN);
    }

    #[test]
    fn port_labels_are_capped_and_the_overflow_counted() {
        let mut ev = TcpEvent::from(&raw_v4());
        let ports: Vec<u16> = (1..=1024).collect();
        let mut p = LabelPolicy::new(ports, 3, None);
        let mut values = HashSet::new();
        for port in 1..=1024 {
            ev.lport = port;
            values.insert(p.labels(&ev, None)[0].1.clone());
        }
        assert_eq!(values.len(), 4, "three ports and `other`: {values:?}");
        assert!(values.contains(OTHER));
        assert_eq!(p.overflow().port, 1021);
        ev.lport = 2;
        assert_eq!(
            p.labels(&ev, None)[0].1,
            "2",
            "a port seen first keeps its label"
        );
    }
}
