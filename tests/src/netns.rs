//! Private network namespaces for the tests: [`Netns`], the shared
//! `tcpstate_devsupport::Netns` (a fresh namespace with only `lo` up, removed
//! when its last holder goes) with the tests' conventions: a failure panics
//! with its cause, and the nftables rules the scenarios use to lose packets.

use std::ops::Deref;

use tcpstate_devsupport::netns;

/// A private network namespace `tcpst-<pid>-<n>` with `lo` up. Clones share
/// it; it is deleted when the last clone goes, and the [`Peer`]s and
/// [`Tracer`]s started in it hold one, so it outlives everything in it.
///
/// [`Peer`]: crate::Peer
/// [`Tracer`]: crate::Tracer
#[derive(Clone)]
pub struct Netns(netns::Netns);

impl Deref for Netns {
    type Target = netns::Netns;

    fn deref(&self) -> &netns::Netns {
        &self.0
    }
}

impl Netns {
    pub fn new() -> Netns {
        Netns(netns::Netns::numbered("tcpst").unwrap_or_else(|e| panic!("{e:#}")))
    }

    /// The namespace's inode number, what tcpstate reports as `netns`.
    pub fn inode(&self) -> u64 {
        self.0
            .inode()
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path().display()))
    }

    /// Runs `args` inside the namespace to completion, returns its stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        self.0.exec(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Loads an nftables script (`nft -f -`) in the namespace.
    pub fn nft(&self, script: &str) {
        self.0
            .nft(script)
            .unwrap_or_else(|e| panic!("nft script failed: {e:#}\n{script}"));
    }

    /// `ss -tanH` inside the namespace: the sockets as netstat would show them.
    pub fn ss(&self) -> String {
        self.0.ss().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Drops every FIN matching `selector` (`tcp sport 10050`, ...) on input,
    /// until [`Netns::lift_fin_gate`].
    pub fn drop_fins(&self, selector: &str) {
        self.nft(&format!(
            "table inet tcpst_gate {{
                chain input {{
                    type filter hook input priority 0; policy accept;
                    {selector} tcp flags & fin == fin counter drop
                }}
            }}"
        ));
    }

    /// Lets FINs through again.
    pub fn lift_fin_gate(&self) {
        self.nft("delete table inet tcpst_gate");
    }

    /// Drops the pure ACKs (and data segments) matching `selector` on input
    /// (`tcp dport 10050`, ...): all of them, or with `first` only the first
    /// that many (a client's final handshake ACK and its repetitions).
    pub fn drop_acks(&self, selector: &str, first: Option<u32>) {
        let limit = first.map_or(String::new(), |n| {
            format!("limit rate 1/hour burst {n} packets ")
        });
        self.nft(&format!(
            "table inet tcpst_ack {{
                chain input {{
                    type filter hook input priority 0; policy accept;
                    {selector} tcp flags & (syn|ack|fin|rst) == ack {limit}counter drop
                }}
            }}"
        ));
    }

    /// Sets per-namespace sysctls, e.g. `net.ipv4.tcp_fin_timeout=1`.
    pub fn sysctl(&self, settings: &[&str]) {
        self.0.sysctl(settings).unwrap_or_else(|e| panic!("{e:#}"));
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}
