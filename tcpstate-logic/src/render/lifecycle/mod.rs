//! `--lifecycle`: one line per finished connection with its whole path and
//! the time spent in each state, e.g.
//!
//! ```text
//! SYN_SENT 0.041ms > ESTABLISHED 812.345ms > FIN_WAIT1 0.050ms > FIN_WAIT2 0.032ms > CLOSE
//! ```
//!
//! marked with the socket's role (client: active open, server: accepted,
//! listener) and how it closed (active, passive, simultaneous, abort).
//!
//! Histories are keyed by socket address; a socket finishes at `-> CLOSE`,
//! after which its address may be reused by a new socket. At most
//! `max_histories` are open at once: beyond that the oldest is evicted (and
//! counted). Unfinished ones are printed at exit, marked as such.
//! Times are differences of the kernel's event times, so exact.
mod history;
mod write;

use std::collections::{HashMap, VecDeque};

use super::{
    Render, buf,
    color::Palette,
    timefmt::{TimeFormat, TimeWriter},
};
use crate::{
    clock::WallClock,
    event::{Note, Source, TcpEvent, TcpState},
};

use history::History;
use write::{COLS, write_json, write_text};

/// How a history ended when it was printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Closed,
    Unfinished,
}

enum Format {
    Text { time: TimeWriter, palette: Palette },
    Json { time: TimeWriter },
}

/// A socket's identity before its address is known: snapshot rows come from
/// sock_diag, which does not give the kernel address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TupleKey {
    netns: u32,
    laddr: std::net::IpAddr,
    lport: u16,
    raddr: std::net::IpAddr,
    rport: u16,
}

impl TupleKey {
    fn of(ev: &TcpEvent) -> Self {
        TupleKey {
            netns: ev.netns,
            laddr: ev.laddr,
            lport: ev.lport,
            raddr: ev.raddr,
            rport: ev.rport,
        }
    }
}

pub struct Lifecycle {
    format: Format,
    open: HashMap<u64, History>,
    /// Sockets listed by the start-up snapshot and not seen since, by tuple.
    snapshots: HashMap<TupleKey, History>,
    /// Creation order, for evicting the oldest; may hold stale entries.
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
    max: usize,
    /// Histories dropped to stay within `max`.
    pub evicted: u64,
    now: fn() -> u64,
    /// Fills the JSON records' container fields, when attribution is on.
    containers: Option<crate::container::Shared>,
}

impl Lifecycle {
    /// Text lines; `time` as chosen by `-T`/`-t`.
    pub fn text(time: TimeWriter, palette: Palette, max: usize) -> Self {
        Self::with_format(Format::Text { time, palette }, max)
    }

    /// JSON Lines records of type `lifecycle` (docs/json.md).
    pub fn json(clock: WallClock, max: usize) -> Self {
        Self::with_format(
            Format::Json {
                time: TimeWriter::new(clock, TimeFormat::Rfc3339Utc),
            },
            max,
        )
    }

    fn with_format(format: Format, max: usize) -> Self {
        Lifecycle {
            format,
            open: HashMap::new(),
            snapshots: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            max: max.max(1),
            evicted: 0,
            now: crate::clock::boot_ns,
            containers: None,
        }
    }

    /// Names each history's container (JSON: `cgroup`, `container_id`,
    /// `pod_uid`, as event records have them) through the shared attributor.
    pub(crate) fn with_containers(mut self, containers: Option<crate::container::Shared>) -> Self {
        self.containers = containers;
        self
    }

    #[cfg(test)]
    /// Replaces the clock used for "time so far" of unfinished histories.
    pub(crate) fn with_now(mut self, now: fn() -> u64) -> Self {
        self.now = now;
        self
    }

    /// Open histories right now.
    pub fn open(&self) -> usize {
        self.open.len() + self.snapshots.len()
    }

    fn insert(&mut self, skaddr: u64, h: History) {
        while self.open.len() >= self.max {
            let Some((addr, seq)) = self.order.pop_front() else {
                break;
            };
            if self.open.get(&addr).is_some_and(|h| h.seq == seq) {
                self.open.remove(&addr);
                self.evicted += 1;
            }
        }
        self.order.push_back((skaddr, h.seq));
        if self.order.len() > 2 * self.max + 64 {
            let open = &self.open;
            self.order
                .retain(|(a, g)| open.get(a).is_some_and(|h| h.seq == *g));
        }
        self.open.insert(skaddr, h);
    }

    fn start(&mut self, ev: &TcpEvent, out: &mut Vec<u8>) {
        let h = History::start(ev, self.next_seq);
        self.next_seq += 1;
        if h.last_state() == TcpState::Close && ev.note.is_none() {
            self.emit(&h, End::Closed, h.last_ns, out);
        } else {
            self.insert(ev.skaddr, h);
        }
    }

    fn emit(&mut self, h: &History, end: End, end_ns: u64, out: &mut Vec<u8>) {
        match &mut self.format {
            Format::Text { time, palette } => write_text(h, end, end_ns, time, palette, out),
            Format::Json { time } => {
                // The socket's cgroup id is on every event; the owner is
                // the latest one seen.
                let row = TcpEvent {
                    owner: h.owner,
                    ..h.tuple
                };
                let containers = self.containers.as_ref();
                let a = containers.and_then(|c| c.borrow_mut().of(&row));
                write_json(h, end, end_ns, time, containers.map(|_| a.as_deref()), out)
            }
        }
    }
}

impl Render for Lifecycle {
    fn header(&self, out: &mut Vec<u8>) {
        if let Format::Text { time, .. } = &self.format {
            let (width, name) = time.format().column();
            buf::str_padded(out, name, width);
            out.push(b' ');
            for (name, width) in COLS {
                buf::str_padded(out, name, width);
                out.push(b' ');
            }
            out.extend_from_slice(b"PATH\n");
        }
    }

    fn event(&mut self, ev: &TcpEvent, out: &mut Vec<u8>) {
        if ev.source != Source::Tracepoint {
            // Only a snapshot row says where a socket's history starts; the
            // other notes are about request sockets, timewait sockets (which
            // come after the full socket's CLOSE) or are not transitions.
            // Timewait and request sockets listed by the snapshot are not
            // full sockets: the tracepoint never reports them.
            if ev.note == Some(Note::Snapshot)
                && !matches!(ev.new, TcpState::TimeWait | TcpState::NewSynRecv)
            {
                if self.snapshots.len() >= self.max {
                    self.evicted += 1;
                    return;
                }
                let h = History::start(ev, self.next_seq);
                self.next_seq += 1;
                self.snapshots.insert(TupleKey::of(ev), h);
            }
            return;
        }
        if !self.open.contains_key(&ev.skaddr) {
            match self.snapshots.remove(&TupleKey::of(ev)) {
                // First transition of a socket the snapshot listed.
                Some(h) if h.last_state() == ev.old => self.insert(ev.skaddr, h),
                _ => {
                    self.start(ev, out);
                    return;
                }
            }
        }
        let h = self.open.get_mut(&ev.skaddr).expect("present");
        if ev.old == TcpState::Close && h.last_state() != TcpState::Close {
            // A new socket at a reused address whose predecessor's CLOSE was
            // not seen: print the old one as unfinished.
            let old = self.open.remove(&ev.skaddr).expect("present");
            self.emit(&old, End::Unfinished, old.last_ns, out);
            self.start(ev, out);
            return;
        }
        h.add(ev);
        if ev.new == TcpState::Close {
            let h = self.open.remove(&ev.skaddr).expect("present");
            self.emit(&h, End::Closed, ev.ts_ns, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>, notes: &mut Vec<String>) {
        let now = (self.now)();
        let mut rest: Vec<History> = self.open.drain().map(|(_, h)| h).collect();
        rest.extend(self.snapshots.drain().map(|(_, h)| h));
        rest.sort_by_key(|h| h.seq);
        for h in &rest {
            self.emit(h, End::Unfinished, now.max(h.last_ns), out);
        }
        self.order.clear();
        if self.evicted > 0 {
            notes.push(format!(
                "--lifecycle: {} connection histories evicted to stay within --max-histories {}",
                self.evicted, self.max
            ));
        }
    }
}

#[cfg(test)]
mod tests;
