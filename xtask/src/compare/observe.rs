//! What each side saw: the connections `ss` listed in each state while polling, and those
//! tcpstate reported entering it.

use std::{
    collections::HashSet,
    fs::File,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use anyhow::{Context as _, Result, bail};
use tcpstate_devsupport::Netns;

use super::STATES;

/// Distinct connections seen in a state: (state, local, remote).
pub type Seen = HashSet<(String, SocketAddr, SocketAddr)>;

/// Runs `ss` back to back until `stop`, recording every (state, local, peer) it lists.
pub fn poll_ss(ns: &Netns, stop: &AtomicBool, seen: &Mutex<Seen>, polls: &AtomicU64) -> Result<()> {
    let mut args = vec!["-N", ns.name(), "-tanH"];
    for (_, ss_name) in STATES {
        args.extend(["state", ss_name]);
    }
    while !stop.load(Ordering::Relaxed) {
        let out = Command::new("ss")
            .args(&args)
            .output()
            .context("cannot run ss")?;
        if !out.status.success() {
            bail!(
                "`ss {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        polls.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut seen = seen.lock().expect("not poisoned");
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 {
                continue;
            }
            let Some((state, _)) = STATES.iter().find(|(_, s)| *s == f[0]) else {
                continue;
            };
            if let (Ok(l), Ok(r)) = (f[3].parse(), f[4].parse()) {
                seen.insert((state.to_string(), l, r));
            }
        }
    }
    Ok(())
}

/// Every (state, local, remote) tcpstate reported a socket entering, any source.
pub fn parse_events(path: &Path) -> Result<Seen> {
    let mut seen = Seen::new();
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    for line in BufReader::new(f).lines() {
        let line = line?;
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("tcpstate printed {line:?}"))?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let newstate = s("newstate");
        if !STATES.iter().any(|(st, _)| *st == newstate) {
            continue;
        }
        let addr = |a: &str, p: &str| -> Option<SocketAddr> {
            let ip: std::net::IpAddr = s(a).parse().ok()?;
            Some(SocketAddr::new(ip, v[p].as_u64()? as u16))
        };
        if let (Some(l), Some(r)) = (addr("laddr", "lport"), addr("raddr", "rport")) {
            seen.insert((newstate, l, r));
        }
    }
    Ok(seen)
}
