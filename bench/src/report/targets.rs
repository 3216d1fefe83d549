//! The targets the benchmark judges tcpstate against, and how a report measures up to them.

use super::{Report, Role, RunResult, pct};
use crate::stats::Spread;

/// The connection rate tcpstate must keep, as a share of the untraced rate: writing every
/// event, and with `--port` on an idle port.
pub const TARGET_RATIO: f64 = 0.90;
pub const TARGET_RATIO_IDLE_PORT: f64 = 0.95;
/// Startup at most this times libbpf-tools' `tcpstates` in the same run.
pub const TARGET_STARTUP_VS_LIBBPF: f64 = 1.5;
/// The peer whose startup is the reference, and the peer whose in-kernel
/// count is the floor for tcpstate's rate.
pub const LIBBPF_ID: &str = "libbpf-tcpstates";
pub const BPFTRACE_COUNT_ID: &str = "bpftrace-count";
pub const TARGET_RSS_MB: f64 = 16.0;
pub const TARGET_EVENTS_PER_S: f64 = 2e6;

impl Report {
    /// (target, measured, met) for each target this run measured.
    pub fn targets(&self) -> Vec<(String, String, Option<bool>)> {
        let mut t = Vec::new();
        if let Some(ts) = self.first_of(Role::Tcpstate) {
            let runs: Vec<&RunResult> = self.runs_of(&ts.id).collect();
            if !runs.is_empty() {
                let lost: u64 = runs.iter().filter_map(|r| r.lost).sum();
                let short: u64 = runs
                    .iter()
                    .filter_map(|r| Some(r.expected?.saturating_sub(r.received?)))
                    .sum();
                let exact = runs.iter().all(|r| r.exact());
                t.push((
                    "zero lost events at the generator's full rate, default settings".into(),
                    format!(
                        "{lost} reported lost, {short} missing against the sequence, over {} runs",
                        runs.len()
                    ),
                    Some(lost == 0 && exact),
                ));
            }
            if let Some(r) = Spread::of(&self.ratios(&ts.id)) {
                t.push(ratio_target(
                    ", every event written to a file",
                    &r,
                    TARGET_RATIO,
                ));
                if let Some(b) = Spread::of(&self.ratios(BPFTRACE_COUNT_ID)) {
                    t.push((
                        "every event written, at or above bpftrace's in-kernel count (no output)"
                            .into(),
                        format!("{} against {}", pct(r.median), pct(b.median)),
                        Some(r.median >= b.median),
                    ));
                }
            }
            if let Some(st) = self.spread(&ts.id, |r| r.startup_ms) {
                let libbpf = self.spread(LIBBPF_ID, |r| r.startup_ms);
                t.push((
                    format!(
                        "startup (exec to attached and ready) <= {TARGET_STARTUP_VS_LIBBPF}x libbpf-tools'"
                    ),
                    match &libbpf {
                        Some(l) => format!(
                            "median {:.1} ms (max {:.1}) against {:.1} ms: {:.2}x",
                            st.median,
                            st.max,
                            l.median,
                            st.median / l.median
                        ),
                        None => format!("median {:.1} ms; libbpf-tools not run", st.median),
                    },
                    libbpf.map(|l| st.median <= TARGET_STARTUP_VS_LIBBPF * l.median),
                ));
            }
            let rss: Vec<f64> = self
                .variants
                .iter()
                .filter(|v| {
                    matches!(
                        v.role,
                        Role::Tcpstate | Role::TcpstateIdlePort | Role::TcpstateAlongside
                    )
                })
                .flat_map(|v| self.runs_of(&v.id).filter_map(|r| r.rss_kb))
                .map(|k| k as f64 / 1024.0)
                .collect();
            if let Some(m) = Spread::of(&rss) {
                t.push((
                    format!("peak RSS <= {TARGET_RSS_MB:.0} MB"),
                    format!("max {:.1} MB (median {:.1})", m.max, m.median),
                    Some(m.max <= TARGET_RSS_MB),
                ));
            }
        }
        if let Some(both) = self.first_of(Role::TcpstateAlongside) {
            let runs: Vec<&RunResult> = self.runs_of(&both.id).collect();
            if !runs.is_empty() {
                let skipped: u64 = runs.iter().filter_map(|r| r.recursion_misses).sum();
                let lost: u64 = runs.iter().filter_map(|r| r.lost).sum();
                let exact = runs.iter().all(|r| r.exact());
                t.push((
                    "0 lost and 0 skipped beside libbpf-tools' tcpstates, unpinned load".into(),
                    format!(
                        "{lost} reported lost, {skipped} kernel skips of the main program \
                         (those the nested-run program handled are not lost), over {} runs",
                        runs.len()
                    ),
                    Some(lost == 0 && exact),
                ));
            }
        }
        if let Some(idle) = self.first_of(Role::TcpstateIdlePort)
            && let Some(r) = Spread::of(&self.ratios(&idle.id))
        {
            t.push(ratio_target(
                " with `--port` on an idle port",
                &r,
                TARGET_RATIO_IDLE_PORT,
            ));
        }
        if !self.micro.is_empty() {
            let slowest = self
                .micro
                .iter()
                .filter(|m| m.name.contains("text") || m.name.contains("json"))
                .map(|m| m.events_per_s)
                .fold(f64::INFINITY, f64::min);
            let list: Vec<String> = self
                .micro
                .iter()
                .map(|m| format!("{} {:.2} M/s", m.name, m.events_per_s / 1e6))
                .collect();
            t.push((
                "decode + format >= 2 M events/s on one core (criterion)".into(),
                list.join(", "),
                slowest
                    .is_finite()
                    .then_some(slowest >= TARGET_EVENTS_PER_S),
            ));
        }
        t
    }
}

/// A rate target judged on the median of the per-round ratios to the untraced rate: "at least
/// `target` of the untraced rate`setting`".
fn ratio_target(setting: &str, ratios: &Spread, target: f64) -> (String, String, Option<bool>) {
    (
        format!(">= {} of the untraced rate{setting}", pct(target)),
        format!("median {} (min {})", pct(ratios.median), pct(ratios.min)),
        Some(ratios.median >= target),
    )
}
