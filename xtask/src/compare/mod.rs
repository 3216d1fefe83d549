//! `cargo xtask compare [--connections N] [--closing N] [--out FILE]`: what polling `ss` sees
//! of short-lived TCP states, against what tcpstate reports, on the same burst of connections.
//!
//! In a private network namespace (loopback only), while `ss -tanH state syn-recv state
//! fin-wait-1 state closing state last-ack` runs back to back as fast as it can and
//! `tcpstate --json --netns` traces:
//! - `--connections` short connections to 127.0.0.1:10050: request, reply, the client closes
//!   first (its socket goes through FIN_WAIT1), the server closes on end of stream (LAST_ACK);
//! - `--closing` connections to 127.0.0.1:10051 where the server closes first and nftables
//!   drops its first FIN once per connection, so the client's FIN reaches it in
//!   FIN_WAIT1: CLOSING, until the FIN is retransmitted (~200 ms later);
//!
//! and every server end starts as a request socket (SYN_RECV). Each state's column counts the
//! distinct connections (tuples) seen in it; `ss only` counts those ss saw and tcpstate did not
//! (it should be 0). The markdown table is printed and written to `bench-results/polling.md`.

mod load;
mod observe;
mod report;
mod tracer;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use tcpstate_devsupport::Netns;

use crate::{build, util};
use observe::{Seen, parse_events, poll_ss};
use tracer::Tracer;

/// The report, linked from the README.
pub const REPORT: &str = "bench-results/polling.md";

pub(crate) const PLAIN_PORT: u16 = 10050;
pub(crate) const CLOSING_PORT: u16 = 10051;
/// The states compared, as tcpstate names them and as `ss` prints them.
pub(crate) const STATES: [(&str, &str); 4] = [
    ("SYN_RECV", "SYN-RECV"),
    ("FIN_WAIT1", "FIN-WAIT-1"),
    ("CLOSING", "CLOSING"),
    ("LAST_ACK", "LAST-ACK"),
];
pub(crate) const CLIENT_THREADS: u64 = 4;
pub(crate) const MESSAGE: usize = 64;

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Short connections where the client closes first (FIN_WAIT1, LAST_ACK).
    #[arg(long, default_value_t = 20_000)]
    pub connections: u64,
    /// Connections that go through CLOSING (the server's first FIN dropped by nftables).
    #[arg(long, default_value_t = 2_000)]
    pub closing: u64,
    /// Where to write the markdown report (default: bench-results/polling.md).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Use this tcpstate binary instead of building target/release/tcpstate.
    #[arg(long)]
    pub tcpstate: Option<PathBuf>,
}

pub fn run(opts: &Options) -> Result<()> {
    if !util::is_root() {
        bail!("compare needs root: it creates a network namespace and runs tcpstate");
    }
    crate::setup::ensure(&[crate::setup::Part::ComparePackages])?;
    for tool in ["ip", "ss", "nft"] {
        if util::which(tool).is_none() {
            bail!("`{tool}` not found; run `cargo xtask setup --for test`");
        }
    }
    let tcpstate = match &opts.tcpstate {
        Some(p) => p.clone(),
        None => build::build_user(&[])?,
    };
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| util::workspace_root().join(REPORT));
    let work = util::target_dir().join("compare");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let ns = namespace()?;
    let result = measure(opts, &tcpstate, &ns, &work)?;
    drop(ns);

    let report = result.markdown(opts);
    println!("{report}");
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    println!("compare: wrote {}", out.display());
    Ok(())
}

// ---------------------------------------------------------------------------
// The namespace
// ---------------------------------------------------------------------------

/// The private namespace, with a wide port range (the burst leaves thousands of TIME_WAITs),
/// no TIME_WAIT reuse, and the FIN-drop rule: the first FIN the server sends on each
/// CLOSING_PORT connection is dropped once (a dynamic set remembers the client ports already
/// served), the retransmission passes.
fn namespace() -> Result<Netns> {
    let ns = Netns::create(&format!("tcpst-compare-{}", std::process::id()))?;
    // No reuse of a TIME_WAIT tuple by a new connection (loopback allows it by default):
    // connections are counted by tuple, so each must have its own.
    ns.sysctl(&[
        "net.ipv4.ip_local_port_range=10100 65000",
        "net.ipv4.tcp_tw_reuse=0",
    ])?;
    ns.nft(&format!(
        "table inet tcpst_compare {{
            set fin_dropped {{
                type inet_service
                flags dynamic,timeout
                timeout 10m
            }}
            chain input {{
                type filter hook input priority 0; policy accept;
                tcp sport {CLOSING_PORT} tcp flags & fin == fin tcp dport @fin_dropped accept
                tcp sport {CLOSING_PORT} tcp flags & fin == fin update @fin_dropped {{ tcp dport }} drop
            }}
        }}\n"
    ))?;
    Ok(ns)
}

// ---------------------------------------------------------------------------
// The measurement
// ---------------------------------------------------------------------------

pub(crate) struct Measured {
    ss: Seen,
    tcpstate: Seen,
    polls: u64,
    load_time: Duration,
    poll_time: Duration,
    tracer_summary: String,
    kernel: String,
}

fn measure(opts: &Options, tcpstate: &Path, ns: &Netns, work: &Path) -> Result<Measured> {
    let events = work.join("tcpstate.jsonl");
    let mut tracer = Tracer::start(tcpstate, ns, &events)?;

    let stop = Arc::new(AtomicBool::new(false));
    let ss_seen = Arc::new(Mutex::new(Seen::new()));
    let polls = Arc::new(AtomicU64::new(0));
    let poller = {
        let (stop, seen, polls, ns) = (stop.clone(), ss_seen.clone(), polls.clone(), ns.clone());
        thread::spawn(move || poll_ss(&ns, &stop, &seen, &polls))
    };
    // Let the poller get going before the burst.
    thread::sleep(Duration::from_millis(200));
    let poll_start = Instant::now();
    let polls_before = polls.load(Ordering::Relaxed);

    let start = Instant::now();
    load::load(ns, opts.connections, opts.closing)?;
    let load_time = start.elapsed();
    // The last CLOSING sockets last until their FIN is retransmitted.
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    poller
        .join()
        .map_err(|_| anyhow::anyhow!("ss poller panicked"))??;
    let poll_time = poll_start.elapsed();
    let polls = polls.load(Ordering::Relaxed) - polls_before;

    let tracer_summary = tracer.stop()?;
    let tcpstate_seen = parse_events(&events)?;
    let ss = Arc::try_unwrap(ss_seen)
        .map_err(|_| anyhow::anyhow!("poller still holds its results"))?
        .into_inner()
        .expect("not poisoned");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok(Measured {
        ss,
        tcpstate: tcpstate_seen,
        polls,
        load_time,
        poll_time,
        tracer_summary,
        kernel,
    })
}
