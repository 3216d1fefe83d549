//! Between enrich and render: attributes each row to its owner's cgroup and
//! container (when something needs it), drops the rows `--cgroup` /
//! `--container` leave out, and counts the rest into the metrics.

use crate::{container, event::TcpEvent, metrics::Recorder, verdicts::Verdicts};

#[derive(Default)]
pub struct Gate {
    attributor: Option<container::Shared>,
    select: container::select::Select,
    metrics: Option<Recorder>,
    /// The kernel program's copy of the filter, by cgroup id.
    verdicts: Option<Verdicts>,
}

impl Gate {
    pub fn new(
        attributor: Option<container::Shared>,
        select: container::select::Select,
        metrics: Option<Recorder>,
    ) -> Self {
        Gate {
            attributor,
            select,
            metrics,
            verdicts: None,
        }
    }

    /// Has the kernel drop the changes of cgroups the filter rules out:
    /// every cgroup that exists now is judged here, later ones on their
    /// first row.
    pub fn with_kernel_verdicts(mut self, verdicts: Option<Verdicts>) -> Self {
        self.verdicts = verdicts;
        if let (Some(v), Some(a)) = (&mut self.verdicts, &self.attributor) {
            for c in a.borrow_mut().all_cgroups() {
                if let Some(id) = c.cgroup_id {
                    v.tell(id, self.select.matches(Some(&c)));
                }
            }
        }
        self
    }

    /// Whether the row goes on to the renderers; counted if so.
    pub fn pass(&mut self, ev: &TcpEvent) -> bool {
        let attribution = self.attributor.as_ref().and_then(|a| a.borrow_mut().of(ev));
        let keep = self.select.matches(attribution.as_deref());
        if let Some(v) = &mut self.verdicts
            && let Some(id) = attribution.as_ref().and_then(|a| a.cgroup_id)
        {
            v.tell(id, keep);
        }
        if !keep {
            return false;
        }
        if let Some(m) = &mut self.metrics {
            m.record(ev, attribution.as_deref());
        }
        true
    }

    /// Every second, with `--metrics`: the listener and TIME_WAIT series'
    /// dumps, with the rows' container filter and attribution.
    pub fn sample_metrics(&mut self) {
        let Some(m) = &mut self.metrics else {
            return;
        };
        let (attributor, select) = (&self.attributor, &self.select);
        m.sample(
            &mut |id, owner| crate::top::attribute(attributor, select, id, owner),
            &mut |id, owner| {
                attributor
                    .as_ref()
                    .and_then(|a| a.borrow_mut().of_socket(id, owner))
            },
        );
    }

    pub fn metrics(&mut self) -> Option<&mut Recorder> {
        self.metrics.as_mut()
    }
}
