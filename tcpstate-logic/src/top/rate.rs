//! Counts per second over the last minute: what `--top`'s `/s` columns and
//! its one-minute changes are made of.

/// Seconds kept: a minute, and a few more so the last complete minute is
/// always whole.
const KEPT: u64 = 64;

/// Seconds a `/s` figure is averaged over: steady enough to read while it
/// redraws every second, recent enough to follow a burst.
pub(crate) const WINDOW: u64 = 5;

/// Events counted per second (of CLOCK_BOOTTIME), the last [`KEPT`] seconds.
#[derive(Debug, Clone)]
pub(crate) struct Rate {
    buckets: [u32; KEPT as usize],
    /// The latest second counted into `buckets`.
    sec: u64,
    pub total: u64,
}

impl Default for Rate {
    fn default() -> Self {
        Rate {
            buckets: [0; KEPT as usize],
            sec: 0,
            total: 0,
        }
    }
}

impl Rate {
    pub fn add(&mut self, sec: u64, n: u32) {
        if n == 0 {
            return;
        }
        self.total += u64::from(n);
        if sec + KEPT <= self.sec {
            // Older than anything kept (a row dated long ago): in the total only.
            return;
        }
        if sec > self.sec {
            let from = (self.sec + 1).max(sec.saturating_sub(KEPT - 1));
            for s in from..=sec {
                self.buckets[(s % KEPT) as usize] = 0;
            }
            self.sec = sec;
        }
        let b = &mut self.buckets[(sec % KEPT) as usize];
        *b = b.saturating_add(n);
    }

    fn at(&self, sec: u64) -> u64 {
        if sec > self.sec || sec + KEPT <= self.sec {
            0
        } else {
            u64::from(self.buckets[(sec % KEPT) as usize])
        }
    }

    /// Events in the `n` complete seconds before `now_sec`.
    pub fn last(&self, now_sec: u64, n: u64) -> u64 {
        (now_sec.saturating_sub(n)..now_sec)
            .map(|s| self.at(s))
            .sum()
    }

    /// Events per second over the last [`WINDOW`] complete seconds, or fewer
    /// when tracing started less long ago (`since_sec`: its first second).
    pub(crate) fn per_sec(&self, now_sec: u64, since_sec: u64) -> f64 {
        let n = now_sec.saturating_sub(since_sec).clamp(1, WINDOW);
        self.last(now_sec, n) as f64 / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_averages_the_last_complete_seconds_and_forgets_older_ones() {
        let mut r = Rate::default();
        r.add(100, 10);
        r.add(101, 5);
        r.add(102, 7); // the current second: not complete yet
        assert_eq!(r.last(102, 2), 15);
        assert_eq!(r.per_sec(102, 90), 15.0 / 5.0);
        // Two seconds since the start: averaged over those two only.
        assert_eq!(r.per_sec(102, 100), 7.5);
        assert_eq!(r.total, 22);
        // A minute later nothing is left in the window, the total stays.
        assert_eq!(r.per_sec(170, 90), 0.0);
        r.add(170, 1);
        assert_eq!(r.last(171, 64), 1, "buckets of 64 s ago were cleared");
        assert_eq!(r.total, 23);
        // A row dated before the kept minute counts in the total only.
        r.add(10, 4);
        assert_eq!((r.total, r.last(171, 64)), (27, 1));
    }
}
