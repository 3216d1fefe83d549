//! Reliability, bad input: every flag with invalid values, missing privileges,
//! tracefs that is not mounted (and not mountable), tracepoint format files
//! of an older layout or that cannot be parsed. Each must end in one
//! `tcpstate: error: ...` line (plus an optional `  hint: ...`) and the
//! documented exit status (2 usage, 1 runtime), never a panic or a backtrace.
//!
//! Alternative tracefs roots are handed to the tool through its testing hook,
//! the `TCPSTATE_TRACEFS` environment variable (see docs/security.md).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tcpstate_tests::reliability::*;

/// A network namespace path that does not exist: runs that get past the
/// flag under test stop there, with a usage error naming `--netns`.
const NO_NETNS: &str = "/run/netns/tcpstate-no-such-namespace";

/// Runs `tcpstate ARGS` in an empty temporary directory (so a flag that took
/// a garbage value as a file name could not litter the tree).
fn run_in_tmp(args: &[&std::ffi::OsStr]) -> Run {
    let dir = TempDir::new("input");
    let mut cmd = tracer();
    cmd.args(args).current_dir(dir.path());
    let run = run_until_exit(cmd, HANG_TIMEOUT);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "{}: wrote files into its working directory: {left:?}",
        run.what
    );
    run
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(Into::into).collect()
}

fn run_args(args: &[&str]) -> Run {
    let v = os(args);
    let refs: Vec<&std::ffi::OsStr> = v.iter().map(|s| s.as_os_str()).collect();
    run_in_tmp(&refs)
}

#[test]
fn invalid_values_of_each_flag_are_usage_errors() {
    // (arguments, what the error line must mention)
    let cases: &[(&[&str], &str)] = &[
        (&["--port", "0"], "--port"),
        (&["--port", "65536"], "--port"),
        (&["--port", "http"], "--port"),
        (&["--port", ""], "--port"),
        (&["--port", "-1"], "'-1'"),
        (&["--port"], "--port"),
        (&["-p", "1.5"], "--port"),
        (&["--lport", "0"], "--lport"),
        (&["-L", "99999"], "--lport"),
        (&["--rport", "70000"], "--rport"),
        (&["-D", "x"], "--rport"),
        (&["-4", "-6"], "--ipv"),
        (&["-j", "-w"], "--"),
        (&["--netns", ""], "--netns"),
        (&["--netns", "   "], "--netns"),
        (&["--netns", "0"], "--netns"),
        (&["--netns", "tcpstate-no-such-namespace"], "--netns"),
        (&["--netns", "/nonexistent/netns"], "--netns"),
        (&["--duration", "0s"], "--duration"),
        (&["--duration", "soon"], "--duration"),
        (&["--duration", "-5s"], "'-5"),
        (&["-d", ""], "--duration"),
        (&["--ring-size", "3M"], "power of two"),
        (&["--ring-size", "1000"], "power of two"),
        (&["--ring-size", "12288"], "power of two"),
        (&["--ring-size", "0"], "--ring-size"),
        (&["--ring-size", "1K"], "--ring-size"),
        (&["--ring-size", "2G"], "--ring-size"),
        (&["--ring-size", "lots"], "--ring-size"),
        (&["--ring-size", "99999999999999999999G"], "--ring-size"),
        (&["--max-sockets", "0"], "--max-sockets"),
        (&["--max-sockets", "63"], "--max-sockets"),
        (&["--max-sockets", "16777217"], "--max-sockets"),
        (&["--max-sockets", "many"], "--max-sockets"),
        (&["--flush-interval", "0ms"], "--flush-interval"),
        (&["--flush-interval", "5s"], "--flush-interval"),
        (&["--flush-interval", "x"], "--flush-interval"),
        (&["--bogus"], "--bogus"),
        (&["extra"], "extra"),
    ];
    for (args, needle) in cases {
        run_args(args).assert_error(2, needle);
    }
}

/// A ring-buffer size that is not a power of two (the ring buffer needs one).
#[test]
fn ring_size_not_a_power_of_two_is_a_usage_error() {
    let r = run_args(&["--ring-size", "3000000", "--netns", NO_NETNS]);
    r.assert_error(2, "--ring-size");
    r.assert_stderr_contains("3000000 is not a power of two");
}

/// Every `--flag <VALUE>` that `--help` lists (so flags added later are
/// covered too) gets garbage: the result must always be a one-line usage
/// error, whichever flag it names.
#[test]
fn garbage_for_every_value_flag_in_help_is_a_usage_error() {
    let help = run_tracer(&["--help"]);
    assert_eq!(help.code(), Some(0), "--help: {}", help.stderr);
    let text = help.stdout_text();
    let flags: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix('-')
                .filter(|r| !r.starts_with('-'))
                .and_then(|r| r.split_once(", "))
                .map_or(l, |(_, rest)| rest);
            let (flag, value) = l.split_once(' ')?;
            (flag.starts_with("--") && value.starts_with('<')).then(|| flag.to_string())
        })
        .collect();
    assert!(
        flags.iter().any(|f| f == "--ring-size") && flags.len() >= 6,
        "could not read the value flags from --help: {flags:?}\n{text}"
    );
    let garbage: &[&[u8]] = &[
        b"",
        b"nonsense",
        b"-1",
        b"99999999999999999999999999",
        b"\x1b[2J\x1b[31mred",
        b"a\nb",
        b"\xff\xfe",
        "\u{202e}1".as_bytes(),
    ];
    for flag in &flags {
        for g in garbage {
            let value = std::ffi::OsStr::from_bytes(g);
            let mut args: Vec<&std::ffi::OsStr> = vec![flag.as_ref(), value];
            if flag != "--netns" {
                args.extend([std::ffi::OsStr::new("--netns"), NO_NETNS.as_ref()]);
            }
            let r = run_in_tmp(&args);
            r.assert_error(2, "");
        }
    }
}

#[test]
fn too_many_ports_is_a_usage_error() {
    let args: Vec<String> = (1..=1025u32)
        .flat_map(|p| ["-p".to_string(), p.to_string()])
        .collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_args(&refs).assert_error(2, "at most");
}

#[test]
fn help_and_version_exit_zero_on_stdout() {
    for flag in ["--help", "-h", "--version", "-V"] {
        let r = run_tracer(&[flag]);
        assert_eq!(r.code(), Some(0), "{flag}: {}", r.stderr);
        assert!(
            r.stderr.is_empty(),
            "{flag} printed on stderr: {}",
            r.stderr
        );
        assert!(
            r.stdout_text().contains("tcpstate"),
            "{flag}: {}",
            r.stdout_text()
        );
    }
}

/// A path that exists but is not a network namespace must be refused, not
/// silently used as a filter that matches nothing.
#[test]
fn netns_path_that_is_not_a_namespace_is_refused() {
    for path in ["/etc/hostname", "/tmp", "/proc/self/ns/mnt"] {
        let r = run_args(&["--netns", path, "--duration", "1s"]);
        r.assert_error(2, "--netns");
    }
}

// ---------------------------------------------------------------------------
// Privileges
// ---------------------------------------------------------------------------

/// Runs `tcpstate --netns NO_NETNS` under `setpriv SETTINGS --` (another
/// user, fewer capabilities...).
fn run_under_setpriv(settings: &[&str]) -> Run {
    let mut cmd = Command::new("setpriv");
    cmd.args(settings)
        .arg("--")
        .arg(tracer_bin())
        .args(["--netns", NO_NETNS]);
    run_until_exit(cmd, HANG_TIMEOUT)
}

#[test]
fn not_root_is_refused_with_a_hint() {
    let r = run_under_setpriv(&["--reuid=65534", "--regid=65534", "--clear-groups"]);
    r.assert_error(1, "not root");
    assert!(r.stderr.contains("CAP_BPF") && r.stderr.contains("CAP_PERFMON"));
    r.assert_hint_contains("setcap");
}

#[test]
fn root_without_cap_bpf_and_cap_perfmon_is_refused() {
    // setpriv: drop them (and CAP_SYS_ADMIN, which implies both) from the
    // bounding set, so root's exec does not get them back.
    let r = run_under_setpriv(&["--inh-caps=-all", "--bounding-set=-bpf,-perfmon,-sys_admin"]);
    r.assert_error(1, "running as root but without CAP_BPF and CAP_PERFMON");
    assert!(r.hint().is_some(), "{}", r.stderr);

    // capsh: the same through libcap's tool.
    let mut cmd = Command::new("capsh");
    cmd.arg("--drop=cap_bpf,cap_perfmon,cap_sys_admin")
        .arg("--")
        .arg("-c")
        .arg(format!(
            "exec '{}' --netns {NO_NETNS}",
            tracer_bin().display()
        ));
    let r = run_until_exit(cmd, HANG_TIMEOUT);
    r.assert_error(1, "CAP_BPF and CAP_PERFMON");
}

#[test]
fn missing_cap_perfmon_alone_is_named() {
    let r = run_under_setpriv(&["--inh-caps=-all", "--bounding-set=-perfmon,-sys_admin"]);
    r.assert_error(1, "without CAP_PERFMON");
    let first = r.stderr.lines().next().unwrap_or_default();
    assert!(
        !first.contains("CAP_BPF"),
        "only CAP_PERFMON is missing: {first}"
    );
}

// ---------------------------------------------------------------------------
// tracefs
// ---------------------------------------------------------------------------

/// `--netns NS --duration D`: a short run on the test's (empty) namespace,
/// which the caller keeps until the run is over.
fn briefly(ns: &Netns, duration: &str) -> Vec<String> {
    let netns = ns.path().to_string_lossy().into_owned();
    ["--netns", &netns, "--duration", duration]
        .map(String::from)
        .to_vec()
}

/// A command that runs `tcpstate ARGS` in a private mount namespace where
/// both tracefs locations are covered by empty tmpfs mounts (tracefs "not
/// mounted"), with `drop` removed from the capability bounding set.
fn without_tracefs(drop: &str, args: &[String]) -> Command {
    let script = r#"
        for d in /sys/kernel/tracing /sys/kernel/debug; do
            [ -d "$d" ] && mount -t tmpfs tcpstate-test "$d"
        done
        drop="$1"; shift
        if [ -n "$drop" ]; then
            exec setpriv --inh-caps=-all --bounding-set="$drop" -- "$@"
        else
            exec "$@"
        fi
    "#;
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(drop)
    .arg(tracer_bin())
    .args(args);
    cmd
}

#[test]
fn tracefs_not_mounted_and_not_mountable_is_one_clear_error() {
    let ns = Netns::new();
    let cmd = without_tracefs("-sys_admin", &briefly(&ns, "2s"));
    let r = run_until_exit(cmd, HANG_TIMEOUT);
    r.assert_error(1, "tracefs is not mounted");
    r.assert_hint_contains("mount -t tracefs");
}

#[test]
fn tracefs_not_mounted_but_mountable_is_mounted_by_the_tool() {
    let ns = Netns::new();
    let cmd = without_tracefs("", &briefly(&ns, "1s"));
    let r = run_until_exit(cmd, HANG_TIMEOUT);
    assert_eq!(r.code(), Some(0), "{}\n{}", r.what, r.stderr);
    assert!(r.stderr.contains(READY_LINE), "{}", r.stderr);
}

/// A fake tracefs root holding `format` as the inet_sock_set_state format.
fn fake_tracefs(format: Option<&[u8]>) -> TempDir {
    let dir = TempDir::new("tracefs");
    let events = dir.path().join("events/sock/inet_sock_set_state");
    std::fs::create_dir_all(&events).unwrap();
    if let Some(f) = format {
        write_file(&events.join("format"), f);
    }
    dir
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tcpstate-user/tests/fixtures")
        .join(name)
}

fn run_with_tracefs(root: &Path, args: &[String]) -> Run {
    let mut cmd = tracer();
    cmd.env("TCPSTATE_TRACEFS", root).args(args);
    run_until_exit(cmd, HANG_TIMEOUT)
}

#[test]
fn unparsable_format_files_are_one_clear_error() {
    let current = std::fs::read(fixture("format-6.18.txt")).unwrap();
    let current = String::from_utf8(current).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "field `protocol` is missing"),
        (
            "garbage",
            b"\x00\x1b[2J not a format file\n\n".to_vec(),
            "is missing",
        ),
        (
            "invalid UTF-8",
            b"format:\n\tfield:\xff\xfe;\n".to_vec(),
            "UTF-8",
        ),
        (
            "bad offset",
            current.replace("offset:24;", "offset:zz;").into_bytes(),
            "cannot parse line",
        ),
        (
            "missing field",
            current.replace("daddr_v6", "other").into_bytes(),
            "field `daddr_v6` is missing",
        ),
        (
            "wrong size",
            current
                .replace(
                    "__u16 sport;\toffset:24;\tsize:2;",
                    "__u32 sport;\toffset:24;\tsize:4;",
                )
                .into_bytes(),
            "field `sport` has size 4",
        ),
        (
            "offset past u16",
            current
                .replace("offset:56;", "offset:99999999;")
                .into_bytes(),
            "daddr_v6",
        ),
        (
            "hostile bytes in a field line",
            b"\tfield:int \x1b]0;owned\x07;\toffset:x;\tsize:4;\n".to_vec(),
            "cannot parse line",
        ),
    ];
    let ns = Netns::new();
    let args = briefly(&ns, "1s");
    for (what, text, needle) in cases {
        let root = fake_tracefs(Some(&text));
        let r = run_with_tracefs(root.path(), &args);
        r.assert_error(1, needle);
        assert!(
            r.stderr.contains("inet_sock_set_state/format"),
            "{what}: {}",
            r.stderr
        );
    }
}

#[test]
fn missing_format_file_is_one_clear_error() {
    let root = fake_tracefs(None);
    let ns = Netns::new();
    let r = run_with_tracefs(root.path(), &briefly(&ns, "1s"));
    r.assert_error(1, "inet_sock_set_state");
}

/// The pre-5.6 layout (`protocol` is a u8, every later field one byte
/// earlier) is accepted and its offsets are what the kernel program uses.
/// On this (newer) kernel that shifts the addresses by one byte: the record's
/// u16 protocol (6, 0) is followed by saddr 127.0.0.1, so reading saddr at
/// offset 31 yields 0.127.0.0. Seeing exactly that proves the format file,
/// not a compiled-in layout, drove the program. Only the classic tracepoint
/// reads the record by those offsets (the BTF one, the default, reads the
/// socket), hence `--classic-tracepoint`.
#[test]
fn pre_5_6_format_file_is_used() {
    let ns = Netns::new();
    let netns = ns.path();
    let format = std::fs::read(fixture("format-5.4.txt")).unwrap();
    let root = fake_tracefs(Some(&format));
    let mut cmd = tracer();
    cmd.env("TCPSTATE_TRACEFS", root.path())
        .args([
            "--json",
            "--classic-tracepoint",
            "--netns",
            netns.to_str().unwrap(),
        ])
        .stdout(Stdio::piped());
    let mut t = Background::spawn(cmd);
    let out = t.collect_stdout();
    t.wait_ready();
    let port = 42054;
    let churn = Churn::start(&ns, port, 3, 1);
    churn.wait();
    std::thread::sleep(Duration::from_millis(300));
    t.stop();
    let out = String::from_utf8(out.join().unwrap()).unwrap();
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .filter(|v: &serde_json::Value| v["source"] == "tracepoint")
        .collect();
    let listener = events
        .iter()
        .find(|e| e["oldstate"] == "CLOSE" && e["newstate"] == "LISTEN")
        .unwrap_or_else(|| panic!("no CLOSE->LISTEN event:\n{out}\n{}", t.stderr()));
    assert_eq!(listener["lport"], port, "{listener}");
    assert_eq!(
        listener["laddr"], "0.127.0.0",
        "the 5.4 layout's saddr offset (31) should have been used: {listener}"
    );
}
