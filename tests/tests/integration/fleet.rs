//! From one host to a fleet: container attribution against real podman
//! containers, the DaemonSet's pod spec run by podman and scraped by a real
//! Prometheus, the manifests validated, the Debian package installed and
//! removed. Needs root, podman, buildah, runc, prometheus, promtool,
//! kubernetes-validate and a .deb from `cargo xtask deb` (`cargo xtask test`
//! provides them all).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use tcpstate_tests::fleet::*;
use tcpstate_tests::{Peer, tcppeer_bin, tracer_bin};

/// Connections each scenario makes (one `podman exec` each).
const CONNECTIONS: usize = 4;

/// A container with its own network namespace (`--network=none`: only
/// `lo`) running a tcppeer server; the image holds tcppeer alone.
struct PeerPod {
    container: Container,
    server: Peer,
    port: u16,
}

impl PeerPod {
    fn start(image: &Image, name: &str, port: u16) -> PeerPod {
        let container = Container::named(name);
        let mut cmd = podman();
        cmd.args([
            "run",
            "-i",
            "--rm",
            "--network=none",
            "--name",
            &container.0,
        ])
        .arg(&image.0)
        .args(["server", &format!("127.0.0.1:{port}")]);
        let server = Peer::server_command(cmd, &format!("{name} server"));
        container.wait_running();
        PeerPod {
            container,
            server,
            port,
        }
    }

    /// One full connection inside the container: a client (a second
    /// process, `podman exec`) connects, the client closes first, the server
    /// closes after reading the EOF.
    fn connect_and_close(&mut self) {
        let mut cmd = podman();
        cmd.args(["exec", "-i", &self.container.0, "/tcppeer", "client"])
            .arg(format!("127.0.0.1:{}", self.port));
        let mut client = Peer::client_command(cmd, "client in container");
        self.server.cmd("accept");
        client.cmd("close");
        self.server.expect_reply("wait-eof", "eof 0");
        self.server.cmd("close");
        client.exit();
    }
}

fn peer_image(tag: &str) -> Image {
    Image::build(tag, &[(&tcppeer_bin(), "/tcppeer")])
}

fn json_rows(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Plain `tcpstate --port P` on the host, as a user runs it (no --netns),
/// in JSON, wide text, and text filtered by `--container`: every row of
/// the connections made inside the container names that container, with
/// the ID `podman inspect` reports.
#[test]
fn rows_of_a_podman_container_carry_its_id() {
    let image = peer_image(&format!(
        "localhost/tcpstate-test-peer:{}",
        std::process::id()
    ));
    let port = 10120;
    let p = |args: &[&str]| {
        let mut t = Proc::spawn(
            Command::new(tracer_bin())
                .args(["--port", "10120"])
                .args(args),
        );
        t.wait_stderr("Tracing TCP state changes", Duration::from_secs(20));
        t
    };
    let json = p(&["-j"]);
    let wide = p(&["-w"]);
    let mut pod = PeerPod::start(&image, "tcpstate-attr", port);
    let id = pod.container.id();
    let netns = pod.container.netns_inode();
    assert_eq!(id.len(), 64, "{id}");
    let filtered = p(&["--container", &id[..12]]);
    let elsewhere = p(&["--container", "0123456789ab"]);
    for _ in 0..CONNECTIONS {
        pod.connect_and_close();
    }
    std::thread::sleep(Duration::from_millis(500));
    let (json, json_err) = json.stop();
    let (wide, _) = wide.stop();
    let (filtered, _) = filtered.stop();
    let (elsewhere, _) = elsewhere.stop();

    // The tracer sees the whole machine: keep the container's namespace.
    let rows: Vec<Value> = json_rows(&json)
        .into_iter()
        .filter(|r| r["netns"].as_u64() == Some(netns))
        .collect();
    let kernel: Vec<&Value> = rows
        .iter()
        .filter(|r| r["source"] == "tracepoint" && r["newstate"] != "LISTEN")
        .collect();
    // 10 transitions per connection; the listener's CLOSE->LISTEN came
    // before this tracer started.
    assert!(
        kernel.len() >= 10 * CONNECTIONS,
        "{} kernel rows:\n{json}\n{json_err}",
        kernel.len()
    );
    // Every row, also those of sockets whose owner tcpstate never saw (the
    // accepted ones of a listener older than the tracer): the socket's
    // cgroup comes from the kernel.
    for r in &rows {
        assert_eq!(r["container_id"], id.as_str(), "{r}");
        assert_eq!(
            r["cgroup"].as_str().map(|c| c.ends_with(&id)),
            Some(true),
            "{r}"
        );
        assert_eq!(r["pod_uid"], Value::Null, "{r}");
    }
    let owned = rows.iter().filter(|r| !r["pid"].is_null()).count();
    assert!(
        owned >= 10 * CONNECTIONS,
        "{owned} rows with an owner:\n{json}"
    );

    // Wide: a CONTAINER column with the short ID on every owned row.
    let mut lines = wide.lines();
    let header = lines.next().unwrap();
    assert!(header.contains("CONTAINER"), "{header}");
    let rows_with_id = lines.clone().filter(|l| l.contains(&id[..12])).count();
    assert!(rows_with_id >= 10 * CONNECTIONS, "{wide}");

    // Plain text with --container: every row of the container's
    // connections, with or without a known owner; another ID: none.
    let rows = |out: &str| -> Vec<String> {
        out.lines()
            .skip(1)
            .filter(|l| l.contains(" -> "))
            .map(String::from)
            .collect()
    };
    let kept = rows(&filtered);
    assert!(kept.len() >= 10 * CONNECTIONS, "{filtered}");
    assert_eq!(rows(&elsewhere), Vec::<String>::new());
}

/// The DaemonSet's pod spec, run by podman with exactly its privileges,
/// mounts and args (metrics moved to a loopback port): it traces the
/// connections made in another container, attributes them, and serves
/// metrics that pass `promtool check metrics`; a real Prometheus scrapes
/// it, and a PromQL query through its HTTP API counts those connections.
#[test]
fn daemonset_pod_scraped_by_prometheus_counts_a_containers_connections() {
    let pid = std::process::id();
    let spec = daemonset_pod();
    let tracer_image = Image::build(
        &format!("localhost/tcpstate-test:{pid}"),
        &[(&tracer_bin(), "/usr/bin/tcpstate")],
    );
    let peer_image = peer_image(&format!("localhost/tcpstate-test-peer2:{pid}"));
    assert!(
        spec.image.starts_with("localhost/tcpstate:"),
        "{}",
        spec.image
    );

    let metrics_port = free_port();
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let args: Vec<String> = spec
        .args
        .iter()
        .map(|a| {
            if a.starts_with("--metrics=") {
                format!("--metrics={metrics}")
            } else {
                a.clone()
            }
        })
        .collect();
    assert!(
        args.contains(&"--metrics-container-labels".to_string()),
        "{args:?}"
    );
    let tracer = Container::named("tcpstate-daemonset");
    let mut run = podman();
    run.args(["run", "-d", "--name", &tracer.0])
        .args(&spec.podman_args)
        .arg(&tracer_image.0)
        .args(&args);
    output(&mut run);
    wait_for("the metrics endpoint", Duration::from_secs(30), || {
        std::net::TcpStream::connect(metrics).ok()
    });
    let prometheus = Prometheus::start(metrics);

    let mut pod = PeerPod::start(&peer_image, "tcpstate-scraped", 10121);
    let id = pod.container.id();
    for _ in 0..CONNECTIONS {
        pod.connect_and_close();
    }

    let (head, text) = http_get(metrics, "/metrics", None);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(
        text.contains(&format!("container_id=\"{id}\"")),
        "no series of container {id}:\n{text}\n{}",
        tracer.logs()
    );
    promtool_check(&text);
    let (om_head, om) = http_get(
        metrics,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert!(
        om_head.contains("application/openmetrics-text") && om.ends_with("# EOF\n"),
        "{om_head}"
    );

    // Connections the container opened: its active opens.
    let promql = format!(
        "sum(tcpstate_transitions_total{{old_state=\"SYN_SENT\",new_state=\"ESTABLISHED\",container_id=\"{id}\"}})"
    );
    let answer = wait_answer(&prometheus, &promql, CONNECTIONS, || {
        format!(
            "exposition:\n{}\ntracer:\n{}",
            http_get(metrics, "/metrics", None).1,
            tracer.logs()
        )
    });
    println!("PromQL: {promql}\nPrometheus answered: {answer}");
    assert!(prometheus.target_up());
    // Both ends of each connection closed, in the container.
    wait_answer(
        &prometheus,
        &format!("sum(tcpstate_transitions_total{{new_state=\"CLOSE\",container_id=\"{id}\"}})"),
        2 * CONNECTIONS,
        || tracer.logs(),
    );
}

/// Polls an instant query until its single value is `expected` (scrapes
/// are 1 s apart; 30 s at most). Returns the answer as Prometheus wrote it.
fn wait_answer(
    p: &Prometheus,
    promql: &str,
    expected: usize,
    context: impl Fn() -> String,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = p.query(promql);
        let v = r
            .as_array()
            .and_then(|a| a.first())
            .and_then(|s| s["value"][1].as_str())
            .map(String::from);
        if v.as_deref() == Some(expected.to_string().as_str()) {
            return v.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus answered {r} to {promql}, expected {expected}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn kubernetes_validate() -> PathBuf {
    let local = PathBuf::from("/usr/local/bin/kubernetes-validate");
    if local.exists() {
        local
    } else {
        PathBuf::from("kubernetes-validate")
    }
}

#[test]
fn manifests_pass_kubernetes_validate_strict() {
    let dir = repo_root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let out = output(
        Command::new(kubernetes_validate())
            .arg("--strict")
            .args(&files),
    );
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(out.contains(&format!("{name} passed")), "{name}:\n{out}");
    }
}

/// The .deb `cargo xtask deb` made: `$TCPSTATE_DEB`, else the newest in
/// target/debian.
fn deb_file() -> PathBuf {
    if let Some(p) = std::env::var_os("TCPSTATE_DEB") {
        return PathBuf::from(p);
    }
    let dir = repo_root().join("target/debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    debs.retain(|p| p.extension().is_some_and(|e| e == "deb"));
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no .deb in {}: run `cargo xtask deb` (or `cargo xtask test`)",
            dir.display()
        )
    })
}

#[test]
fn deb_installs_runs_and_removes_cleanly() {
    let deb = deb_file();
    let info = output(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for path in [
        "./usr/bin/tcpstate",
        "./usr/share/man/man8/tcpstate.8.gz",
        "./usr/share/bash-completion/completions/tcpstate",
        "./usr/share/zsh/vendor-completions/_tcpstate",
        "./usr/share/fish/vendor_completions.d/tcpstate.fish",
        "tcpstate-metrics.service",
    ] {
        assert!(info.contains(path), "{path} not in the package:\n{info}");
    }
    let _ = Command::new("dpkg").args(["-r", "tcpstate"]).output();
    output(Command::new("dpkg").arg("-i").arg(&deb));
    struct Remove;
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new("dpkg").args(["-r", "tcpstate"]).output();
        }
    }
    let _remove = Remove;
    let version = output(Command::new("/usr/bin/tcpstate").arg("--version"));
    assert!(version.starts_with("tcpstate "), "{version}");
    let listed = output(Command::new("dpkg").args(["-L", "tcpstate"]));
    output(Command::new("dpkg").args(["-r", "tcpstate"]));
    let files: Vec<&str> = listed
        .lines()
        .filter(|l| l.starts_with("/usr/bin/") || l.ends_with(".service") || l.contains("/man8/"))
        .collect();
    assert_eq!(files.len(), 3, "{listed}");
    for f in files {
        assert!(!Path::new(f).exists(), "{f} left behind after dpkg -r");
    }
    let status = Command::new("dpkg")
        .args(["-s", "tcpstate"])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&status.stdout);
    assert!(
        !status.status.success() || s.contains("deinstall") || s.contains("config-files"),
        "{s}"
    );
}
