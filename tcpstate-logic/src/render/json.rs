//! JSON Lines: one object per event, every field typed. The schema is
//! documented in docs/json.md; bump `SCHEMA` on any incompatible change
//! (adding a field or a record type is compatible).
//!
//! Records are written by hand, field by field, straight into the output
//! buffer: no intermediate strings, no serde per event.

use super::{
    Render, buf,
    timefmt::{TimeFormat, TimeWriter},
};
use crate::{
    clock::WallClock,
    container,
    event::{Note, TcpEvent},
};

pub(crate) const SCHEMA: u32 = 1;

pub struct Json {
    time: TimeWriter,
    containers: Option<container::Shared>,
}

impl Json {
    pub fn new(clock: WallClock) -> Self {
        Json {
            time: TimeWriter::new(clock, TimeFormat::Rfc3339Utc),
            containers: None,
        }
    }

    /// Fills `cgroup`, `container_id` and `pod_uid` (else always `null`).
    pub(crate) fn with_containers(mut self, containers: Option<container::Shared>) -> Self {
        self.containers = containers;
        self
    }
}

/// Appends a string or `null`.
fn str_or_null(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => buf::json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// `cgroup`, `container_id`, `pod_uid` of the owner.
pub(crate) fn container_fields(out: &mut Vec<u8>, a: Option<&container::Attribution>) {
    key(out, "cgroup");
    str_or_null(out, a.map(|a| a.cgroup.as_str()));
    key(out, "container_id");
    str_or_null(out, a.and_then(|a| a.container_id.as_deref()));
    key(out, "pod_uid");
    str_or_null(out, a.and_then(|a| a.pod_uid.as_deref()));
}

/// Appends `"key":` (after a comma unless it is the first key).
#[inline]
pub(crate) fn key(out: &mut Vec<u8>, k: &str) {
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

/// The fields an event record shares with the other record types: the
/// socket, its owner and its tuple.
pub(crate) fn socket_fields(out: &mut Vec<u8>, ev: &TcpEvent) {
    key(out, "skaddr");
    out.push(b'"');
    buf::hex(out, ev.skaddr);
    out.push(b'"');
    key(out, "netns");
    buf::u64(out, ev.netns as u64);
    key(out, "family");
    out.push(b'"');
    out.extend_from_slice(ev.family_name().as_bytes());
    out.push(b'"');
}

pub(crate) fn owner_fields(out: &mut Vec<u8>, owner: Option<&crate::event::Task>) {
    key(out, "pid");
    match owner {
        Some(o) => buf::u64(out, o.pid as u64),
        None => out.extend_from_slice(b"null"),
    }
    key(out, "comm");
    match owner {
        Some(o) => buf::json_str(out, &buf::comm(&o.comm)),
        None => out.extend_from_slice(b"null"),
    }
}

pub(crate) fn tuple_fields(out: &mut Vec<u8>, ev: &TcpEvent) {
    let mut endpoint = |names: [&str; 2], addr: &std::net::IpAddr, port: u16| {
        key(out, names[0]);
        out.push(b'"');
        buf::ip(out, addr);
        out.push(b'"');
        key(out, names[1]);
        buf::u64(out, port as u64);
    };
    endpoint(["laddr", "lport"], &ev.laddr, ev.lport);
    endpoint(["raddr", "rport"], &ev.raddr, ev.rport);
}

/// Appends a state as a JSON string.
#[inline]
pub(crate) fn state(out: &mut Vec<u8>, st: crate::event::TcpState) {
    out.push(b'"');
    buf::state(out, st);
    out.push(b'"');
}

/// Appends milliseconds (exact) or `null`.
#[inline]
pub(crate) fn ms_or_null(out: &mut Vec<u8>, ns: Option<u64>) {
    match ns {
        Some(ns) => buf::ms_exact(out, ns),
        None => out.extend_from_slice(b"null"),
    }
}

impl Json {
    /// Appends one event object, without the newline.
    pub fn record(&mut self, ev: &TcpEvent, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"schema\":");
        buf::u64(out, SCHEMA as u64);
        out.extend_from_slice(b",\"type\":\"event\",\"time\":\"");
        self.time.write(out, ev.ts_ns);
        out.extend_from_slice(b"\",\"time_ns\":");
        buf::u64(out, ev.ts_ns);
        key(out, "source");
        out.push(b'"');
        out.extend_from_slice(ev.source.name().as_bytes());
        out.push(b'"');
        socket_fields(out, ev);
        owner_fields(out, ev.owner.as_ref());
        key(out, "cpu_pid");
        buf::u64(out, ev.on_cpu.pid as u64);
        key(out, "cpu_comm");
        buf::json_str(out, &buf::comm(&ev.on_cpu.comm));
        tuple_fields(out, ev);
        key(out, "oldstate");
        state(out, ev.old);
        key(out, "newstate");
        state(out, ev.new);
        key(out, "ms");
        ms_or_null(out, ev.dwell_ns);
        key(out, "replayed");
        out.extend_from_slice(if ev.replayed { b"true" } else { b"false" });
        key(out, "note");
        match ev.note {
            Some(n) => {
                out.push(b'"');
                out.extend_from_slice(n.name().as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        key(out, "peer_fin");
        out.extend_from_slice(match ev.peer_fin {
            Some(true) => b"true",
            Some(false) => b"false",
            None => b"null",
        });
        key(out, "kind");
        out.extend_from_slice(if ev.is_state_row() {
            b"\"state\""
        } else {
            b"\"transition\""
        });
        let attribution = self.containers.as_ref().and_then(|c| c.borrow_mut().of(ev));
        container_fields(out, attribution.as_deref());
        let retransmits = synack_retransmits(ev);
        if retransmits > 0 {
            key(out, "retransmits");
            buf::u64(out, retransmits as u64);
        }
        if let Some(Note::Stuck(ns)) = ev.note {
            key(out, "age_ms");
            buf::ms_exact(out, ns);
        }
        reason_fields(out, ev);
        out.push(b'}');
    }
}

/// `reason` (how the connection ended), `reset_reason` (the kernel's, when
/// this end sent a reset and the kernel named it) and `data_retransmits`,
/// on rows into CLOSE only.
pub(crate) fn reason_fields(out: &mut Vec<u8>, ev: &TcpEvent) {
    let Some(r) = ev.reason else {
        return;
    };
    key(out, "reason");
    buf::json_str(out, r.code());
    if let Some(n) = r.reset_reason() {
        key(out, "reset_reason");
        buf::json_str(out, n);
    }
    if let crate::reason::Reason::Error(e) = r {
        key(out, "error");
        buf::u64(out, e as u64);
    }
    key(out, "data_retransmits");
    buf::u64(out, ev.data_retransmits as u64);
}

/// SYN-ACK retransmits a row reports: the half-open rows carry them in
/// their note, a completed connection's SYN_RECV->ESTABLISHED in the event.
pub(crate) fn synack_retransmits(ev: &TcpEvent) -> u32 {
    match ev.note {
        Some(Note::HalfOpen(n) | Note::HalfOpenExpired(n)) => n,
        _ => ev.retransmits,
    }
}

impl Render for Json {
    fn header(&self, _out: &mut Vec<u8>) {}

    fn event(&mut self, ev: &TcpEvent, out: &mut Vec<u8>) {
        self.record(ev, out);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::{raw_v4, raw_v6};

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
                "type": "event",
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
                "note": null,
                "peer_fin": null,
                "kind": "transition",
                "cgroup": null,
                "container_id": null,
                "pod_uid": null
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

    #[test]
    fn golden_bytes_keep_the_documented_field_order() {
        let mut out = Vec::new();
        Json::new(WallClock::with_offset(1_764_000_000_000_000_000, 0))
            .event(&TcpEvent::from(&raw_v4()), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"schema\":1,\"type\":\"event\",\"time\":\"2025-11-24T16:00:05.000000Z\",\"time_ns\":5000000000,\
             \"source\":\"tracepoint\",\"skaddr\":\"0xffff888012345678\",\"netns\":4026531840,\"family\":\"ipv4\",\
             \"pid\":4242,\"comm\":\"server\",\"cpu_pid\":0,\"cpu_comm\":\"swapper/1\",\
             \"laddr\":\"127.0.0.1\",\"lport\":10050,\"raddr\":\"127.0.0.2\",\"rport\":48008,\
             \"oldstate\":\"ESTABLISHED\",\"newstate\":\"FIN_WAIT1\",\"ms\":1.234567,\"replayed\":false,\"note\":null,\"peer_fin\":null,\"kind\":\"transition\",\
             \"cgroup\":null,\"container_id\":null,\"pod_uid\":null}\n"
        );
    }

    #[test]
    fn notes_carry_source_note_and_their_value() {
        use crate::event::{Source, TcpState};
        let clock = WallClock::with_offset(1_764_000_000_000_000_000, 0);
        let mut j = Json::new(clock);
        let mut ev = TcpEvent::from(&raw_v4());
        ev.dwell_ns = None;
        let cases = [
            (Source::SockDiag, Note::Snapshot, "sock_diag", "snapshot"),
            (
                Source::SynackTracepoint,
                Note::HalfOpen(3),
                "synack_tracepoint",
                "half-open",
            ),
            (
                Source::SockDiag,
                Note::HalfOpenExpired(3),
                "sock_diag",
                "half-open-expired",
            ),
            (
                Source::Tracker,
                Note::TimeWaitSocket,
                "tracker",
                "timewait-socket",
            ),
            (Source::SockDiag, Note::TimeWait, "sock_diag", "timewait"),
            (
                Source::SockDiag,
                Note::TimeWaitExpired,
                "sock_diag",
                "timewait-expired",
            ),
            (
                Source::Tracker,
                Note::Stuck(61_500_000_000),
                "tracker",
                "stuck",
            ),
        ];
        for (source, note, source_name, note_name) in cases {
            ev.source = source;
            ev.note = Some(note);
            ev.new = TcpState::SynRecv;
            let mut out = Vec::new();
            j.event(&ev, &mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["source"], source_name);
            assert_eq!(v["note"], note_name);
            assert_eq!(v["newstate"], "SYN_RECV");
            assert!(v["ms"].is_null());
            match note {
                Note::HalfOpen(_) | Note::HalfOpenExpired(_) => {
                    assert_eq!(v["retransmits"], 3)
                }
                Note::Stuck(_) => assert_eq!(v["age_ms"], 61500.0),
                _ => assert!(v.get("retransmits").is_none() && v.get("age_ms").is_none()),
            }
        }
    }

    #[test]
    fn ipv6_and_unknown_states_are_strings() {
        let mut raw = raw_v6("fe80::1", "::ffff:10.0.0.1");
        raw.oldstate = 200;
        let v = render(&raw);
        assert_eq!(v["family"], "ipv6");
        assert_eq!(v["laddr"], "fe80::1");
        assert_eq!(v["raddr"], "::ffff:10.0.0.1");
        assert_eq!(v["oldstate"], "UNKNOWN(200)");
    }
}
