//! Cgroups without a container runtime, so the kernel matrix runs them too:
//! clients put in cgroups the test makes on the cgroup2 mount, each
//! exiting at once after its connection. Every row names its socket's
//! cgroup (from the kernel, after the process is gone), and `--cgroup`
//! keeps one cgroup's sockets, the kernel program dropping the rest
//! (ports 23311-23312).

use std::{path::PathBuf, process::Stdio};

use serde_json::Value;
use tcpstate_tests::reliability::Background;
use tcpstate_tests::{Netns, Peer, tcppeer_bin};

/// A cgroup made for the test directly below the cgroup2 mount's root,
/// removed on drop (once its processes are gone).
struct TestCgroup {
    dir: PathBuf,
    /// As `/proc/<pid>/cgroup` and tcpstate show it.
    path: String,
}

impl TestCgroup {
    fn new(name: &str) -> TestCgroup {
        let mount = tcpstate_devsupport::mounts::read()
            .unwrap()
            .into_iter()
            .find(|m| m.fstype == "cgroup2")
            .expect("a cgroup2 mount")
            .point;
        let path = format!("/tcpstate-test-{}-{name}", std::process::id());
        let dir = PathBuf::from(mount).join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TestCgroup { dir, path }
    }

    /// `n` clients of `addr` in `ns`, one after another, each its own
    /// process in this cgroup (it joins before it makes its socket) that
    /// closes first and exits at once. Their local ports.
    fn clients(&self, ns: &Netns, addr: &str, n: usize) -> Vec<u16> {
        (0..n)
            .map(|_| {
                // Joined before entering the namespace: `ip netns exec`
                // mounts a fresh /sys, without the cgroup2 mount.
                let script = format!(
                    "echo $$ > {}/cgroup.procs && exec ip netns exec {} {} once {addr}",
                    self.dir.display(),
                    ns.name(),
                    tcppeer_bin().display()
                );
                let run = std::process::Command::new("sh")
                    .args(["-c", &script])
                    .output()
                    .unwrap();
                let out = String::from_utf8_lossy(&run.stdout).into_owned();
                assert!(run.status.success(), "{script}: {run:?}");
                let local = out
                    .split_whitespace()
                    .nth(2)
                    .unwrap_or_else(|| panic!("client said {out:?}"));
                local.rsplit(':').next().unwrap().parse().unwrap()
            })
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

fn json_rows(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Two cgroups, four short-lived clients each, the server outside both;
/// two tracers on the same traffic: one sees every row with its socket's
/// cgroup, the other (`--cgroup A`) exactly A's client sockets, while the
/// kernel dropped the rest itself.
#[test]
fn cgroup_filter_keeps_one_cgroups_sockets_and_the_kernel_drops_the_rest() {
    let ns = Netns::new();
    let addr = "127.0.0.1:23311";
    let mut server_cmd = ns.command(tcppeer_bin());
    server_cmd.args(["serve", addr]);
    let _server = Peer::server_command(server_cmd, "serve");
    let (a, b) = (TestCgroup::new("a"), TestCgroup::new("b"));
    let server_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let server_cgroup = server_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .to_string();

    let mut all = Background::start(&["--port", "23311", "-j"], Stdio::piped());
    let all_out = all.collect_stdout();
    let mut only_a = Background::start(
        &["--port", "23311", "-j", "-v", "--cgroup", &a.path],
        Stdio::piped(),
    );
    let only_a_out = only_a.collect_stdout();
    all.wait_ready();
    only_a.wait_ready();
    let a_ports = a.clients(&ns, addr, 4);
    let b_ports = b.clients(&ns, addr, 4);
    std::thread::sleep(std::time::Duration::from_millis(700));
    all.stop();
    only_a.stop();
    let all_rows = json_rows(&all_out.join().unwrap());
    let a_rows = json_rows(&only_a_out.join().unwrap());
    let err = only_a.stderr();

    let netns = ns.inode();
    let changes = |rows: &[Value]| {
        rows.iter()
            .filter(|r| r["netns"].as_u64() == Some(netns))
            .filter(|r| r["source"] == "tracepoint" && r["oldstate"] != r["newstate"])
            .count()
    };
    // 8 connections, 10 changes each (CLOSE->SYN_SENT has no local port yet).
    assert_eq!(changes(&all_rows), 80, "{all_rows:#?}");
    for r in all_rows
        .iter()
        .filter(|r| r["netns"].as_u64() == Some(netns))
    {
        let lport = r["lport"].as_u64().unwrap() as u16;
        let rport = r["rport"].as_u64().unwrap() as u16;
        let expected = if a_ports.contains(&lport) {
            &a.path
        } else if b_ports.contains(&lport) {
            &b.path
        } else if lport == 23311 {
            &server_cgroup
        } else {
            // A client's CLOSE->SYN_SENT: remote port set, local not yet.
            assert_eq!((lport, rport), (0, 23311), "{r}");
            let c = r["cgroup"].as_str();
            assert!(c == Some(&a.path) || c == Some(&b.path), "{r}");
            continue;
        };
        assert_eq!(r["cgroup"].as_str(), Some(expected.as_str()), "{r}");
        assert_eq!(r["container_id"], Value::Null, "{r}");
    }

    // --cgroup A: A's client sockets, 5 changes per connection.
    assert_eq!(changes(&a_rows), 4 * 5, "{a_rows:#?}\n{err}");
    for r in &a_rows {
        assert_eq!(r["cgroup"].as_str(), Some(a.path.as_str()), "{r}");
    }
    assert!(err.contains("container filter: in the kernel"), "{err}");
    // B's client sockets (5 each) and the server's (5 per connection).
    assert!(
        err.contains("tcpstate: 60 changes of other cgroups' sockets dropped in the kernel"),
        "{err}"
    );
}
