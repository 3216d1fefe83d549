//! The benchmark's network namespace and its settings.

use anyhow::{Context as _, Result, bail};
use tcpstate_devsupport::Netns;

/// Settings inside the namespace, so the load never waits on the kernel. The client closes
/// first, so its side ends in TIME_WAIT: a wide ephemeral range and quick reuse of TIME_WAIT
/// ports keep a 60k connections/s client from running out of ports (each connection still
/// makes the same 10 transitions; TIME_WAIT is not one of them). A deep accept queue keeps
/// bursts from dropping SYNs (a dropped SYN stalls the client for a second).
const NETNS_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv4/ip_local_port_range", "1024 65535"),
    ("net/ipv4/tcp_tw_reuse", "1"),
    ("net/ipv4/tcp_tw_reuse_delay", "1"),
    ("net/core/somaxconn", "65535"),
    ("net/ipv4/tcp_max_syn_backlog", "65535"),
];

/// Creates the namespace `name` with [`NETNS_SYSCTLS`] applied; returns it and the settings
/// made, as `key=value` for the report (a key this kernel lacks is left out).
pub fn create(name: &str) -> Result<(Netns, Vec<String>)> {
    let ns = Netns::create(name)
        .context("creating the bench network namespace (needs root and iproute2)")?;
    let mut notes = Vec::new();
    for (key, value) in NETNS_SYSCTLS {
        match ns.write_sysctl(key, value) {
            Ok(()) => notes.push(format!("{}={value}", key.replace('/', "."))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("setting {key} in the bench namespace: {e}"),
        }
    }
    Ok((ns, notes))
}
