//! Command-line interface. Parsing and validation live here; clap exits with
//! status 2 on usage errors, as does our own validation ([`Cli::validate`]).

pub mod generate;

use std::time::Duration;

use clap::{ArgAction, Parser};

const EXAMPLES: &str = "\
Examples:
  tcpstate --port 10050            every transition on port 10050 (either end)
  tcpstate --lport 80 --lport 443  sockets whose local port is 80 or 443
  tcpstate -6 --rport 5432         IPv6 connections to remote port 5432
  tcpstate --netns /run/netns/blue only sockets in that network namespace
  tcpstate -w --port 10050         wide: socket address, netns, on-CPU task
  tcpstate --duration 30s          trace for 30 seconds, then print a summary

Common jobs:
  watch a port, with full timestamps:
    tcpstate -T --port 10050
  find CLOSE_WAIT leaks (connections the application never closes):
    tcpstate --port 8080 --trigger CLOSE_WAIT --lifecycle --duration 5m
                                   unfinished ones listed at exit are still open
    tcpstate --port 8080 --stuck 30s
                                   or flag each one, with its owner, as it happens
  log to JSON (schema in docs/json.md), or CSV:
    tcpstate -j --port 8080 > log.jsonl
    tcpstate --csv --port 8080 > log.csv
  one line per connection with the time spent in each state:
    tcpstate --lifecycle --port 10050
  only sockets that went through a simultaneous close:
    tcpstate --trigger CLOSING
  statistics and a state diagram of 60 s of traffic:
    tcpstate --summary --diagram states.dot --duration 60s

Columns: TIME is the kernel's event time (wall clock, microseconds; -T for
the date too, -t for seconds since start). PID/COMM
are the socket's owner (the process that connected, listened, accepted or
closed it), not the task that happened to be on CPU: most transitions run in
softirq context. MS is the time spent in the old state; `-` when unknown.

Needs CAP_BPF and CAP_PERFMON (root has both; or `setcap cap_bpf,cap_perfmon+ep`
on the binary), plus CAP_SYS_ADMIN only if tracefs must be mounted.
Exit status: 0 ok, 1 runtime error, 2 usage error.";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "tcpstate",
    version,
    about = "Trace TCP state changes as the kernel makes them.",
    long_about = "Trace TCP state changes as the kernel makes them: exact OLD -> NEW \
                  transitions with the owning process, addresses and the time spent in \
                  the old state, including the sub-millisecond states that netstat and \
                  ss polling never see.",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// Trace connections with this port at either end (repeatable).
    #[arg(short = 'p', long = "port", value_name = "PORT", value_parser = port, help_heading = "Filters")]
    pub ports: Vec<u16>,

    /// Trace sockets with this local port (repeatable).
    #[arg(short = 'L', long = "lport", value_name = "PORT", value_parser = port, help_heading = "Filters")]
    pub lports: Vec<u16>,

    /// Trace sockets with this remote port (repeatable).
    #[arg(short = 'D', long = "rport", value_name = "PORT", value_parser = port, help_heading = "Filters")]
    pub rports: Vec<u16>,

    /// IPv4 sockets only.
    #[arg(
        short = '4',
        long = "ipv4",
        conflicts_with = "ipv6",
        help_heading = "Filters"
    )]
    pub ipv4: bool,

    /// IPv6 sockets only (IPv4 on an AF_INET6 socket shows as ::ffff:a.b.c.d).
    #[arg(short = '6', long = "ipv6", help_heading = "Filters")]
    pub ipv6: bool,

    /// Only sockets in this network namespace: a name under /run/netns, a path
    /// (e.g. /proc/PID/ns/net) or a namespace inode number.
    #[arg(long, value_name = "NAME|PATH|INODE", help_heading = "Filters")]
    pub netns: Option<String>,

    /// Only rows whose owner runs in this cgroup (v2 path as in
    /// /proc/PID/cgroup, e.g. /system.slice/nginx.service) or below it
    /// (repeatable).
    #[arg(long = "cgroup", value_name = "PATH", help_heading = "Filters")]
    pub cgroups: Vec<String>,

    /// Only rows whose owner runs in this container: its ID or a prefix of
    /// it, as podman, docker or crictl show it (repeatable).
    #[arg(long = "container", value_name = "ID", help_heading = "Filters")]
    pub containers: Vec<String>,

    /// Print JSON Lines, one object per event (schema in docs/json.md).
    #[arg(short = 'j', long, conflicts_with = "wide", help_heading = "Output")]
    pub json: bool,

    /// Wide output: add socket address, netns, family and the on-CPU task.
    #[arg(short = 'w', long, help_heading = "Output")]
    pub wide: bool,

    /// After each row, one sentence of what it means for this connection
    /// (who closed, who must act, why it ended). Text output only.
    #[arg(long, conflicts_with_all = ["json", "csv", "lifecycle"], help_heading = "Output")]
    pub explain: bool,

    /// Print CSV with a header row (the JSON fields; docs/output.md).
    #[arg(long, conflicts_with_all = ["json", "wide", "lifecycle", "summary"], help_heading = "Output")]
    pub csv: bool,

    /// TIME as the full local date and time, YYYY-MM-DDTHH:MM:SS.uuuuuu.
    #[arg(short = 'T', long, conflicts_with_all = ["timestamp", "json", "csv"], help_heading = "Output")]
    pub datetime: bool,

    /// TIME as seconds since tracing started, with microseconds.
    #[arg(short = 't', long, conflicts_with_all = ["json", "csv"], help_heading = "Output")]
    pub timestamp: bool,

    /// Colour states: auto (when stdout is a terminal and NO_COLOR is unset),
    /// always or never.
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = crate::render::color::ColorChoice::Auto, help_heading = "Output")]
    pub color: crate::render::color::ColorChoice,

    /// One line per connection when it closes: its path through the states
    /// with the time spent in each, its role and who closed first.
    /// Unfinished connections are printed at exit.
    #[arg(long, conflicts_with = "wide", help_heading = "Views")]
    pub lifecycle: bool,

    /// Print only the history of sockets that reach STATE or make the
    /// transition OLD->NEW (e.g. CLOSING, CLOSE_WAIT, 'ESTABLISHED->CLOSE':
    /// quote it, `>` is a shell redirection); repeatable.
    #[arg(long, value_name = "STATE|OLD->NEW", value_parser = crate::render::trigger::parse_spec, conflicts_with = "summary", help_heading = "Views")]
    pub trigger: Vec<crate::render::trigger::TriggerSpec>,

    /// A full-screen live view: sockets per state, listeners' accept queues
    /// and drops, who holds sockets in CLOSE_WAIT/FIN_WAIT2/LAST_ACK/
    /// SYN_SENT, TIME_WAIT pressure on the ephemeral ports, failed connects
    /// and resets. Keys: q quit, p pause, s sort, / filter, Tab pane, ? help.
    /// When stdout is not a terminal, a plain-text snapshot per --interval.
    #[arg(long, conflicts_with_all = ["json", "csv", "wide", "lifecycle", "summary", "trigger", "quiet", "explain"], help_heading = "Views")]
    pub top: bool,

    /// How often --top samples and redraws (or prints a snapshot).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration, requires = "top", help_heading = "Views")]
    pub interval: Duration,

    /// Most socket histories held at once by --lifecycle and --trigger (the
    /// oldest is evicted beyond, and counted).
    #[arg(long, value_name = "N", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..=10_000_000), help_heading = "Views")]
    pub max_histories: u32,

    /// At exit, print counts per transition and log2 histograms of the time
    /// spent in each state, instead of a line per event (with -j: one JSON
    /// record).
    #[arg(long, help_heading = "Views")]
    pub summary: bool,

    /// At exit, write the observed transitions as a Graphviz state diagram
    /// with counts and median times (and FILE.svg when `dot` is installed).
    #[arg(long, value_name = "FILE.dot", help_heading = "Views")]
    pub diagram: Option<std::path::PathBuf>,

    /// Serve Prometheus/OpenMetrics metrics on ADDR at /metrics, e.g.
    /// 127.0.0.1:9979 (docs/metrics.md). Beside any output, or alone with
    /// --quiet.
    #[arg(long, value_name = "ADDR", help_heading = "Metrics")]
    pub metrics: Option<std::net::SocketAddr>,

    /// No per-event output (e.g. with --metrics); the exit report is still
    /// printed to stderr.
    #[arg(short = 'q', long, conflicts_with_all = ["json", "csv", "wide", "lifecycle", "trigger"], help_heading = "Metrics")]
    pub quiet: bool,

    /// Add container_id and pod_uid labels to the metrics (at most
    /// --metrics-max-containers distinct values; the rest as `other`).
    #[arg(long, requires = "metrics", help_heading = "Metrics")]
    pub metrics_container_labels: bool,

    /// Most distinct container (and pod) label values with
    /// --metrics-container-labels.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000), help_heading = "Metrics")]
    pub metrics_max_containers: u32,

    /// Most distinct `port` label values (ports from the filter, and the
    /// listening ports of tcpstate_listen_*, in the order first seen; the
    /// rest as `other`, counted in tcpstate_label_overflow).
    #[arg(long, value_name = "N", default_value_t = crate::metrics::top::DEFAULT_MAX_PORTS, value_parser = clap::value_parser!(u32).range(1..=1024), help_heading = "Metrics")]
    pub metrics_max_ports: u32,

    /// TIME_WAIT destinations exposed by tcpstate_timewait_sockets, the
    /// most loaded first (0: none).
    #[arg(long, value_name = "N", default_value_t = crate::metrics::top::DEFAULT_TIMEWAIT_TOP, value_parser = clap::value_parser!(u32).range(0..=crate::top::model::TOP_DESTINATIONS as i64), requires = "metrics", help_heading = "Metrics")]
    pub metrics_timewait_top: u32,

    /// Print a shell completion script and exit.
    #[arg(long, value_name = "SHELL", hide = true, exclusive = true)]
    pub completions: Option<clap_complete::Shell>,

    /// Print the man page (roff) and exit.
    #[arg(long, hide = true, exclusive = true)]
    pub man: bool,

    /// Stop after this long (e.g. 30s, 5m), then print the summary.
    #[arg(short = 'd', long, value_name = "DURATION", value_parser = duration, help_heading = "Run")]
    pub duration: Option<Duration>,

    /// Ring-buffer size in bytes (power of two; K/M suffixes allowed).
    #[arg(long, value_name = "BYTES", default_value = "2M", value_parser = ring_size, help_heading = "Run")]
    pub ring_size: u32,

    /// Most sockets tracked at once for dwell time and owner (LRU beyond).
    #[arg(long, value_name = "N", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(64..=16_777_216), help_heading = "Run")]
    pub max_sockets: u32,

    /// How often the reader drains the ring buffer when it is not full enough
    /// to wake it (bounds the output latency).
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = flush_interval, help_heading = "Run")]
    pub flush_interval: Duration,

    /// List the sockets that already exist (state and owner) when tracing
    /// starts. On by default when a port filter is given.
    #[arg(
        long,
        overrides_with = "no_snapshot",
        help_heading = "Beyond the tracepoint"
    )]
    pub snapshot: bool,

    /// Do not list existing sockets at start.
    #[arg(
        long,
        overrides_with = "snapshot",
        help_heading = "Beyond the tracepoint"
    )]
    pub no_snapshot: bool,

    /// Flag, once, a socket that stays longer than this in CLOSE_WAIT (its
    /// application never called close()), FIN_WAIT2 (the peer never sent
    /// FIN), LAST_ACK or SYN_SENT, e.g. --stuck 5s.
    #[arg(long, value_name = "DURATION", value_parser = duration, help_heading = "Beyond the tracepoint")]
    pub stuck: Option<Duration>,

    /// Do not watch half-open connections (leaves out the SYN-ACK
    /// retransmit tracepoint, which runs only when a SYN-ACK is resent).
    #[arg(long, help_heading = "Beyond the tracepoint")]
    pub no_half_open: bool,

    /// Carry state changes on the classic tracepoint
    /// sock:inet_sock_set_state even where the BTF tracepoint works (it is
    /// chosen automatically when kernel BTF lacks what the BTF one needs).
    #[arg(long, help_heading = "Run")]
    pub classic_tracepoint: bool,

    /// Act as if the kernel had no BTF: the classic tracepoints only, no
    /// --netns and no close reasons (what older or stripped kernels give;
    /// for comparing, and for testing that path on any kernel).
    #[arg(long, help_heading = "Run")]
    pub no_kernel_btf: bool,

    /// Most half-open, timewait and --stuck candidate sockets followed at once
    /// (beyond it they are counted as untracked in the exit report).
    #[arg(long, value_name = "N", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1..=4_000_000), help_heading = "Beyond the tracepoint")]
    pub max_tracked: u32,

    /// Explain setup steps and show kernel-side diagnostics and verifier logs.
    #[arg(short = 'v', long, action = ArgAction::SetTrue, help_heading = "Run")]
    pub verbose: bool,
}

/// Most ports a filter may hold (the kernel map's size).
pub const MAX_PORTS: usize = 1024;

fn port(s: &str) -> Result<u16, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a port number"))?;
    if v == 0 || v > 65535 {
        return Err(format!("port {v} is out of range 1-65535"));
    }
    Ok(v as u16)
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e}"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

fn flush_interval(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d > Duration::from_secs(1) {
        return Err("at most 1s (it bounds the output latency)".into());
    }
    Ok(d)
}

/// Parses `4096`, `256K`, `8M`; must be a power of two, 4 KiB to 1 GiB
/// (the kernel requires a page-aligned power of two).
pub fn ring_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1u64 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1u64 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 4096, 256K, 8M)"))?;
    let bytes = n.checked_mul(mult).ok_or("size too large")?;
    if !bytes.is_power_of_two() {
        return Err(format!("{bytes} is not a power of two"));
    }
    if !(4096..=1 << 30).contains(&bytes) {
        return Err(format!("{bytes} is outside 4K-1G"));
    }
    Ok(bytes as u32)
}

impl Cli {
    /// Parses the process arguments. `--help` and `--version` print and exit
    /// 0; any other clap error is reported like every other error, as one
    /// `tcpstate: error:` line and a hint, with exit status 2.
    pub fn parse_or_exit() -> Cli {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        match Cli::try_parse_from(&args) {
            Ok(cli) => cli,
            Err(e) if !e.use_stderr() => e.exit(),
            Err(e) => {
                let (message, hint) = usage_error(&args, &e);
                crate::error::UserError::usage(message)
                    .hint(hint)
                    .report(false);
                std::process::exit(2);
            }
        }
    }

    /// Checks that clap's per-flag parsers cannot express.
    pub fn validate(&self) -> Result<(), String> {
        // A port named twice is one port (`--port 80 --port 80`, a generated
        // list): only distinct ones count against the kernel map's size.
        let n = self.distinct_ports().len();
        if n > MAX_PORTS {
            return Err(format!(
                "at most {MAX_PORTS} distinct ports may be given, got {n}"
            ));
        }
        if self.cgroups.iter().any(|c| c.trim().is_empty()) {
            return Err("--cgroup needs a path, e.g. /system.slice".into());
        }
        if let Some(bad) = self.cgroups.iter().find(|c| !c.trim().starts_with('/')) {
            // Relative paths would match no /proc/PID/cgroup line, silently.
            return Err(format!(
                "--cgroup `{bad}`: expected an absolute cgroup path as in /proc/PID/cgroup, e.g. /system.slice/nginx.service"
            ));
        }
        if let Some(path) = &self.diagram {
            crate::outfile::check_writable("--diagram", path)?;
        }
        if let Some(ns) = &self.netns
            && ns.trim().is_empty()
        {
            return Err("--netns needs a name, path or inode".into());
        }
        if let Some(bad) = self
            .containers
            .iter()
            .find(|c| c.trim().is_empty() || !c.trim().bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(format!(
                "--container `{bad}`: expected a container ID or its prefix (hex digits)"
            ));
        }
        Ok(())
    }

    /// Every port of `--port`, `--lport` and `--rport`, each once, in the
    /// order first given.
    pub fn distinct_ports(&self) -> Vec<u16> {
        let mut seen = std::collections::HashSet::new();
        self.ports
            .iter()
            .chain(&self.lports)
            .chain(&self.rports)
            .copied()
            .filter(|p| seen.insert(*p))
            .collect()
    }

    pub fn has_port_filter(&self) -> bool {
        !(self.ports.is_empty() && self.lports.is_empty() && self.rports.is_empty())
    }

    /// Container attribution: on when an output shows it (wide, JSON, CSV),
    /// a filter needs it, or the metrics label by it.
    pub fn container_options(&self) -> crate::container::Options {
        let select = crate::container::select::Select::new(&self.cgroups, &self.containers);
        crate::container::Options {
            enabled: (self.wide || self.json || self.csv || self.top) && !self.quiet
                || select.is_active()
                || self.metrics_container_labels,
            select,
        }
    }

    /// `--snapshot`, or a port filter without `--no-snapshot`.
    /// `--top` counts from it.
    pub fn wants_snapshot(&self) -> bool {
        self.snapshot || self.top || (self.has_port_filter() && !self.no_snapshot)
    }
}

/// Control characters written as `\xNN`, so an argument cannot reach the
/// terminal raw (clap echoes offending values, and a newline would split the
/// one-line error).
fn escape_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\x{:02x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A clap error as (message, hint): its first line without clap's `error: `
/// prefix, and its `tip:` if any.
pub fn one_line(e: &clap::Error) -> (String, String) {
    let text = e.to_string(); // Display renders without colours.
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let message = first.strip_prefix("error: ").unwrap_or(first).to_string();
    // clap's own advice: `tip: ...` or `[possible values: a, b]`.
    let hint = lines
        .find_map(|l| {
            l.strip_prefix("tip: ").map(str::to_string).or_else(|| {
                l.strip_prefix('[')
                    .and_then(|l| l.strip_suffix(']'))
                    .filter(|l| l.starts_with("possible values: "))
                    .map(str::to_string)
            })
        })
        .map(|tip| format!("{tip}; see tcpstate --help"))
        .unwrap_or_else(|| "see tcpstate --help".to_string());
    (message, hint)
}

/// The one-line report of `e`, an error for `args`. The message comes from
/// parsing the arguments again with control characters escaped, so what clap
/// echoes is printable; should those parse (they never should), `e` itself.
pub fn usage_error(args: &[std::ffi::OsString], e: &clap::Error) -> (String, String) {
    let escaped: Vec<String> = args
        .iter()
        .map(|a| escape_controls(&a.to_string_lossy()))
        .collect();
    match Cli::try_parse_from(&escaped) {
        Err(e2) if e2.kind() == e.kind() => one_line(&e2),
        _ => {
            let (m, h) = one_line(e);
            (escape_controls(&m), escape_controls(&h))
        }
    }
}

#[cfg(test)]
mod tests;
