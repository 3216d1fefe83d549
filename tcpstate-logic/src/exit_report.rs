//! The exit report printed to stderr: counts per transition, what was lost
//! and why, and what the trackers and printers have to tell (sockets not
//! followed, failed dumps, evicted histories, files written). Printers and
//! trackers never print at exit themselves; they hand their lines here.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    enrich::Counters,
    event::{Source, TcpEvent, TcpState},
    kernel_stats::KernelStats,
};

/// How a printer's note that reports a failure starts.
pub(crate) const ERROR_NOTE: &str = "error: ";

#[derive(Debug, Default, Clone)]
pub struct ExitReport {
    /// Kernel transitions (source: tracepoint).
    pub events: u64,
    /// Events tcpstate added (snapshot, half-open, timewait, stuck).
    pub derived: u64,
    pub decode_errors: u64,
    /// Records read from the ring buffer (before enrichment folds any).
    pub received: u64,
    /// Of those, the kernel's state changes (before enrichment folds any).
    pub received_transitions: u64,
    /// State changes proven missing by the rows around them.
    pub gaps: crate::gaps::Gaps,
    pub transitions: BTreeMap<(TcpState, TcpState), u64>,
    /// The printers' lines for the report (`Render::finish`).
    pub notes: Vec<String>,
}

impl ExitReport {
    /// Changes lost: a change the kernel counted as skipped or dropped, if its
    /// socket is followed, also shows as missing between the socket's rows,
    /// so the two counts overlap and the larger one is the total (the gaps
    /// alone see what the kernel did not count; the kernel's alone see
    /// changes of sockets that are not followed).
    pub fn lost(&self, k: &KernelStats) -> u64 {
        k.lost().max(self.gaps.found)
    }

    /// A record as it arrived from the ring buffer, before enrichment.
    pub fn arrived(&mut self, ev: &TcpEvent) {
        if ev.source == Source::Tracepoint {
            self.received_transitions += 1;
            self.gaps.observe(ev);
        }
    }

    pub fn record(&mut self, ev: &TcpEvent) {
        if ev.source != Source::Tracepoint {
            self.derived += 1;
            return;
        }
        self.events += 1;
        *self.transitions.entry((ev.old, ev.new)).or_default() += 1;
    }

    /// The whole report: totals and losses (always shown, even when zero),
    /// the kernel's and the trackers' other counts, the printers' notes, and
    /// the count of each transition seen, most frequent first.
    pub fn text(&self, k: &KernelStats, trackers: &Counters) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "tcpstate: {} events, {} lost (ring buffer full: {}, skipped by the kernel while another BPF program ran: {}, missing between a socket's rows: {}{})",
            self.events,
            self.lost(k),
            k.ringbuf_full,
            k.recursion_misses,
            self.gaps.found,
            // A skipped run is counted before any filter: it may have been a
            // socket outside the filter. Counted as lost all the same.
            if k.recursion_misses > 0 {
                ", some may be outside the filter"
            } else {
                ""
            }
        );
        if k.rescued > 0 || k.submitted != self.received {
            // The kernel's own count of what it wrote: a difference from what
            // arrived would be a loss nothing else counted.
            let _ = writeln!(
                s,
                "tcpstate: the kernel wrote {} records ({} of them for runs it skipped the main program for, handled by the nested-run program); {} arrived, {} of them state changes",
                k.submitted, k.rescued, self.received, self.received_transitions
            );
        }
        if k.nested_misses > 0 {
            let _ = writeln!(
                s,
                "tcpstate: the kernel skipped the nested-run program {} times, each while the main program was free to handle the change (not lost)",
                k.nested_misses
            );
        }
        // Counts worth a line only when something happened.
        let counted = [
            (
                self.derived,
                "more rows beyond the tracepoint (half-open, timewait, snapshot, stuck)".to_string(),
            ),
            (
                k.untracked,
                "events of sockets met mid-life (opened before tracing, or evicted from the full socket map of --max-sockets): their owner and MS may be unknown".to_string(),
            ),
            (
                k.sock_map_fail + k.listen_map_fail,
                "socket-tracking updates failed (owner/time unknown for those sockets; raise --max-sockets)".to_string(),
            ),
            (
                k.cgroup_dropped,
                "changes of other cgroups' sockets dropped in the kernel (--container/--cgroup; filtered, not lost)".to_string(),
            ),
            (self.decode_errors, "malformed records skipped".to_string()),
            (
                trackers.untracked,
                "half-open/timewait sockets not followed (raise --max-tracked)".to_string(),
            ),
            (
                trackers.lookup_errors,
                format!(
                    "of {} sock_diag dumps failed (last: {})",
                    trackers.lookups,
                    trackers.last_error.as_deref().unwrap_or("?")
                ),
            ),
        ];
        for (n, what) in counted {
            if n > 0 {
                let _ = writeln!(s, "tcpstate: {n} {what}");
            }
        }
        s.push_str(&self.notes_text());
        let mut rows: Vec<_> = self.transitions.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        if !rows.is_empty() {
            let _ = writeln!(s, "{:>10}  TRANSITION", "COUNT");
        }
        for ((old, new), n) in rows {
            let _ = writeln!(s, "{n:>10}  {old} -> {new}");
        }
        s
    }

    /// True when a printer's note is an error (a file it could not write):
    /// the run then ends with status 1, not 0.
    pub fn failed(&self) -> bool {
        self.notes.iter().any(|n| n.starts_with(ERROR_NOTE))
    }

    /// The printers' notes alone: all that is said when stdout was closed
    /// (nobody reads the counts, but a file may have been written).
    pub fn notes_text(&self) -> String {
        self.notes
            .iter()
            .map(|n| format!("tcpstate: {n}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::raw_v4;

    #[test]
    fn report_counts_transitions_and_always_shows_losses_then_what_trackers_and_printers_said() {
        let mut sum = ExitReport::default();
        let ev = TcpEvent::from(&raw_v4());
        sum.record(&ev);
        sum.record(&ev);
        let mut other = ev;
        other.old = TcpState::FinWait1;
        other.new = TcpState::FinWait2;
        sum.record(&other);
        let k = KernelStats {
            ringbuf_full: 3,
            recursion_misses: 1,
            ..Default::default()
        };
        sum.notes
            .push("--lifecycle: 2 connection histories evicted".into());
        let trackers = Counters {
            untracked: 5,
            ..Default::default()
        };
        let r = sum.text(&k, &trackers);
        assert_eq!(
            r,
            "tcpstate: 3 events, 4 lost (ring buffer full: 3, skipped by the kernel while another BPF program ran: 1, missing between a socket's rows: 0, some may be outside the filter)\n\
             tcpstate: 5 half-open/timewait sockets not followed (raise --max-tracked)\n\
             tcpstate: --lifecycle: 2 connection histories evicted\n\
             \x20    COUNT  TRANSITION\n\
             \x20        2  ESTABLISHED -> FIN_WAIT1\n\
             \x20        1  FIN_WAIT1 -> FIN_WAIT2\n"
        );
    }
}
