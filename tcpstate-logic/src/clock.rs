//! Converts the kernel's event time (`bpf_ktime_get_boot_ns`, CLOCK_BOOTTIME)
//! to wall-clock time. The offset is taken once at start, so every event shows
//! when the kernel made the change, not when it was printed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Now, on the kernel's event clock.
pub fn boot_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// Realtime minus boottime, in ns.
    offset_ns: i128,
    /// Boot time at start, for `-t` (seconds since start).
    pub start_boot_ns: u64,
}

impl WallClock {
    pub fn now() -> Self {
        // Bracket the realtime read between two boottime reads to halve the error.
        let b1 = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        let b2 = clock_ns(libc::CLOCK_BOOTTIME);
        let boot = b1 / 2 + b2 / 2;
        WallClock {
            offset_ns: real as i128 - boot as i128,
            start_boot_ns: boot,
        }
    }

    /// Fixed offset, for tests.
    pub fn with_offset(offset_ns: i128, start_boot_ns: u64) -> Self {
        WallClock {
            offset_ns,
            start_boot_ns,
        }
    }

    pub(crate) fn to_system_time(self, boot_ns: u64) -> SystemTime {
        let ns = (boot_ns as i128 + self.offset_ns).max(0) as u128;
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }
}
