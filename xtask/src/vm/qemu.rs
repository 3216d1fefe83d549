//! One guest run: QEMU's software emulation (KVM does not work on this machine kind) boots
//! the extracted vmlinux with our initramfs; the command runs in the host's file system
//! (read-only 9p + tmpfs overlay) and its output comes back on a virtconsole (our stdout),
//! apart from the kernel log (a file). A read-write 9p export, the run's directory, carries
//! the stage-2 script in and the exit status out. A timeout kills QEMU, so a hung guest can
//! never hang CI.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::Guest;
use crate::util;

/// Host environment variables handed to the command (the rest of the host's environment
/// stays on the host).
const PASSED_ENV: &[&str] = &[
    "PATH",
    "PYENV_ROOT",
    "LANG",
    "RUST_BACKTRACE",
    "RUSTUP_HOME",
];

/// Put before the host's `$PATH` in the guest: Debian's own binaries first, so `python3` is
/// /usr/bin's and not a pyenv shim (a bash script that starts several processes: 0.5 s per
/// `python3` natively, seconds under TCG, and the tests start many).
const GUEST_PATH: &str = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct Request<'a> {
    pub argv: &'a [String],
    /// Extra environment for the command.
    pub env: &'a [(String, String)],
    /// The command's working directory in the guest (the same path as on the host).
    pub cwd: &'a Path,
    pub timeout: Duration,
    /// Copy the guest's console to our stdout as it comes.
    pub echo: bool,
    /// The run's directory on the host (created empty here).
    pub dir: &'a Path,
    /// Files to put in it before the boot (name, contents): scripts the command runs.
    pub files: &'a [(&'a str, String)],
}

pub struct Outcome {
    /// The command's exit status; `None` if the guest never reported one.
    pub status: Option<i32>,
    /// Guest uptime when init started the command.
    pub boot: Option<Duration>,
    pub wall: Duration,
    pub timed_out: bool,
    /// The kernel's log (serial port); the command's output is beside it in console.txt.
    pub serial: PathBuf,
}

impl Outcome {
    /// One line for a failed run: what happened, with the kernel log's last lines when the
    /// guest itself failed.
    pub fn failure(&self) -> Option<String> {
        match self.status {
            Some(0) => None,
            Some(s) => Some(format!("the command exited with status {s}")),
            None => {
                let why = if self.timed_out {
                    format!("timed out after {}", util::secs(self.wall))
                } else {
                    "the guest stopped without reporting an exit status".into()
                };
                let log = fs::read_to_string(&self.serial).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                Some(format!(
                    "{why}; the kernel log ({}) ends:\n    {}",
                    self.serial.display(),
                    tail.join("\n    ")
                ))
            }
        }
    }
}

pub fn run(guest: &Guest, req: &Request) -> Result<Outcome> {
    let _ = fs::remove_dir_all(req.dir);
    fs::create_dir_all(req.dir).with_context(|| format!("cannot create {}", req.dir.display()))?;
    let dir = req
        .dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", req.dir.display()))?;
    fs::write(dir.join("stage2.sh"), stage2(req))?;
    for (name, contents) in req.files {
        fs::write(dir.join(name), contents)?;
    }
    let serial = dir.join("kernel.log");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-m", "2G", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-monitor", "none"])
        .arg("-kernel")
        .arg(&guest.vmlinux)
        .arg("-initrd")
        .arg(&guest.initramfs)
        .arg("-append")
        .arg(format!(
            // mitigations=off: emulated speculation barriers only cost time here.
            "console=ttyS0 panic=-1 loglevel=5 mitigations=off vm_results={} vm_modules={}",
            dir.display(),
            guest.kernel.modules().canonicalize()?.display()
        ))
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-chardev", "stdio,id=con,signal=off"])
        .args([
            "-device",
            "virtio-serial-pci",
            "-device",
            "virtconsole,chardev=con",
        ])
        .args([
            "-fsdev",
            "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        ])
        .args(["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"])
        .arg("-fsdev")
        .arg(format!(
            "local,id=results,path={},security_model=none",
            dir.display()
        ))
        .args(["-device", "virtio-9p-pci,fsdev=results,mount_tag=results"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "cannot start `{}` (install qemu-system-x86)",
            util::display(&cmd)
        )
    })?;
    let console = Arc::new(Mutex::new(String::new()));
    let reader = {
        let stdout = child.stdout.take().context("no stdout")?;
        let console = console.clone();
        let echo = req.echo;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).replace('\r', "");
                if echo {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
                if let Ok(mut c) = console.lock() {
                    c.push_str(&line);
                    c.push('\n');
                }
            }
        })
    };
    let stderr = child.stderr.take().context("no stderr")?;
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let mut timed_out = false;
    let exit = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > req.timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = start.elapsed();
    let _ = reader.join();
    let qemu_err = stderr.join().unwrap_or_default();
    let log = fs::read_to_string(&serial).unwrap_or_default();
    let status = fs::read_to_string(dir.join("exit-status"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .or_else(|| marker(&log, "VM-EXIT-STATUS=").and_then(|s| s.parse().ok()));
    if status.is_none() && !timed_out && !exit.success() {
        bail!("qemu failed ({exit}): {}", qemu_err.trim());
    }
    let boot = marker(&log, "vm-init: init reached after ")
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    let console = console.lock().map(|c| c.clone()).unwrap_or_default();
    fs::write(dir.join("console.txt"), &console)?;
    Ok(Outcome {
        status,
        boot,
        wall,
        timed_out,
        serial,
    })
}

/// The text after the last `prefix` in `log`, to the end of its line.
fn marker<'a>(log: &'a str, prefix: &str) -> Option<&'a str> {
    let at = log.rfind(prefix)? + prefix.len();
    log[at..].lines().next().map(str::trim)
}

/// The script init runs in the chroot (the host's /bin/sh): environment, directory, the
/// command, and its exit status written to the results export.
fn stage2(req: &Request) -> String {
    let mut s = String::from("# written by cargo xtask vm-run / vm-test\nexport HOME=/root\n");
    for &name in PASSED_ENV {
        if let Some(v) = std::env::var_os(name) {
            let mut v = v.to_string_lossy().into_owned();
            if name == "PATH" {
                v = format!("{GUEST_PATH}:{v}");
            }
            s.push_str(&format!("export {name}={}\n", quote(&v)));
        }
    }
    for (k, v) in req.env {
        s.push_str(&format!("export {k}={}\n", quote(v)));
    }
    s.push_str(&format!(
        "cd {} || exit 125\n",
        quote(&req.cwd.to_string_lossy())
    ));
    let argv: Vec<String> = req.argv.iter().map(|a| quote(a)).collect();
    s.push_str(&argv.join(" "));
    s.push_str("\nstatus=$?\necho $status > \"$vm_results/exit-status\"\nexit $status\n");
    s
}

/// Single-quotes for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
