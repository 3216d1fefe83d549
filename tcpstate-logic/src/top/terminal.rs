//! The terminal while `--top` owns it: raw mode, the alternate screen, a
//! hidden cursor, and keys read on their own thread. Whatever ends the run
//! (`q`, Ctrl-C as a key, SIGINT/SIGTERM through the reader, an error
//! unwinding past it, a panic) puts the terminal back as it was: crossterm
//! keeps the termios it found, [`Screen::close`] restores it and leaves the
//! alternate screen, `Drop` does if nothing else did, and a panic hook does
//! before the panic message is printed.
//!
//! Frames are not written to the terminal directly: ratatui draws into a
//! buffer that goes out with the rest of tcpstate's output (the writer
//! thread), so a stalled terminal never blocks tracing.

use std::{
    cell::RefCell,
    io::{self, Write},
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use crossterm::{
    cursor, event,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{Terminal, backend::CrosstermBackend};

/// Set while the terminal is in raw mode on the alternate screen, so the
/// panic hook restores it only then, and only once.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The bytes that undo what [`Screen::open`] set up, for the panic hook and
/// `Drop` (which write them straight to stdout).
fn restore_now() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let mut out = io::stdout();
        let _ = crossterm::execute!(out, cursor::Show, LeaveAlternateScreen);
        let _ = out.flush();
    }
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_now();
            previous(info);
        }));
    });
}

/// Where ratatui writes: a buffer the view moves into tcpstate's output.
#[derive(Clone, Default)]
struct Pipe(Rc<RefCell<Vec<u8>>>);

impl Write for Pipe {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) struct Screen {
    terminal: Terminal<CrosstermBackend<Pipe>>,
    pipe: Pipe,
    keys: mpsc::Receiver<event::Event>,
    stop: Arc<AtomicBool>,
}

impl Screen {
    /// Takes the terminal: raw mode now, the alternate screen and a
    /// cleared, cursor-less page in `out`.
    pub fn open(out: &mut Vec<u8>) -> io::Result<Screen> {
        install_panic_hook();
        terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let pipe = Pipe::default();
        let mut w = pipe.clone();
        crossterm::queue!(w, EnterAlternateScreen, cursor::Hide)?;
        let mut terminal = Terminal::new(CrosstermBackend::new(pipe.clone()))?;
        terminal.clear()?;
        let (tx, keys) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        std::thread::Builder::new()
            .name("top-keys".into())
            .spawn(move || {
                // Polled with a timeout so the thread ends soon after the
                // screen closes instead of reading a key meant for the shell.
                while !done.load(Ordering::SeqCst) {
                    match event::poll(Duration::from_millis(100)) {
                        Ok(true) => match event::read().map(|e| tx.send(e)) {
                            Ok(Ok(())) => {}
                            _ => break,
                        },
                        Ok(false) => {}
                        Err(_) => break,
                    }
                }
            })?;
        let screen = Screen {
            terminal,
            pipe,
            keys,
            stop,
        };
        screen.take(out);
        Ok(screen)
    }

    fn take(&self, out: &mut Vec<u8>) {
        out.append(&mut self.pipe.0.borrow_mut());
    }

    /// Terminal events read since the last call (keys, resizes).
    pub fn events(&self) -> Vec<event::Event> {
        self.keys.try_iter().collect()
    }

    pub(crate) fn draw(&mut self, out: &mut Vec<u8>, draw: impl FnOnce(&mut ratatui::Frame)) {
        // A failed draw (the size could not be read) skips this frame only.
        let _ = self.terminal.draw(draw);
        self.take(out);
    }

    /// Gives the terminal back: the screen's last bytes and the way back
    /// to the normal screen go out in order after every frame.
    pub fn close(&mut self, out: &mut Vec<u8>) {
        self.stop.store(true, Ordering::SeqCst);
        if ACTIVE.swap(false, Ordering::SeqCst) {
            let _ = terminal::disable_raw_mode();
            let mut w = self.pipe.clone();
            let _ = crossterm::queue!(w, cursor::Show, LeaveAlternateScreen);
            self.take(out);
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        restore_now();
    }
}
