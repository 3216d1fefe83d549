//! JSON Lines: one object per event, every field typed. The schema is
//! documented in docs/json.md; bump `SCHEMA` on any incompatible change.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{Render, dwell_ms};
use crate::{
    clock::WallClock,
    comm::sanitize,
    event::{Note, TcpEvent},
};

pub const SCHEMA: u32 = 1;

pub struct Json {
    clock: WallClock,
}

impl Json {
    pub fn new(clock: WallClock) -> Self {
        Json { clock }
    }
}

#[derive(Serialize)]
struct Record<'a> {
    schema: u32,
    /// RFC 3339 UTC with microseconds: the kernel's event time.
    time: String,
    /// CLOCK_BOOTTIME nanoseconds, for exact ordering and differences.
    time_ns: u64,
    source: &'static str,
    skaddr: String,
    netns: u32,
    family: &'static str,
    pid: Option<u32>,
    comm: Option<std::borrow::Cow<'a, str>>,
    cpu_pid: u32,
    cpu_comm: std::borrow::Cow<'a, str>,
    laddr: String,
    lport: u16,
    raddr: String,
    rport: u16,
    oldstate: String,
    newstate: String,
    ms: Option<f64>,
    replayed: bool,
    /// Why a non-tracepoint event was emitted (see docs/json.md).
    note: Option<&'static str>,
    /// SYN-ACK retransmits so far (note "synack-retransmit").
    #[serde(skip_serializing_if = "Option::is_none")]
    retransmits: Option<u32>,
    /// Age in ms of a stuck socket (note "stuck").
    #[serde(skip_serializing_if = "Option::is_none")]
    age_ms: Option<f64>,
}

impl Render for Json {
    fn header(&self, _out: &mut Vec<u8>) {}

    fn event(&mut self, ev: &TcpEvent, out: &mut Vec<u8>) {
        let t: DateTime<Utc> = self.clock.to_system_time(ev.ts_ns).into();
        let rec = Record {
            schema: SCHEMA,
            time: t.to_rfc3339_opts(SecondsFormat::Micros, true),
            time_ns: ev.ts_ns,
            source: ev.source.name(),
            skaddr: format!("{:#x}", ev.skaddr),
            netns: ev.netns,
            family: ev.family_name(),
            pid: ev.owner.map(|o| o.pid),
            comm: ev.owner.as_ref().map(|o| sanitize(&o.comm)),
            cpu_pid: ev.on_cpu.pid,
            cpu_comm: sanitize(&ev.on_cpu.comm),
            laddr: ev.laddr.to_string(),
            lport: ev.lport,
            raddr: ev.raddr.to_string(),
            rport: ev.rport,
            oldstate: ev.old.to_string(),
            newstate: ev.new.to_string(),
            ms: dwell_ms(ev),
            replayed: ev.replayed,
            note: ev.note.map(|n| n.name()),
            retransmits: match ev.note {
                Some(Note::SynackRetransmit(n)) => Some(n),
                _ => None,
            },
            age_ms: match ev.note {
                Some(Note::Stuck(ns)) => Some(ns as f64 / 1e6),
                _ => None,
            },
        };
        // Serializing plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &rec);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::raw_v4;

    fn render(raw: &tcpstate_common::Event) -> serde_json::Value {
        let mut out = Vec::new();
        Json::new(WallClock::with_offset(1_764_000_000_000_000_000, 0))
            .event(&TcpEvent::from(raw), &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn golden_record() {
        let v = render(&raw_v4());
        assert_eq!(
            v,
            serde_json::json!({
                "schema": 1,
                "time": "2025-11-24T16:00:05.000000Z",
                "time_ns": 5_000_000_000u64,
                "source": "tracepoint",
                "skaddr": "0xffff888012345678",
                "netns": 4026531840u32,
                "family": "ipv4",
                "pid": 4242,
                "comm": "server",
                "cpu_pid": 0,
                "cpu_comm": "swapper/1",
                "laddr": "127.0.0.1",
                "lport": 10050,
                "raddr": "127.0.0.2",
                "rport": 48008,
                "oldstate": "ESTABLISHED",
                "newstate": "FIN_WAIT1",
                "ms": 1.234567,
                "replayed": false,
                "note": null
            })
        );
    }

    #[test]
    fn unknowns_are_null() {
        let mut raw = raw_v4();
        raw.owner_pid = tcpstate_common::OWNER_UNKNOWN;
        raw.dwell_ns = tcpstate_common::DWELL_UNKNOWN;
        let v = render(&raw);
        assert!(v["pid"].is_null() && v["comm"].is_null() && v["ms"].is_null());
    }

    #[test]
    fn hostile_comm_stays_one_valid_line() {
        let mut raw = raw_v4();
        raw.owner_comm = *b"a\"b\n\xff\x1b[2J\0\0\0\0\0\0\0";
        let v = render(&raw);
        assert_eq!(v["comm"], "a\"b\\x0a\\xff\\x1b[2J");
    }
}
