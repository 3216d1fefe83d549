//! `cargo xtask vm-test`: the kernel matrix. Builds the release binary and the end-to-end test
//! binary on the host, then boots each kernel and runs [`SUBSET`] there, one test per
//! invocation of the test binary (its own log and time, a per-test timeout), and prints a
//! summary per kernel. Fails if any test failed or any guest did not finish.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{kernel::LINES, prepare, qemu, run_dir, subset::SUBSET};
use crate::{
    build,
    util::{self, secs},
};

/// A guest's whole run may not take longer (a hung guest must not hang CI).
const GUEST_TIMEOUT: Duration = Duration::from_secs(12 * 60);
/// One test in the guest: it is killed after this long (`timeout` in the guest).
const TEST_TIMEOUT_SECS: u32 = 240;
/// The harness's deadlines are stretched by this factor in the guest
/// (`TCPSTATE_TEST_TIME_SCALE`): TCG runs guest code 7-15x slower than native.
const TIME_SCALE: &str = "6";

struct TestResult {
    name: String,
    status: i32,
    secs: f64,
}

struct KernelReport {
    release: String,
    why: &'static str,
    boot: Option<Duration>,
    wall: Duration,
    tests: Vec<TestResult>,
    /// Why the guest itself failed (no exit status, timeout), if it did.
    guest_failure: Option<String>,
    /// The `-v` lines of the load test: hook in use, verifier counts and times.
    verbose: Vec<String>,
}

pub fn run_matrix(opts: &super::TestOptions) -> Result<()> {
    let start = Instant::now();
    let lines: Vec<&str> = match opts.kernel.as_str() {
        "all" => LINES.iter().map(|l| l.name).collect(),
        one => vec![super::kernel::line(one)?.name],
    };
    // The guests run the host's binaries (9p), so the tests' packages too.
    crate::setup::ensure(crate::setup::Purpose::Vm.parts())?;
    let bin = build::build_user(&[])?;
    let tests = test_binary()?;
    let mut reports = Vec::new();
    for line in lines {
        let guest = prepare(line)?;
        let dir = run_dir(&format!("test-{line}"));
        println!(
            "vm-test: kernel {}: {} tests (run directory {})",
            guest.kernel.release,
            SUBSET.len(),
            dir.display()
        );
        let script = guest_script(&tests);
        let out = qemu::run(
            &guest,
            &qemu::Request {
                argv: &[
                    "/bin/sh".into(),
                    dir.join("matrix.sh").display().to_string(),
                ],
                env: &[
                    ("TCPSTATE_BIN".into(), bin.display().to_string()),
                    ("TCPSTATE_TEST_TIME_SCALE".into(), TIME_SCALE.into()),
                    ("RUST_BACKTRACE".into(), "0".into()),
                ],
                cwd: &util::workspace_root().join("tests"),
                timeout: GUEST_TIMEOUT,
                echo: true,
                dir: &dir,
                files: &[("matrix.sh", script)],
            },
        )?;
        let tests = read_results(&dir)?;
        let verbose = fs::read_to_string(dir.join("tests").join(format!("{}.log", SUBSET[0].name)))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("tcpstate: [") || l.contains("error"))
            .map(str::to_string)
            .collect();
        let guest_failure = match out.status {
            Some(_) => None,
            None => out.failure(),
        };
        let report = KernelReport {
            release: guest.kernel.release.clone(),
            why: guest.kernel.line.why,
            boot: out.boot,
            wall: out.wall,
            tests,
            guest_failure,
            verbose,
        };
        let ok = report.failed() == 0;
        if ok && !opts.keep {
            let _ = fs::remove_dir_all(&dir);
        } else {
            println!("vm-test: run directory kept: {}", dir.display());
        }
        reports.push(report);
    }
    print!("{}", summary(&reports));
    let failed: usize = reports.iter().map(KernelReport::failed).sum();
    if failed > 0 {
        bail!(
            "kernel matrix FAILED: {failed} failure(s) ({})",
            secs(start.elapsed())
        );
    }
    println!("vm-test: all ok ({})", secs(start.elapsed()));
    Ok(())
}

impl KernelReport {
    fn passed(&self) -> usize {
        self.tests.iter().filter(|t| t.status == 0).count()
    }
    /// Failed tests, tests that never ran, and a failed guest.
    fn failed(&self) -> usize {
        let not_run = SUBSET.len().saturating_sub(self.tests.len());
        self.tests.len() - self.passed() + not_run + usize::from(self.guest_failure.is_some())
    }
}

/// `cargo test --release -p tcpstate-tests --no-run`: the path of the `integration` binary,
/// from cargo's JSON messages.
fn test_binary() -> Result<PathBuf> {
    let mut cmd = util::cargo();
    cmd.args(["test", "--release", "-p", "tcpstate-tests", "--no-run"])
        .args(["--message-format=json-render-diagnostics"]);
    println!("xtask: $ {}", util::display(&cmd));
    let out = util::run_captured(&mut cmd)?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "integration"
            && let Some(exe) = msg["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo built no `integration` test executable (tcpstate-tests)")
}

/// The script the guest runs: each test of the subset alone, with a timeout, its log in
/// `tests/<name>.log` and a line `<name> <status> <seconds>` in `results.txt`. A filter that
/// matches no test counts as a failure (status 99), so a renamed test cannot pass silently.
fn guest_script(tests: &Path) -> String {
    let mut s = format!(
        r#"set -u
R="$vm_results"
BIN='{}'
mkdir -p "$R/tests"
: > "$R/results.txt"
echo "vm-test: $(uname -r), $(nproc) CPUs, guest up $(cut -d' ' -f1 /proc/uptime) s"
LOAD_FAILED=
run_test() {{
    if [ "$2" = default ] && [ -n "$LOAD_FAILED" ]; then
        echo "$1 98 0" >> "$R/results.txt"
        echo "vm-test: SKIPPED $1 (the default programs do not load here)"
        return
    fi
    log="$R/tests/$1.log"
    t0=$(date +%s.%N)
    timeout -k 5 {TEST_TIMEOUT_SECS} "$BIN" --exact --test-threads=1 --nocapture "$1" > "$log" 2>&1
    s=$?
    t1=$(date +%s.%N)
    grep -q '^running 1 test' "$log" || s=99
    took=$(echo "$t1 $t0" | awk '{{printf "%.1f", $1 - $2}}')
    echo "$1 $s $took" >> "$R/results.txt"
    [ "$2" = first ] && [ $s != 0 ] && LOAD_FAILED=1
    if [ $s = 0 ]; then
        echo "vm-test: ok      $1 ($took s)"
    else
        echo "vm-test: FAILED  $1 (status $s, $took s); its log ends:"
        tail -n 40 "$log" | sed 's/^/    /'
    fi
}}
"#,
        tests.display()
    );
    for (i, t) in SUBSET.iter().enumerate() {
        let mode = match (i, t.default_hooks) {
            (0, _) => "first",
            (_, true) => "default",
            (_, false) => "other",
        };
        let _ = writeln!(s, "# {}\nrun_test '{}' {mode}", t.proves, t.name);
    }
    s.push_str("exit 0\n");
    s
}

fn read_results(dir: &Path) -> Result<Vec<TestResult>> {
    let path = dir.join("results.txt");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(TestResult {
                name: f.next()?.to_string(),
                status: f.next()?.parse().ok()?,
                secs: f.next()?.parse().ok()?,
            })
        })
        .collect())
}

fn summary(reports: &[KernelReport]) -> String {
    let mut s = String::from("\nvm-test: kernel matrix\n");
    let _ = writeln!(
        s,
        "{:<24} {:>8} {:>7} {:>7} {:>9}",
        "kernel", "boot", "passed", "failed", "wall"
    );
    for r in reports {
        let boot = r.boot.map(secs).unwrap_or_else(|| "?".into());
        let _ = writeln!(
            s,
            "{:<24} {:>8} {:>7} {:>7} {:>9}",
            r.release,
            boot,
            r.passed(),
            r.failed(),
            secs(r.wall)
        );
    }
    for r in reports {
        let _ = writeln!(s, "\n{} ({}):", r.release, r.why);
        for t in SUBSET {
            let line = match r.tests.iter().find(|x| x.name == t.name) {
                Some(x) if x.status == 0 => format!("ok      {:>6.1} s", x.secs),
                Some(x) if x.status == 98 => "SKIPPED         ".into(),
                Some(x) if x.status == 124 || x.status == 137 => {
                    format!("TIMEOUT {:>6.1} s", x.secs)
                }
                Some(x) => format!("FAILED  {:>6.1} s", x.secs),
                None => "NOT RUN         ".into(),
            };
            let _ = writeln!(s, "  {line}  {}", t.name);
        }
        if let Some(why) = &r.guest_failure {
            let _ = writeln!(s, "  guest FAILED: {why}");
        }
        if !r.verbose.is_empty() {
            let _ = writeln!(s, "  tcpstate -v (default flags):");
            for l in &r.verbose {
                let _ = writeln!(s, "    {l}");
            }
        }
    }
    s
}
