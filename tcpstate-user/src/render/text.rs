//! Human-readable columns in the style of bcc's tcpstates.

use std::io::Write as _;

use chrono::{DateTime, Local};

use super::{Render, dwell_ms};
use crate::{clock::WallClock, comm::sanitize, event::TcpEvent};

pub struct Text {
    clock: WallClock,
    wide: bool,
}

impl Text {
    pub fn new(clock: WallClock, wide: bool) -> Self {
        Text { clock, wide }
    }
}

impl Render for Text {
    fn header(&self, out: &mut Vec<u8>) {
        if self.wide {
            let _ = write!(
                out,
                "{:<15} {:<18} {:<10} {:<4} {:<7} {:<16} {:<7} {:<16} ",
                "TIME", "SKADDR", "NETNS", "FAM", "CPU-PID", "CPU-COMM", "PID", "COMM"
            );
        } else {
            let _ = write!(out, "{:<15} {:<7} {:<16} ", "TIME", "PID", "COMM");
        }
        let _ = writeln!(
            out,
            "{:<15} {:<5} {:<15} {:<5} {:<11} -> {:<11} {}",
            "LADDR", "LPORT", "RADDR", "RPORT", "OLDSTATE", "NEWSTATE", "MS"
        );
    }

    fn event(&mut self, ev: &TcpEvent, out: &mut Vec<u8>) {
        let t: DateTime<Local> = self.clock.to_system_time(ev.ts_ns).into();
        let _ = write!(out, "{:<15} ", t.format("%H:%M:%S%.6f"));
        if self.wide {
            let _ = write!(
                out,
                "{:<18} {:<10} {:<4} {:<7} {:<16} ",
                format!("{:#x}", ev.skaddr),
                ev.netns,
                if ev.family == tcpstate_common::AF_INET6 {
                    "v6"
                } else {
                    "v4"
                },
                ev.on_cpu.pid,
                sanitize(&ev.on_cpu.comm)
            );
        }
        match &ev.owner {
            Some(o) => {
                let _ = write!(out, "{:<7} {:<16} ", o.pid, sanitize(&o.comm));
            }
            None => {
                let _ = write!(out, "{:<7} {:<16} ", "-", "-");
            }
        }
        let _ = write!(
            out,
            "{:<15} {:<5} {:<15} {:<5} {:<11} -> {:<11} ",
            ev.laddr, ev.lport, ev.raddr, ev.rport, ev.old, ev.new
        );
        match dwell_ms(ev) {
            Some(ms) => {
                let _ = write!(out, "{ms:.3}");
            }
            None => out.push(b'-'),
        }
        if let Some(note) = ev.note {
            let _ = write!(out, " ({note})");
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{TcpEvent, tests::raw_v4};

    fn render(wide: bool, ev: &TcpEvent) -> String {
        // Offset chosen so the event lands at 1970-01-01 00:00:05 UTC.
        let mut r = Text::new(WallClock::with_offset(0, 0), wide);
        let mut out = Vec::new();
        r.event(ev, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn default_columns() {
        let ev = TcpEvent::from(&raw_v4());
        let line = render(false, &ev);
        // The time depends on the local zone; the rest is fixed.
        let rest = &line[16..];
        assert_eq!(
            rest,
            "4242    server           127.0.0.1       10050 127.0.0.2       48008 ESTABLISHED -> FIN_WAIT1   1.235\n"
        );
        assert!(line[..15].ends_with(":00:05.000000"), "{line}");
    }

    #[test]
    fn unknown_owner_and_dwell_print_dashes_not_zero() {
        let mut raw = raw_v4();
        raw.owner_pid = tcpstate_common::OWNER_UNKNOWN;
        raw.dwell_ns = tcpstate_common::DWELL_UNKNOWN;
        let line = render(false, &TcpEvent::from(&raw));
        assert!(
            line[16..].starts_with("-       -                127.0.0.1"),
            "{line}"
        );
        assert!(line.ends_with(" -\n"), "{line}");
    }

    #[test]
    fn wide_adds_skaddr_netns_family_and_on_cpu_task() {
        let line = render(true, &TcpEvent::from(&raw_v4()));
        assert!(
            line[16..].starts_with(
                "0xffff888012345678 4026531840 v4   0       swapper/1        4242    server "
            ),
            "{line}"
        );
    }

    #[test]
    fn hostile_comm_is_escaped() {
        let mut raw = raw_v4();
        raw.owner_comm = *b"\x1b]0;pwned\x07\n\0\0\0\0\0";
        let line = render(false, &TcpEvent::from(&raw));
        assert!(
            !line[..line.len() - 1].contains(['\x1b', '\x07', '\n']),
            "{line:?}"
        );
        assert!(line.contains("\\x1b]0;pwned\\x07\\x0a"), "{line:?}");
    }

    #[test]
    fn header_names_columns_like_bcc() {
        let mut out = Vec::new();
        Text::new(WallClock::with_offset(0, 0), false).header(&mut out);
        let h = String::from_utf8(out).unwrap();
        let cols: Vec<&str> = h.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "TIME", "PID", "COMM", "LADDR", "LPORT", "RADDR", "RPORT", "OLDSTATE", "->",
                "NEWSTATE", "MS"
            ]
        );
    }
}
