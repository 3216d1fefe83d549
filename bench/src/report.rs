//! The markdown report: one row per tracer with each figure as min / median / max over the
//! rounds, the connection rate also as a ratio to the untraced baseline of the same round,
//! then tcpstate against each peer, the targets, and every run's raw figures.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::Spread;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// No tracer: the reference rate.
    Baseline,
    /// tcpstate writing every event of the bench namespace to a file.
    Tcpstate,
    /// tcpstate with `--port` on a port that carries none of the load.
    TcpstateIdlePort,
    /// tcpstate writing every event while another BPF tracer runs, on
    /// unpinned load: counts what the kernel skips beside other tools.
    TcpstateAlongside,
    /// Another tool, for comparison.
    Peer,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantInfo {
    pub id: String,
    pub label: String,
    pub role: Role,
    /// The command line, for the report.
    pub command: String,
}

/// One run of one variant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    pub variant: String,
    pub round: usize,
    pub connections: u64,
    pub failed_connects: u64,
    pub seconds: f64,
    pub rate: f64,
    pub expected: Option<u64>,
    pub received: Option<u64>,
    /// Losses the tool reported (its own counters plus the kernel's recursion misses).
    pub lost: Option<u64>,
    pub recursion_misses: Option<u64>,
    /// Tracer CPU seconds from ready to quiet (the load and the drain after it).
    pub cpu_s: Option<f64>,
    /// Tracer CPU seconds over its whole life (startup included).
    pub total_cpu_s: Option<f64>,
    pub rss_kb: Option<u64>,
    pub startup_ms: Option<f64>,
    /// ns per run of the tracer's tracepoint programs (`--bpf-stats` only).
    pub bpf_ns_per_run: Option<f64>,
    /// ns of all the tracer's BPF programs per connection (`--bpf-stats` only).
    pub bpf_ns_per_conn: Option<f64>,
    /// How busy the load's CPU and the tracer's CPU were while the load ran (0..1, from
    /// /proc/stat): the tracer CPU's figure in an untraced run is other work on the machine.
    pub load_cpu_busy: Option<f64>,
    pub tracer_cpu_busy: Option<f64>,
    /// CPU time of the load generator's two processes over the load's wall time: near 1 when
    /// they had their CPU to themselves (softirq work on their behalf included).
    pub load_cpu_share: Option<f64>,
    pub note: Option<String>,
    /// Set when the run failed; its figures are not used.
    pub error: Option<String>,
}

impl RunResult {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.rate > 0.0
    }
    pub fn exact(&self) -> bool {
        matches!((self.received, self.expected), (Some(r), Some(e)) if r == e)
    }
}

/// A criterion result for the decode/format micro-benchmark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MicroBench {
    pub name: String,
    pub events_per_s: f64,
    pub measured: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub title: String,
    /// (key, value) lines about the machine and the parameters.
    pub meta: Vec<(String, String)>,
    pub variants: Vec<VariantInfo>,
    pub runs: Vec<RunResult>,
    /// Peers that were not run, with the reason.
    pub skipped: Vec<(String, String)>,
    pub micro: Vec<MicroBench>,
}

/// Targets from issue #5.
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

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mb(kb: f64) -> String {
    format!("{:.1}", kb / 1024.0)
}

impl Report {
    fn runs_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a RunResult> + 'a {
        self.runs.iter().filter(move |r| r.variant == id && r.ok())
    }

    fn baseline(&self) -> Option<&VariantInfo> {
        self.variants.iter().find(|v| v.role == Role::Baseline)
    }

    fn first_of(&self, role: Role) -> Option<&VariantInfo> {
        self.variants.iter().find(|v| v.role == role)
    }

    /// Per-round ratios of `id`'s rate to the baseline's rate in the same round.
    pub fn ratios(&self, id: &str) -> Vec<f64> {
        let Some(base) = self.baseline() else {
            return Vec::new();
        };
        self.runs_of(id)
            .filter_map(|r| {
                let b = self.runs_of(&base.id).find(|b| b.round == r.round)?;
                Some(r.rate / b.rate)
            })
            .collect()
    }

    fn spread(&self, id: &str, f: impl Fn(&RunResult) -> Option<f64>) -> Option<Spread> {
        let v: Vec<f64> = self.runs_of(id).filter_map(f).collect();
        Spread::of(&v)
    }

    pub fn median_rate(&self, id: &str) -> Option<f64> {
        self.spread(id, |r| Some(r.rate)).map(|s| s.median)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# {}\n", self.title);
        for (k, v) in &self.meta {
            let _ = writeln!(s, "- **{k}**: {v}");
        }
        let _ = writeln!(s);
        self.render_table(&mut s);
        self.render_comparison(&mut s);
        self.render_targets(&mut s);
        self.render_commands(&mut s);
        self.render_runs(&mut s);
        s
    }

    fn render_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "Each figure is min / median / max over the rounds; \"vs untraced\" divides each \
             run's rate by the untraced run of the same round. Events are counted exactly \
             against the known sequence (10 per connection, 2 for the listener). Lost is what \
             the tool itself reported, plus runs the kernel skipped (`recursion_misses`). CPU \
             is the tracer's, from attached to quiet after the load (its startup excluded).\n"
        );
        let _ = writeln!(
            s,
            "| tracer | conn/s | vs untraced | events received / expected | lost (as reported) | tracer CPU s | peak RSS MB | startup ms |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for v in &self.variants {
            let runs: Vec<&RunResult> = self.runs_of(&v.id).collect();
            let failed = self
                .runs
                .iter()
                .filter(|r| r.variant == v.id && !r.ok())
                .count();
            if runs.is_empty() {
                let why = self
                    .runs
                    .iter()
                    .find(|r| r.variant == v.id)
                    .and_then(|r| r.error.clone())
                    .unwrap_or_else(|| "no run".into());
                let _ = writeln!(s, "| {} | failed: {why} | | | | | | |", v.label);
                continue;
            }
            let dash = || "—".to_string();
            let rate = self
                .spread(&v.id, |r| Some(r.rate))
                .map_or_else(dash, |x| x.show(thousands));
            let ratio = if v.role == Role::Baseline {
                "100%".to_string()
            } else {
                Spread::of(&self.ratios(&v.id)).map_or_else(dash, |x| x.show(pct))
            };
            let events = {
                let with: Vec<_> = runs
                    .iter()
                    .filter(|r| r.received.is_some() && r.expected.is_some())
                    .collect();
                if with.is_empty() {
                    dash()
                } else {
                    let rec: u64 = with.iter().filter_map(|r| r.received).sum();
                    let exp: u64 = with.iter().filter_map(|r| r.expected).sum();
                    let exact = with.iter().filter(|r| r.exact()).count();
                    format!(
                        "{} / {} ({}; exact in {exact} of {} runs)",
                        thousands(rec as f64),
                        thousands(exp as f64),
                        if exp > 0 {
                            pct(rec as f64 / exp as f64)
                        } else {
                            "none expected".into()
                        },
                        with.len()
                    )
                }
            };
            let lost = self
                .spread(&v.id, |r| r.lost.map(|x| x as f64))
                .map_or_else(dash, |x| x.show(thousands));
            let cpu = self
                .spread(&v.id, |r| r.cpu_s)
                .map_or_else(dash, |x| x.show(|c| format!("{c:.2}")));
            let rss = self
                .spread(&v.id, |r| r.rss_kb.map(|k| k as f64))
                .map_or_else(dash, |x| x.show(mb));
            let startup = self.spread(&v.id, |r| r.startup_ms).map_or_else(dash, |x| {
                x.show(|m| {
                    if m >= 100.0 {
                        format!("{m:.0}")
                    } else {
                        format!("{m:.1}")
                    }
                })
            });
            let label = if failed > 0 {
                format!("{} ({failed} failed runs)", v.label)
            } else {
                v.label.clone()
            };
            let _ = writeln!(
                s,
                "| {label} | {rate} | {ratio} | {events} | {lost} | {cpu} | {rss} | {startup} |"
            );
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(s);
            for (name, why) in &self.skipped {
                let _ = writeln!(s, "- not run: **{name}**: {why}");
            }
        }
        let _ = writeln!(s);
    }

    fn render_comparison(&self, s: &mut String) {
        let Some(ts) = self.first_of(Role::Tcpstate) else {
            return;
        };
        let Some(ts_rate) = self.median_rate(&ts.id) else {
            return;
        };
        let peers: Vec<&VariantInfo> = self
            .variants
            .iter()
            .filter(|v| v.role == Role::Peer)
            .collect();
        if peers.is_empty() {
            return;
        }
        let _ = writeln!(s, "## tcpstate against each peer\n");
        let _ = writeln!(
            s,
            "Median connection rate of the workload while traced, tcpstate ({}) divided by the \
             peer's.\n",
            ts.label
        );
        let _ = writeln!(
            s,
            "| peer | peer kept | tcpstate kept | tcpstate's rate / peer's |"
        );
        let _ = writeln!(s, "|---|---|---|---|");
        let kept = |id: &str| Spread::of(&self.ratios(id)).map(|x| x.median);
        for p in peers {
            let Some(pr) = self.median_rate(&p.id) else {
                let _ = writeln!(s, "| {} | failed | | |", p.label);
                continue;
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.1}× |",
                p.label,
                kept(&p.id).map_or("—".into(), pct),
                kept(&ts.id).map_or("—".into(), pct),
                ts_rate / pr
            );
        }
        let _ = writeln!(s);
    }

    /// (target, measured, met) for each of the targets that this run measured.
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
                t.push((
                    format!(
                        ">= {} of the untraced rate, every event written to a file",
                        pct(TARGET_RATIO)
                    ),
                    format!("median {} (min {})", pct(r.median), pct(r.min)),
                    Some(r.median >= TARGET_RATIO),
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
            t.push((
                format!(
                    ">= {} of the untraced rate with `--port` on an idle port",
                    pct(TARGET_RATIO_IDLE_PORT)
                ),
                format!("median {} (min {})", pct(r.median), pct(r.min)),
                Some(r.median >= TARGET_RATIO_IDLE_PORT),
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

    fn render_targets(&self, s: &mut String) {
        let t = self.targets();
        if t.is_empty() {
            return;
        }
        let _ = writeln!(s, "## Targets\n");
        let _ = writeln!(s, "| target | measured | met |");
        let _ = writeln!(s, "|---|---|---|");
        for (target, measured, met) in t {
            let met = match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            let _ = writeln!(s, "| {target} | {measured} | {met} |");
        }
        if let Some(m) = self.micro.first() {
            let _ = writeln!(s, "\nMicro-benchmark figures: {}.", m.measured);
        }
        let _ = writeln!(s);
    }

    fn render_commands(&self, s: &mut String) {
        let _ = writeln!(s, "## Commands\n");
        for v in &self.variants {
            let _ = writeln!(s, "- {}: `{}`", v.label, v.command);
        }
        let _ = writeln!(s);
    }

    fn render_runs(&self, s: &mut String) {
        let _ = writeln!(s, "## Every run, in the order run\n");
        let _ = writeln!(
            s,
            "| round | tracer | connections | s | conn/s | received / expected | lost | recursion misses | CPU s (total) | RSS MB | startup ms | BPF ns/run (ns/conn) | load / tracer CPU busy | loadgen CPU share | note |"
        );
        let _ = writeln!(
            s,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        let label = |id: &str| {
            self.variants
                .iter()
                .find(|v| v.id == id)
                .map_or(id.to_string(), |v| v.label.clone())
        };
        let o = |x: Option<String>| x.unwrap_or_else(|| "—".into());
        for r in &self.runs {
            let note = match (&r.error, &r.note) {
                (Some(e), _) => format!("FAILED: {e}"),
                (None, Some(n)) => n.clone(),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.round + 1,
                label(&r.variant),
                thousands(r.connections as f64),
                r.seconds,
                thousands(r.rate),
                o(r.received
                    .zip(r.expected)
                    .map(|(a, b)| format!("{a} / {b}"))),
                o(r.lost.map(|x| x.to_string())),
                o(r.recursion_misses.map(|x| x.to_string())),
                o(r.cpu_s
                    .map(|c| format!("{c:.2} ({:.2})", r.total_cpu_s.unwrap_or(c)))),
                o(r.rss_kb.map(|k| mb(k as f64))),
                o(r.startup_ms.map(|m| format!("{m:.1}"))),
                o(r.bpf_ns_per_run.map(|n| match r.bpf_ns_per_conn {
                    Some(c) => format!("{n:.0} ({c:.0})"),
                    None => format!("{n:.0}"),
                })),
                o(r.load_cpu_busy.zip(r.tracer_cpu_busy).map(|(a, b)| format!(
                    "{:.0}% / {:.0}%",
                    a * 100.0,
                    b * 100.0
                ))),
                o(r.load_cpu_share.map(|x| format!("{:.0}%", x * 100.0))),
                note
            );
        }
        let _ = writeln!(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(variant: &str, round: usize, rate: f64) -> RunResult {
        RunResult {
            variant: variant.into(),
            round,
            connections: 1000,
            seconds: 1000.0 / rate,
            rate,
            ..Default::default()
        }
    }

    fn report() -> Report {
        let v = |id: &str, role| VariantInfo {
            id: id.into(),
            label: id.into(),
            role,
            command: format!("{id} --x"),
        };
        let mut r = Report {
            title: "t".into(),
            variants: vec![
                v("untraced", Role::Baseline),
                v("tcpstate", Role::Tcpstate),
                v("tcpstate-port", Role::TcpstateIdlePort),
                v("peer", Role::Peer),
            ],
            ..Default::default()
        };
        for round in 0..3 {
            let base = 60_000.0 + round as f64 * 1000.0;
            r.runs.push(run("untraced", round, base));
            let mut t = run("tcpstate", round, base * 0.9);
            t.expected = Some(10_002);
            t.received = Some(10_002);
            t.lost = Some(0);
            t.rss_kb = Some(12 * 1024);
            t.startup_ms = Some(20.0);
            r.runs.push(t);
            r.runs.push(run("tcpstate-port", round, base * 0.97));
            r.runs.push(run("peer", round, base * 0.1));
        }
        r
    }

    #[test]
    fn ratios_pair_runs_by_round() {
        let r = report();
        let ratios = r.ratios("tcpstate");
        assert_eq!(ratios.len(), 3);
        assert!(ratios.iter().all(|x| (x - 0.9).abs() < 1e-9));
    }

    #[test]
    fn targets_are_judged() {
        let r = report();
        let t = r.targets();
        // Judged where this run measured the reference (no libbpf-tools
        // here: the startup target is shown, not judged).
        assert!(t.iter().all(|(_, _, met)| *met != Some(false)), "{t:?}");
        assert!(
            t.iter().filter(|(_, _, met)| met.is_some()).count() >= 4,
            "{t:?}"
        );
        let mut r2 = r.clone();
        r2.runs[1].received = Some(10_000);
        let t = r2.targets();
        assert_eq!(t[0].2, Some(false));
    }

    #[test]
    fn renders_table_and_comparison() {
        let md = report().render();
        assert!(
            md.contains("| tcpstate | 54,000 / 54,900 / 55,800 | 90.0% |"),
            "{md}"
        );
        assert!(md.contains("| peer | 10.0% | 90.0% | 9.0× |"), "{md}");
        assert!(
            md.contains("30,006 / 30,006 (100.0%; exact in 3 of 3 runs)"),
            "{md}"
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
    }
}
