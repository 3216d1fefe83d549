//! The markdown sections of the report.

use std::fmt::Write as _;

use super::{Report, Role, RunResult, VariantInfo, mb, pct, thousands};
use crate::stats::Spread;

impl Report {
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
                thousands(r.load.connections as f64),
                r.load.seconds,
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
