//! The kernel program's side of `--container` / `--cgroup`: the `CGROUPS`
//! map, cgroup id -> verdict. Userspace judges each cgroup once (at start
//! for every cgroup that exists, later on a new cgroup's first row) and
//! writes the verdict; the kernel then drops the state changes of ruled-out
//! cgroups before any other work. Userspace still applies the filter to
//! every row it gets, so a verdict not written (map error, evicted) only
//! costs a row's trip to userspace, never a wrong row.

use std::collections::HashSet;

use aya::maps::{HashMap, MapData};
use tcpstate_common::cgroup_verdict;

/// Verdicts already written, remembered up to this many (then forgotten
/// and written again as rows come: the kernel map is an LRU of its own).
const REMEMBERED: usize = 16_384;

pub struct Verdicts {
    map: HashMap<MapData, u64, u8>,
    told: HashSet<u64>,
    /// Writes the kernel refused.
    pub failed: u64,
}

impl Verdicts {
    pub fn new(map: HashMap<MapData, u64, u8>) -> Verdicts {
        Verdicts {
            map,
            told: HashSet::new(),
            failed: 0,
        }
    }

    /// Tells the kernel whether cgroup `id`'s rows are wanted.
    pub fn tell(&mut self, id: u64, keep: bool) {
        if id == 0 || self.told.contains(&id) {
            return;
        }
        if self.told.len() >= REMEMBERED {
            self.told.clear();
        }
        let v = if keep {
            cgroup_verdict::KEEP
        } else {
            cgroup_verdict::DROP
        };
        match self.map.insert(id, v, 0) {
            Ok(()) => {
                self.told.insert(id);
            }
            Err(_) => self.failed += 1,
        }
    }

    pub fn told(&self) -> usize {
        self.told.len()
    }
}
