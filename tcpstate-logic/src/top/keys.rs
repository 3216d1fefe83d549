//! What the keys of `--top` do, as a state machine without a terminal:
//! `q` (or Ctrl-C) quits, `p` pauses the screen (counting goes on), `s`
//! cycles the sort column of the pane in focus, `/` types a filter (Enter
//! applies it, Esc clears it), Tab and Shift-Tab move the focus between
//! panes, `?` shows the help.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaneId {
    States,
    Listeners,
    Holders,
    Pressure,
    Failures,
}

/// The panes in screen order (the order Tab follows).
pub(crate) const PANES: [PaneId; 5] = [
    PaneId::States,
    PaneId::Listeners,
    PaneId::Holders,
    PaneId::Pressure,
    PaneId::Failures,
];

/// A key as `--top` tells keys apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Char(char),
    Tab,
    BackTab,
    Enter,
    Esc,
    Backspace,
    CtrlC,
}

impl Key {
    /// A terminal key press, or `None` for what `--top` ignores (releases,
    /// other keys).
    pub(crate) fn from_crossterm(e: &crossterm::event::KeyEvent) -> Option<Key> {
        use crossterm::event::{KeyCode, KeyEventKind, KeyModifiers};
        if e.kind == KeyEventKind::Release {
            return None;
        }
        Some(match e.code {
            KeyCode::Char('c') if e.modifiers.contains(KeyModifiers::CONTROL) => Key::CtrlC,
            KeyCode::Char(c) => Key::Char(c),
            KeyCode::Tab => Key::Tab,
            KeyCode::BackTab => Key::BackTab,
            KeyCode::Enter => Key::Enter,
            KeyCode::Esc => Key::Esc,
            KeyCode::Backspace => Key::Backspace,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Quit,
    /// Something the screen shows changed.
    Redraw,
    None,
}

/// Most characters a filter holds.
const MAX_FILTER: usize = 64;

#[derive(Debug, Clone, Default)]
pub(crate) struct Ui {
    focus: usize,
    /// Per pane: how many times `s` was pressed (0: the pane's own order).
    sort: [usize; PANES.len()],
    pub paused: bool,
    pub help: bool,
    filter: Option<String>,
    /// The filter being typed after `/`.
    editing: Option<String>,
}

impl Ui {
    pub(crate) fn focus(&self) -> PaneId {
        PANES[self.focus]
    }

    pub fn filter(&self) -> Option<&str> {
        self.filter.as_deref()
    }

    /// The filter being typed, if `/` was pressed.
    pub(crate) fn editing(&self) -> Option<&str> {
        self.editing.as_deref()
    }

    /// The column pane `id` (of `columns` columns) is sorted by, or `None`
    /// for its own order.
    pub(crate) fn sort_column(&self, id: PaneId, columns: usize) -> Option<usize> {
        let i = PANES.iter().position(|p| *p == id)?;
        match self.sort[i] % (columns + 1) {
            0 => None,
            c => Some(c - 1),
        }
    }

    pub(crate) fn on_key(&mut self, key: Key) -> Action {
        if key == Key::CtrlC {
            return Action::Quit;
        }
        if let Some(text) = &mut self.editing {
            match key {
                Key::Enter => {
                    let t = self.editing.take().unwrap_or_default();
                    self.filter = (!t.is_empty()).then_some(t);
                }
                Key::Esc => {
                    self.editing = None;
                    self.filter = None;
                }
                Key::Backspace => {
                    text.pop();
                }
                Key::Char(c) if !c.is_control() && text.chars().count() < MAX_FILTER => {
                    text.push(c)
                }
                _ => return Action::None,
            }
            return Action::Redraw;
        }
        match key {
            Key::Char('q') => return Action::Quit,
            Key::Char('p') => self.paused = !self.paused,
            Key::Char('s') => self.sort[self.focus] += 1,
            Key::Char('/') => self.editing = Some(String::new()),
            Key::Char('?') => self.help = !self.help,
            Key::Tab => self.focus = (self.focus + 1) % PANES.len(),
            Key::BackTab => self.focus = (self.focus + PANES.len() - 1) % PANES.len(),
            Key::Esc if self.help => self.help = false,
            Key::Esc => self.filter = None,
            _ => return Action::None,
        }
        Action::Redraw
    }
}

/// The help the `?` key shows.
pub(crate) const HELP: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit (the exit report follows on stderr)"),
    ("p", "pause the screen; counting goes on"),
    ("s", "sort the pane in focus by its next column"),
    ("/", "filter rows by text; Enter applies, Esc clears"),
    ("Tab", "move the focus to the next pane (Shift-Tab: back)"),
    ("?", "this help (Esc or ? closes it)"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_move_focus_cycle_sort_and_edit_the_filter() {
        let mut ui = Ui::default();
        assert_eq!(ui.focus(), PaneId::States);
        assert_eq!(ui.on_key(Key::Tab), Action::Redraw);
        assert_eq!(ui.focus(), PaneId::Listeners);
        assert_eq!(ui.sort_column(PaneId::Listeners, 3), None);
        ui.on_key(Key::Char('s'));
        assert_eq!(ui.sort_column(PaneId::Listeners, 3), Some(0));
        ui.on_key(Key::Char('s'));
        ui.on_key(Key::Char('s'));
        assert_eq!(ui.sort_column(PaneId::Listeners, 3), Some(2));
        ui.on_key(Key::Char('s'));
        assert_eq!(
            ui.sort_column(PaneId::Listeners, 3),
            None,
            "back to its own order"
        );
        assert_eq!(
            ui.sort_column(PaneId::Holders, 3),
            None,
            "other panes untouched"
        );
        ui.on_key(Key::BackTab);
        ui.on_key(Key::BackTab);
        assert_eq!(ui.focus(), PaneId::Failures);

        // Typing a filter: q is text then, not quit.
        ui.on_key(Key::Char('/'));
        for c in "q10".chars() {
            assert_eq!(ui.on_key(Key::Char(c)), Action::Redraw);
        }
        ui.on_key(Key::Backspace);
        assert_eq!(ui.editing(), Some("q1"));
        assert_eq!(ui.filter(), None);
        ui.on_key(Key::Enter);
        assert_eq!((ui.filter(), ui.editing()), (Some("q1"), None));
        ui.on_key(Key::Esc);
        assert_eq!(ui.filter(), None);

        ui.on_key(Key::Char('p'));
        assert!(ui.paused);
        ui.on_key(Key::Char('?'));
        assert!(ui.help);
        ui.on_key(Key::Esc);
        assert!(!ui.help);
        assert_eq!(ui.on_key(Key::Char('x')), Action::None);
        assert_eq!(ui.on_key(Key::Char('q')), Action::Quit);
        ui.on_key(Key::Char('/'));
        assert_eq!(
            ui.on_key(Key::CtrlC),
            Action::Quit,
            "Ctrl-C quits even while typing"
        );
    }
}
