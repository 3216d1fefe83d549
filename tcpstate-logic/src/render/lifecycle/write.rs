//! The `--lifecycle` printers: one text line or one JSON record per
//! history.

use super::{
    End,
    history::{CloseKind, History},
};
use crate::render::{buf, color::Palette, json, timefmt::TimeWriter};

pub(super) const COLS: [(&str, usize); 7] = [
    ("PID", 7),
    ("COMM", 16),
    ("LOCAL", 21),
    ("REMOTE", 21),
    ("ROLE", 8),
    ("CLOSE", 12),
    ("TOTAL", 11),
];

pub(super) fn endpoint(out: &mut Vec<u8>, addr: &std::net::IpAddr, port: u16) {
    if addr.is_ipv6() {
        out.push(b'[');
        buf::ip(out, addr);
        out.push(b']');
    } else {
        buf::ip(out, addr);
    }
    out.push(b':');
    buf::u64(out, port as u64);
}

pub(super) fn write_text(
    h: &History,
    end: End,
    end_ns: u64,
    time: &mut TimeWriter,
    palette: &Palette,
    out: &mut Vec<u8>,
) {
    time.write_column(out, h.last_ns);
    buf::task(out, h.owner.as_ref());
    out.push(b' ');
    buf::padded(out, 21, |out| endpoint(out, &h.tuple.laddr, h.tuple.lport));
    out.push(b' ');
    buf::padded(out, 21, |out| endpoint(out, &h.tuple.raddr, h.tuple.rport));
    out.push(b' ');
    buf::str_padded(out, h.role().name(), 8);
    out.push(b' ');
    buf::str_padded(out, h.close_kind().map_or("-", CloseKind::name), 12);
    out.push(b' ');
    let start = out.len();
    match h.total(end_ns) {
        Some(ns) => {
            buf::human_ns(out, ns);
            if end == End::Unfinished {
                out.push(b'+');
            }
        }
        None => out.push(b'?'),
    }
    buf::pad_from(out, start, 11);
    out.push(b' ');
    let finished = end == End::Closed;
    if h.late || h.truncated {
        out.extend_from_slice(b"... > ");
    }
    for (i, (step, dur)) in h
        .steps
        .iter()
        .zip(h.durations(finished, end_ns))
        .enumerate()
    {
        if i > 0 {
            out.extend_from_slice(if step.gap_before {
                b" > ... > "
            } else {
                b" > "
            });
        }
        palette.state(out, step.state, 0);
        let last = i + 1 == h.steps.len();
        if last && finished {
            break;
        }
        out.push(b' ');
        match dur {
            Some(ns) => buf::human_ns(out, ns),
            None => out.push(b'?'),
        }
        if last {
            out.push(b'+');
        }
    }
    if let (End::Closed, Some(tw)) = (end, h.timewait()) {
        let (on, off) = palette.dim();
        out.extend_from_slice(on.as_bytes());
        out.extend_from_slice(b" (then ");
        buf::state(out, tw);
        out.push(b')');
        out.extend_from_slice(off.as_bytes());
    }
    if end == End::Unfinished {
        let (on, off) = palette.dim();
        out.extend_from_slice(on.as_bytes());
        out.extend_from_slice(b" (unfinished)");
        out.extend_from_slice(off.as_bytes());
    }
    if let Some(r) = h.reason {
        use std::io::Write as _;
        let _ = write!(out, ": {r}");
        if h.data_retransmits > 0 {
            let _ = write!(out, ", {} data retransmits", h.data_retransmits);
        }
    }
    out.push(b'\n');
}

pub(super) fn write_json(
    h: &History,
    end: End,
    end_ns: u64,
    time: &mut TimeWriter,
    attribution: Option<Option<&crate::container::Attribution>>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"{\"schema\":");
    buf::u64(out, json::SCHEMA as u64);
    out.extend_from_slice(b",\"type\":\"lifecycle\",\"time\":\"");
    time.write(out, h.last_ns);
    out.extend_from_slice(b"\",\"time_ns\":");
    buf::u64(out, h.last_ns);
    json::key(out, "end");
    out.extend_from_slice(match end {
        End::Closed => b"\"closed\"",
        End::Unfinished => b"\"unfinished\"",
    });
    json::socket_fields(out, &h.tuple);
    json::owner_fields(out, h.owner.as_ref());
    if let Some(a) = attribution {
        json::container_fields(out, a);
    }
    json::tuple_fields(out, &h.tuple);
    json::key(out, "role");
    buf::json_str(out, h.role().name());
    json::key(out, "close");
    match h.close_kind() {
        Some(k) => buf::json_str(out, k.name()),
        None => out.extend_from_slice(b"null"),
    }
    json::key(out, "reason");
    match h.reason {
        Some(r) => buf::json_str(out, r.code()),
        None => out.extend_from_slice(b"null"),
    }
    if let Some(n) = h.reason.and_then(|r| r.reset_reason()) {
        json::key(out, "reset_reason");
        buf::json_str(out, n);
    }
    json::key(out, "data_retransmits");
    buf::u64(out, h.data_retransmits as u64);
    json::key(out, "timewait");
    match h.timewait() {
        Some(st) => json::state(out, st),
        None => out.extend_from_slice(b"null"),
    }
    json::key(out, "complete");
    out.extend_from_slice(if h.complete() { b"true" } else { b"false" });
    json::key(out, "start_ns");
    match h.steps.first().and_then(|s| s.enter_ns) {
        Some(ns) => buf::u64(out, ns),
        None => out.extend_from_slice(b"null"),
    }
    json::key(out, "ms");
    json::ms_or_null(out, h.total(end_ns));
    json::key(out, "path");
    out.push(b'[');
    for (i, (step, dur)) in h
        .steps
        .iter()
        .zip(h.durations(end == End::Closed, end_ns))
        .enumerate()
    {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"state\":");
        json::state(out, step.state);
        out.extend_from_slice(b",\"ms\":");
        json::ms_or_null(out, dur);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}\n");
}
