//! Bounded statistics for the exit reports: log2 histograms in the style of
//! bcc, and a fixed-size random sample for medians.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::event::{Source, TcpEvent, TcpState};

/// How often one kernel transition happened, and how long sockets had
/// spent in its old state.
#[derive(Debug, Default)]
pub(crate) struct Edge {
    pub count: u64,
    pub dwell: Sample,
}

/// The kernel's transitions counted per (old, new) state: what the summary
/// and the diagram are drawn from.
pub(crate) type Edges = BTreeMap<(TcpState, TcpState), Edge>;

/// Counts `ev` in `edges` if it is a transition the kernel made; returns
/// its time in the old state when it counted and that time is known.
pub(crate) fn count_edge(edges: &mut Edges, ev: &TcpEvent) -> Option<u64> {
    if ev.source != Source::Tracepoint {
        return None;
    }
    let e = edges.entry((ev.old, ev.new)).or_default();
    e.count += 1;
    let ns = ev.dwell_ns?;
    e.dwell.add(ns);
    Some(ns)
}

/// Counts of values by power of two, like bcc's `print_log2_hist`: bucket 0
/// holds 0 and 1, bucket `i >= 1` holds `2^i ..= 2^(i+1)-1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Log2Hist {
    pub buckets: [u64; 64],
}

impl Default for Log2Hist {
    fn default() -> Self {
        Log2Hist { buckets: [0; 64] }
    }
}

impl Log2Hist {
    pub(crate) fn bucket(v: u64) -> usize {
        if v < 2 {
            0
        } else {
            63 - v.leading_zeros() as usize
        }
    }

    /// The range of values bucket `i` holds.
    pub fn range(i: usize) -> (u64, u64) {
        if i == 0 {
            (0, 1)
        } else {
            let low = 1u64 << i;
            (low, low.wrapping_shl(1).wrapping_sub(1).max(low))
        }
    }

    #[inline]
    pub fn add(&mut self, v: u64) {
        self.buckets[Self::bucket(v)] += 1;
    }

    pub fn total(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The buckets up to the last non-empty one (bcc prints leading empty
    /// buckets too, so the shape reads from zero).
    pub fn used(&self) -> &[u64] {
        let end = self
            .buckets
            .iter()
            .rposition(|&c| c > 0)
            .map_or(0, |i| i + 1);
        &self.buckets[..end]
    }

    /// bcc's layout: a `unit : count distribution` heading, then one row per
    /// bucket with up to 40 stars.
    pub fn write(&self, out: &mut String, unit: &str) {
        let used = self.used();
        if used.is_empty() {
            return;
        }
        let max = used.iter().copied().max().unwrap_or(1).max(1);
        let _ = writeln!(out, "     {unit:<19} : count     distribution");
        for (i, &count) in used.iter().enumerate() {
            let (low, high) = Self::range(i);
            // As bcc: floor(40 * count / max) stars.
            let stars = ((count as u128 * 40) / max as u128).min(40) as usize;
            let _ = writeln!(
                out,
                "{low:>10} -> {high:<10} : {count:<8} |{:<40}|",
                "*".repeat(stars)
            );
        }
    }
}

/// A uniform random sample of at most `CAP` values (Algorithm R) and the
/// exact count, max and sum: exact medians for up to `CAP` values, estimates
/// beyond, in bounded memory.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub count: u64,
    pub max: u64,
    pub sum: u128,
    values: Vec<u64>,
    rng: u64,
}

impl Sample {
    pub(crate) const CAP: usize = 1024;

    pub fn new() -> Self {
        Sample {
            count: 0,
            max: 0,
            sum: 0,
            values: Vec::new(),
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    pub fn add(&mut self, v: u64) {
        self.count += 1;
        self.max = self.max.max(v);
        self.sum += v as u128;
        if self.values.len() < Self::CAP {
            self.values.push(v);
            return;
        }
        // xorshift64*: deterministic, good enough for sampling.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let j = r % self.count;
        if (j as usize) < Self::CAP {
            self.values[j as usize] = v;
        }
    }

    #[cfg(test)]
    /// Whether the sample holds every value (the median is exact).
    pub fn exact(&self) -> bool {
        self.count as usize == self.values.len()
    }

    /// The median (lower median for an even count), if any value was added.
    pub fn median(&self) -> Option<u64> {
        self.quantile(0.5)
    }

    /// The `q` quantile (nearest rank) of the sample.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        if self.values.is_empty() {
            return None;
        }
        let mut v = self.values.clone();
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        let (_, x, _) = v.select_nth_unstable(rank);
        Some(*x)
    }
}

impl Default for Sample {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_bcc() {
        assert_eq!(Log2Hist::bucket(0), 0);
        assert_eq!(Log2Hist::bucket(1), 0);
        assert_eq!(Log2Hist::bucket(2), 1);
        assert_eq!(Log2Hist::bucket(3), 1);
        assert_eq!(Log2Hist::bucket(4), 2);
        assert_eq!(Log2Hist::bucket(1023), 9);
        assert_eq!(Log2Hist::bucket(u64::MAX), 63);
        assert_eq!(Log2Hist::range(0), (0, 1));
        assert_eq!(Log2Hist::range(3), (8, 15));
        assert_eq!(Log2Hist::range(63), (1 << 63, u64::MAX));
    }

    #[test]
    fn golden_histogram() {
        let mut h = Log2Hist::default();
        for v in [0, 5, 5, 6, 7, 40] {
            h.add(v);
        }
        let mut s = String::new();
        h.write(&mut s, "usecs");
        assert_eq!(
            s,
            "     usecs               : count     distribution\n\
             \x20        0 -> 1          : 1        |**********                              |\n\
             \x20        2 -> 3          : 0        |                                        |\n\
             \x20        4 -> 7          : 4        |****************************************|\n\
             \x20        8 -> 15         : 0        |                                        |\n\
             \x20       16 -> 31         : 0        |                                        |\n\
             \x20       32 -> 63         : 1        |**********                              |\n"
        );
    }

    #[test]
    fn median_is_exact_below_the_cap_and_close_beyond() {
        let mut s = Sample::new();
        assert_eq!(s.median(), None);
        for v in [5, 1, 3] {
            s.add(v);
        }
        assert_eq!(s.median(), Some(3));
        assert!(s.exact());
        let mut big = Sample::new();
        for v in 0..100_000u64 {
            big.add(v);
        }
        assert!(!big.exact());
        let m = big.median().unwrap();
        assert!((40_000..60_000).contains(&m), "{m}");
        assert_eq!(big.max, 99_999);
        assert_eq!(big.count, 100_000);
    }
}
