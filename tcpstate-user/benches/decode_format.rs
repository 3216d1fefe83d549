//! Decoding and formatting throughput (the target: >= 2 million events/s on one core, well
//! above what the kernel can produce on loopback).
//!
//! Each iteration decodes a batch of raw ring-buffer records, as the kernel writes them for
//! loopback connections (10 transitions each, alternating client and server sockets), and
//! renders them into one output buffer, as the reader does before its one write per batch.
//! The renderers are built by `render::build` from the settings of real command lines, so this measures what
//! `tcpstate`, `tcpstate -w`, `tcpstate -j` and `tcpstate --csv` do per event.
//!
//! `cargo bench -p tcpstate-user --bench decode_format`; `cargo xtask bench` adds the figures
//! it finds under target/criterion/decode_format to its report.

use std::hint::black_box;

use clap::Parser as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tcpstate::{cli::Cli, clock::WallClock, event::decode, exit_report::ExitReport, render};
use tcpstate_common::{AF_INET, Event, TcpState as S};

const BATCH: usize = 4096;

fn comm(s: &str) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..s.len()].copy_from_slice(s.as_bytes());
    c
}

/// `BATCH` records of loopback connections: the 10 transitions of each, in kernel order.
fn records() -> Vec<u8> {
    let size = std::mem::size_of::<Event>();
    let mut out = Vec::with_capacity(BATCH * size);
    let seq = [
        (S::Close.raw(), S::SynSent.raw(), true),
        (S::SynSent.raw(), S::Established.raw(), true),
        (S::Listen.raw(), S::SynRecv.raw(), false),
        (S::SynRecv.raw(), S::Established.raw(), false),
        (S::Established.raw(), S::FinWait1.raw(), true),
        (S::Established.raw(), S::CloseWait.raw(), false),
        (S::CloseWait.raw(), S::LastAck.raw(), false),
        (S::FinWait1.raw(), S::FinWait2.raw(), true),
        (S::FinWait2.raw(), S::Close.raw(), true),
        (S::LastAck.raw(), S::Close.raw(), false),
    ];
    let mut ts = 5_000_000_000u64;
    for i in 0..BATCH {
        let conn = (i / seq.len()) as u64;
        let (old, new, client) = seq[i % seq.len()];
        let eph = 1024 + (conn % 60_000) as u16;
        let mut e = Event::ZERO;
        ts += 1_733;
        e.ts_ns = ts;
        e.skaddr = 0xffff_8880_1000_0000 + conn * 0x1000 + u64::from(!client) * 0x800;
        e.dwell_ns = if old == S::Close.raw() || old == S::Listen.raw() {
            tcpstate_common::DWELL_UNKNOWN
        } else {
            12_345 + i as u64
        };
        e.owner_pid = 4242 + u32::from(!client);
        e.owner_comm = comm("loadgen");
        e.cpu_pid = if i % 3 == 0 { 0 } else { 4242 };
        e.cpu_comm = comm(if i % 3 == 0 { "swapper/0" } else { "loadgen" });
        e.netns = 4026532000;
        e.family = AF_INET;
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        (e.sport, e.dport) = if client {
            (if old == S::Close.raw() { 0 } else { eph }, 7201)
        } else {
            (7201, eph)
        };
        e.oldstate = old;
        e.newstate = new;
        // SAFETY: Event is repr(C) plain data.
        let bytes = unsafe { std::slice::from_raw_parts((&e as *const Event).cast::<u8>(), size) };
        out.extend_from_slice(bytes);
    }
    out
}

fn settings(args: &[&str]) -> tcpstate::render::Options {
    let cli = Cli::try_parse_from(["tcpstate", "--color", "never"].iter().chain(args).copied())
        .expect("valid command line");
    tcpstate::settings::Settings::from_cli(&cli)
        .expect("valid settings")
        .render
}

fn bench(c: &mut Criterion) {
    let raw = records();
    let size = std::mem::size_of::<Event>();
    let clock = WallClock::now();
    let mut g = c.benchmark_group("decode_format");
    g.throughput(Throughput::Elements(BATCH as u64));

    g.bench_function("decode", |b| {
        b.iter(|| {
            for rec in raw.chunks_exact(size) {
                black_box(decode(black_box(rec)).expect("valid record"));
            }
        })
    });

    for (name, args) in [
        ("text", &[][..]),
        ("text_wide", &["-w"][..]),
        ("json", &["-j"][..]),
        ("csv", &["--csv"][..]),
    ] {
        let mut r = render::build(&settings(args), clock, None);
        let mut out = Vec::with_capacity(1 << 20);
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                for rec in raw.chunks_exact(size) {
                    let ev = decode(rec).expect("valid record");
                    r.event(&ev, &mut out);
                }
                black_box(out.len())
            })
        });
    }

    // What the reader adds per event besides rendering: the exit summary's counters.
    let mut r = render::build(&settings(&[]), clock, None);
    let mut summary = ExitReport::default();
    let mut out = Vec::with_capacity(1 << 20);
    g.bench_function("text_with_summary", |b| {
        b.iter(|| {
            out.clear();
            for rec in raw.chunks_exact(size) {
                let ev = decode(rec).expect("valid record");
                summary.record(&ev);
                r.event(&ev, &mut out);
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
