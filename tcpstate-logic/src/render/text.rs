//! Human-readable columns in the style of bcc's tcpstates.

use super::{Render, buf, color::Palette, timefmt::TimeWriter};
use crate::{
    container,
    event::{NoteText, TcpEvent},
};

pub struct Text {
    time: TimeWriter,
    wide: bool,
    palette: Palette,
    /// Wide output's CONTAINER column, when attribution is on.
    containers: Option<container::Shared>,
    /// `--explain`: a sentence after each row.
    explain: Option<crate::explain::Explainer>,
}

impl Text {
    pub fn new(time: TimeWriter, wide: bool, palette: Palette) -> Self {
        Text {
            time,
            wide,
            palette,
            containers: None,
            explain: None,
        }
    }

    /// Adds the owner's container (short ID, `-` for none) to wide output.
    pub(crate) fn with_containers(mut self, containers: Option<container::Shared>) -> Self {
        self.containers = containers;
        self
    }

    /// `--explain`: a sentence after each row.
    pub(crate) fn with_explain(mut self, explain: crate::explain::Explainer) -> Self {
        self.explain = Some(explain);
        self
    }
}

const CONTAINER_WIDTH: usize = 12;

/// `(heading, width)` of the columns after TIME; the last has no padding.
const WIDE_COLS: [(&str, usize); 5] = [
    ("SKADDR", 18),
    ("NETNS", 10),
    ("FAM", 4),
    ("CPU-PID", 7),
    ("CPU-COMM", 16),
];
const COLS: [(&str, usize); 6] = [
    ("PID", 7),
    ("COMM", 16),
    ("LADDR", 15),
    ("LPORT", 5),
    ("RADDR", 15),
    ("RPORT", 5),
];
const STATE_WIDTH: usize = 11;

impl Render for Text {
    fn header(&self, out: &mut Vec<u8>) {
        let (width, name) = self.time.format().column();
        buf::str_padded(out, name, width);
        out.push(b' ');
        if self.wide {
            for (name, width) in WIDE_COLS {
                buf::str_padded(out, name, width);
                out.push(b' ');
            }
            if self.containers.is_some() {
                buf::str_padded(out, "CONTAINER", CONTAINER_WIDTH);
                out.push(b' ');
            }
        }
        for (name, width) in COLS {
            buf::str_padded(out, name, width);
            out.push(b' ');
        }
        buf::str_padded(out, "OLDSTATE", STATE_WIDTH);
        out.extend_from_slice(b" -> ");
        buf::str_padded(out, "NEWSTATE", STATE_WIDTH);
        out.extend_from_slice(b" MS\n");
    }

    fn event(&mut self, ev: &TcpEvent, out: &mut Vec<u8>) {
        self.time.write_column(out, ev.ts_ns);
        if self.wide {
            buf::padded(out, 18, |out| buf::hex(out, ev.skaddr));
            out.push(b' ');
            buf::padded(out, 10, |out| buf::u64(out, ev.netns as u64));
            out.extend_from_slice(if ev.family == tcpstate_common::AF_INET6 {
                b" v6   "
            } else {
                b" v4   "
            });
            buf::task(out, Some(&ev.on_cpu));
            out.push(b' ');
            if let Some(c) = &self.containers {
                let a = c.borrow_mut().of(ev);
                let id = a.as_deref().and_then(|a| a.short_id()).unwrap_or("-");
                buf::str_padded(out, id, CONTAINER_WIDTH);
                out.push(b' ');
            }
        }
        buf::task(out, ev.owner.as_ref());
        out.push(b' ');
        buf::padded(out, 15, |out| buf::ip(out, &ev.laddr));
        out.push(b' ');
        buf::padded(out, 5, |out| buf::u64(out, ev.lport as u64));
        out.push(b' ');
        buf::padded(out, 15, |out| buf::ip(out, &ev.raddr));
        out.push(b' ');
        buf::padded(out, 5, |out| buf::u64(out, ev.rport as u64));
        out.push(b' ');
        if ev.is_state_row() {
            // Not a change: `is STATE`, with the old-state column left blank,
            // so it cannot be read as a transition.
            out.extend_from_slice(&[b' '; STATE_WIDTH]);
            out.extend_from_slice(b" is ");
        } else {
            self.palette.state(out, ev.old, STATE_WIDTH);
            out.extend_from_slice(b" -> ");
        }
        self.palette.state(out, ev.new, STATE_WIDTH);
        out.push(b' ');
        match ev.dwell_ns {
            Some(ns) => buf::ms3(out, ns),
            None => out.push(b'-'),
        }
        if let Some(r) = ev.reason {
            use std::io::Write as _;
            let _ = write!(out, " {r}");
        }
        let note = NoteText(ev);
        if !note.is_empty() {
            use std::io::Write as _;
            let (on, off) = self.palette.dim();
            let _ = write!(out, " {on}({note}){off}");
        }
        out.push(b'\n');
        if let Some(explain) = &mut self.explain {
            explain.line(ev, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        clock::WallClock,
        event::{
            Note, Source, TcpEvent, TcpState,
            tests::{raw_unknowns, raw_v4, raw_v6},
        },
        render::timefmt::TimeFormat,
    };

    fn text(format: TimeFormat, wide: bool, colour: bool) -> Text {
        // Boot time 0 is 2025-11-24T16:00:00Z; tracing started 4 s later.
        let clock = WallClock::with_offset(1_764_000_000_000_000_000, 4_000_000_000);
        Text::new(TimeWriter::new(clock, format), wide, Palette::new(colour))
    }

    fn render_with(r: &mut Text, ev: &TcpEvent) -> String {
        let mut out = Vec::new();
        r.event(ev, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn render(wide: bool, ev: &TcpEvent) -> String {
        render_with(&mut text(TimeFormat::Clock, wide, false), ev)
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
    fn golden_since_start() {
        let mut r = text(TimeFormat::SinceStart, false, false);
        let mut ev = TcpEvent::from(&raw_v4());
        ev.ts_ns = 5_123_456_789;
        assert_eq!(
            render_with(&mut r, &ev),
            "1.123456     4242    server           127.0.0.1       10050 127.0.0.2       48008 ESTABLISHED -> FIN_WAIT1   1.235\n"
        );
        let mut out = Vec::new();
        r.header(&mut out);
        assert!(out.starts_with(b"TIME(s)      PID     COMM"), "{out:?}");
    }

    #[test]
    fn golden_datetime() {
        let mut r = text(TimeFormat::DateTime, false, false);
        let line = render_with(&mut r, &TcpEvent::from(&raw_v4()));
        let t: chrono::DateTime<chrono::Local> =
            WallClock::with_offset(1_764_000_000_000_000_000, 0)
                .to_system_time(5_000_000_000)
                .into();
        assert_eq!(
            line,
            format!(
                "{} 4242    server           127.0.0.1       10050 127.0.0.2       48008 ESTABLISHED -> FIN_WAIT1   1.235\n",
                t.format("%Y-%m-%dT%H:%M:%S%.6f")
            )
        );
    }

    #[test]
    fn golden_ipv6_and_unknown_state() {
        let mut raw = raw_v6("::1", "::ffff:127.0.0.1");
        raw.newstate = 99;
        let mut r = text(TimeFormat::SinceStart, true, false);
        assert_eq!(
            render_with(&mut r, &TcpEvent::from(&raw)),
            "1.000000     0xffff888012345678 4026531840 v6   0       swapper/1        4242    server           ::1             10050 ::ffff:127.0.0.1 48008 ESTABLISHED -> UNKNOWN(99) 1.235\n"
        );
    }

    /// The row a tracker adds for `note` on a FIN_WAIT2 socket going to `new`.
    fn tracker_row(note: Note, new: TcpState) -> String {
        let mut ev = TcpEvent::from(&raw_v4());
        ev.source = Source::SockDiag;
        ev.dwell_ns = None;
        ev.old = TcpState::FinWait2;
        ev.new = new;
        ev.note = Some(note);
        render_with(&mut text(TimeFormat::SinceStart, false, false), &ev)
    }

    #[test]
    fn notes_are_shown_in_parentheses_and_state_rows_say_is() {
        use TcpState::{FinWait2, TimeWait};
        let change = "FIN_WAIT2   -> TIME_WAIT   -";
        // A state row leaves the old state blank.
        let state = "48008             is FIN_WAIT2   -";
        for (note, new, shown) in [
            (
                Note::HalfOpen(1),
                TimeWait,
                format!("{change} (half-open, SYN-ACK retransmit #1)"),
            ),
            (
                Note::HalfOpenExpired(2),
                TimeWait,
                format!("{change} (half-open expired after 2 SYN-ACK retransmits)"),
            ),
            (Note::TimeWait, TimeWait, format!("{change} (timewait)")),
            (
                Note::TimeWaitExpired,
                TimeWait,
                format!("{change} (timewait expired)"),
            ),
            (Note::Snapshot, FinWait2, format!("{state} (snapshot)")),
            (
                Note::TimeWaitSocket,
                FinWait2,
                format!("{state} (timewait socket, orphan)"),
            ),
            (
                Note::Stuck(61_500_000_000),
                FinWait2,
                format!("{state} (stuck for 61.5s)"),
            ),
        ] {
            let line = tracker_row(note, new);
            assert!(line.ends_with(&format!("{shown}\n")), "{line}");
        }
    }

    #[test]
    fn a_kernel_row_says_how_many_synack_retransmits_it_took() {
        let mut ev = TcpEvent::from(&raw_v4());
        ev.old = TcpState::SynRecv;
        ev.new = TcpState::Established;
        ev.retransmits = 2;
        let line = render(false, &ev);
        assert!(
            line.ends_with("SYN_RECV    -> ESTABLISHED 1.235 (after 2 SYN-ACK retransmits)\n"),
            "{line}"
        );
    }

    #[test]
    fn colour_wraps_states_only_and_keeps_columns() {
        let ev = TcpEvent::from(&raw_v4());
        let mut r = text(TimeFormat::SinceStart, false, true);
        let line = render_with(&mut r, &ev);
        assert_eq!(
            line,
            "1.000000     4242    server           127.0.0.1       10050 127.0.0.2       48008 \x1b[1m\x1b[32mESTABLISHED\x1b[0m -> \x1b[33mFIN_WAIT1\x1b[0m   1.235\n"
        );
    }

    #[test]
    fn unknown_owner_and_dwell_print_dashes_not_zero() {
        let line = render(false, &TcpEvent::from(&raw_unknowns()));
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
        assert!(line.contains("\\x1b]0;pwned\\x0+ 127.0.0.1"), "{line:?}");
    }

    /// An escaped name longer than the column is cut to it, so every row's
    /// later columns start where the header's do.
    #[test]
    fn long_escaped_comm_keeps_the_columns_in_place() {
        let mut header = Vec::new();
        text(TimeFormat::Clock, true, false).header(&mut header);
        let header = String::from_utf8(header).unwrap();
        let laddr = header.find("LADDR").unwrap();
        let cpu_comm_end = header.find("CPU-COMM").unwrap() + 17;
        for name in [
            &b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10"[..],
            b"abcdefghijklmnop",
            b"n",
        ] {
            let mut raw = raw_v4();
            raw.owner_comm = [0; 16];
            raw.owner_comm[..name.len()].copy_from_slice(name);
            raw.cpu_comm = raw.owner_comm;
            let line = render(true, &TcpEvent::from(&raw));
            assert_eq!(
                line.find("127.0.0.1"),
                Some(laddr),
                "{name:?}:\n{header}{line}"
            );
            assert_eq!(
                &line[cpu_comm_end - 1..cpu_comm_end],
                " ",
                "{name:?}:\n{header}{line}"
            );
        }
    }

    #[test]
    fn header_names_columns_like_bcc() {
        let mut out = Vec::new();
        text(TimeFormat::Clock, false, false).header(&mut out);
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

    #[test]
    fn wide_header_lines_up_with_rows() {
        let mut r = text(TimeFormat::Clock, true, false);
        let mut out = Vec::new();
        r.header(&mut out);
        let h = String::from_utf8(out).unwrap();
        let row = render_with(&mut r, &TcpEvent::from(&raw_v4()));
        for col in [
            "SKADDR", "NETNS", "FAM", "CPU-PID", " PID ", "LADDR", "OLDSTATE",
        ] {
            let at = h.find(col).unwrap() + usize::from(col.starts_with(' '));
            assert!(
                at == 0 || (&row[at - 1..at] == " " && &row[at..at + 1] != " "),
                "{col} at {at}:\n{h}{row}"
            );
        }
    }
}
