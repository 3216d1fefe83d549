//! Private network namespaces for the tests: [`Netns`], a fresh namespace
//! with only `lo` up, removed when its last holder goes.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use anyhow::{Context, Result, bail};

/// Runs a command to completion; fails with its output if it does not succeed.
fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {desc}"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .with_context(|| format!("writing to {desc}"))?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{desc} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A private network namespace `tcpst-<pid>-<n>` with `lo` up. Clones share
/// it; it is deleted when the last clone goes, and the [`Peer`]s and
/// [`Tracer`]s started in it hold one, so it outlives everything in it.
#[derive(Clone)]
pub struct Netns {
    inner: Arc<NetnsName>,
}

struct NetnsName {
    name: String,
}

static NETNS_COUNTER: AtomicUsize = AtomicUsize::new(0);
static STALE_CLEANUP: Once = Once::new();

impl Netns {
    pub fn new() -> Netns {
        STALE_CLEANUP.call_once(remove_stale_namespaces);
        let n = NETNS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("tcpst-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]), None)
            .unwrap_or_else(|e| panic!("cannot create network namespace {name}: {e:#}"));
        let ns = Netns {
            inner: Arc::new(NetnsName { name }),
        };
        run(
            Command::new("ip").args(["-n", ns.name(), "link", "set", "lo", "up"]),
            None,
        )
        .unwrap_or_else(|e| panic!("cannot bring lo up in {}: {e:#}", ns.name()));
        ns
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `/run/netns/<name>`, what `tcpstate --netns` takes.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(self.name())
    }

    /// The namespace's inode number, what tcpstate reports as `netns`.
    pub fn inode(&self) -> u64 {
        std::fs::metadata(self.path())
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path().display()))
            .ino()
    }

    /// A command that runs `program args...` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name()]).arg(program);
        cmd
    }

    /// Runs `args` inside the namespace to completion, returns its stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut cmd = self.command(args[0]);
        cmd.args(&args[1..]);
        run(&mut cmd, None).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Loads an nftables script (`nft -f -`) in the namespace.
    pub fn nft(&self, script: &str) {
        let mut cmd = self.command("nft");
        cmd.args(["-f", "-"]);
        run(&mut cmd, Some(script))
            .unwrap_or_else(|e| panic!("nft script failed: {e:#}\n{script}"));
    }

    /// `ss -tanH` inside the namespace: the sockets as netstat would show them.
    pub fn ss(&self) -> String {
        self.exec(&["ss", "-tanH"])
    }

    /// Drops every FIN matching `selector` (`tcp sport 10050`, ...) on input,
    /// until [`Netns::lift_fin_gate`].
    pub fn drop_fins(&self, selector: &str) {
        self.nft(&format!(
            "table inet tcpst_gate {{
                chain input {{
                    type filter hook input priority 0; policy accept;
                    {selector} tcp flags & fin == fin counter drop
                }}
            }}"
        ));
    }

    /// Lets FINs through again.
    pub fn lift_fin_gate(&self) {
        self.nft("delete table inet tcpst_gate");
    }

    /// Drops the pure ACKs (and data segments) matching `selector` on input
    /// (`tcp dport 10050`, ...): all of them, or with `first` only the first
    /// that many (a client's final handshake ACK and its repetitions).
    pub fn drop_acks(&self, selector: &str, first: Option<u32>) {
        let limit = first.map_or(String::new(), |n| {
            format!("limit rate 1/hour burst {n} packets ")
        });
        self.nft(&format!(
            "table inet tcpst_ack {{
                chain input {{
                    type filter hook input priority 0; policy accept;
                    {selector} tcp flags & (syn|ack|fin|rst) == ack {limit}counter drop
                }}
            }}"
        ));
    }

    /// Sets a per-namespace sysctl, e.g. `net.ipv4.tcp_fin_timeout=1`.
    pub fn sysctl(&self, setting: &str) {
        self.exec(&["sysctl", "-qw", setting]);
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetnsName {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args(["netns", "del", &self.name]), None);
    }
}

/// Deletes `tcpst-<pid>-<n>` namespaces left behind by test runs that died.
fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("tcpst-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(Command::new("ip").args(["netns", "del", &name]), None);
        }
    }
}
