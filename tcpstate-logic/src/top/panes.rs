//! The model as the tables both printers show (the screen and the plain
//! snapshot): each pane's columns, its rows as text with the values they
//! sort by, rows to warn about. Sorting and the `/` filter apply here, so
//! what a key does is tested without a terminal.

use super::{
    keys::{PaneId, Ui},
    model::{Model, STATES},
};
use crate::{comm, event::Task};

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    /// Width at 80 columns; the plain printer widens to fit.
    pub width: u16,
    pub right: bool,
}

const fn col(name: &'static str, width: u16) -> Column {
    Column {
        name,
        width,
        right: false,
    }
}

const fn num(name: &'static str, width: u16) -> Column {
    Column {
        name,
        width,
        right: true,
    }
}

/// What a row sorts by in one column: numbers largest first, text in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SortKey {
    Num(f64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub cells: Vec<String>,
    pub keys: Vec<SortKey>,
    /// Over a threshold (a full accept queue, drops, more than half the
    /// port range): drawn highlighted, marked `!` in plain text.
    pub warn: bool,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub id: PaneId,
    pub title: String,
    pub columns: &'static [Column],
    pub rows: Vec<Row>,
}

impl Table {
    /// Rows that are not shown because the filter left them out.
    fn apply(&mut self, ui: &Ui) {
        if let Some(f) = ui.filter() {
            let f = f.to_lowercase();
            let before = self.rows.len();
            self.rows
                .retain(|r| r.cells.iter().any(|c| c.to_lowercase().contains(&f)));
            if self.rows.len() < before {
                self.title
                    .push_str(&format!(" ({} hidden by /{})", before - self.rows.len(), f));
            }
        }
        if let Some(c) = ui.sort_column(self.id, self.columns.len()) {
            self.rows.sort_by(|a, b| match (&a.keys[c], &b.keys[c]) {
                (SortKey::Num(x), SortKey::Num(y)) => y.total_cmp(x),
                (SortKey::Text(x), SortKey::Text(y)) => x.cmp(y),
                _ => std::cmp::Ordering::Equal,
            });
            let name = self.columns[c].name.trim();
            self.title.push_str(&format!(" by {name}"));
        }
    }
}

/// A rate as the panes print it: no decimals once it is large.
pub(crate) fn rate(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// An age: `42s`, `3m05s`, `2h07m`.
pub(crate) fn age(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

fn owner(o: Option<&Task>) -> (String, String) {
    match o {
        Some(t) => (t.pid.to_string(), comm::sanitize(&t.comm).into_owned()),
        None => ("-".into(), "-".into()),
    }
}

fn text(s: &str) -> SortKey {
    SortKey::Text(s.to_string())
}

fn n(v: impl Into<f64>) -> SortKey {
    SortKey::Num(v.into())
}

const STATE_COLUMNS: [Column; 11] = [
    col("", 6),
    num("LISTEN", 6),
    num("ESTAB", 6),
    num("SYN_S", 6),
    num("SYN_R", 6),
    num("FIN_W1", 6),
    num("FIN_W2", 6),
    num("TIME_W", 6),
    num("CLOS_W", 6),
    num("LAST_A", 6),
    num("CLOSNG", 6),
];

fn states(m: &Model) -> Table {
    let line = |label: &str, f: &dyn Fn(crate::event::TcpState) -> String| Row {
        cells: std::iter::once(label.to_string())
            .chain(STATES.iter().map(|s| f(*s)))
            .collect(),
        keys: vec![text(""); STATE_COLUMNS.len()],
        warn: false,
    };
    Table {
        id: PaneId::States,
        title: "States".into(),
        columns: &STATE_COLUMNS,
        rows: vec![
            line("now", &|s| m.count(s).to_string()),
            line("new/s", &|s| rate(m.entries_per_sec(s))),
            line("1m", &|s| format!("{:+}", m.change(s))),
        ],
    }
}

const LISTENER_COLUMNS: [Column; 10] = [
    num("PORT", 5),
    col("ADDR", 12),
    col("NETNS/CTR", 10),
    col("OWNER", 13),
    num("QUEUE", 7),
    num("ACC/s", 5),
    num("HALF", 4),
    num("SYNRT", 5),
    num("RST/s", 5),
    num("DROPS", 5),
];

fn listeners(m: &Model) -> Table {
    let mut rows: Vec<Row> = m
        .listeners()
        .into_iter()
        .map(|l| {
            let s = l.sample;
            let (pid, comm) = owner(s.owner.as_ref());
            let owner = if s.owner.is_some() {
                format!("{pid} {comm}")
            } else {
                "-".into()
            };
            let place = s
                .container
                .clone()
                .unwrap_or_else(|| s.key.netns.to_string());
            let r = l.rates;
            let per = |f: fn(&super::model::ListenerRates) -> &super::rate::Rate| {
                r.map_or(0.0, |r| m.per_sec(f(r)))
            };
            let (acc, synrt, rst) = (
                per(|r| &r.accepts),
                per(|r| &r.synack_retransmits),
                per(|r| &r.resets),
            );
            let drops = s.drops.map_or("-".into(), |d| d.to_string());
            Row {
                cells: vec![
                    s.key.port.to_string(),
                    s.addr.to_string(),
                    place.clone(),
                    owner.clone(),
                    format!("{}/{}", s.queue, s.limit),
                    rate(acc),
                    l.half_open.to_string(),
                    rate(synrt),
                    rate(rst),
                    drops,
                ],
                keys: vec![
                    n(s.key.port),
                    text(&s.addr.to_string()),
                    text(&place),
                    text(&owner),
                    n(s.queue),
                    n(acc),
                    n(l.half_open as f64),
                    n(synrt),
                    n(rst),
                    n(s.drops.unwrap_or(0)),
                ],
                warn: (s.limit > 0 && s.queue >= s.limit) || s.drops.is_some_and(|d| d > 0),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.keys[0].partial_cmp_num(&b.keys[0]));
    Table {
        id: PaneId::Listeners,
        title: "Listeners".into(),
        columns: &LISTENER_COLUMNS,
        rows,
    }
}

impl SortKey {
    /// Ascending, for a table's own order before any `s`.
    fn partial_cmp_num(&self, other: &SortKey) -> std::cmp::Ordering {
        match (self, other) {
            (SortKey::Num(a), SortKey::Num(b)) => a.total_cmp(b),
            (SortKey::Text(a), SortKey::Text(b)) => a.cmp(b),
            _ => std::cmp::Ordering::Equal,
        }
    }
}

const HOLDER_COLUMNS: [Column; 6] = [
    num("PID", 7),
    col("COMM", 15),
    col("CONTAINER", 12),
    col("STATE", 10),
    num("COUNT", 6),
    num("OLDEST", 7),
];

fn holders(m: &Model) -> Table {
    let rows = m
        .holders()
        .into_iter()
        .map(|h| {
            let (pid, comm) = owner(h.owner.as_ref());
            let ctr = h.container.clone().unwrap_or_else(|| "-".into());
            Row {
                cells: vec![
                    pid.clone(),
                    comm.clone(),
                    ctr.clone(),
                    h.state.name().to_string(),
                    h.count.to_string(),
                    age(h.oldest_ns),
                ],
                keys: vec![
                    n(h.owner.map_or(0.0, |t| f64::from(t.pid))),
                    text(&comm),
                    text(&ctr),
                    text(h.state.name()),
                    n(h.count as f64),
                    n(h.oldest_ns as f64),
                ],
                warn: false,
            }
        })
        .collect();
    Table {
        id: PaneId::Holders,
        title: "Holders".into(),
        columns: &HOLDER_COLUMNS,
        rows,
    }
}

/// The Pressure pane's width at 80 columns (Failures gets the rest).
pub(crate) const PRESSURE_WIDTH: u16 = 42;

const PRESSURE_COLUMNS: [Column; 4] = [
    col("LOCAL>REMOTE", 25),
    num("TW", 5),
    num("PORTS", 5),
    num("USE", 4),
];

fn pressure(m: &Model) -> Table {
    let rows = m
        .pressure()
        .into_iter()
        .map(|p| {
            let dest = format!("{}>{}", p.dest.local, p.dest.remote);
            let share = p.share();
            Row {
                cells: vec![
                    dest.clone(),
                    p.timewait.to_string(),
                    p.range.map_or("?".into(), |r| r.size().to_string()),
                    share.map_or("?".into(), |s| {
                        format!("{:.0}%{}", s * 100.0, if p.warn() { "!" } else { "" })
                    }),
                ],
                keys: vec![
                    text(&dest),
                    n(p.timewait as f64),
                    n(p.range.map_or(0.0, |r| f64::from(r.size()))),
                    n(share.unwrap_or(0.0)),
                ],
                warn: p.warn(),
            }
        })
        .collect();
    Table {
        id: PaneId::Pressure,
        title: "Pressure (TIME_WAIT per destination)".into(),
        columns: &PRESSURE_COLUMNS,
        rows,
    }
}

const FAILURE_COLUMNS: [Column; 4] = [
    col("WHAT", 9),
    col("DEST/REASON", 16),
    num("COUNT", 5),
    num("/s", 4),
];

fn failures(m: &Model) -> Table {
    let row = |what: &str, which: String, count: u64, per: f64| Row {
        cells: vec![
            what.to_string(),
            which.clone(),
            count.to_string(),
            rate(per),
        ],
        keys: vec![text(what), text(&which), n(count as f64), n(per)],
        warn: false,
    };
    let mut rows: Vec<Row> = m
        .connect_failures()
        .into_iter()
        .map(|(f, _, dest, count, per)| row(f.name(), dest.to_string(), count, per))
        .collect();
    rows.extend(
        m.resets()
            .into_iter()
            .map(|(reason, count, per)| row("reset", reason.to_string(), count, per)),
    );
    Table {
        id: PaneId::Failures,
        title: "Failures".into(),
        columns: &FAILURE_COLUMNS,
        rows,
    }
}

/// Every pane, in screen order, with the filter and sort applied.
pub(crate) fn tables(m: &Model, ui: &Ui) -> Vec<Table> {
    let mut all = vec![
        states(m),
        listeners(m),
        holders(m),
        pressure(m),
        failures(m),
    ];
    for t in &mut all {
        if t.id != PaneId::States {
            t.apply(ui);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_rates_stay_short() {
        assert_eq!(age(42_000_000_000), "42s");
        assert_eq!(age(185_000_000_000), "3m05s");
        assert_eq!(age(7_620_000_000_000), "2h07m");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(0.25), "0.2");
        assert_eq!(rate(123.4), "123");
    }

    #[test]
    fn every_pane_fits_80_columns() {
        for cols in [
            &STATE_COLUMNS[..],
            &LISTENER_COLUMNS,
            &HOLDER_COLUMNS,
            &PRESSURE_COLUMNS,
            &FAILURE_COLUMNS,
        ] {
            let w: u16 = cols.iter().map(|c| c.width + 1).sum::<u16>() - 1;
            assert!(w <= 80, "{w}: {cols:?}");
        }
        // Pressure and Failures share a line.
        let w = |c: &[Column]| c.iter().map(|c| c.width + 1).sum::<u16>() - 1;
        assert_eq!(w(&PRESSURE_COLUMNS), PRESSURE_WIDTH);
        assert!(PRESSURE_WIDTH + 1 + w(&FAILURE_COLUMNS) <= 80);
    }
}
