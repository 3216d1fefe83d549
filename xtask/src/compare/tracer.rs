//! tcpstate as compare runs it: `--json --netns` into a file, its stderr collected, stopped
//! with SIGINT.

use std::{
    fs::File,
    io::Read as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use tcpstate_devsupport::Netns;

use crate::util;

pub struct Tracer {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Tracer {
    pub fn start(bin: &Path, ns: &Netns, events: &Path) -> Result<Tracer> {
        let out = File::create(events).with_context(|| format!("creating {}", events.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(["--json", "--no-snapshot", "--ring-size", "64M", "--netns"])
            .arg(ns.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::piped());
        println!("compare: $ {}", util::display(&cmd));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped");
        let sink = stderr.clone();
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("not poisoned")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut t = Tracer {
            child,
            stderr,
            reader: Some(reader),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !t
            .stderr
            .lock()
            .expect("not poisoned")
            .contains("Tracing TCP state changes")
        {
            if let Some(status) = t.child.try_wait()? {
                bail!(
                    "tcpstate exited ({status}) before tracing:\n{}",
                    t.stderr.lock().expect("not poisoned")
                );
            }
            if Instant::now() > deadline {
                bail!("tcpstate not ready within 30 s");
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(t)
    }

    /// SIGINT, wait, and return its exit summary line (events, lost).
    pub fn stop(&mut self) -> Result<String> {
        // SAFETY: kill(2) on the child we started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let status = self.child.wait()?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let stderr = self.stderr.lock().expect("not poisoned").clone();
        if !status.success() {
            bail!("tcpstate exited with {status}:\n{stderr}");
        }
        Ok(stderr
            .lines()
            .filter(|l| {
                l.starts_with("tcpstate: ") && l.contains("events") && !l.contains("warning")
            })
            .map(|l| l.trim_start_matches("tcpstate: "))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
