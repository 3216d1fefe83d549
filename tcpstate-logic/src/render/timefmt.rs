//! Event timestamps. Every format shows the kernel's event time (never the
//! time of printing) with microseconds. Calendar conversion (time zone, date)
//! runs once per second of event time: the `HH:MM:SS.` prefix is cached and
//! only the microseconds are written per event.

use std::time::UNIX_EPOCH;

use chrono::{DateTime, Local, Utc};

use super::buf;
use crate::clock::WallClock;

/// How the TIME of an event is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    /// Local wall clock, `HH:MM:SS.uuuuuu` (the default text column).
    Clock,
    /// Local date and time, `YYYY-MM-DDTHH:MM:SS.uuuuuu` (`-T`).
    DateTime,
    /// Seconds since tracing started, `SSS.uuuuuu` (`-t`); negative for
    /// events the kernel queued before the start.
    SinceStart,
    /// RFC 3339 in UTC, `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (JSON and CSV).
    Rfc3339Utc,
}

impl TimeFormat {
    /// The text column's width and heading.
    pub(crate) fn column(self) -> (usize, &'static str) {
        match self {
            TimeFormat::Clock => (15, "TIME"),
            TimeFormat::DateTime => (26, "TIME"),
            TimeFormat::SinceStart => (12, "TIME(s)"),
            TimeFormat::Rfc3339Utc => (27, "TIME"),
        }
    }
}

/// Writes timestamps in one [`TimeFormat`], caching the per-second prefix.
#[derive(Debug, Clone)]
pub struct TimeWriter {
    clock: WallClock,
    format: TimeFormat,
    /// Unix time minus boot time, in ns (realtime is always ahead).
    offset_ns: u64,
    /// The Unix second `prefix` was made for.
    cached_sec: Option<u64>,
    prefix: Vec<u8>,
}

impl TimeWriter {
    pub fn new(clock: WallClock, format: TimeFormat) -> Self {
        let offset_ns = clock
            .to_system_time(0)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        TimeWriter {
            clock,
            format,
            offset_ns,
            cached_sec: None,
            prefix: Vec::with_capacity(32),
        }
    }

    pub fn format(&self) -> TimeFormat {
        self.format
    }

    /// Appends the time of an event at `boot_ns` (CLOCK_BOOTTIME).
    /// Writes the time padded to its text column, and the space after it.
    pub(crate) fn write_column(&mut self, out: &mut Vec<u8>, boot_ns: u64) {
        let width = self.format.column().0;
        crate::render::buf::padded(out, width, |out| self.write(out, boot_ns));
        out.push(b' ');
    }

    pub fn write(&mut self, out: &mut Vec<u8>, boot_ns: u64) {
        if self.format == TimeFormat::SinceStart {
            let d = boot_ns as i128 - self.clock.start_boot_ns as i128;
            if d < 0 {
                out.push(b'-');
            }
            let d = d.unsigned_abs() as u64;
            buf::u64(out, d / 1_000_000_000);
            out.push(b'.');
            buf::digits(out, d % 1_000_000_000 / 1000, 6);
            return;
        }
        let unix_ns = boot_ns.saturating_add(self.offset_ns);
        let sec = unix_ns / 1_000_000_000;
        if self.cached_sec != Some(sec) {
            self.refill(sec);
        }
        out.extend_from_slice(&self.prefix);
        buf::digits(out, unix_ns % 1_000_000_000 / 1000, 6);
        if self.format == TimeFormat::Rfc3339Utc {
            out.push(b'Z');
        }
    }

    fn refill(&mut self, sec: u64) {
        use std::io::Write as _;
        self.prefix.clear();
        let utc = DateTime::<Utc>::from_timestamp(sec as i64, 0).unwrap_or_default();
        let _ = match self.format {
            TimeFormat::Clock => write!(
                self.prefix,
                "{}.",
                utc.with_timezone(&Local).format("%H:%M:%S")
            ),
            TimeFormat::DateTime => write!(
                self.prefix,
                "{}.",
                utc.with_timezone(&Local).format("%Y-%m-%dT%H:%M:%S")
            ),
            TimeFormat::Rfc3339Utc => write!(self.prefix, "{}.", utc.format("%Y-%m-%dT%H:%M:%S")),
            TimeFormat::SinceStart => Ok(()),
        };
        self.cached_sec = Some(sec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(t: &mut TimeWriter, ns: u64) -> String {
        let mut out = Vec::new();
        t.write(&mut out, ns);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc3339_utc_with_microseconds() {
        let mut t = TimeWriter::new(
            WallClock::with_offset(1_764_000_000_000_000_000, 0),
            TimeFormat::Rfc3339Utc,
        );
        assert_eq!(w(&mut t, 5_000_000_000), "2025-11-24T16:00:05.000000Z");
        assert_eq!(w(&mut t, 5_123_456_789), "2025-11-24T16:00:05.123456Z");
        // The cached prefix is replaced when the second changes.
        assert_eq!(w(&mut t, 6_000_001_000), "2025-11-24T16:00:06.000001Z");
        assert_eq!(w(&mut t, 5_999_999_999), "2025-11-24T16:00:05.999999Z");
    }

    #[test]
    fn local_clock_and_datetime_agree_with_chrono() {
        let clock = WallClock::with_offset(1_764_000_000_000_000_000, 0);
        let ns = 5_123_456_789;
        let expected: DateTime<Local> = clock.to_system_time(ns).into();
        let mut c = TimeWriter::new(clock, TimeFormat::Clock);
        assert_eq!(w(&mut c, ns), expected.format("%H:%M:%S%.6f").to_string());
        let mut d = TimeWriter::new(clock, TimeFormat::DateTime);
        assert_eq!(
            w(&mut d, ns),
            expected.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
        );
        assert_eq!(w(&mut d, ns).len(), TimeFormat::DateTime.column().0);
    }

    #[test]
    fn since_start_in_seconds_with_microseconds() {
        let mut t = TimeWriter::new(
            WallClock::with_offset(0, 10_000_000_000),
            TimeFormat::SinceStart,
        );
        assert_eq!(w(&mut t, 10_000_000_000), "0.000000");
        assert_eq!(w(&mut t, 12_345_678_999), "2.345678");
        assert_eq!(w(&mut t, 9_999_000_000), "-0.001000");
        assert_eq!(w(&mut t, 3_610_000_000_000), "3600.000000");
    }
}
