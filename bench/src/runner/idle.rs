//! Whether the machine is idle enough to measure: CPU use per CPU and NET_RX softirqs, from
//! /proc.

use std::{
    fs,
    time::{Duration, Instant},
};

use super::is_interrupted;

/// (busy, total) jiffies of each CPU from /proc/stat.
pub fn cpu_jiffies() -> Vec<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

/// NET_RX softirqs so far, all CPUs (loopback traffic in any namespace raises them).
fn net_rx_softirqs() -> u64 {
    fs::read_to_string("/proc/softirqs")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("NET_RX:"))
        .map_or(0, |l| {
            l.split_whitespace()
                .filter_map(|x| x.parse::<u64>().ok())
                .sum()
        })
}

/// The share of `cpu`'s time it was busy between two [`cpu_jiffies`] samples (0..1).
pub fn share_busy(before: &[(u64, u64)], after: &[(u64, u64)], cpu: usize) -> Option<f64> {
    let (b0, t0) = *before.get(cpu)?;
    let (b1, t1) = *after.get(cpu)?;
    (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64)
}

/// The busiest of `cpus` over `window` (a fraction), and NET_RX softirqs per second.
fn busiest(cpus: &[usize], window: Duration) -> (f64, f64) {
    let a = cpu_jiffies();
    let n0 = net_rx_softirqs();
    std::thread::sleep(window);
    let b = cpu_jiffies();
    let n1 = net_rx_softirqs();
    let busy = cpus
        .iter()
        .filter_map(|&c| share_busy(&a, &b, c))
        .fold(0.0, f64::max);
    (busy, n1.saturating_sub(n0) as f64 / window.as_secs_f64())
}

/// Waits until `cpus` are idle and the machine carries little network traffic (other TCP
/// traffic costs every tracer, and the peers, which cannot filter by namespace, print it)
/// for a whole window; Err(why) after `max`.
pub fn wait_idle(cpus: &[usize], threshold: f64, net_rx: f64, max: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut told = false;
    loop {
        let (busy, rx) = busiest(cpus, Duration::from_millis(500));
        let why = format!("CPU {:.0}% busy, {rx:.0} NET_RX softirqs/s", busy * 100.0);
        if busy <= threshold && rx <= net_rx {
            return Ok(());
        }
        if start.elapsed() >= max || is_interrupted() {
            return Err(why);
        }
        if !told {
            eprintln!(
                "tcpstate-bench: waiting for the machine to be idle ({why}; up to {} s)",
                max.as_secs()
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
