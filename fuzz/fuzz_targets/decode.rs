//! Fuzzes the ring-buffer record decoder and every renderer behind it.
//!
//! The input is cut into records of the kernel's `Event` size (the last one
//! may be short, which must be an error, not a panic); each record that
//! decodes is given one of the notes userspace attaches to non-tracepoint
//! events (chosen by an input byte) and rendered by every output the CLI
//! offers. Properties checked besides "no panic":
//! - without colour, output is valid UTF-8 with no control character but
//!   `\n` (a process name must never reach the terminal raw);
//! - JSON output is one JSON object per line;
//! - CSV output has balanced quotes on every line.
#![no_main]

use clap::Parser as _;
use libfuzzer_sys::fuzz_target;
use tcpstate::{
    cli::Cli,
    clock::WallClock,
    event::{Note, TcpEvent, decode},
    render,
};

/// Renderer configurations, as command lines (ones this build does not
/// accept are skipped). `--diagram` is left out: it writes a file.
const CONFIGS: &[&[&str]] = &[
    &[],
    &["--wide"],
    &["--datetime"],
    &["--timestamp"],
    &["--json"],
    &["--csv"],
    &["--lifecycle"],
    &["--lifecycle", "--json"],
    &["--summary"],
    &["--trigger", "CLOSE_WAIT"],
    &["--color", "always"],
    &["--wide", "--color", "always"],
];

fn note(selector: u8, arg: u64) -> Option<Note> {
    match selector % 10 {
        0 => Some(Note::Snapshot),
        1 => Some(Note::HalfOpen(arg as u32)),
        2 => Some(Note::TimeWaitSocket),
        3 => Some(Note::TimeWaitReused),
        4 => Some(Note::HalfOpenExpired(arg as u32)),
        5 => Some(Note::TimeWait),
        6 => Some(Note::TimeWaitExpired),
        7 => Some(Note::Stuck(arg)),
        _ => None,
    }
}

fn check(config: &[&str], out: &[u8]) {
    let colour = config.contains(&"--color");
    let text = match std::str::from_utf8(out) {
        Ok(t) => t,
        Err(e) => panic!("{config:?}: output is not UTF-8: {e}"),
    };
    if !colour {
        if let Some(c) = text.chars().find(|&c| c.is_control() && c != '\n') {
            panic!(
                "{config:?}: raw control character U+{:04X} in output:\n{text}",
                c as u32
            );
        }
    }
    if config == ["--json"] || config == ["--lifecycle", "--json"] {
        for line in text.lines() {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) if v.is_object() => {}
                other => panic!("{config:?}: not a JSON object ({other:?}): {line}"),
            }
        }
    }
    if config == ["--csv"] {
        for line in text.lines() {
            assert!(
                line.matches('"').count() % 2 == 0,
                "{config:?}: unbalanced quotes: {line}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let size = std::mem::size_of::<tcpstate_common::Event>();
    // Whole input as one record too (a longer record must decode: a newer
    // producer may append fields).
    let _ = decode(data);
    let mut events: Vec<TcpEvent> = Vec::new();
    for chunk in data.chunks(size) {
        match decode(chunk) {
            Ok(mut ev) => {
                let sel = chunk[size - 1];
                ev.note = note(sel, ev.dwell_ns.unwrap_or(ev.ts_ns));
                events.push(ev);
            }
            Err(e) => {
                assert!(chunk.len() < size, "a full-size record failed: {e}");
                let _ = e.to_string();
            }
        }
    }
    let clock = WallClock::with_offset(1_700_000_000_000_000_000, 0);
    for config in CONFIGS {
        let args = std::iter::once("tcpstate").chain(config.iter().copied());
        let Ok(cli) = Cli::try_parse_from(args) else {
            continue;
        };
        let Ok(settings) = tcpstate::settings::Settings::from_cli(&cli) else {
            continue;
        };
        let mut r = render::build(&settings.render, clock, None);
        let mut out = Vec::new();
        r.header(&mut out);
        for ev in &events {
            r.event(ev, &mut out);
        }
        r.finish(&mut out, &mut Vec::new());
        check(config, &out);
    }
});
