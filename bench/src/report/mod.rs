//! The markdown report: one row per tracer with each figure as min / median / max over the
//! rounds, the connection rate also as a ratio to the untraced baseline of the same round,
//! then tcpstate against each peer, the issue's targets, and every run's raw figures.

mod render;
mod targets;

use serde::{Deserialize, Serialize};

use crate::{loadgen::Load, stats::Spread};
pub use targets::*;

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
    /// The variant's id.
    pub variant: String,
    /// 0-based.
    pub round: usize,
    /// What the load did (its fields stand at this level in the JSON).
    #[serde(flatten)]
    pub load: Load,
    /// Connections per second.
    pub rate: f64,
    /// Events the load made that the tool should report (none for an idle `--port`).
    pub expected: Option<u64>,
    /// Events the tool reported, counted from its summary or its output.
    pub received: Option<u64>,
    /// Losses the tool reported (its own counters plus the kernel's recursion misses).
    pub lost: Option<u64>,
    /// Runs of the tracer's programs the kernel skipped because another BPF program was
    /// running on that CPU (from their fdinfo).
    pub recursion_misses: Option<u64>,
    /// Tracer CPU seconds from ready to quiet (the load and the drain after it).
    pub cpu_s: Option<f64>,
    /// Tracer CPU seconds over its whole life (startup included).
    pub total_cpu_s: Option<f64>,
    /// The tracer's peak resident set (its rusage at exit), in KiB.
    pub rss_kb: Option<u64>,
    /// From exec until the tracer's program ran on a probe connection and it printed its
    /// ready line.
    pub startup_ms: Option<f64>,
    /// ns per run of the tracer's tracepoint programs (`--bpf-stats` only).
    pub bpf_ns_per_run: Option<f64>,
    /// ns of all the tracer's BPF programs per connection (`--bpf-stats` only).
    pub bpf_ns_per_conn: Option<f64>,
    /// How busy the load's CPU and the tracer's CPU were while the load ran (0..1, from
    /// /proc/stat): the tracer CPU's figure in an untraced run is other work on the machine.
    pub load_cpu_busy: Option<f64>,
    /// See `load_cpu_busy`.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(variant: &str, round: usize, rate: f64) -> RunResult {
        RunResult {
            variant: variant.into(),
            round,
            load: Load {
                connections: 1000,
                failed_connects: 0,
                seconds: 1000.0 / rate,
            },
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
    fn runs_keep_their_json_fields() {
        let json = serde_json::to_string(&run("tcpstate", 2, 500.0)).unwrap();
        assert!(
            json.starts_with(
                r#"{"variant":"tcpstate","round":2,"connections":1000,"failed_connects":0,"seconds":2.0,"rate":500.0,"#
            ),
            "{json}"
        );
        let back: RunResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back.load.connections, 1000);
        assert_eq!(back.load.seconds, 2.0);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
    }
}
