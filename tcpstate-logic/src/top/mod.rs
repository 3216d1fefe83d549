//! `--top`: a live view of the host's TCP states, its listeners' health and
//! who holds what, redrawn every `--interval` (1 s), in place of the rows.
//! A view like `--lifecycle`: it gets the rows every printer gets (filters
//! and container selection applied) through [`Render`], and the reader's
//! loop calls [`Render::live`] so it can sample, redraw and read keys.
//!
//! The parts, one job each:
//! - [`model`] (with [`rate`]): counting, ranking, pressure, drops; pure;
//! - [`sample`]: the sock_diag dumps, listener owners and port ranges;
//! - [`panes`]: the model as tables, sorted and filtered; [`keys`]: what
//!   each key does;
//! - printers: [`screen`] (ratatui, in [`terminal`]'s raw mode) when
//!   stdout is a terminal, [`plain`] (a text snapshot per interval) when not.

pub mod keys;
pub mod model;
pub mod panes;
pub mod plain;
pub mod rate;
pub mod sample;
pub mod screen;
pub mod terminal;

use std::time::Duration;

use crate::{
    clock::boot_ns,
    container::{self, select::Select},
    enrich::Filter,
    event::{Task, TcpEvent},
    render::{Flow, Live, Render},
};

/// What `--top` was asked for (from `settings`).
#[derive(Debug, Clone)]
pub struct Options {
    /// How often the view is sampled and redrawn, or printed.
    pub interval: Duration,
    /// `--netns` as given (resolved by the probe before the view starts).
    pub netns: Option<String>,
    /// The port and family filters, for what the dumps find.
    pub filter: Filter,
    /// `--container`/`--cgroup`, for the listeners the dumps find.
    pub select: Select,
}

enum Printer {
    /// stdout is a terminal: the full screen, opened at the first pass of
    /// the loop (after the start-up messages), `None` until then.
    Screen(Option<terminal::Screen>),
    Plain,
}

pub struct Top {
    model: model::Model,
    ui: keys::Ui,
    sampler: Option<sample::Sampler>,
    opts: Options,
    attributor: Option<container::Shared>,
    printer: Printer,
    colour: bool,
    next_ns: u64,
    started_ns: u64,
    /// The panes as last computed.
    tables: Vec<panes::Table>,
    losses: String,
    dirty: bool,
}

impl Top {
    /// `terminal`: stdout is one; `colour`: `--color`/`NO_COLOR` allow it.
    pub fn new(
        opts: Options,
        terminal: bool,
        colour: bool,
        attributor: Option<container::Shared>,
    ) -> Self {
        let now = boot_ns();
        Top {
            model: model::Model::new(now),
            ui: keys::Ui::default(),
            sampler: None,
            opts,
            attributor,
            printer: if terminal {
                Printer::Screen(None)
            } else {
                Printer::Plain
            },
            colour,
            next_ns: 0,
            started_ns: now,
            tables: Vec::new(),
            losses: String::new(),
            dirty: true,
        }
    }

    fn sample(&mut self, live: &Live<'_>) {
        let sampler = self.sampler.get_or_insert_with(|| {
            sample::Sampler::for_netns(
                self.opts.netns.as_deref(),
                self.opts.filter.clone(),
                !self.opts.select.is_active(),
            )
        });
        let (attributor, select) = (&self.attributor, &self.opts.select);
        let s = sampler.sample(&mut |id, owner| attribute(attributor, select, id, owner));
        self.model.sampled(s);
        self.model.tick(boot_ns());
        self.losses = losses(live, &self.model, sampler);
    }

    fn head(&self, date: bool) -> String {
        let now = chrono::Local::now();
        let clock = if date {
            now.format("%Y-%m-%d %H:%M:%S")
        } else {
            now.format("%H:%M:%S")
        };
        let up = panes::age(boot_ns().saturating_sub(self.started_ns));
        let mut h = format!("tcpstate --top  {clock}  up {up}");
        if self.ui.paused {
            h.push_str("  PAUSED (p resumes)");
        }
        if let Some(f) = self.ui.filter() {
            h.push_str(&format!("  filter /{f}"));
        }
        if !date {
            h.push_str("  ? help  q quit");
        }
        h
    }

    /// One pass of the reader's loop: keys, then a new sample when due,
    /// then a redraw when something changed.
    fn pass(&mut self, printer: &mut Printer, live: &Live<'_>, out: &mut Vec<u8>) -> Flow {
        let screen = match printer {
            Printer::Screen(Some(s)) => Some(s),
            _ => None,
        };
        let flow = screen.as_ref().map_or(Flow::Go, |s| self.on_keys(s));
        let now = boot_ns();
        if now >= self.next_ns {
            self.next_ns = now + self.opts.interval.as_nanos() as u64;
            self.sample(live);
            if screen.is_none() {
                self.tables = panes::tables(&self.model, &self.ui);
                plain::write(out, &self.head(true), &self.tables, &self.losses);
            } else {
                // Paused, the screen stays as it was; counting goes on.
                self.dirty |= !self.ui.paused;
            }
        }
        if let Some(s) = screen
            && self.dirty
        {
            // A key re-sorts or re-filters what is counted now, even while
            // paused.
            self.tables = panes::tables(&self.model, &self.ui);
            let head = self.head(false);
            let view = screen::View {
                head: &head,
                tables: &self.tables,
                losses: &self.losses,
                ui: &self.ui,
                colour: self.colour,
            };
            s.draw(out, |f| view.draw(f));
            self.dirty = false;
        }
        flow
    }

    fn on_keys(&mut self, screen: &terminal::Screen) -> Flow {
        for e in screen.events() {
            match e {
                crossterm::event::Event::Key(k) => {
                    let Some(key) = keys::Key::from_crossterm(&k) else {
                        continue;
                    };
                    match self.ui.on_key(key) {
                        keys::Action::Quit => return Flow::Quit,
                        keys::Action::Redraw => self.dirty = true,
                        keys::Action::None => {}
                    }
                }
                crossterm::event::Event::Resize(..) => self.dirty = true,
                _ => {}
            }
        }
        Flow::Go
    }
}

/// Whether a socket (its kernel cgroup id, 0 if unknown, and its owner)
/// passes `--container`/`--cgroup`, and the short ID of its container (what
/// [`sample::Sampler::sample`] asks).
pub fn attribute(
    attributor: &Option<container::Shared>,
    select: &Select,
    cgroup_id: u64,
    owner: Option<&Task>,
) -> (bool, Option<String>) {
    let a = attributor
        .as_ref()
        .and_then(|a| a.borrow_mut().of_socket(cgroup_id, owner));
    (
        select.matches(a.as_deref()),
        a.and_then(|a| a.short_id().map(str::to_string)),
    )
}

/// The losses line, with the exit report's counts.
fn losses(live: &Live<'_>, m: &model::Model, s: &sample::Sampler) -> String {
    let k = live.kernel;
    let mut l = format!(
        "events {}  lost {} (ring buffer full {}, skipped by the kernel {})",
        live.report.events,
        k.lost(),
        k.ringbuf_full,
        k.recursion_misses
    );
    let untracked = live.trackers.untracked + m.untracked;
    if untracked > 0 {
        l.push_str(&format!("  untracked {untracked}"));
    }
    let errors = live.trackers.lookup_errors + s.errors;
    if errors > 0 {
        l.push_str(&format!("  dump errors {errors}"));
    }
    if live.report.decode_errors > 0 {
        l.push_str(&format!("  malformed {}", live.report.decode_errors));
    }
    l
}

impl Render for Top {
    fn header(&self, _out: &mut Vec<u8>) {}

    fn event(&mut self, ev: &TcpEvent, _out: &mut Vec<u8>) {
        let (_, container) = attribute(
            &self.attributor,
            &self.opts.select,
            ev.cgroup_id,
            ev.owner.as_ref(),
        );
        self.model.event(ev, container.as_deref());
    }

    fn live(&mut self, live: &Live<'_>, out: &mut Vec<u8>) -> Flow {
        if let Printer::Screen(None) = self.printer {
            self.printer = match terminal::Screen::open(out) {
                Ok(s) => Printer::Screen(Some(s)),
                Err(e) => {
                    eprintln!(
                        "tcpstate: --top: cannot take the terminal ({e}); printing snapshots"
                    );
                    Printer::Plain
                }
            };
        }
        let mut printer = std::mem::replace(&mut self.printer, Printer::Plain);
        let flow = self.pass(&mut printer, live, out);
        self.printer = printer;
        flow
    }

    fn finish(&mut self, out: &mut Vec<u8>, notes: &mut Vec<String>) {
        match &mut self.printer {
            Printer::Screen(Some(s)) => s.close(out),
            _ => {
                // The last snapshot: what stood when tracing stopped.
                self.tables = panes::tables(&self.model, &self.ui);
                plain::write(out, &self.head(true), &self.tables, &self.losses);
            }
        }
        if self.model.untracked > 0 {
            notes.push(format!(
                "--top: {} sockets, destinations or reasons not counted (tables full at {})",
                self.model.untracked,
                model::MAX_KEYS
            ));
        }
    }

    fn owns_terminal(&self) -> bool {
        matches!(self.printer, Printer::Screen(_))
    }
}
