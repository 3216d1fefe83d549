//! The variants a round runs: no tracer, tcpstate (all events, an idle `--port`, another
//! container's `--container`, beside another BPF agent) and the installed peer tools, with
//! how each one's events are counted.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};
use tcpstate_bench::report::{Role, VariantInfo};
use tcpstate_devsupport::{cmd, which_or_system};

use super::machine::uname_release;
use crate::Cli;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Counting {
    None,
    /// tcpstate's exit summary; `all` when every bench event is expected (else none is).
    Tcpstate {
        all: bool,
    },
    /// Output lines with the bench port at either end.
    PortLines,
    /// A bpftrace map printed at exit.
    BpftraceScalar(&'static str),
}

#[derive(Debug, Clone)]
pub struct Variant {
    pub info: VariantInfo,
    /// The tracer; None for the untraced baseline.
    pub program: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub counting: Counting,
    /// A line the tool prints on stderr once it is ready.
    pub ready_line: Option<&'static str>,
    /// Another tracer run for the whole round, its output discarded: what
    /// a production host with other BPF agents looks like.
    pub companion: Option<PathBuf>,
    /// Load and tracer on any CPU, as the scheduler likes (nested state
    /// changes on one CPU are much more frequent than when pinned apart).
    pub unpinned: bool,
}

/// What tcpstate prints on stderr once it is attached.
const TCPSTATE_READY: &str = "Tracing TCP state changes";

impl Variant {
    fn new(id: &str, label: &str, role: Role, program: Option<PathBuf>, args: &[String]) -> Self {
        let command = match &program {
            Some(p) => std::iter::once(p.display().to_string())
                .chain(args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" "),
            None => "(no tracer)".into(),
        };
        Variant {
            info: VariantInfo {
                id: id.into(),
                label: label.into(),
                role,
                command,
            },
            program,
            args: args.to_vec(),
            env: Vec::new(),
            counting: Counting::None,
            ready_line: None,
            companion: None,
            unpinned: false,
        }
    }

    /// tcpstate with `args`, counted from its exit summary (`all`: every bench event is
    /// expected, else none is), ready once it says so.
    fn tcpstate(
        id: &str,
        label: &str,
        role: Role,
        tcpstate: &Path,
        args: &[String],
        all: bool,
    ) -> Self {
        let mut v = Variant::new(id, label, role, Some(tcpstate.to_path_buf()), args);
        v.counting = Counting::Tcpstate { all };
        v.ready_line = Some(TCPSTATE_READY);
        v
    }
}

/// Why a peer did not run when its package is missing.
fn not_installed(name: &str) -> (String, String) {
    (
        name.into(),
        "not installed (`cargo xtask setup --bench`)".into(),
    )
}

/// Debian's split kernel headers (`linux-headers-<ver>-<arch>` holds the generated files and
/// points at `linux-headers-<ver>-common`), merged into one tree of symlinks bcc can use as
/// `BCC_KERNEL_SOURCE`. None when the running kernel's own headers are installed (bcc finds
/// them) or when there are none.
fn bcc_kernel_source(work: &Path) -> Result<Option<PathBuf>, String> {
    let release = uname_release();
    if Path::new(&format!("/lib/modules/{release}/build/include")).is_dir() {
        return Ok(None);
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/src")
        .map_err(|e| format!("no kernel headers (/usr/src: {e})"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("linux-headers-") && n.ends_with(&format!("-{arch}"))
        })
        .collect();
    found.sort();
    let Some(arch_dir) = found.pop() else {
        return Err(format!(
            "no kernel headers for {release} or in /usr/src (apt-get install linux-headers-{arch})"
        ));
    };
    let makefile = fs::read_to_string(arch_dir.join("Makefile")).unwrap_or_default();
    let common = makefile
        .split_whitespace()
        .find_map(|w| w.strip_suffix("/Makefile"))
        .map(PathBuf::from)
        .filter(|p| p.is_dir());
    let name = arch_dir.file_name().unwrap_or_default();
    let merged = work.join("kheaders").join(name);
    if !merged.join("include/generated").exists() || !merged.join("include/linux").exists() {
        let _ = fs::remove_dir_all(&merged);
        fs::create_dir_all(&merged).map_err(|e| e.to_string())?;
        let link_tree = |from: &Path| {
            cmd::run(
                Command::new("cp")
                    .arg("-rsf")
                    .arg(format!("{}/.", from.display()))
                    .arg(&merged),
                None,
            )
            .map(drop)
            .map_err(|e| e.to_string())
        };
        if let Some(c) = &common {
            link_tree(c)?;
        }
        link_tree(&arch_dir)?;
    }
    Ok(Some(merged))
}

/// A bpftrace script printing every TCP transition in the peers' column layout.
fn bpftrace_print_script() -> String {
    let states = [
        (1, "ESTABLISHED"),
        (2, "SYN_SENT"),
        (3, "SYN_RECV"),
        (4, "FIN_WAIT1"),
        (5, "FIN_WAIT2"),
        (6, "TIME_WAIT"),
        (7, "CLOSE"),
        (8, "CLOSE_WAIT"),
        (9, "LAST_ACK"),
        (10, "LISTEN"),
        (11, "CLOSING"),
        (12, "NEW_SYN_RECV"),
    ];
    let mut s = String::from("BEGIN\n{\n");
    for (n, name) in states {
        s.push_str(&format!("  @st[{n}] = \"{name}\";\n"));
    }
    s.push_str(
        r#"}

tracepoint:sock:inet_sock_set_state
/args->protocol == 6/
{
  // Every field read up front: bpftrace 0.17 cannot read args after a printf.
  $sk = (uint64)args->skaddr;
  $old = args->oldstate;
  $new = args->newstate;
  $sport = args->sport;
  $dport = args->dport;
  $family = args->family;
  $us = @start[$sk] ? (nsecs - @start[$sk]) / 1000 : 0;
  if ($family == 2) {
    printf("%lx %d %s %s %d %s %d %s -> %s %d.%03d\n", $sk, pid, comm,
      ntop(2, args->saddr), $sport, ntop(2, args->daddr), $dport,
      @st[$old], @st[$new], $us / 1000, $us % 1000);
  } else {
    printf("%lx %d %s %s %d %s %d %s -> %s %d.%03d\n", $sk, pid, comm,
      ntop(10, args->saddr_v6), $sport, ntop(10, args->daddr_v6), $dport,
      @st[$old], @st[$new], $us / 1000, $us % 1000);
  }
  if ($new == 7) {
    delete(@start[$sk]);
  } else {
    @start[$sk] = nsecs;
  }
}

END
{
  clear(@start);
  clear(@st);
}
"#,
    );
    s
}

fn bpftrace_count_script(port: u16) -> String {
    format!(
        "tracepoint:sock:inet_sock_set_state\n\
         /args->protocol == 6 && (args->sport == {port} || args->dport == {port})/\n\
         {{\n  @events = count();\n}}\n"
    )
}

/// Peers not run: (name, why).
pub type Skipped = Vec<(String, String)>;

pub fn variants(
    cli: &Cli,
    tcpstate: &Path,
    netns_path: &Path,
    work: &Path,
) -> Result<(Vec<Variant>, Skipped)> {
    let mut v = Vec::new();
    let mut skipped = Vec::new();
    v.push(Variant::new(
        "untraced",
        "untraced",
        Role::Baseline,
        None,
        &[],
    ));
    let netns_args = ["--netns".to_string(), netns_path.display().to_string()];
    v.push(Variant::tcpstate(
        "tcpstate",
        "tcpstate (all events to a file)",
        Role::Tcpstate,
        tcpstate,
        &netns_args,
        true,
    ));
    v.push(Variant::tcpstate(
        "tcpstate-port",
        &format!("tcpstate --port {} (idle port)", cli.idle_port),
        Role::TcpstateIdlePort,
        tcpstate,
        &["--port".into(), cli.idle_port.to_string()],
        false,
    ));
    // The load's cgroup is not this container's (no container has this
    // ID): the kernel program drops every change after one map lookup,
    // the cost of another container's traffic under `--container`.
    v.push(Variant::tcpstate(
        "tcpstate-container",
        "tcpstate --container (another container's traffic)",
        Role::TcpstateIdlePort,
        tcpstate,
        &["--container".into(), "0123456789ab".into()],
        false,
    ));

    if !cli.no_peers && !cli.smoke {
        match which_or_system("tcpstates") {
            Some(p) => {
                let mut x = Variant::new(
                    "libbpf-tcpstates",
                    "libbpf-tools tcpstates",
                    Role::Peer,
                    Some(p.clone()),
                    &[],
                );
                x.counting = Counting::PortLines;
                v.push(x);
                // Beside another BPF agent, on unpinned load: nothing may be
                // skipped (a classic tracepoint would be, whenever the other
                // tool's program runs on the same CPU).
                let mut both = Variant::tcpstate(
                    "tcpstate-alongside",
                    "tcpstate (all events) beside libbpf-tools tcpstates, unpinned",
                    Role::TcpstateAlongside,
                    tcpstate,
                    &netns_args,
                    true,
                );
                both.companion = Some(p.clone());
                both.unpinned = true;
                v.push(both);
            }
            None => skipped.push(not_installed("libbpf-tools tcpstates")),
        }
        match which_or_system("tcpstates-bpfcc") {
            Some(p) => match bcc_kernel_source(work) {
                Ok(src) => {
                    let mut x = Variant::new(
                        "bcc-tcpstates",
                        "bcc tcpstates-bpfcc",
                        Role::Peer,
                        Some(p),
                        &[],
                    );
                    if let Some(src) = src {
                        x.info.command =
                            format!("BCC_KERNEL_SOURCE={} {}", src.display(), x.info.command);
                        x.env
                            .push(("BCC_KERNEL_SOURCE".into(), src.display().to_string()));
                    }
                    x.counting = Counting::PortLines;
                    v.push(x);
                }
                Err(why) => skipped.push(("bcc tcpstates-bpfcc".into(), why)),
            },
            None => skipped.push(not_installed("bcc tcpstates-bpfcc")),
        }
        match which_or_system("bpftrace") {
            Some(p) => {
                let print = work.join("tcpstates.bt");
                fs::write(&print, bpftrace_print_script())?;
                let mut x = Variant::new(
                    "bpftrace",
                    "bpftrace script (prints every event)",
                    Role::Peer,
                    Some(p.clone()),
                    &[print.display().to_string()],
                );
                x.counting = Counting::PortLines;
                v.push(x);
                let countf = work.join("tcpcount.bt");
                fs::write(&countf, bpftrace_count_script(cli.port))?;
                let mut x = Variant::new(
                    "bpftrace-count",
                    "bpftrace, in-kernel count only (no output)",
                    Role::Peer,
                    Some(p),
                    &[countf.display().to_string()],
                );
                x.counting = Counting::BpftraceScalar("events");
                v.push(x);
            }
            None => skipped.push(not_installed("bpftrace")),
        }
    }
    if !cli.only.is_empty() {
        for id in &cli.only {
            if !v.iter().any(|x| &x.info.id == id) {
                bail!("--only: no variant `{id}` here");
            }
        }
        v.retain(|x| x.info.role == Role::Baseline || cli.only.contains(&x.info.id));
    }
    Ok((v, skipped))
}
