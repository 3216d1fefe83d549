//! `--diagram FILE.dot`: the transitions actually observed, as a Graphviz
//! graph laid out like the classic TCP state diagram (RFC 793 fig. 6): the
//! client's path (active open) and the active close on the left, the server's
//! path (passive open) and the passive close on the right, CLOSED at the top
//! (where sockets start) and again at the bottom (where they end). Each edge
//! carries its count and the median time spent in the state it leaves.
//!
//! Written at exit; an SVG is rendered next to it when Graphviz's `dot` is
//! installed. Only kernel transitions (source `tracepoint`) are drawn.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use super::{
    Render,
    stats::{Edges, count_edge},
};
use crate::event::{TcpEvent, TcpState};

pub(crate) struct Diagram {
    path: PathBuf,
    edges: Edges,
    /// Whether to run `dot` for an SVG (off in tests).
    svg: bool,
}

/// Where a state sits: (rank from the top, column: 0 left, 1 centre, 2 right).
fn place(st: TcpState) -> Option<(u8, u8)> {
    use TcpState::*;
    Some(match st {
        SynSent => (1, 0),
        Listen => (1, 2),
        SynRecv | NewSynRecv => (2, 2),
        Established => (3, 1),
        FinWait1 => (4, 0),
        CloseWait => (4, 2),
        FinWait2 => (5, 0),
        Closing => (5, 1),
        LastAck => (5, 2),
        TimeWait => (6, 0),
        Close | Unknown(_) => return None,
    })
}

const LAST_RANK: u8 = 7;

fn fill(st: TcpState) -> &'static str {
    use TcpState::*;
    match st {
        SynSent | SynRecv | NewSynRecv => "#d9f2f7",
        Established => "#d5f5d5",
        Listen => "#dbe5fb",
        FinWait1 | FinWait2 | Closing | TimeWait => "#fbf1d0",
        CloseWait | LastAck => "#f3dcf5",
        Close => "#eeeeee",
        Unknown(_) => "#ffffff",
    }
}

/// Graphviz node id: the two CLOSE nodes are distinct (start and end).
fn node_id(st: TcpState, as_target: bool) -> String {
    match st {
        TcpState::Close if as_target => "CLOSED_end".into(),
        TcpState::Close => "CLOSED_start".into(),
        other => other.to_string().replace(['(', ')'], "_"),
    }
}

/// Edges that skip the orderly handshake into CLOSE (resets, aborts,
/// refused or timed-out connects, orphan timeouts).
fn abnormal(old: TcpState, new: TcpState) -> bool {
    use TcpState::*;
    new == Close
        && !matches!(
            old,
            FinWait2 | Closing | LastAck | TimeWait | Listen | Close
        )
}

fn edge_color(old: TcpState, new: TcpState) -> &'static str {
    use TcpState::*;
    if abnormal(old, new) {
        return "#c62828";
    }
    let side = if new == Close { old } else { new };
    match side {
        SynSent => "#1565c0",
        Listen | SynRecv | NewSynRecv => "#2e7d32",
        Established => {
            if old == SynSent {
                "#1565c0"
            } else {
                "#2e7d32"
            }
        }
        FinWait1 | FinWait2 | Closing | TimeWait => "#e65100",
        CloseWait | LastAck => "#6a1b9a",
        _ => "#424242",
    }
}

fn human(ns: u64) -> String {
    let mut b = Vec::new();
    super::buf::human_ns(&mut b, ns);
    String::from_utf8(b).unwrap_or_default()
}

impl Diagram {
    pub fn new(path: PathBuf) -> Self {
        Diagram {
            path,
            edges: BTreeMap::new(),
            svg: true,
        }
    }

    #[cfg(test)]
    /// Without running `dot` (for tests).
    pub(crate) fn without_svg(mut self) -> Self {
        self.svg = false;
        self
    }

    /// The SVG's path: FILE.dot -> FILE.svg, anything else -> anything.svg.
    pub(crate) fn svg_path(dot: &Path) -> PathBuf {
        match dot.extension().and_then(|e| e.to_str()) {
            Some("dot" | "gv") => dot.with_extension("svg"),
            _ => {
                let mut s = dot.as_os_str().to_owned();
                s.push(".svg");
                PathBuf::from(s)
            }
        }
    }

    /// The graph in DOT.
    pub fn dot(&self) -> String {
        let mut s = String::new();
        let total: u64 = self.edges.values().map(|e| e.count).sum();
        let _ = writeln!(s, "// tcpstate --diagram: TCP state transitions observed.");
        let _ = writeln!(
            s,
            "// Edge label: count, then the median time spent in the state left."
        );
        s.push_str("digraph tcpstate {\n");
        let _ = writeln!(
            s,
            "  graph [fontname=\"Helvetica\", fontsize=12, labelloc=t, nodesep=0.5, ranksep=0.45, newrank=true, \
             label=\"TCP state transitions observed by tcpstate ({total})\\nedge: count / median time in the state it leaves\"];"
        );
        s.push_str(
            "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=11, width=1.4];\n",
        );
        s.push_str("  edge [fontname=\"Helvetica\", fontsize=9, arrowsize=0.7];\n");

        // The states seen, as sources and as targets.
        let mut nodes: BTreeMap<String, (TcpState, Option<(u8, u8)>)> = BTreeMap::new();
        for &(old, new) in self.edges.keys() {
            let old_place = if old == TcpState::Close {
                Some((0, 1))
            } else {
                place(old)
            };
            let new_place = if new == TcpState::Close {
                Some((LAST_RANK, 1))
            } else {
                place(new)
            };
            nodes.insert(node_id(old, false), (old, old_place));
            nodes.insert(node_id(new, true), (new, new_place));
        }
        // An invisible spine of rank anchors keeps the levels of the classic
        // diagram even when intermediate states were not observed.
        if !nodes.is_empty() {
            s.push_str("  node [style=invis, width=0, height=0, label=\"\"];\n");
            let anchors: Vec<String> = (0..=LAST_RANK).map(|r| format!("r{r}")).collect();
            let _ = writeln!(s, "  {} [style=invis];", anchors.join(" -> "));
            s.push_str("  node [shape=box, style=\"rounded,filled\", width=1.4];\n");
        }
        for (id, (st, place)) in &nodes {
            let label = if *st == TcpState::Close {
                "CLOSED".to_string()
            } else {
                st.to_string()
            };
            let group = match place.map(|p| p.1) {
                Some(0) => ", group=left",
                Some(1) => ", group=centre",
                Some(2) => ", group=right",
                _ => "",
            };
            let _ = writeln!(
                s,
                "  \"{id}\" [label=\"{label}\", fillcolor=\"{}\"{group}];",
                fill(*st)
            );
        }
        for rank in 0..=LAST_RANK {
            let mut row: Vec<(u8, &String)> = nodes
                .iter()
                .filter_map(|(id, (_, p))| p.filter(|p| p.0 == rank).map(|p| (p.1, id)))
                .collect();
            if row.is_empty() {
                continue;
            }
            row.sort();
            let ids: Vec<String> = row.iter().map(|(_, id)| format!("\"{id}\"")).collect();
            let _ = writeln!(s, "  {{ rank=same; r{rank}; {}; }}", ids.join("; "));
            if ids.len() > 1 {
                let _ = writeln!(s, "  {} [style=invis];", ids.join(" -> "));
            }
        }
        for (&(old, new), e) in &self.edges {
            let mut label = e.count.to_string();
            if let Some(m) = e.dwell.median() {
                let _ = write!(label, "\\n{}", human(m));
            }
            let width = 1.0 + (e.count as f64).log10().max(0.0);
            let style = if abnormal(old, new) {
                ", style=dashed"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  \"{}\" -> \"{}\" [label=\"{label}\", color=\"{c}\", fontcolor=\"{c}\", penwidth={width:.1}{style}];",
                node_id(old, false),
                node_id(new, true),
                c = edge_color(old, new),
            );
        }
        s.push_str("}\n");
        s
    }

    fn write_files(&self) -> Result<Option<PathBuf>, String> {
        if let Err(e) = std::fs::write(&self.path, self.dot()) {
            // No truncated diagram left behind (a full disk).
            let _ = std::fs::remove_file(&self.path);
            return Err(format!("writing {}: {e}", self.path.display()));
        }
        if !self.svg {
            return Ok(None);
        }
        let svg = Self::svg_path(&self.path);
        match Command::new("dot")
            .arg("-Tsvg")
            .arg(&self.path)
            .arg("-o")
            .arg(&svg)
            .output()
        {
            Ok(o) if o.status.success() => Ok(Some(svg)),
            Ok(o) => Err(format!(
                "wrote {} but `dot -Tsvg` failed: {}",
                self.path.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!(
                "wrote {} but could not run dot: {e}",
                self.path.display()
            )),
        }
    }
}

impl Render for Diagram {
    fn header(&self, _out: &mut Vec<u8>) {}

    fn event(&mut self, ev: &TcpEvent, _out: &mut Vec<u8>) {
        count_edge(&mut self.edges, ev);
    }

    fn finish(&mut self, _out: &mut Vec<u8>, notes: &mut Vec<String>) {
        notes.push(match self.write_files() {
            Ok(Some(svg)) => format!(
                "wrote the state diagram to {} and {}",
                self.path.display(),
                svg.display()
            ),
            Ok(None) => format!(
                "wrote the state diagram to {}{}",
                self.path.display(),
                if self.svg {
                    " (install Graphviz for an SVG)"
                } else {
                    ""
                }
            ),
            Err(e) => format!("{}--diagram: {e}", crate::exit_report::ERROR_NOTE),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Note, Source, TcpState::*, tests::raw_v4};

    fn ev(old: TcpState, new: TcpState, dwell_us: Option<u64>) -> TcpEvent {
        let mut e = TcpEvent::from(&raw_v4());
        e.old = old;
        e.new = new;
        e.dwell_ns = dwell_us.map(|us| us * 1000);
        e
    }

    fn diagram(events: &[TcpEvent]) -> String {
        let mut d = Diagram::new("/nonexistent/x.dot".into()).without_svg();
        for e in events {
            d.event(e, &mut Vec::new());
        }
        d.dot()
    }

    #[test]
    fn golden_client_and_server() {
        let evs = [
            ev(Close, SynSent, None),
            ev(SynSent, Established, Some(41)),
            ev(Established, FinWait1, Some(812_000)),
            ev(FinWait1, FinWait2, Some(50)),
            ev(FinWait2, Close, Some(30)),
            ev(Listen, SynRecv, None),
            ev(SynRecv, Established, Some(20)),
            ev(Established, CloseWait, Some(812_000)),
            ev(CloseWait, LastAck, Some(100)),
            ev(LastAck, Close, Some(40)),
            ev(Established, Close, Some(3)),
        ];
        let dot = diagram(&evs);
        assert_eq!(
            dot,
            r##"// tcpstate --diagram: TCP state transitions observed.
// Edge label: count, then the median time spent in the state left.
digraph tcpstate {
  graph [fontname="Helvetica", fontsize=12, labelloc=t, nodesep=0.5, ranksep=0.45, newrank=true, label="TCP state transitions observed by tcpstate (11)\nedge: count / median time in the state it leaves"];
  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, width=1.4];
  edge [fontname="Helvetica", fontsize=9, arrowsize=0.7];
  node [style=invis, width=0, height=0, label=""];
  r0 -> r1 -> r2 -> r3 -> r4 -> r5 -> r6 -> r7 [style=invis];
  node [shape=box, style="rounded,filled", width=1.4];
  "CLOSED_end" [label="CLOSED", fillcolor="#eeeeee", group=centre];
  "CLOSED_start" [label="CLOSED", fillcolor="#eeeeee", group=centre];
  "CLOSE_WAIT" [label="CLOSE_WAIT", fillcolor="#f3dcf5", group=right];
  "ESTABLISHED" [label="ESTABLISHED", fillcolor="#d5f5d5", group=centre];
  "FIN_WAIT1" [label="FIN_WAIT1", fillcolor="#fbf1d0", group=left];
  "FIN_WAIT2" [label="FIN_WAIT2", fillcolor="#fbf1d0", group=left];
  "LAST_ACK" [label="LAST_ACK", fillcolor="#f3dcf5", group=right];
  "LISTEN" [label="LISTEN", fillcolor="#dbe5fb", group=right];
  "SYN_RECV" [label="SYN_RECV", fillcolor="#d9f2f7", group=right];
  "SYN_SENT" [label="SYN_SENT", fillcolor="#d9f2f7", group=left];
  { rank=same; r0; "CLOSED_start"; }
  { rank=same; r1; "SYN_SENT"; "LISTEN"; }
  "SYN_SENT" -> "LISTEN" [style=invis];
  { rank=same; r2; "SYN_RECV"; }
  { rank=same; r3; "ESTABLISHED"; }
  { rank=same; r4; "FIN_WAIT1"; "CLOSE_WAIT"; }
  "FIN_WAIT1" -> "CLOSE_WAIT" [style=invis];
  { rank=same; r5; "FIN_WAIT2"; "LAST_ACK"; }
  "FIN_WAIT2" -> "LAST_ACK" [style=invis];
  { rank=same; r7; "CLOSED_end"; }
  "ESTABLISHED" -> "FIN_WAIT1" [label="1\n812.000ms", color="#e65100", fontcolor="#e65100", penwidth=1.0];
  "ESTABLISHED" -> "CLOSED_end" [label="1\n0.003ms", color="#c62828", fontcolor="#c62828", penwidth=1.0, style=dashed];
  "ESTABLISHED" -> "CLOSE_WAIT" [label="1\n812.000ms", color="#6a1b9a", fontcolor="#6a1b9a", penwidth=1.0];
  "SYN_SENT" -> "ESTABLISHED" [label="1\n0.041ms", color="#1565c0", fontcolor="#1565c0", penwidth=1.0];
  "SYN_RECV" -> "ESTABLISHED" [label="1\n0.020ms", color="#2e7d32", fontcolor="#2e7d32", penwidth=1.0];
  "FIN_WAIT1" -> "FIN_WAIT2" [label="1\n0.050ms", color="#e65100", fontcolor="#e65100", penwidth=1.0];
  "FIN_WAIT2" -> "CLOSED_end" [label="1\n0.030ms", color="#e65100", fontcolor="#e65100", penwidth=1.0];
  "CLOSED_start" -> "SYN_SENT" [label="1", color="#1565c0", fontcolor="#1565c0", penwidth=1.0];
  "CLOSE_WAIT" -> "LAST_ACK" [label="1\n0.100ms", color="#6a1b9a", fontcolor="#6a1b9a", penwidth=1.0];
  "LAST_ACK" -> "CLOSED_end" [label="1\n0.040ms", color="#6a1b9a", fontcolor="#6a1b9a", penwidth=1.0];
  "LISTEN" -> "SYN_RECV" [label="1", color="#2e7d32", fontcolor="#2e7d32", penwidth=1.0];
}
"##
        );
    }

    #[test]
    fn counts_and_medians_on_edges_and_notes_ignored() {
        let mut evs = vec![ev(Close, SynSent, None); 3];
        evs.extend([10, 20, 30_000].map(|us| ev(SynSent, Established, Some(us))));
        let mut note = ev(Established, TimeWait, None);
        note.source = Source::SockDiag;
        note.note = Some(Note::TimeWait);
        evs.push(note);
        let dot = diagram(&evs);
        assert!(
            dot.contains("\"CLOSED_start\" -> \"SYN_SENT\" [label=\"3\", color=\"#1565c0\""),
            "{dot}"
        );
        assert!(
            dot.contains("\"SYN_SENT\" -> \"ESTABLISHED\" [label=\"3\\n0.020ms\""),
            "{dot}"
        );
        assert!(!dot.contains("TIME_WAIT"), "{dot}");
    }

    #[test]
    fn svg_path_replaces_dot_extension() {
        assert_eq!(
            Diagram::svg_path(Path::new("/tmp/a.dot")),
            PathBuf::from("/tmp/a.svg")
        );
        assert_eq!(
            Diagram::svg_path(Path::new("/tmp/a.gv")),
            PathBuf::from("/tmp/a.svg")
        );
        assert_eq!(
            Diagram::svg_path(Path::new("/tmp/a")),
            PathBuf::from("/tmp/a.svg")
        );
    }

    #[test]
    fn writes_the_file() {
        let dir = std::env::temp_dir().join(format!("tcpstate-diagram-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.dot");
        let mut d = Diagram::new(path.clone()).without_svg();
        d.event(&ev(Close, Listen, None), &mut Vec::new());
        d.finish(&mut Vec::new(), &mut Vec::new());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"CLOSED_start\" -> \"LISTEN\""), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
