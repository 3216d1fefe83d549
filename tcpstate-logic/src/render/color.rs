//! Colour by TCP state for the text formats. Colour is on only when stdout is
//! a terminal that supports it and the user did not opt out (`NO_COLOR`,
//! `CLICOLOR=0`), or with `--color always`. JSON and CSV are never coloured.

use anstyle::{AnsiColor, Style};
use clap::ValueEnum;

use super::buf;
use crate::event::TcpState;

/// `--color WHEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and neither NO_COLOR nor CLICOLOR=0 is set.
    #[default]
    Auto,
    Always,
    Never,
}

/// What the environment says about colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColorEnv {
    pub no_color: bool,
    pub clicolor_force: bool,
    pub clicolor: Option<bool>,
    pub term_supports_color: bool,
}

impl ColorEnv {
    pub(crate) fn from_process() -> Self {
        ColorEnv {
            no_color: anstyle_query::no_color(),
            clicolor_force: anstyle_query::clicolor_force(),
            clicolor: anstyle_query::clicolor(),
            term_supports_color: anstyle_query::term_supports_color(),
        }
    }
}

/// Resolves `--color` against the environment, as anstream does: NO_COLOR
/// wins, then CLICOLOR_FORCE, then CLICOLOR=0, then "is stdout a colour
/// terminal".
pub fn enabled(choice: ColorChoice, stdout_is_terminal: bool, env: ColorEnv) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            if env.no_color {
                false
            } else if env.clicolor_force {
                true
            } else if env.clicolor == Some(false) {
                false
            } else {
                stdout_is_terminal && env.term_supports_color
            }
        }
    }
}

/// The style of a state: opening states cyan, ESTABLISHED green, LISTEN blue,
/// the active close yellow, CLOSE_WAIT (where leaks sit) magenta, CLOSE red.
pub(crate) fn style_of(st: TcpState) -> Style {
    let c = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
    match st {
        TcpState::SynSent | TcpState::SynRecv | TcpState::NewSynRecv => c(AnsiColor::Cyan),
        TcpState::Established => c(AnsiColor::Green).bold(),
        TcpState::Listen => c(AnsiColor::Blue),
        TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing | TcpState::TimeWait => {
            c(AnsiColor::Yellow)
        }
        TcpState::CloseWait | TcpState::LastAck => c(AnsiColor::Magenta),
        TcpState::Close => c(AnsiColor::Red),
        TcpState::Unknown(_) => Style::new().underline(),
    }
}

/// Index of a state in [`Palette`]'s table.
fn index(st: TcpState) -> usize {
    TcpState::ALL.iter().position(|s| *s == st).unwrap_or(12)
}

/// Escape sequences, rendered once. A disabled palette writes none.
#[derive(Debug, Clone)]
pub struct Palette {
    on: bool,
    states: Vec<(String, String)>,
    dim: (String, String),
}

impl Palette {
    pub fn new(on: bool) -> Self {
        let render = |s: Style| {
            if on {
                (s.render().to_string(), s.render_reset().to_string())
            } else {
                (String::new(), String::new())
            }
        };
        let mut states: Vec<_> = TcpState::ALL
            .iter()
            .map(|st| render(style_of(*st)))
            .collect();
        states.push(render(style_of(TcpState::Unknown(0))));
        Palette {
            on,
            states,
            dim: render(Style::new().dimmed()),
        }
    }

    /// Appends a state's name in its colour, padded to `width` columns (the
    /// padding is outside the escape sequences).
    #[inline]
    pub fn state(&self, out: &mut Vec<u8>, st: TcpState, width: usize) {
        let start = out.len();
        if self.on {
            let (on, off) = &self.states[index(st)];
            out.extend_from_slice(on.as_bytes());
            let name_start = out.len();
            buf::state(out, st);
            let visible = out.len() - name_start;
            out.extend_from_slice(off.as_bytes());
            if visible < width {
                out.resize(out.len() + (width - visible), b' ');
            }
        } else {
            buf::state(out, st);
            buf::pad_from(out, start, width);
        }
    }

    /// Starts and ends dimmed text (notes, markers).
    pub(crate) fn dim(&self) -> (&str, &str) {
        (&self.dim.0, &self.dim.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_writes_plain_padded_names() {
        let mut out = Vec::new();
        Palette::new(false).state(&mut out, TcpState::Close, 7);
        assert_eq!(out, b"CLOSE  ");
    }

    #[test]
    fn on_wraps_the_name_and_pads_outside() {
        let mut out = Vec::new();
        Palette::new(true).state(&mut out, TcpState::Established, 13);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\x1b[1m\x1b[32mESTABLISHED\x1b[0m  "
        );
    }

    #[test]
    fn explicit_choices_ignore_the_terminal_and_environment() {
        let env = ColorEnv {
            no_color: true,
            clicolor_force: false,
            clicolor: None,
            term_supports_color: true,
        };
        assert!(enabled(ColorChoice::Always, false, env));
        assert!(!enabled(ColorChoice::Never, true, env));
    }

    #[test]
    fn auto_follows_terminal_and_environment() {
        let tty = ColorEnv {
            no_color: false,
            clicolor_force: false,
            clicolor: None,
            term_supports_color: true,
        };
        assert!(enabled(ColorChoice::Auto, true, tty));
        assert!(!enabled(ColorChoice::Auto, false, tty), "piped");
        let no_color = ColorEnv {
            no_color: true,
            ..tty
        };
        assert!(!enabled(ColorChoice::Auto, true, no_color), "NO_COLOR");
        let dumb = ColorEnv {
            term_supports_color: false,
            ..tty
        };
        assert!(!enabled(ColorChoice::Auto, true, dumb), "TERM=dumb");
        let clicolor0 = ColorEnv {
            clicolor: Some(false),
            ..tty
        };
        assert!(!enabled(ColorChoice::Auto, true, clicolor0), "CLICOLOR=0");
        let forced = ColorEnv {
            clicolor_force: true,
            ..tty
        };
        assert!(enabled(ColorChoice::Auto, false, forced), "CLICOLOR_FORCE");
    }
}
