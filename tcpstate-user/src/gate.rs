//! Between enrich and render: attributes each row to its owner's cgroup and
//! container (when something needs it), drops the rows `--cgroup` /
//! `--container` leave out, and counts the rest into the metrics.

use crate::{container, event::TcpEvent, metrics::Recorder};

#[derive(Default)]
pub struct Gate {
    attributor: Option<container::Shared>,
    select: container::select::Select,
    metrics: Option<Recorder>,
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
        }
    }

    /// Whether the row goes on to the renderers; counted if so.
    pub fn pass(&mut self, ev: &TcpEvent) -> bool {
        let attribution = self
            .attributor
            .as_ref()
            .and_then(|a| a.borrow_mut().of(ev.owner.as_ref()));
        if !self.select.matches(attribution.as_deref()) {
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
            &mut |owner| crate::top::attribute(attributor, select, owner),
            &mut |owner| attributor.as_ref().and_then(|a| a.borrow_mut().of(owner)),
        );
    }

    pub fn metrics(&mut self) -> Option<&mut Recorder> {
        self.metrics.as_mut()
    }
}
