//! Reliability, no error swallowed and no mistake accepted (issue 22): a
//! failed write at the very last flush is an error (rc 1); a file the user
//! names is checked before tracing starts (rc 2); flag values that could only
//! match nothing (a relative cgroup, a transition the kernel never makes) are
//! refused; a port named many times is one port.

use std::process::Stdio;
use std::time::Duration;

use tcpstate_tests::reliability::*;

/// A network namespace path that does not exist: a run that gets past the
/// flag under test stops there, with a usage error naming `--netns`.
const NO_NETNS: &str = "/run/netns/tcpstate-no-such-namespace";

fn run(args: &[&str]) -> Run {
    let dir = TempDir::new("errors");
    let mut cmd = tracer();
    cmd.args(args).current_dir(dir.path());
    run_until_exit(cmd, HANG_TIMEOUT)
}

/// stdout on /dev/full, nothing traced, then SIGINT: the header's write
/// failed long ago, and the last flush must say so (it used to exit 0).
#[test]
fn idle_run_on_a_full_stdout_fails_at_exit() {
    let ns = Netns::new();
    let netns = ns.path().to_string_lossy().into_owned();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut t = Background::start(&["--netns", &netns], Stdio::from(full));
    t.wait_ready();
    std::thread::sleep(Duration::from_millis(300));
    kill(t.pid(), libc::SIGINT);
    let (status, objs) = t.wait(HANG_TIMEOUT);
    let stderr = t.stderr();
    assert_eq!(status.code(), Some(1), "{}\n{stderr}", describe(status));
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("tcpstate: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("No space left on device"), "{stderr}");
    objs.assert_released("full stdout");
}

/// A tmpfs with no block left: what a full disk looks like to us.
struct FullFs(TempDir);

impl FullFs {
    fn new() -> FullFs {
        let dir = TempDir::new("fullfs");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16k", "tcpstate-full"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs");
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=4k", "count=64"])
            .arg(format!("of={}/fill", dir.path().display()))
            .stderr(Stdio::null())
            .status();
        FullFs(dir)
    }
}

impl Drop for FullFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// Every way a diagram path can be unusable is found before tracing starts
/// (it used to be found at exit, rc 0, after the whole run).
#[test]
fn diagram_paths_that_cannot_be_written_are_refused_at_start() {
    let full = FullFs::new();
    let on_full = format!("{}/x.dot", full.0.path().display());
    let tmp = std::env::temp_dir();
    for (path, says) in [
        ("/nonexistent/dir/x.dot", "/nonexistent/dir"),
        (tmp.to_str().unwrap(), "is a directory"),
        ("/etc/hostname/x.dot", "not a directory"),
        (on_full.as_str(), "no space left"),
    ] {
        let r = run(&["--diagram", path, "--duration", "1s"]);
        r.assert_error(2, "--diagram");
        r.assert_stderr_contains(says);
        assert!(
            !std::path::Path::new(path).is_file(),
            "{path}: a file was left behind"
        );
    }
}

#[test]
fn a_relative_cgroup_is_a_usage_error() {
    for c in ["relative/path", "system.slice", "./x"] {
        run(&["--cgroup", c, "--netns", NO_NETNS]).assert_error(2, "--cgroup");
    }
    // An absolute one gets past it (to the missing namespace).
    run(&["--cgroup", "/system.slice", "--netns", NO_NETNS]).assert_error(2, "--netns");
}

#[test]
fn a_transition_the_kernel_never_makes_is_a_usage_error() {
    for t in [
        "CLOSE->CLOSE",
        "ESTABLISHED->LISTEN",
        "TIME_WAIT->ESTABLISHED",
        "LAST_ACK->FIN_WAIT1",
        "CLOSE->ESTABLISHED",
    ] {
        let r = run(&["--trigger", t, "--netns", NO_NETNS]);
        r.assert_error(2, "--trigger");
        r.assert_stderr_contains("never makes");
    }
    for t in [
        "CLOSE->SYN_SENT",
        "FIN_WAIT1->CLOSING",
        "ESTABLISHED->CLOSE",
    ] {
        run(&["--trigger", t, "--netns", NO_NETNS]).assert_error(2, "--netns");
    }
}

/// 2,000 copies of one port are one port (they used to be refused as
/// "got 2000"); 1,025 distinct ports are still too many.
#[test]
fn duplicate_ports_are_merged() {
    let mut args: Vec<String> = Vec::new();
    for _ in 0..2000 {
        args.extend(["--port".into(), "10050".into()]);
    }
    args.extend(["--netns".into(), NO_NETNS.into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs).assert_error(2, "--netns");
}
