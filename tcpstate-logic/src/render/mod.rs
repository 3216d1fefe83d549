//! Output formats. Each renderer appends one event's output to a byte buffer
//! that the reader writes out once per batch: no allocation per event beyond
//! the buffer's growth, one write syscall per batch.
//!
//! Per-event formats: [`text`] (default, `-w` wide, coloured by state),
//! [`csv`], [`json`] (JSON Lines). Per-connection: [`lifecycle`]. Filters and
//! reports that wrap or sit beside them: [`trigger`], [`report`]
//! (`--summary`), [`diagram`] (`--diagram`). [`build`] assembles them from [`Options`].

pub mod buf;
pub mod color;
pub mod csv;
pub mod diagram;
pub mod json;
pub mod lifecycle;
pub mod stats;
pub mod summary;
pub mod text;
pub mod timefmt;
pub mod trigger;

use std::io::IsTerminal as _;

use crate::{clock::WallClock, event::TcpEvent};

/// What a live view (`--top`) shows beside the rows: the losses as the exit
/// report counts them, refreshed by the reader once a second.
pub struct Live<'a> {
    pub kernel: &'a crate::kernel_stats::KernelStats,
    pub report: &'a crate::exit_report::ExitReport,
    pub trackers: &'a crate::enrich::Counters,
}

/// Whether a live view wants tracing to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Go,
    /// The user quit (`q`): stop as on Ctrl-C.
    Quit,
}

pub trait Render {
    /// Written once before the first event (column headings).
    fn header(&self, out: &mut Vec<u8>);
    fn event(&mut self, ev: &TcpEvent, out: &mut Vec<u8>);
    /// Called once when tracing stops (summaries, pending lifecycles).
    /// What the user should know beside the output (histories evicted,
    /// files written) goes into `notes`, for the exit report.
    fn finish(&mut self, _out: &mut Vec<u8>, _notes: &mut Vec<String>) {}
    /// Called on every pass of the reader's loop (at least every
    /// `--flush-interval`): a live view redraws when due and reads its keys.
    fn live(&mut self, _live: &Live<'_>, _out: &mut Vec<u8>) -> Flow {
        Flow::Go
    }
    /// Whether this view draws the whole terminal: nothing else may write
    /// to it meanwhile (the loss warnings are on its screen instead).
    fn owns_terminal(&self) -> bool {
        false
    }
}

/// Several renderers fed the same events, in order.
pub(crate) struct Tee(pub Vec<Box<dyn Render>>);

impl Render for Tee {
    fn header(&self, out: &mut Vec<u8>) {
        for r in &self.0 {
            r.header(out);
        }
    }

    fn event(&mut self, ev: &TcpEvent, out: &mut Vec<u8>) {
        for r in &mut self.0 {
            r.event(ev, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>, notes: &mut Vec<String>) {
        for r in &mut self.0 {
            r.finish(out, notes);
        }
    }
}

/// What is printed as events arrive: one choice, made once from the flags
/// (`--top` over `--lifecycle` over `--summary`/`--quiet` over the formats).
#[derive(Debug, Clone)]
pub enum Rows {
    /// `--top`: the live view instead of rows.
    Top(crate::top::Options),
    /// `--lifecycle`: one line (or JSON record) per connection.
    Lifecycle {
        json: bool,
    },
    /// `--summary` or `--quiet` (e.g. with `--metrics`): no per-event output.
    Nothing,
    /// JSON Lines.
    Json,
    Csv,
    /// Aligned text; `wide` adds socket, namespace, family, on-CPU task and
    /// container; `explain` a sentence per row.
    Text {
        wide: bool,
        explain: bool,
    },
}

/// Whether `--summary`'s report is printed, and as what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryReport {
    Text,
    Json,
}

/// What to print, and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub rows: Rows,
    /// `--summary`: the report at exit.
    pub summary: Option<SummaryReport>,
    pub color: color::ColorChoice,
    pub time: timefmt::TimeFormat,
    /// Most connection histories kept (`--lifecycle`, `--trigger`).
    pub max_histories: usize,
    /// Most sockets `--explain` keeps facts about.
    pub max_tracked: usize,
    pub trigger: Vec<trigger::TriggerSpec>,
    pub diagram: Option<std::path::PathBuf>,
}

impl Rows {
    /// Machine-readable output is never coloured.
    fn may_colour(&self) -> bool {
        !matches!(
            self,
            Rows::Json | Rows::Csv | Rows::Lifecycle { json: true }
        )
    }
}

/// The renderers asked for:
/// - the per-event format (JSON, CSV, else text), or one line per
///   connection with `lifecycle`, or nothing with `summary` or `quiet`;
/// - wrapped in a [`trigger::Trigger`] when triggers are given;
/// - plus the summary report and the diagram file, fed every event.
///
/// `containers`: the attributor that fills the container columns of wide,
/// JSON and CSV output (`None`: attribution is off).
pub fn build(
    o: &Options,
    clock: WallClock,
    containers: Option<crate::container::Shared>,
) -> Box<dyn Render> {
    let terminal = std::io::stdout().is_terminal();
    let colour =
        o.rows.may_colour() && color::enabled(o.color, terminal, color::ColorEnv::from_process());
    let palette = color::Palette::new(colour);
    let time = timefmt::TimeWriter::new(clock, o.time);
    let max = o.max_histories;

    let per_event: Option<Box<dyn Render>> = match &o.rows {
        Rows::Top(top) => Some(Box::new(crate::top::Top::new(
            top.clone(),
            terminal,
            colour,
            containers,
        ))),
        Rows::Lifecycle { json: true } => Some(Box::new(
            lifecycle::Lifecycle::json(clock, max).with_containers(containers),
        )),
        Rows::Lifecycle { json: false } => {
            Some(Box::new(lifecycle::Lifecycle::text(time, palette, max)))
        }
        Rows::Nothing => None,
        Rows::Json => Some(Box::new(json::Json::new(clock).with_containers(containers))),
        Rows::Csv => Some(Box::new(csv::Csv::new(clock).with_containers(containers))),
        Rows::Text { wide, explain } => {
            let text = text::Text::new(time, *wide, palette).with_containers(containers);
            Some(Box::new(if *explain {
                text.with_explain(crate::explain::Explainer::new(
                    crate::explain::Sysctls::read(),
                    o.max_tracked,
                ))
            } else {
                text
            }))
        }
    };
    let per_event = per_event.map(|r| -> Box<dyn Render> {
        if o.trigger.is_empty() {
            r
        } else {
            Box::new(trigger::Trigger::new(r, o.trigger.clone(), max))
        }
    });

    let mut sinks: Vec<Box<dyn Render>> = per_event.into_iter().collect();
    if let Some(format) = o.summary {
        sinks.push(Box::new(summary::Summary::new(
            format == SummaryReport::Json,
        )));
    }
    if let Some(path) = &o.diagram {
        sinks.push(Box::new(diagram::Diagram::new(path.clone())));
    }
    if sinks.len() == 1 {
        sinks.pop().expect("one sink")
    } else {
        Box::new(Tee(sinks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, tests::bytes_of, tests::raw_v4};

    /// Decode + format throughput per format, one core. Run with
    /// `cargo test --release -p tcpstate-user -- --ignored throughput --nocapture`
    /// (the criterion bench is the reference; this is a quick check).
    #[test]
    #[ignore]
    fn throughput() {
        let clock = WallClock::with_offset(1_764_000_000_000_000_000, 0);
        let mut raws: Vec<Vec<u8>> = Vec::new();
        for i in 0..1024u64 {
            let mut r = raw_v4();
            r.ts_ns += i * 137_000; // a new second every ~7300 events
            r.skaddr += i % 64;
            raws.push(bytes_of(&r));
        }
        let palette = color::Palette::new(false);
        let formats: Vec<(&str, Box<dyn Render>)> = vec![
            (
                "text",
                Box::new(text::Text::new(
                    timefmt::TimeWriter::new(clock, timefmt::TimeFormat::Clock),
                    false,
                    palette.clone(),
                )),
            ),
            (
                "text -w",
                Box::new(text::Text::new(
                    timefmt::TimeWriter::new(clock, timefmt::TimeFormat::Clock),
                    true,
                    palette,
                )),
            ),
            ("csv", Box::new(csv::Csv::new(clock))),
            ("json", Box::new(json::Json::new(clock))),
        ];
        for (name, mut r) in formats {
            let mut out = Vec::with_capacity(1 << 20);
            let n = 2_000_000;
            let start = std::time::Instant::now();
            for i in 0..n {
                let ev = decode(&raws[i % raws.len()]).unwrap();
                r.event(&ev, &mut out);
                if out.len() > (1 << 20) - 512 {
                    out.clear();
                }
            }
            let secs = start.elapsed().as_secs_f64();
            eprintln!("{name:8} {:>6.2} M events/s", n as f64 / secs / 1e6);
        }
    }
}
