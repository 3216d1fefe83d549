//! `--summary`: at exit, counts per transition (with median and max time in
//! the old state) and, per state, a log2 histogram of the time spent in it,
//! in the style of bcc's histograms. Text, or one JSON record of type
//! `summary` with `--json`. Per-event lines are not printed with `--summary`.
//!
//! The histogram of a state is built from the transitions out of it whose
//! dwell time is known (the kernel saw the socket enter the state).

use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::json;

use super::{
    Render, json as json_fmt,
    stats::{Edge, Edges, Log2Hist, count_edge},
};
use crate::event::{TcpEvent, TcpState};

#[derive(Default)]
pub(crate) struct Summary {
    json: bool,
    events: u64,
    first_ns: Option<u64>,
    last_ns: u64,
    transitions: Edges,
    states: BTreeMap<TcpState, Log2Hist>,
    notes: BTreeMap<&'static str, u64>,
    /// Connections per way they ended (with the kernel's reset reason).
    reasons: BTreeMap<String, u64>,
}

fn ms(ns: Option<u64>) -> String {
    ns.map_or("-".into(), |ns| format!("{:.3}ms", ns as f64 / 1e6))
}

fn ms_json(ns: Option<u64>) -> serde_json::Value {
    ns.map_or(serde_json::Value::Null, |ns| json!(ns as f64 / 1e6))
}

impl Summary {
    pub fn new(json: bool) -> Self {
        Summary {
            json,
            ..Default::default()
        }
    }

    fn rows(&self) -> Vec<(&(TcpState, TcpState), &Edge)> {
        let mut rows: Vec<_> = self.transitions.iter().collect();
        rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        rows
    }

    fn span_ns(&self) -> u64 {
        self.first_ns.map_or(0, |f| self.last_ns - f)
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        let transitions: u64 = self.transitions.values().map(|e| e.count).sum();
        let _ = writeln!(
            s,
            "tcpstate summary: {} events over {:.3}s: {} transitions, {} other",
            self.events,
            self.span_ns() as f64 / 1e9,
            transitions,
            self.events - transitions
        );
        if !self.transitions.is_empty() {
            let _ = writeln!(
                s,
                "\n{:>10}  {:<29} {:>12} {:>12}",
                "COUNT", "TRANSITION", "MEDIAN", "MAX"
            );
            for ((old, new), e) in self.rows() {
                let _ = writeln!(
                    s,
                    "{:>10}  {:<29} {:>12} {:>12}",
                    e.count,
                    format!("{old} -> {new}"),
                    ms(e.dwell.median()),
                    ms((e.dwell.count > 0).then_some(e.dwell.max))
                );
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\n{:>10}  NOTE", "COUNT");
            for (note, n) in &self.notes {
                let _ = writeln!(s, "{n:>10}  {note}");
            }
        }
        if !self.reasons.is_empty() {
            let _ = writeln!(s, "\n{:>10}  ENDED BY", "COUNT");
            for (r, n) in &self.reasons {
                let _ = writeln!(s, "{n:>10}  {r}");
            }
        }
        for (state, h) in &self.states {
            let _ = writeln!(s, "\nstate = {state}");
            h.write(&mut s, "usecs");
        }
        s
    }

    pub fn json(&self) -> serde_json::Value {
        let transitions: u64 = self.transitions.values().map(|e| e.count).sum();
        json!({
            "schema": json_fmt::SCHEMA,
            "type": "summary",
            "events": self.events,
            "transitions_total": transitions,
            "first_ns": self.first_ns,
            "last_ns": self.first_ns.map(|_| self.last_ns),
            "transitions": self.rows().iter().map(|((old, new), e)| json!({
                "old": old.to_string(),
                "new": new.to_string(),
                "count": e.count,
                "median_ms": ms_json(e.dwell.median()),
                "max_ms": ms_json((e.dwell.count > 0).then_some(e.dwell.max)),
            })).collect::<Vec<_>>(),
            "notes": self.notes.iter().map(|(n, c)| json!({"note": n, "count": c})).collect::<Vec<_>>(),
            "reasons": self.reasons.iter().map(|(r, c)| json!({"reason": r, "count": c})).collect::<Vec<_>>(),
            "states": self.states.iter().map(|(st, h)| json!({
                "state": st.to_string(),
                "count": h.total(),
                "unit": "us",
                "buckets": h.used().iter().enumerate().map(|(i, c)| {
                    let (low, high) = Log2Hist::range(i);
                    json!({"low": low, "high": high, "count": c})
                }).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

impl Render for Summary {
    fn header(&self, _out: &mut Vec<u8>) {}

    fn event(&mut self, ev: &TcpEvent, _out: &mut Vec<u8>) {
        self.events += 1;
        if self.first_ns.is_none() {
            self.first_ns = Some(ev.ts_ns);
        }
        self.first_ns = self.first_ns.map(|f| f.min(ev.ts_ns));
        self.last_ns = self.last_ns.max(ev.ts_ns);
        if let Some(note) = ev.note {
            *self.notes.entry(note.name()).or_default() += 1;
        }
        if let Some(r) = ev.reason {
            let key = match r.reset_reason() {
                Some(n) => format!("{} {n}", r.code()),
                None => r.code().to_string(),
            };
            *self.reasons.entry(key).or_default() += 1;
        }
        if let Some(ns) = count_edge(&mut self.transitions, ev) {
            self.states.entry(ev.old).or_default().add(ns / 1000);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>, _notes: &mut Vec<String>) {
        if self.json {
            let _ = serde_json::to_writer(&mut *out, &self.json());
            out.push(b'\n');
        } else {
            out.extend_from_slice(self.text().as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Note, Source, TcpState::*, tests::raw_v4};

    fn ev(ts: u64, old: TcpState, new: TcpState, dwell_us: Option<u64>) -> TcpEvent {
        let mut e = TcpEvent::from(&raw_v4());
        e.ts_ns = ts;
        e.old = old;
        e.new = new;
        e.dwell_ns = dwell_us.map(|us| us * 1000);
        e
    }

    fn report(json: bool) -> Summary {
        let mut r = Summary::new(json);
        let mut out = Vec::new();
        let evs = [
            ev(1_000_000_000, Close, SynSent, None),
            ev(1_000_041_000, SynSent, Established, Some(41)),
            ev(1_500_000_000, Established, FinWait1, Some(499_959)),
            ev(1_500_020_000, FinWait1, FinWait2, Some(20)),
            ev(1_500_025_000, FinWait2, Close, Some(5)),
            ev(2_000_000_000, Close, SynSent, None),
            ev(2_000_003_000, SynSent, Established, Some(3)),
            ev(3_000_000_000, Established, Close, Some(999_997)),
        ];
        for e in &evs {
            r.event(e, &mut out);
        }
        let mut snap = ev(1_200_000_000, Established, Established, None);
        snap.source = Source::SockDiag;
        snap.note = Some(Note::Snapshot);
        r.event(&snap, &mut out);
        assert!(out.is_empty(), "nothing per event");
        r
    }

    #[test]
    fn golden_text() {
        let mut out = Vec::new();
        report(false).finish(&mut out, &mut Vec::new());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "tcpstate summary: 9 events over 2.000s: 8 transitions, 1 other

     COUNT  TRANSITION                          MEDIAN          MAX
         2  SYN_SENT -> ESTABLISHED            0.003ms      0.041ms
         2  CLOSE -> SYN_SENT                        -            -
         1  ESTABLISHED -> FIN_WAIT1         499.959ms    499.959ms
         1  ESTABLISHED -> CLOSE             999.997ms    999.997ms
         1  FIN_WAIT1 -> FIN_WAIT2             0.020ms      0.020ms
         1  FIN_WAIT2 -> CLOSE                 0.005ms      0.005ms

     COUNT  NOTE
         1  snapshot

state = ESTABLISHED
     usecs               : count     distribution
         0 -> 1          : 0        |                                        |
         2 -> 3          : 0        |                                        |
         4 -> 7          : 0        |                                        |
         8 -> 15         : 0        |                                        |
        16 -> 31         : 0        |                                        |
        32 -> 63         : 0        |                                        |
        64 -> 127        : 0        |                                        |
       128 -> 255        : 0        |                                        |
       256 -> 511        : 0        |                                        |
       512 -> 1023       : 0        |                                        |
      1024 -> 2047       : 0        |                                        |
      2048 -> 4095       : 0        |                                        |
      4096 -> 8191       : 0        |                                        |
      8192 -> 16383      : 0        |                                        |
     16384 -> 32767      : 0        |                                        |
     32768 -> 65535      : 0        |                                        |
     65536 -> 131071     : 0        |                                        |
    131072 -> 262143     : 0        |                                        |
    262144 -> 524287     : 1        |****************************************|
    524288 -> 1048575    : 1        |****************************************|

state = SYN_SENT
     usecs               : count     distribution
         0 -> 1          : 0        |                                        |
         2 -> 3          : 1        |****************************************|
         4 -> 7          : 0        |                                        |
         8 -> 15         : 0        |                                        |
        16 -> 31         : 0        |                                        |
        32 -> 63         : 1        |****************************************|

state = FIN_WAIT1
     usecs               : count     distribution
         0 -> 1          : 0        |                                        |
         2 -> 3          : 0        |                                        |
         4 -> 7          : 0        |                                        |
         8 -> 15         : 0        |                                        |
        16 -> 31         : 1        |****************************************|

state = FIN_WAIT2
     usecs               : count     distribution
         0 -> 1          : 0        |                                        |
         2 -> 3          : 0        |                                        |
         4 -> 7          : 1        |****************************************|
"
        );
    }

    #[test]
    fn golden_json() {
        let mut out = Vec::new();
        report(true).finish(&mut out, &mut Vec::new());
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["schema"], 1);
        assert_eq!(v["events"], 9);
        assert_eq!(v["transitions_total"], 8);
        assert_eq!(
            v["transitions"][0],
            json!({"old": "SYN_SENT", "new": "ESTABLISHED", "count": 2, "median_ms": 0.003, "max_ms": 0.041})
        );
        assert_eq!(
            v["transitions"][1],
            json!({"old": "CLOSE", "new": "SYN_SENT", "count": 2, "median_ms": null, "max_ms": null})
        );
        assert_eq!(v["notes"], json!([{"note": "snapshot", "count": 1}]));
        let syn = &v["states"][1];
        assert_eq!(syn["state"], "SYN_SENT");
        assert_eq!(syn["count"], 2);
        assert_eq!(syn["buckets"][1], json!({"low": 2, "high": 3, "count": 1}));
        assert_eq!(syn["buckets"].as_array().unwrap().len(), 6);
    }
}
