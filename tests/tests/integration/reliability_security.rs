//! Reliability, security: tcpstate needs only CAP_BPF and CAP_PERFMON (plus
//! CAP_SYS_ADMIN only to mount tracefs), works that way as root with every
//! other capability dropped and as an ordinary user running a binary given
//! those two with `setcap`; its testing hook is ignored in that setcap case;
//! and it writes nothing anywhere (only stdout and stderr). See
//! docs/security.md.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use tcpstate_tests::reliability::*;

/// Makes sure tracefs is mounted (as `cargo xtask setup` does), so the
/// runs below need no CAP_SYS_ADMIN.
fn tracefs_mounted() {
    if !Path::new("/sys/kernel/tracing/events").exists() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status();
    }
}

/// A copy of the tracer in a fresh directory that every user can traverse,
/// with `caps` set on it as file capabilities.
fn setcap_copy(caps: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new("setcap");
    let bin = dir.path().join("tcpstate");
    std::fs::copy(tracer_bin(), &bin).unwrap();
    let st = Command::new("setcap").arg(caps).arg(&bin).status().unwrap();
    assert!(st.success(), "setcap {caps} {}", bin.display());
    (dir, bin)
}

/// `setpriv` as the unprivileged user `nobody`, nothing inherited.
fn as_nobody(bin: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
    ])
    .arg(bin);
    cmd
}

/// Runs `cmd` (tracing `ns`) with connections going on, then stops it with
/// SIGINT (or, when `cmd` is a wrapper such as strace, lets it run out its
/// `--duration`), and returns what it printed.
fn trace_some_traffic(cmd: Command, ns: &Netns, port: u16, sigint: bool) -> Run {
    let mut cmd = cmd;
    cmd.stdout(Stdio::piped());
    let mut t = Background::spawn(cmd);
    let out = t.collect_stdout();
    let deadline = std::time::Instant::now() + tcpstate_tests::READY_TIMEOUT;
    while !t.is_ready() {
        if let Some(status) = t.child.try_wait().unwrap() {
            thread::sleep(Duration::from_millis(50));
            return Run {
                status,
                stdout: out.join().unwrap(),
                stderr: t.stderr(),
                what: format!("{:?}", t.child),
            };
        }
        assert!(std::time::Instant::now() < deadline, "{}", t.stderr());
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(100));
    Churn::start(ns, port, 5, 1).wait();
    thread::sleep(Duration::from_millis(200));
    if sigint {
        kill(t.pid(), libc::SIGINT);
    }
    let (status, objs) = t.wait(HANG_TIMEOUT);
    objs.assert_released("security run");
    Run {
        status,
        stdout: out.join().unwrap(),
        stderr: t.stderr(),
        what: String::new(),
    }
}

fn assert_traced(r: &Run, what: &str) {
    assert_eq!(
        r.code(),
        Some(0),
        "{what}: {}\n{}",
        describe(r.status),
        r.stderr
    );
    let events = r
        .stdout_text()
        .lines()
        .filter(|l| l.contains("\"source\":\"tracepoint\""))
        .count();
    let lost = summary_counts(&r.stderr).map_or(0, |(_, l)| l as usize);
    assert!(
        events + lost >= 52,
        "{what}: expected the 52 events of 5 connections, got {events} ({lost} lost)\n{}\n{}",
        r.stdout_text(),
        r.stderr
    );
}

/// Root with every capability but CAP_BPF and CAP_PERFMON dropped traces.
#[test]
fn root_with_only_cap_bpf_and_cap_perfmon_traces() {
    tracefs_mounted();
    let ns = Netns::new();
    let netns = ns.path().to_string_lossy().into_owned();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--inh-caps=-all", "--bounding-set=-all,+bpf,+perfmon", "--"])
        .arg(tracer_bin())
        .args(["--json", "--netns", &netns]);
    let r = trace_some_traffic(cmd, &ns, 45001, true);
    assert_traced(&r, "root with only CAP_BPF and CAP_PERFMON");
}

/// An ordinary user runs a copy given CAP_BPF and CAP_PERFMON with setcap,
/// as docs/security.md tells administrators to do.
#[test]
fn setcap_binary_traces_for_an_unprivileged_user() {
    tracefs_mounted();
    // Classic tracepoints are found through tracefs (`format` and `id`),
    // which is root-only by default: the documented set-up for non-root use
    // lets the user's group read it (docs/security.md).
    let _tracefs = TracefsGroupRead::grant(65534);
    let ns = Netns::new();
    let netns = ns.path().to_string_lossy().into_owned();
    let (_dir, bin) = setcap_copy("cap_bpf,cap_perfmon+ep");
    let mut cmd = as_nobody(&bin);
    cmd.args(["--json", "--netns", &netns]);
    let r = trace_some_traffic(cmd, &ns, 45002, true);
    assert_traced(&r, "nobody running a cap_bpf,cap_perfmon+ep binary");
}

/// Lets group `gid` read tracefs for the life of the guard (as documented
/// for setcap use), then restores the default root-only access.
struct TracefsGroupRead;

impl TracefsGroupRead {
    fn grant(gid: u32) -> TracefsGroupRead {
        let opts = format!("remount,gid={gid},mode=0750");
        let ok = Command::new("mount")
            .args(["-o", &opts, "/sys/kernel/tracing"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "mount -o {opts} /sys/kernel/tracing failed");
        TracefsGroupRead
    }
}

impl Drop for TracefsGroupRead {
    fn drop(&mut self) {
        let _ = Command::new("mount")
            .args(["-o", "remount,gid=0,mode=0700", "/sys/kernel/tracing"])
            .status();
    }
}

/// The tracefs testing hook must not let an unprivileged caller steer a
/// setcap binary (AT_SECURE): the variable is ignored.
#[test]
fn tracefs_hook_is_ignored_by_a_setcap_binary() {
    let (_dir, bin) = setcap_copy("cap_bpf,cap_perfmon+ep");
    let fake = TempDir::new("fake-tracefs");
    let mut cmd = as_nobody(&bin);
    cmd.env("TCPSTATE_TRACEFS", fake.path()).args([
        "--duration",
        "1s",
        "--netns",
        "/run/netns/tcpstate-no-such-namespace",
    ]);
    let r = run_until_exit(cmd, HANG_TIMEOUT);
    let fake = fake.path().to_string_lossy().into_owned();
    assert!(
        !r.stderr.contains(&fake),
        "a setcap binary honoured TCPSTATE_TRACEFS={fake}:\n{}",
        r.stderr
    );
    // And as root without file capabilities the hook does work.
    let mut cmd = tracer();
    cmd.env("TCPSTATE_TRACEFS", &fake).args([
        "--duration",
        "1s",
        "--netns",
        "/run/netns/tcpstate-no-such-namespace",
    ]);
    let r = run_until_exit(cmd, HANG_TIMEOUT);
    assert!(
        r.stderr.contains(&fake),
        "hook not used as root:\n{}",
        r.stderr
    );
}

/// Under strace, with traffic, in JSON and text mode: no file is created,
/// opened for writing, renamed, removed, truncated or chmod'ed, and no BPF
/// object is pinned; the one change allowed is mounting tracefs when it is
/// missing (documented). Its working directory, HOME and TMPDIR stay empty.
#[test]
fn writes_nothing_but_stdout_and_stderr() {
    assert!(
        Command::new("strace").arg("-V").output().is_ok(),
        "strace is needed for this test (cargo xtask setup installs it)"
    );
    let ns = Netns::new();
    let netns = ns.path().to_string_lossy().into_owned();
    for (i, mode) in [&["--json"][..], &["--wide"][..]].into_iter().enumerate() {
        let (cwd, home, tmp) = (
            TempDir::new("cwd"),
            TempDir::new("home"),
            TempDir::new("tmp"),
        );
        let log = TempDir::new("strace");
        let log_file = log.path().join("trace");
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-s", "256", "-o"])
            .arg(&log_file)
            .args([
                "-e",
                "trace=open,openat,openat2,creat,mkdir,mkdirat,rename,renameat,renameat2,\
                 unlink,unlinkat,rmdir,link,linkat,symlink,symlinkat,truncate,ftruncate,\
                 mknod,mknodat,chmod,fchmod,fchmodat,chown,fchown,fchownat,lchown,\
                 setxattr,lsetxattr,fsetxattr,removexattr,mount,umount2,bpf",
                "--",
            ])
            .arg(tracer_bin())
            .args(mode)
            .args(["--netns", &netns, "--duration", "3s"])
            .current_dir(cwd.path())
            .env("HOME", home.path())
            .env("TMPDIR", tmp.path());
        let r = trace_some_traffic(cmd, &ns, 45010 + i as u16, false);
        assert_eq!(r.code(), Some(0), "{mode:?} under strace:\n{}", r.stderr);
        let trace = std::fs::read_to_string(&log_file).unwrap();
        // Attempts count, failed or not. (`<... resumed>` continuation lines
        // have no call name of their own and are skipped.)
        let writes: Vec<&str> = trace
            .lines()
            .filter(|l| {
                let call = l.split_whitespace().nth(1).unwrap_or("");
                match call.split('(').next().unwrap_or("") {
                    "open" | "openat" | "openat2" => {
                        l.contains("O_WRONLY") || l.contains("O_RDWR") || l.contains("O_CREAT")
                    }
                    "bpf" => l.contains("BPF_OBJ_PIN"),
                    "mount" => !l.contains("\"tracefs\""),
                    "" | "+++" | "---" => false,
                    name => !name.starts_with('<'),
                }
            })
            .collect();
        assert!(
            writes.is_empty(),
            "{mode:?}: the tracer changed files:\n{}",
            writes.join("\n")
        );
        for d in [&cwd, &home, &tmp] {
            let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
            assert!(
                left.is_empty(),
                "{mode:?}: files left in {}: {left:?}",
                d.0.display()
            );
        }
    }
}
