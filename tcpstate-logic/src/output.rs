//! Writes rendered batches to stdout from a dedicated thread.
//!
//! The reader must never block on stdout: a consumer that stalls (a paused
//! pager, a full pipe) would otherwise freeze the whole loop, including
//! Ctrl-C handling. Instead the reader hands batches over a bounded channel;
//! when the writer is still busy, the reader stops draining the ring buffer,
//! so the kernel drops new events and counts them (shown live and in the exit
//! report) while memory stays bounded.

use std::{
    fs::File,
    io::{ErrorKind, Write},
    mem::ManuallyDrop,
    os::fd::FromRawFd,
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, Instant},
};

/// Batches queued for the writer beyond the one it is writing.
const QUEUED_BATCHES: usize = 2;
const BATCH_CAPACITY: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Handed over (or nothing to write).
    Done,
    /// The writer is still busy with earlier batches: the batch is kept.
    Busy,
    /// The reader of stdout went away (EPIPE).
    Closed,
}

#[derive(Default)]
struct Shared {
    error: Mutex<Option<std::io::Error>>,
}

pub struct Output {
    buf: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    free: Receiver<Vec<u8>>,
    done: Receiver<()>,
    shared: Arc<Shared>,
    /// The last flush found the writer busy.
    busy: bool,
}

/// fd 1 as a File that is never closed (the process owns fd 1).
struct Stdout(ManuallyDrop<File>);

impl Write for Stdout {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn stdout_file() -> Stdout {
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop keeps
    // it from being closed when the writer ends.
    Stdout(ManuallyDrop::new(unsafe { File::from_raw_fd(1) }))
}

impl Output {
    /// Starts the writer thread on stdout (fd 1, unbuffered: batches are
    /// already large).
    pub fn stdout() -> Output {
        Self::spawn(stdout_file())
    }

    fn spawn(mut file: impl Write + Send + 'static) -> Output {
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUED_BATCHES);
        let (free_tx, free) = sync_channel::<Vec<u8>>(QUEUED_BATCHES + 1);
        let (done_tx, done) = sync_channel::<()>(1);
        let shared = Arc::new(Shared::default());
        let sh = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("tcpstate-out".into())
            .spawn(move || {
                for mut batch in rx {
                    if let Err(e) = file.write_all(&batch) {
                        *sh.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        break;
                    }
                    batch.clear();
                    let _ = free_tx.try_send(batch);
                }
                let _ = file.flush();
                let _ = done_tx.send(());
            })
            .expect("spawning the output thread");
        Output {
            buf: Vec::with_capacity(BATCH_CAPACITY),
            tx: Some(tx),
            free,
            done,
            shared,
            busy: false,
        }
    }

    /// True when stdout is a pipe whose reader has gone (`| head` done),
    /// noticed even while there is nothing to write.
    pub fn reader_gone(&self) -> bool {
        let mut p = libc::pollfd {
            fd: 1,
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n == 1 && p.revents & libc::POLLERR != 0
    }

    /// The batch being filled.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// True while the writer could not take the last batch: stop producing
    /// (and retry `flush`) until it can.
    pub fn stalled(&self) -> bool {
        self.busy
    }

    /// The writer's error, if it stopped on one other than EPIPE.
    pub fn error(&self) -> Option<String> {
        let e = self.shared.error.lock().unwrap_or_else(|p| p.into_inner());
        match e.as_ref() {
            Some(e) if e.kind() != ErrorKind::BrokenPipe => Some(e.to_string()),
            _ => None,
        }
    }

    /// Hands the current batch to the writer.
    pub fn flush(&mut self) -> Flush {
        if self.buf.is_empty() {
            return Flush::Done;
        }
        let Some(tx) = &self.tx else {
            return Flush::Closed;
        };
        let next = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH_CAPACITY));
        let batch = std::mem::replace(&mut self.buf, next);
        match tx.try_send(batch) {
            Ok(()) => {
                self.busy = false;
                Flush::Done
            }
            Err(TrySendError::Full(batch)) => {
                // Keep it (and drop the spare buffer we took).
                self.buf = batch;
                self.busy = true;
                Flush::Busy
            }
            Err(TrySendError::Disconnected(_)) => {
                self.tx = None;
                Flush::Closed
            }
        }
    }

    /// Hands over what is left and waits up to `timeout` for it to be
    /// written: `Done`, `Closed` (stdout went away) or `Busy` (still stalled
    /// at the deadline; the rest is abandoned).
    /// After `Closed`, [`Output::error`] says whether stdout went away (EPIPE)
    /// or a write failed (ENOSPC...), which must not pass as a quiet exit.
    pub fn finish(&mut self, timeout: Duration) -> Flush {
        let deadline = Instant::now() + timeout;
        loop {
            match self.flush() {
                Flush::Done => break,
                Flush::Closed => return Flush::Closed,
                Flush::Busy if Instant::now() >= deadline => return Flush::Busy,
                Flush::Busy => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        drop(self.tx.take());
        let left = deadline.saturating_duration_since(Instant::now());
        if self.done.recv_timeout(left).is_err() {
            return Flush::Busy;
        }
        let broken = self
            .shared
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if broken { Flush::Closed } else { Flush::Done }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    /// A writer that blocks until told to go on, then records what it got.
    struct Gate {
        go: Receiver<()>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _ = self.go.recv();
            self.got.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_consumer_makes_flush_busy_instead_of_blocking() {
        let (go_tx, go) = channel();
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut out = Output::spawn(Gate {
            go,
            got: Arc::clone(&got),
        });
        let mut results = Vec::new();
        for i in 0..10u8 {
            out.buf().push(i);
            results.push(out.flush());
        }
        // One batch being written, QUEUED_BATCHES queued, the rest refused
        // (kept in the buffer, never blocking).
        assert!(results.contains(&Flush::Busy), "{results:?}");
        for _ in 0..20 {
            let _ = go_tx.send(());
        }
        assert_eq!(out.finish(Duration::from_secs(5)), Flush::Done);
        assert_eq!(got.lock().unwrap().len(), 10);
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_reported_as_closed() {
        let mut out = Output::spawn(Broken);
        out.buf().extend_from_slice(b"x\n");
        assert_eq!(out.flush(), Flush::Done);
        let mut closed = false;
        for _ in 0..200 {
            out.buf().extend_from_slice(b"y\n");
            if out.flush() == Flush::Closed {
                closed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(closed);
        assert_eq!(out.error(), None, "EPIPE is not an error to report");
    }

    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The header is handed over, the writer fails on it, then nothing more
    /// is written until exit: the failure must still be there at `finish`.
    #[test]
    fn a_write_error_before_an_idle_exit_is_reported_at_finish() {
        let mut out = Output::spawn(Full);
        out.buf().extend_from_slice(b"HEADER\n");
        assert_eq!(out.flush(), Flush::Done);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(out.flush(), Flush::Done, "nothing new to write");
        assert_eq!(out.finish(Duration::from_secs(5)), Flush::Closed);
        let e = out.error().expect("ENOSPC is an error to report");
        assert!(e.contains("No space left"), "{e}");
    }
}
