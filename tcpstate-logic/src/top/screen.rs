//! The full screen of `--top`, drawn with ratatui: a head line, the panes
//! (States; Listeners; Holders; Pressure beside Failures) and a line of
//! losses. It only lays out what [`super::panes`] computed; at 80x24 every
//! pane keeps its column headings and a few rows, and a larger terminal
//! gives the lists more rows.

use ratatui::{
    Frame,
    layout::{Alignment, Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table},
};

use super::{
    keys::{HELP, PaneId, Ui},
    panes,
};

/// What one frame shows.
pub(crate) struct View<'a> {
    pub head: &'a str,
    pub tables: &'a [panes::Table],
    pub losses: &'a str,
    pub ui: &'a Ui,
    /// Colours (`--color`, `NO_COLOR`); without them, warnings are bold.
    pub colour: bool,
}

impl View<'_> {
    fn warn(&self) -> Style {
        if self.colour {
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        }
    }

    fn title(&self, t: &panes::Table) -> Span<'static> {
        let focused = self.ui.focus() == t.id;
        let style = if focused {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        };
        Span::styled(format!(" {} ", t.title), style)
    }

    fn table(&self, f: &mut Frame, area: Rect, t: &panes::Table) {
        let cell = |text: &str, right: bool| {
            let line = Line::from(text.to_string());
            Cell::from(if right {
                line.alignment(Alignment::Right)
            } else {
                line
            })
        };
        let header = Row::new(t.columns.iter().map(|c| cell(c.name, c.right)))
            .style(Style::new().add_modifier(Modifier::UNDERLINED));
        let rows = t.rows.iter().map(|r| {
            let row = Row::new(
                r.cells
                    .iter()
                    .zip(t.columns)
                    .map(|(text, c)| cell(text, c.right)),
            );
            if r.warn { row.style(self.warn()) } else { row }
        });
        // The last text column (owner, destination, reason) takes what a
        // wider terminal adds.
        let grow = t
            .columns
            .iter()
            .rposition(|c| !c.right && !c.name.is_empty());
        let widths = t.columns.iter().enumerate().map(|(i, c)| {
            if Some(i) == grow {
                Constraint::Min(c.width)
            } else {
                Constraint::Length(c.width)
            }
        });
        let table = Table::new(rows, widths)
            .header(header)
            .column_spacing(1)
            .block(Block::new().borders(Borders::TOP).title(self.title(t)));
        f.render_widget(table, area);
        // Rows that did not fit: said, so nothing is silently cut.
        let shown = area.height.saturating_sub(2) as usize;
        if t.rows.len() > shown && area.height > 0 {
            let more = format!(" +{} more ", t.rows.len() - shown);
            let w = more.len() as u16;
            if area.width > w {
                let at = Rect::new(area.x + area.width - w, area.y, w, 1);
                f.render_widget(Paragraph::new(more), at);
            }
        }
    }

    pub(crate) fn draw(&self, f: &mut Frame) {
        let [head, states, lists, foot] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(5),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(f.area());
        let [listeners, holders, bottom] = Layout::vertical([
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Fill(1),
        ])
        .areas(lists);
        let [pressure, failures] = Layout::horizontal([
            Constraint::Length(panes::PRESSURE_WIDTH),
            Constraint::Fill(1),
        ])
        .spacing(1)
        .areas(bottom);

        f.render_widget(
            Paragraph::new(self.head.to_string()).style(Style::new().add_modifier(Modifier::BOLD)),
            head,
        );
        for t in self.tables {
            let area = match t.id {
                PaneId::States => states,
                PaneId::Listeners => listeners,
                PaneId::Holders => holders,
                PaneId::Pressure => pressure,
                PaneId::Failures => failures,
            };
            self.table(f, area, t);
        }
        let foot_text = match self.ui.editing() {
            Some(text) => format!("filter: /{text}_   (Enter applies, Esc clears)"),
            None => self.losses.to_string(),
        };
        f.render_widget(Paragraph::new(foot_text), foot);
        if self.ui.help {
            self.help(f);
        }
    }

    fn help(&self, f: &mut Frame) {
        let area = f.area();
        let (w, h) = (64.min(area.width), (HELP.len() as u16 + 2).min(area.height));
        let at = Rect::new(
            area.x + (area.width - w) / 2,
            area.y + (area.height - h) / 2,
            w,
            h,
        );
        let lines: Vec<Line> = HELP
            .iter()
            .map(|(k, what)| Line::from(format!(" {k:<10} {what}")))
            .collect();
        f.render_widget(Clear, at);
        f.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" tcpstate --top: keys ")),
            at,
        );
    }
}
