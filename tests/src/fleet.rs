//! Helpers of the fleet tests: podman (configured as this machine kind
//! needs: runc, no default ulimits), images built FROM scratch, containers and processes
//! removed on drop, a loopback Prometheus, and the DaemonSet's pod spec
//! turned into `podman run` arguments.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub use crate::files::TempDir;
use crate::process::{collect, reap, spawn_piped};

pub use tcpstate_devsupport::workspace_root as repo_root;

/// `promtool check metrics` on an exposition (the text format 0.0.4);
/// panics with what it says unless it passes.
pub fn promtool_check(text: &str) {
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// podman with the settings this machine kind needs: runc (crun refuses the
/// hybrid cgroup layout) and no default ulimits (they cannot be raised in
/// this sandbox).
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", containers_conf())
        .args(["--runtime", "runc"]);
    c
}

fn containers_conf() -> PathBuf {
    let conf = std::env::temp_dir().join("tcpstate-fleet-containers.conf");
    if !conf.exists() {
        std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n")
            .expect("writing containers.conf");
    }
    conf
}

/// Runs `cmd` and returns its stdout; panics with its stderr on failure.
pub fn output(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A local image, removed on drop.
pub struct Image(pub String);

impl Image {
    /// `deploy/image/build-image.sh`, as `cargo xtask image` runs it.
    pub fn build(tag: &str, bins: &[(&Path, &str)]) -> Image {
        let mut build = Command::new(repo_root().join("deploy/image/build-image.sh"));
        build.env("CONTAINERS_CONF", containers_conf()).arg(tag);
        for (bin, dest) in bins {
            build.arg(format!("{}:{dest}", bin.display()));
        }
        output(&mut build);
        Image(tag.to_string())
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman().args(["rmi", "-f", &self.0]).output();
    }
}

/// A container name, removed (killed first) on drop.
pub struct Container(pub String);

impl Container {
    pub fn named(prefix: &str) -> Container {
        Container(format!("{prefix}-{}", std::process::id()))
    }

    /// The full ID, as `podman inspect` reports it.
    pub fn id(&self) -> String {
        output(podman().args(["inspect", "--format", "{{.Id}}", &self.0]))
            .trim()
            .to_string()
    }

    /// The inode of its network namespace (as tcpstate's `netns` shows it).
    pub fn netns_inode(&self) -> u64 {
        let pid = output(podman().args(["inspect", "--format", "{{.State.Pid}}", &self.0]));
        let link = std::fs::read_link(format!("/proc/{}/ns/net", pid.trim()))
            .unwrap_or_else(|e| panic!("netns of {}: {e}", self.0));
        // `net:[4026532182]`
        link.to_string_lossy()
            .trim_start_matches("net:[")
            .trim_end_matches(']')
            .parse()
            .unwrap_or_else(|_| panic!("netns link {link:?}"))
    }

    /// Waits until podman reports it running.
    pub fn wait_running(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = podman()
                .args(["inspect", "--format", "{{.State.Running}}", &self.0])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).trim() == "true" {
                return;
            }
            assert!(Instant::now() < deadline, "container {} never ran", self.0);
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn logs(&self) -> String {
        let out = podman().args(["logs", &self.0]).output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.0]).output();
    }
}

/// A free TCP port on loopback (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on loopback, HTTP/1.0; returns (head, body).
pub fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (head.to_string(), body.to_string())
}

/// Polls `f` every 200 ms until it returns `Some`, or panics after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// A process whose stdout and stderr are collected; killed on drop.
pub struct Proc {
    pub child: Child,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let what = format!("{cmd:?}");
        let mut child = spawn_piped(cmd, Stdio::null(), &what);
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits until stderr holds `text` (the process still running).
    pub fn wait_stderr(&mut self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.stderr.lock().unwrap().contains(text) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "exited ({status}) before saying {text:?}:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} after {limit:?}:\n{}",
                self.stderr.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT, then (stdout, stderr) once it exited (killed after 10 s).
    pub fn stop(mut self) -> (String, String) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
        // The collector threads finish at end of stream.
        thread::sleep(Duration::from_millis(100));
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (out, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        reap(&mut self.child);
    }
}

/// Debian's Prometheus on loopback, with a temporary configuration and
/// storage, scraping `target` every second.
pub struct Prometheus {
    pub addr: SocketAddr,
    _proc: Proc,
    _dir: TempDir,
}

impl Prometheus {
    pub fn start(target: SocketAddr) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: tcpstate\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let proc = Proc::spawn(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.0.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--storage.tsdb.retention.time=1h")
                .current_dir(&dir.0),
        );
        let p = Prometheus {
            addr,
            _proc: proc,
            _dir: dir,
        };
        wait_for("Prometheus to be ready", Duration::from_secs(30), || {
            TcpStream::connect(addr).ok().and_then(|_| {
                let (head, _) = http_get(addr, "/-/ready", None);
                head.contains(" 200 ").then_some(())
            })
        });
        p
    }

    /// An instant query through the HTTP API: the `data.result` array.
    pub fn query(&self, promql: &str) -> Value {
        let mut q = String::new();
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                q.push(b as char);
            } else {
                q.push_str(&format!("%{b:02X}"));
            }
        }
        let (head, body) = http_get(self.addr, &format!("/api/v1/query?query={q}"), None);
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {head}\n{body}"));
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"].clone()
    }

    /// Whether the last scrape of the target succeeded.
    pub fn target_up(&self) -> bool {
        self.query("up")
            .as_array()
            .and_then(|a| a.first().cloned())
            .is_some_and(|s| s["value"][1] == "1")
    }
}

/// The DaemonSet's pod spec as `podman run` arguments: what the pod asks
/// for (host namespaces, capabilities, seccomp, read-only root, mounts,
/// limits) and the container's image and args. Read with python3's yaml
/// (installed with kubernetes-validate) so the test runs the file itself.
pub struct PodSpec {
    pub podman_args: Vec<String>,
    pub image: String,
    pub args: Vec<String>,
}

pub fn daemonset_pod() -> PodSpec {
    let path = repo_root().join("deploy/kubernetes/daemonset.yaml");
    let json = output(
        Command::new("python3")
            .args([
                "-c",
                "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            ])
            .arg(&path),
    );
    let ds: Value = serde_json::from_str(&json).unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    let mut a: Vec<String> = Vec::new();
    if pod["hostNetwork"] == true {
        a.push("--network=host".into());
    }
    if pod["hostPID"] == true {
        a.push("--pid=host".into());
    }
    if let Some(u) = sc["runAsUser"].as_u64() {
        a.push(format!("--user={u}"));
    }
    assert_ne!(sc["privileged"], true, "the pod must not be privileged");
    if sc["allowPrivilegeEscalation"] == false {
        a.push("--security-opt=no-new-privileges".into());
    }
    if sc["readOnlyRootFilesystem"] == true {
        a.push("--read-only".into());
    }
    match sc["seccompProfile"]["type"].as_str() {
        Some("RuntimeDefault") | None => {}
        Some("Unconfined") => a.push("--security-opt=seccomp=unconfined".into()),
        Some(other) => panic!("seccomp profile {other} not translated"),
    }
    for cap in sc["capabilities"]["drop"].as_array().into_iter().flatten() {
        a.push(format!(
            "--cap-drop={}",
            cap.as_str().unwrap().to_lowercase()
        ));
    }
    for cap in sc["capabilities"]["add"].as_array().into_iter().flatten() {
        a.push(format!("--cap-add={}", cap.as_str().unwrap()));
    }
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let v = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("no volume {}", m["name"]));
        let host = v["hostPath"]["path"]
            .as_str()
            .expect("hostPath volumes only");
        let ro = if m["readOnly"] == true { ":ro" } else { "" };
        a.push(format!(
            "--volume={host}:{}{ro}",
            m["mountPath"].as_str().unwrap()
        ));
    }
    if let Some(mem) = c["resources"]["limits"]["memory"].as_str() {
        let mib: u64 = mem.trim_end_matches("Mi").parse().expect("memory in Mi");
        a.push(format!("--memory={mib}m"));
    }
    PodSpec {
        podman_args: a,
        image: c["image"].as_str().unwrap().to_string(),
        args: c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
    }
}

/// A container (or a pod's container) whose main process is `tcppeer serve`
/// on loopback: its own network namespace (`--network=none`, only `lo`)
/// unless it joins a pod, whose namespace its containers share.
pub struct ServeContainer {
    pub container: Container,
    pub port: u16,
}

/// A client process of [`ServeContainer::burst`]: its pid and local port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortClient {
    pub pid: u32,
    pub lport: u16,
}

impl ServeContainer {
    /// Runs `tcppeer serve 127.0.0.1:PORT` in a new container named
    /// `name-<test pid>`, in `pod` if given.
    pub fn start(image: &Image, name: &str, port: u16, pod: Option<&Pod>) -> ServeContainer {
        let c = ServeContainer::create(image, name, port, pod);
        c.start_created();
        c
    }

    /// Creates it without starting it (its ID is known from now on).
    pub fn create(image: &Image, name: &str, port: u16, pod: Option<&Pod>) -> ServeContainer {
        let container = Container::named(name);
        let mut cmd = podman();
        cmd.args(["create", "--name", &container.0]);
        match pod {
            Some(p) => cmd.args(["--pod", &p.0]),
            None => cmd.arg("--network=none"),
        };
        cmd.arg(&image.0)
            .args(["serve", &format!("127.0.0.1:{port}")]);
        output(&mut cmd);
        ServeContainer { container, port }
    }

    /// `podman start`, once more if it fails, saying why on stderr: under a
    /// busy parallel suite one podman call of the pod test failed once and
    /// passed when repeated, and a start (which also starts the pod's
    /// infra container) is the call with the most moving parts.
    pub fn start_created(&self) {
        let first = podman()
            .args(["start", &self.container.0])
            .output()
            .unwrap();
        if !first.status.success() {
            eprintln!(
                "podman start {} failed ({}), once more:\n{}",
                self.container.0,
                first.status,
                String::from_utf8_lossy(&first.stderr)
            );
            output(podman().args(["start", &self.container.0]));
        }
        self.container.wait_running();
    }

    /// `n` client processes at once inside the container (one `podman
    /// exec`), each connecting to `server_port` on loopback, closing first
    /// and exiting at once.
    pub fn burst(&self, n: usize, server_port: u16) -> Vec<ShortClient> {
        let out = output(podman().args([
            "exec",
            &self.container.0,
            "/tcppeer",
            "burst",
            &n.to_string(),
            &format!("127.0.0.1:{server_port}"),
        ]));
        let clients: Vec<ShortClient> = out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next()? == "client").then_some(())?;
                let pid = w.next()?.parse().ok()?;
                let local: SocketAddr = w.next()?.parse().ok()?;
                Some(ShortClient {
                    pid,
                    lport: local.port(),
                })
            })
            .collect();
        assert_eq!(clients.len(), n, "burst in {}:\n{out}", self.container.0);
        clients
    }
}

/// A podman pod (its infra container holds the shared network namespace),
/// removed with its containers on drop.
pub struct Pod(pub String);

impl Pod {
    pub fn create(prefix: &str) -> Pod {
        let pod = Pod(format!("{prefix}-{}", std::process::id()));
        output(podman().args(["pod", "create", "--network=none", "--name", &pod.0]));
        pod
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = podman()
            .args(["pod", "rm", "-f", "-t", "0", &self.0])
            .output();
    }
}
