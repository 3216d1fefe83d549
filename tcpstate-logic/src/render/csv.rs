//! CSV (RFC 4180) with a header row: the JSON event fields, in the same order
//! and with the same values, minus `schema` and `type`. Unknown values
//! (JSON `null`) are empty cells. Documented in docs/output.md.

use super::{
    Render, buf,
    timefmt::{TimeFormat, TimeWriter},
};
use crate::{
    clock::WallClock,
    container,
    event::{Note, TcpEvent},
};

pub(crate) const COLUMNS: [&str; 29] = [
    "time",
    "time_ns",
    "source",
    "skaddr",
    "netns",
    "family",
    "pid",
    "comm",
    "cpu_pid",
    "cpu_comm",
    "laddr",
    "lport",
    "raddr",
    "rport",
    "oldstate",
    "newstate",
    "ms",
    "replayed",
    "note",
    "peer_fin",
    "retransmits",
    "age_ms",
    "cgroup",
    "container_id",
    "pod_uid",
    "reason",
    "reset_reason",
    "error",
    "data_retransmits",
];

pub struct Csv {
    time: TimeWriter,
    containers: Option<container::Shared>,
}

impl Csv {
    pub fn new(clock: WallClock) -> Self {
        Csv {
            time: TimeWriter::new(clock, TimeFormat::Rfc3339Utc),
            containers: None,
        }
    }

    /// Fills the `cgroup`, `container_id` and `pod_uid` cells.
    pub(crate) fn with_containers(mut self, containers: Option<container::Shared>) -> Self {
        self.containers = containers;
        self
    }
}

impl Render for Csv {
    fn header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(COLUMNS.join(",").as_bytes());
        out.push(b'\n');
    }

    fn event(&mut self, ev: &TcpEvent, out: &mut Vec<u8>) {
        self.time.write(out, ev.ts_ns);
        out.push(b',');
        buf::u64(out, ev.ts_ns);
        out.push(b',');
        out.extend_from_slice(ev.source.name().as_bytes());
        out.push(b',');
        buf::hex(out, ev.skaddr);
        out.push(b',');
        buf::u64(out, ev.netns as u64);
        out.push(b',');
        out.extend_from_slice(ev.family_name().as_bytes());
        out.push(b',');
        if let Some(o) = &ev.owner {
            buf::u64(out, o.pid as u64);
            out.push(b',');
            buf::csv_field(out, &buf::comm(&o.comm));
        } else {
            out.push(b',');
        }
        out.push(b',');
        buf::u64(out, ev.on_cpu.pid as u64);
        out.push(b',');
        buf::csv_field(out, &buf::comm(&ev.on_cpu.comm));
        out.push(b',');
        buf::ip(out, &ev.laddr);
        out.push(b',');
        buf::u64(out, ev.lport as u64);
        out.push(b',');
        buf::ip(out, &ev.raddr);
        out.push(b',');
        buf::u64(out, ev.rport as u64);
        out.push(b',');
        buf::state(out, ev.old);
        out.push(b',');
        buf::state(out, ev.new);
        out.push(b',');
        if let Some(ns) = ev.dwell_ns {
            buf::ms_exact(out, ns);
        }
        out.extend_from_slice(if ev.replayed { b",true," } else { b",false," });
        if let Some(n) = ev.note {
            out.extend_from_slice(n.name().as_bytes());
        }
        out.push(b',');
        match ev.peer_fin {
            Some(true) => out.extend_from_slice(b"true"),
            Some(false) => out.extend_from_slice(b"false"),
            None => {}
        }
        out.push(b',');
        let retransmits = super::json::synack_retransmits(ev);
        if retransmits > 0 {
            buf::u64(out, retransmits as u64);
        }
        out.push(b',');
        if let Some(Note::Stuck(ns)) = ev.note {
            buf::ms_exact(out, ns);
        }
        let a = self.containers.as_ref().and_then(|c| c.borrow_mut().of(ev));
        let a = a.as_deref();
        out.push(b',');
        if let Some(a) = a {
            buf::csv_field(out, &a.cgroup);
        }
        out.push(b',');
        if let Some(id) = a.and_then(|a| a.container_id.as_deref()) {
            out.extend_from_slice(id.as_bytes());
        }
        out.push(b',');
        if let Some(uid) = a.and_then(|a| a.pod_uid.as_deref()) {
            out.extend_from_slice(uid.as_bytes());
        }
        out.push(b',');
        if let Some(r) = ev.reason {
            out.extend_from_slice(r.code().as_bytes());
            out.push(b',');
            if let Some(n) = r.reset_reason() {
                out.extend_from_slice(n.as_bytes());
            }
            out.push(b',');
            if let crate::reason::Reason::Error(e) = r {
                buf::u64(out, e as u64);
            }
            out.push(b',');
            buf::u64(out, ev.data_retransmits as u64);
        } else {
            out.extend_from_slice(b",,,");
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        Source,
        tests::{raw_unknowns, raw_v4},
    };

    fn csv() -> Csv {
        Csv::new(WallClock::with_offset(1_764_000_000_000_000_000, 0))
    }

    fn render(ev: &TcpEvent) -> String {
        let mut out = Vec::new();
        csv().event(ev, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn golden_header_and_row() {
        let mut out = Vec::new();
        csv().header(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "time,time_ns,source,skaddr,netns,family,pid,comm,cpu_pid,cpu_comm,laddr,lport,raddr,rport,oldstate,newstate,ms,replayed,note,peer_fin,retransmits,age_ms,cgroup,container_id,pod_uid,reason,reset_reason,error,data_retransmits\n"
        );
        assert_eq!(
            render(&TcpEvent::from(&raw_v4())),
            "2025-11-24T16:00:05.000000Z,5000000000,tracepoint,0xffff888012345678,4026531840,ipv4,4242,server,0,swapper/1,127.0.0.1,10050,127.0.0.2,48008,ESTABLISHED,FIN_WAIT1,1.234567,false,,,,,,,,,,,\n"
        );
    }

    #[test]
    fn unknowns_are_empty_cells_and_notes_fill_their_columns() {
        let mut ev = TcpEvent::from(&raw_unknowns());
        ev.source = Source::SynackTracepoint;
        ev.note = Some(Note::HalfOpen(2));
        assert_eq!(
            render(&ev),
            "2025-11-24T16:00:05.000000Z,5000000000,synack_tracepoint,0xffff888012345678,4026531840,ipv4,,,0,swapper/1,127.0.0.1,10050,127.0.0.2,48008,ESTABLISHED,FIN_WAIT1,,false,half-open,,2,,,,,,,,\n"
        );
        ev.source = Source::Tracker;
        ev.note = Some(Note::Stuck(2_500_000_000));
        assert!(render(&ev).ends_with(",false,stuck,,,2500.0,,,,,,,\n"));
    }

    #[test]
    fn container_cells_from_the_owner() {
        let root = std::env::temp_dir().join(format!("tcpstate-csv-proc-{}", std::process::id()));
        let id = "ab".repeat(32);
        std::fs::create_dir_all(root.join("4242")).unwrap();
        std::fs::write(
            root.join("4242/cgroup"),
            format!("0::/kubepods/besteffort/pod0e5a9b44-1c3d-4f2a-9e6b-7d8c9a0b1c2d/{id}\n"),
        )
        .unwrap();
        let attributor = crate::container::Attributor::new(root.clone(), 16);
        let mut c =
            csv().with_containers(Some(std::rc::Rc::new(std::cell::RefCell::new(attributor))));
        let mut out = Vec::new();
        c.event(&TcpEvent::from(&raw_v4()), &mut out);
        let row = String::from_utf8(out).unwrap();
        assert!(
            row.ends_with(&format!(
                ",/kubepods/besteffort/pod0e5a9b44-1c3d-4f2a-9e6b-7d8c9a0b1c2d/{id},{id},0e5a9b44-1c3d-4f2a-9e6b-7d8c9a0b1c2d,,,,\n"
            )),
            "{row}"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn every_row_has_as_many_cells_as_the_header() {
        let mut raw = raw_v4();
        raw.owner_comm = *b"a,b\"c\0\0\0\0\0\0\0\0\0\0\0";
        let row = render(&TcpEvent::from(&raw));
        assert!(row.contains(",4242,\"a,b\"\"c\",0,"), "{row}");
        // Split respecting quotes.
        let mut cells = 1;
        let mut quoted = false;
        for c in row.trim_end().chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => cells += 1,
                _ => {}
            }
        }
        assert_eq!(cells, COLUMNS.len());
    }
}
