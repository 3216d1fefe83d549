//! [`Event`]: one `"type":"event"` line of `tcpstate --json`, as the
//! [`crate::Tracer`]'s reader thread parses and checks it.

use std::net::SocketAddr;

use serde::Deserialize;

/// One `"type":"event"` line of `tcpstate --json`: a `"source":"tracepoint"`
/// transition, or (in [`Trace::all`]) an event of another source.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub schema: u64,
    pub time: String,
    pub time_ns: u64,
    pub source: String,
    pub skaddr: String,
    pub netns: u64,
    pub family: String,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub cpu_pid: u32,
    pub cpu_comm: String,
    pub laddr: String,
    pub lport: u16,
    pub raddr: String,
    pub rport: u16,
    pub oldstate: String,
    pub newstate: String,
    pub ms: Option<f64>,
    /// What a non-tracepoint event means (`half-open`, `timewait`, ...).
    #[serde(default)]
    pub note: Option<String>,
    /// `transition` (a state change) or `state` (a row that says which state
    /// a socket is in: `snapshot`, `timewait-socket`, `stuck`).
    pub kind: String,
    /// SYN-ACK retransmits: on a `half-open` row, its expiry, and a lingering
    /// connection's SYN_RECV->ESTABLISHED (absent when there were none).
    #[serde(default)]
    pub retransmits: Option<u32>,
    /// `stuck` events: how long the socket has been in its state.
    #[serde(default)]
    pub age_ms: Option<f64>,
    /// On FIN_WAIT2->CLOSE and CLOSING->CLOSE: whether the peer's FIN had arrived.
    #[serde(default)]
    pub peer_fin: Option<bool>,
}

/// Keys every tracepoint event must carry (nullable ones included).
const EVENT_KEYS: &[&str] = &[
    "schema", "time", "time_ns", "source", "skaddr", "netns", "family", "pid", "comm", "cpu_pid",
    "cpu_comm", "laddr", "lport", "raddr", "rport", "oldstate", "newstate", "ms", "kind",
];

impl Event {
    /// `laddr:lport`, when `laddr` parses.
    pub fn local(&self) -> Option<SocketAddr> {
        let ip: std::net::IpAddr = self.laddr.parse().ok()?;
        Some(SocketAddr::new(ip, self.lport))
    }

    /// `raddr:rport`, when `raddr` parses.
    pub fn remote(&self) -> Option<SocketAddr> {
        let ip: std::net::IpAddr = self.raddr.parse().ok()?;
        Some(SocketAddr::new(ip, self.rport))
    }

    pub fn transition(&self) -> String {
        format!("{}->{}", self.oldstate, self.newstate)
    }

    /// Whether this row says which state a socket is in rather than a change
    /// of state (`kind: "state"`; then `oldstate == newstate`).
    pub fn is_state_row(&self) -> bool {
        self.kind == "state"
    }

    /// `source[/note] OLD->NEW` for a transition, e.g.
    /// `synack_tracepoint/half-open LISTEN->SYN_RECV`; `source/note is STATE`
    /// for a state row, e.g. `tracker/timewait-socket is FIN_WAIT2`.
    pub fn labelled(&self) -> String {
        let what = if self.is_state_row() {
            format!("is {}", self.newstate)
        } else {
            self.transition()
        };
        match &self.note {
            Some(n) => format!("{}/{n} {what}", self.source),
            None => format!("{} {what}", self.source),
        }
    }

    /// One line for failure messages.
    pub fn row(&self) -> String {
        let owner = match (&self.pid, &self.comm) {
            (Some(p), Some(c)) => format!("{p}/{c}"),
            (p, c) => format!("{p:?}/{c:?}"),
        };
        let ms = self.ms.map_or("null".to_string(), |m| format!("{m:.3}"));
        let what = if self.is_state_row() {
            format!("is {}", self.newstate)
        } else {
            self.transition()
        };
        format!(
            "{:>20} {:<24} {:<22} {}:{} -> {}:{}  {what} ms={ms}",
            self.time_ns,
            format!("pid {owner}"),
            format!("cpu {}/{}", self.cpu_pid, self.cpu_comm),
            self.laddr,
            self.lport,
            self.raddr,
            self.rport,
        )
    }
}

/// What the reader thread makes of one stdout line.
pub(crate) enum Line {
    Event(Box<Event>),
    /// Another source's line; parsed when it is an event.
    OtherSource(Option<Box<Event>>),
    Bad(String),
}

pub(crate) fn parse_line(line: &str) -> Line {
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Line::Bad(format!("not JSON ({e}): {line}")),
    };
    let Some(obj) = value.as_object() else {
        return Line::Bad(format!("not a JSON object: {line}"));
    };
    if obj.get("source").and_then(|s| s.as_str()) != Some("tracepoint") {
        if obj.get("type").and_then(|t| t.as_str()) != Some("event") {
            return Line::OtherSource(None);
        }
        return match serde_json::from_value(value) {
            Ok(ev) => Line::OtherSource(Some(Box::new(ev))),
            Err(e) => Line::Bad(format!("unexpected field type ({e}): {line}")),
        };
    }
    let missing: Vec<&str> = EVENT_KEYS
        .iter()
        .copied()
        .filter(|k| !obj.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Line::Bad(format!("missing keys {missing:?}: {line}"));
    }
    match serde_json::from_value(value) {
        Ok(ev) => Line::Event(Box::new(ev)),
        Err(e) => Line::Bad(format!("unexpected field type ({e}): {line}")),
    }
}
