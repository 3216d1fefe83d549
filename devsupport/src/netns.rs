//! Private network namespaces made with iproute2 (`ip netns add`, so they are named and
//! visible at `/run/netns/<name>`, where `tcpstate --netns` and `ss -N` find them), with `lo`
//! up and nothing else: loopback traffic inside one reaches nothing outside, and nothing from
//! outside shows in it.
//!
//! A [`Netns`] is a shared handle: clones (held by the processes, threads and tracers started
//! in it) keep the namespace, and the last one to go deletes it.

use std::{
    collections::BTreeSet,
    ffi::OsStr,
    fs::{self, File},
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd},
        unix::{fs::MetadataExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
};

use anyhow::{Context as _, Result};

use crate::cmd;

/// Where iproute2 keeps its named namespaces.
pub const RUN_NETNS: &str = "/run/netns";

/// A named network namespace with `lo` up, deleted when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Netns {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    /// Held open so [`Netns::fd`] can enter it (threads, `pre_exec`) without a path lookup.
    file: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

/// Deletes the namespace `name`, quietly (it may not exist).
fn delete(name: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static CLEANED_PREFIXES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

impl Netns {
    /// Creates the namespace `name` (deleting a leftover of that name first) and brings `lo`
    /// up. Needs root and iproute2.
    pub fn create(name: &str) -> Result<Netns> {
        delete(name);
        cmd::run(Command::new("ip").args(["netns", "add", name]), None)
            .with_context(|| format!("cannot create network namespace {name}"))?;
        let path = Path::new(RUN_NETNS).join(name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                delete(name);
                return Err(e).with_context(|| format!("opening {}", path.display()));
            }
        };
        let ns = Netns {
            inner: Arc::new(Inner {
                name: name.to_string(),
                file,
            }),
        };
        cmd::run(
            Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]),
            None,
        )
        .with_context(|| format!("cannot bring lo up in {name}"))?;
        Ok(ns)
    }

    /// Creates `<prefix>-<pid>-<n>`, `n` counting up within this process, so concurrent tests
    /// get their own. The first call for a prefix also deletes the `<prefix>-<pid>-*` left by
    /// processes that died before deleting theirs ([`remove_stale`]).
    pub fn numbered(prefix: &str) -> Result<Netns> {
        let first = CLEANED_PREFIXES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(prefix.to_string());
        if first {
            remove_stale(prefix);
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Netns::create(&format!("{prefix}-{}-{n}", std::process::id()))
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `/run/netns/<name>`: what `tcpstate --netns` takes.
    pub fn path(&self) -> PathBuf {
        Path::new(RUN_NETNS).join(self.name())
    }

    /// An open descriptor of the namespace, for `setns(2)`; valid while this handle lives.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inner.file.as_fd()
    }

    /// The namespace's inode number: what tcpstate reports as `netns`.
    pub fn inode(&self) -> io::Result<u64> {
        Ok(self.inner.file.metadata()?.ino())
    }

    /// A command that runs `program` inside the namespace (`ip netns exec <name> program`);
    /// add its arguments to it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name()]).arg(program);
        cmd
    }

    /// Runs `args` (program first) inside the namespace to completion; returns its stdout.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let (program, rest) = args.split_first().context("exec: no program given")?;
        cmd::run(self.command(program).args(rest), None)
    }

    /// Loads an nftables script (`nft -f -`) into the namespace.
    pub fn nft(&self, script: &str) -> Result<()> {
        cmd::run(self.command("nft").args(["-f", "-"]), Some(script))
            .with_context(|| format!("nft script failed:\n{script}"))
            .map(drop)
    }

    /// `ss -tanH` inside the namespace: its TCP sockets, as netstat would show them.
    pub fn ss(&self) -> Result<String> {
        self.exec(&["ss", "-tanH"])
    }

    /// Sets per-namespace sysctls with `sysctl -qw`, e.g. `net.ipv4.tcp_fin_timeout=1`.
    pub fn sysctl(&self, settings: &[&str]) -> Result<()> {
        cmd::run(self.command("sysctl").arg("-qw").args(settings), None).map(drop)
    }

    /// Writes `/proc/sys/<key>` (`net/ipv4/tcp_tw_reuse`) as seen from inside the namespace
    /// and reads it back, without starting a process: from a short-lived thread that joins
    /// the namespace (`/proc/sys/net` follows the writer's namespace). A key this kernel
    /// lacks is an error of kind `NotFound`; one that reads back otherwise (whitespace
    /// aside), an error of kind `Other`.
    pub fn write_sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let path = format!("/proc/sys/{key}");
        self.run_in(|| {
            fs::write(&path, value)?;
            let back = fs::read_to_string(&path)?;
            if back.split_whitespace().ne(value.split_whitespace()) {
                return Err(io::Error::other(format!("{path} reads back {back:?}")));
            }
            Ok(())
        })
    }

    /// Moves the calling thread into the namespace (sockets it creates then live there). Only
    /// this thread: the namespace is a per-thread attribute.
    pub fn enter(&self) -> io::Result<()> {
        setns(self.fd().as_raw_fd())
    }

    /// Runs `f` on a thread of its own inside the namespace, and waits for it.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        thread::scope(|s| {
            s.spawn(|| {
                self.enter()?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("thread in the namespace panicked")))
        })
    }

    /// Starts `f` on a new thread inside the namespace; the thread holds a clone of this
    /// handle, so the namespace outlives it. Err if the thread could not enter it.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<io::Result<T>> {
        let ns = self.clone();
        thread::spawn(move || {
            ns.enter()?;
            Ok(f())
        })
    }

    /// Makes `cmd`'s process join the namespace between fork and exec: unlike
    /// [`Netns::command`] no `ip` process runs first, and `cmd`'s pid is the program's own.
    /// This handle must live until `cmd` is spawned.
    pub fn enter_on_exec(&self, cmd: &mut Command) {
        let fd = self.fd().as_raw_fd();
        // SAFETY: setns is async-signal-safe, and all the closure does between fork and exec.
        unsafe { cmd.pre_exec(move || setns(fd)) };
    }
}

fn setns(fd: i32) -> io::Result<()> {
    // SAFETY: setns only reads its arguments; a bad descriptor is an error return.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Deletes the namespaces `<prefix>-<pid>-*` whose process is gone (left by runs that died
/// before deleting their own).
pub fn remove_stale(prefix: &str) {
    let Ok(dir) = fs::read_dir(RUN_NETNS) else {
        return;
    };
    let me = std::process::id();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = stale_pid(&name, prefix) else {
            continue;
        };
        if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
            delete(&name);
        }
    }
}

/// The `<pid>` of a `<prefix>-<pid>-...` name.
fn stale_pid(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?
        .strip_prefix('-')?
        .split('-')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_other_runs() {
        assert_eq!(stale_pid("tcpst-123-4", "tcpst"), Some(123));
        assert_eq!(stale_pid("tcpst-123", "tcpst"), Some(123));
        assert_eq!(stale_pid("tcpst-compare-123", "tcpst"), None);
        assert_eq!(stale_pid("tcpstate-bench-123", "tcpst"), None);
        assert_eq!(stale_pid("tcpst-compare-123-0", "tcpst-compare"), Some(123));
        assert_eq!(stale_pid("other", "tcpst"), None);
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// Creates, uses and deletes a namespace (needs root and iproute2; skipped otherwise).
    #[test]
    fn a_namespace_lives_as_long_as_its_handles() {
        if !is_root() || crate::which_or_system("ip").is_none() {
            eprintln!("skipped: needs root and iproute2");
            return;
        }
        let ns = Netns::numbered("tcpst-devsupport").unwrap();
        let path = ns.path();
        assert!(path.exists());
        assert_ne!(
            ns.inode().unwrap(),
            fs::metadata("/proc/self/ns/net").unwrap().ino()
        );
        assert_eq!(ns.exec(&["echo", "hi"]).unwrap(), "hi\n");
        ns.write_sysctl("net/ipv4/tcp_fin_timeout", "7").unwrap();
        assert_eq!(
            ns.exec(&["sysctl", "-n", "net.ipv4.tcp_fin_timeout"])
                .unwrap()
                .trim(),
            "7"
        );
        ns.sysctl(&["net.ipv4.tcp_fin_timeout=9"]).unwrap();
        let err = ns.write_sysctl("net/ipv4/no_such_key", "1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // A listener made in the namespace shows in its `ss`, not in ours.
        let l = ns
            .run_in(|| std::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(ns.ss().unwrap().contains(&format!("127.0.0.1:{port}")));
        let inode = ns.inode().unwrap();
        let seen = ns
            .spawn_in(|| fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino()))
            .join()
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(seen, inode);
        let mut cmd = Command::new("readlink");
        cmd.arg("/proc/self/ns/net");
        ns.enter_on_exec(&mut cmd);
        assert!(
            cmd::run(&mut cmd, None)
                .unwrap()
                .contains(&inode.to_string())
        );
        let clone = ns.clone();
        drop(ns);
        assert!(path.exists(), "a clone keeps it");
        drop(clone);
        assert!(!path.exists(), "the last handle deletes it");
    }
}
