//! Output formats. Each renderer appends one event's output to a byte buffer
//! that the reader writes out once per batch: no allocation per event beyond
//! the buffer's growth, one write syscall per batch.

pub mod json;
pub mod text;

use crate::{clock::WallClock, event::TcpEvent};

pub trait Render {
    /// Written once before the first event (column headings).
    fn header(&self, out: &mut Vec<u8>);
    fn event(&mut self, ev: &TcpEvent, out: &mut Vec<u8>);
    /// Called once when tracing stops (summaries, pending lifecycles).
    fn finish(&mut self, _out: &mut Vec<u8>) {}
}

/// Which renderer the CLI asked for.
pub fn for_cli(cli: &crate::cli::Cli, clock: WallClock) -> Box<dyn Render> {
    if cli.json {
        Box::new(json::Json::new(clock))
    } else {
        Box::new(text::Text::new(clock, cli.wide))
    }
}

/// Milliseconds with microsecond precision, or `None` when unknown.
pub fn dwell_ms(ev: &TcpEvent) -> Option<f64> {
    ev.dwell_ns.map(|ns| ns as f64 / 1e6)
}
