//! `--top`'s listener and TIME_WAIT facts as metrics, bounded. The view's
//! own model ([`crate::top::model`]) and sampler ([`crate::top::sample`]),
//! run once a second whenever `--metrics` is given (with or without
//! `--top`):
//!
//! - per listener, labelled `port` (the listening port, under the cap of
//!   every `port` value, `--metrics-max-ports` distinct values for the run,
//!   the rest `other`, each listener folded into `other` counted once in
//!   `tcpstate_label_overflow_total{label="port"}`) and, with
//!   `--metrics-container-labels`, `container_id` and `pod_uid` (capped as
//!   for every series): listeners, accept queue depth and limit (summed over
//!   the listeners of one label set) and drops (`sk_drops`, a counter);
//! - TIME_WAIT sockets on an ephemeral port per destination (`netns`,
//!   `local` address, `remote` address:port), for the top
//!   `--metrics-timewait-top` destinations only.

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    sync::Arc,
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

pub(crate) use crate::top::sample::Attribute;

use super::labels::{LabelPolicy, Labels};
use crate::{
    clock::boot_ns,
    container::Attribution,
    enrich::{Filter, ListenKey},
    event::{Task, TcpEvent},
    top::{model::Model, sample::Sampler},
};

/// Default of `--metrics-max-ports` (all `port` values, the listeners' among
/// them).
pub const DEFAULT_MAX_PORTS: u32 = 64;
/// Default of `--metrics-timewait-top`.
pub const DEFAULT_TIMEWAIT_TOP: u32 = 10;

/// What the once-a-second dumps read, and the bounds of their series.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--netns` as given (resolved by the probe before tracing starts).
    pub netns: Option<String>,
    /// The port and family filters, for what the dumps find.
    pub filter: Filter,
    /// The dumps stand for the filters (no `--container`/`--cgroup`).
    pub correct: bool,
    /// TIME_WAIT destinations exposed, the most loaded first.
    pub timewait_top: usize,
}

/// The container a listener's owner runs in, for its labels.
/// Arguments as [`crate::top::sample::Attribute`]'s.
pub(crate) type AttributionOf<'a> = dyn FnMut(u64, Option<&Task>) -> Option<Arc<Attribution>> + 'a;

/// A listening socket: its key and inode (two SO_REUSEPORT listeners share
/// a key; a restarted one gets a new inode).
type Id = (ListenKey, u32);

struct Known {
    labels: Labels,
    drops: u32,
}

pub(crate) struct Sampled {
    opts: Options,
    model: Model,
    sampler: Option<Sampler>,
    listeners: Family<Labels, Gauge>,
    queue: Family<Labels, Gauge>,
    limit: Family<Labels, Gauge>,
    drops: Family<Labels, Counter>,
    timewait: Family<Labels, Gauge>,
    /// Listeners of the last sample, with the labels given at first sight.
    known: HashMap<Id, Known>,
    /// Label sets of the listener gauges now exposed.
    shown: HashSet<Labels>,
    /// Label sets of the TIME_WAIT gauges now exposed.
    dests: HashSet<Labels>,
}

impl Sampled {
    pub fn new(opts: Options, registry: &mut Registry) -> Self {
        let s = Sampled {
            model: Model::new(boot_ns()),
            sampler: None,
            opts,
            listeners: Family::default(),
            queue: Family::default(),
            limit: Family::default(),
            drops: Family::default(),
            timewait: Family::default(),
            known: HashMap::new(),
            shown: HashSet::new(),
            dests: HashSet::new(),
        };
        for (name, help, family) in [
            (
                "listeners",
                "Listening sockets, by listening port (sampled every second)",
                &s.listeners,
            ),
            (
                "listen_queue",
                "Connections in listeners' accept queues, not accepted yet (sock_diag, every second)",
                &s.queue,
            ),
            (
                "listen_queue_limit",
                "Listeners' accept queue limit (the listen() backlog, capped by net.core.somaxconn)",
                &s.limit,
            ),
            (
                "timewait_sockets",
                "TIME_WAIT sockets on an ephemeral port per destination, the top --metrics-timewait-top destinations only",
                &s.timewait,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "listen_drops",
            "Connections dropped at listeners (their sk_drops: accept queue overflows among them), counted from each listener's creation",
            s.drops.clone(),
        );
        s
    }

    /// One row, as the other metrics get it.
    pub fn event(&mut self, ev: &TcpEvent) {
        self.model.event(ev, None);
    }

    /// One round of dumps (every second), then the series.
    pub fn sample(
        &mut self,
        attribute: &mut Attribute<'_>,
        of: &mut AttributionOf<'_>,
        policy: &mut LabelPolicy,
    ) {
        let opts = &self.opts;
        let sampler = self.sampler.get_or_insert_with(|| {
            Sampler::for_netns(opts.netns.as_deref(), opts.filter.clone(), opts.correct)
        });
        let s = sampler.sample(attribute);
        self.model.sampled(s);
        self.model.tick(boot_ns());
        self.publish(of, policy);
    }

    /// The model as series.
    fn publish(&mut self, of: &mut AttributionOf<'_>, policy: &mut LabelPolicy) {
        let mut now: HashMap<Labels, [i64; 3]> = HashMap::new();
        let mut live: HashSet<Id> = HashSet::new();
        for row in self.model.listeners() {
            let l = row.sample;
            let id = (l.key, l.inode);
            live.insert(id);
            let known = match self.known.entry(id) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    // Once per listener: the cap's overflow counts it once.
                    let mut labels = vec![("port", policy.port_label(l.key.port))];
                    labels.extend(
                        policy.container_labels(of(l.cgroup_id, l.owner.as_ref()).as_deref()),
                    );
                    e.insert(Known { labels, drops: 0 })
                }
            };
            if let Some(d) = l.drops {
                // sk_drops only grows in a socket's life: less is another
                // socket (an inode reused), counted from zero.
                let delta = d.checked_sub(known.drops).unwrap_or(d);
                self.drops
                    .get_or_create(&known.labels)
                    .inc_by(u64::from(delta));
                known.drops = d;
            }
            let sums = now.entry(known.labels.clone()).or_default();
            sums[0] += 1;
            sums[1] += i64::from(l.queue);
            sums[2] += i64::from(l.limit);
        }
        self.known.retain(|id, _| live.contains(id));
        for gone in self.shown.iter().filter(|l| !now.contains_key(*l)) {
            self.listeners.remove(gone);
            self.queue.remove(gone);
            self.limit.remove(gone);
        }
        for (labels, [n, queue, limit]) in &now {
            self.listeners.get_or_create(labels).set(*n);
            self.queue.get_or_create(labels).set(*queue);
            self.limit.get_or_create(labels).set(*limit);
        }
        self.shown = now.into_keys().collect();

        let mut dests = HashSet::new();
        for row in self.model.pressure().iter().take(self.opts.timewait_top) {
            let labels: Labels = vec![
                ("netns", row.dest.netns.to_string()),
                ("local", row.dest.local.to_string()),
                ("remote", row.dest.remote.to_string()),
            ];
            self.timewait
                .get_or_create(&labels)
                .set(row.timewait as i64);
            dests.insert(labels);
        }
        for gone in self.dests.difference(&dests) {
            self.timewait.remove(gone);
        }
        self.dests = dests;
    }
}

#[cfg(test)]
#[path = "top_tests.rs"]
mod tests;
