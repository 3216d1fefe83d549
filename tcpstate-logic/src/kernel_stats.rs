//! What the kernel programs count (filled in by the loader from their
//! counters), as the exit report, the live view and the metrics show it.

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Events dropped because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Socket-tracking updates that failed (dwell/owner unknown for those).
    pub sock_map_fail: u64,
    pub listen_map_fail: u64,
    pub submitted: u64,
    /// Events of sockets met mid-life: opened before tracing, or evicted
    /// from the full socket map (then --max-sockets is too small).
    pub untracked: u64,
    /// Runs of our program the kernel skipped because another BPF program was
    /// already running on that CPU (`recursion_misses` in the program info),
    /// of the state-change program (less those the nested-run program
    /// handled) and of the SYN-ACK program.
    pub recursion_misses: u64,
    /// Runs the kernel skipped for the main program that the nested-run
    /// program handled (not lost).
    pub rescued: u64,
    /// Runs the kernel skipped for the nested-run program itself. Not lost:
    /// it is only ever skipped while it runs outside a nested change, where
    /// the main program is not running and handles the change.
    pub nested_misses: u64,
    /// Changes the kernel dropped for `--container` / `--cgroup` (filtered,
    /// not lost).
    pub cgroup_dropped: u64,
}

impl KernelStats {
    /// Events that never reached userspace.
    pub fn lost(&self) -> u64 {
        self.ringbuf_full + self.recursion_misses
    }
}
