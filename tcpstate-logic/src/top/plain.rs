//! The plain-text snapshot `--top` prints each `--interval` when stdout is
//! not a terminal (`tcpstate --top --interval 5s > file`): the same panes as
//! the screen, every row, columns widened to fit, no escape sequences.

use super::panes::Table;

/// Appends one snapshot: `head`, each pane, then `losses`, and a blank line.
pub fn write(out: &mut Vec<u8>, head: &str, tables: &[Table], losses: &str) {
    let mut s = String::new();
    s.push_str(head);
    s.push('\n');
    for t in tables {
        s.push_str(&format!("[{}]\n", t.title));
        let widths: Vec<usize> = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                t.rows
                    .iter()
                    .map(|r| r.cells[i].chars().count())
                    .chain([c.width as usize, c.name.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |s: &mut String, cells: &mut dyn Iterator<Item = &str>| {
            let mut l = String::new();
            for ((c, w), text) in t.columns.iter().zip(&widths).zip(cells) {
                if !l.is_empty() {
                    l.push(' ');
                }
                if c.right {
                    l.push_str(&format!("{text:>w$}"));
                } else {
                    l.push_str(&format!("{text:<w$}"));
                }
            }
            s.push_str(l.trim_end());
            s.push('\n');
        };
        line(&mut s, &mut t.columns.iter().map(|c| c.name));
        for r in &t.rows {
            line(&mut s, &mut r.cells.iter().map(String::as_str));
        }
        if t.rows.is_empty() {
            s.push_str("(none)\n");
        }
    }
    s.push_str(losses);
    s.push_str("\n\n");
    out.extend_from_slice(s.as_bytes());
}
