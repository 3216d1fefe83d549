//! Counts per transition and the exit report printed to stderr.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    event::{Source, TcpEvent, TcpState},
    probe::KernelStats,
};

#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Kernel transitions (source: tracepoint).
    pub events: u64,
    /// Events tcpstate added (snapshot, half-open, timewait, stuck).
    pub derived: u64,
    pub decode_errors: u64,
    /// Records read from the ring buffer (before enrichment folds any).
    pub received: u64,
    pub transitions: BTreeMap<(TcpState, TcpState), u64>,
}

impl Summary {
    pub fn record(&mut self, ev: &TcpEvent) {
        if ev.source != Source::Tracepoint {
            self.derived += 1;
            return;
        }
        self.events += 1;
        *self.transitions.entry((ev.old, ev.new)).or_default() += 1;
    }

    /// The report: totals, losses (always shown, even when zero), and the
    /// count of each transition seen, most frequent first.
    pub fn report(&self, k: &KernelStats) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "tcpstate: {} events, {} lost (ring buffer full: {}, skipped by the kernel while another BPF program ran: {}{})",
            self.events,
            k.lost(),
            k.ringbuf_full,
            k.recursion_misses,
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
                "tcpstate: the kernel wrote {} records ({} of them for runs it skipped the main program for, handled by the nested-run program)",
                k.submitted, k.rescued
            );
        }
        if self.derived > 0 {
            let _ = writeln!(
                s,
                "tcpstate: {} more rows beyond the tracepoint (half-open, timewait, snapshot, stuck)",
                self.derived
            );
        }
        if k.untracked > 0 {
            let _ = writeln!(
                s,
                "tcpstate: {} events of sockets met mid-life (opened before tracing, or evicted from the full socket map of --max-sockets): their owner and MS may be unknown",
                k.untracked
            );
        }
        if k.sock_map_fail + k.listen_map_fail > 0 {
            let _ = writeln!(
                s,
                "tcpstate: {} socket-tracking updates failed (owner/time unknown for those sockets; raise --max-sockets)",
                k.sock_map_fail + k.listen_map_fail
            );
        }
        if self.decode_errors > 0 {
            let _ = writeln!(
                s,
                "tcpstate: {} malformed records skipped",
                self.decode_errors
            );
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::raw_v4;

    #[test]
    fn report_counts_transitions_and_always_shows_losses() {
        let mut sum = Summary::default();
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
        let r = sum.report(&k);
        assert_eq!(
            r,
            "tcpstate: 3 events, 4 lost (ring buffer full: 3, skipped by the kernel while another BPF program ran: 1, some may be outside the filter)\n\
             \x20    COUNT  TRANSITION\n\
             \x20        2  ESTABLISHED -> FIN_WAIT1\n\
             \x20        1  FIN_WAIT1 -> FIN_WAIT2\n"
        );
    }
}
