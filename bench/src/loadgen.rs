//! What `loadgen client` and `loadgen server` print (one JSON line each).

use serde::{Deserialize, Serialize};

/// The payload that opens the client's final (stop) connection, followed by its count.
pub const STOP_MAGIC: &[u8] = b"tcpstate-bench-stop ";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientReport {
    /// Load connections completed (connect + close), not counting the stop connection.
    pub ok: u64,
    /// connect() calls that failed (each still makes CLOSE->SYN_SENT->CLOSE).
    pub failed: u64,
    pub first_error: Option<String>,
    /// Stopped by the wall-time bound before the count.
    pub timed_out: bool,
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerReport {
    /// Connections accepted and closed, the stop connection included.
    pub handled: u64,
    pub accept_errors: u64,
    /// The count the client sent on its stop connection.
    pub client_count: Option<u64>,
    pub start_ns: u64,
    /// After the stop connection and the listener were closed.
    pub end_ns: u64,
}

/// One load run, as the runner sees it (and as each run in the report has it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Connections made, the stop connection included.
    pub connections: u64,
    /// connect() calls that failed (each still makes CLOSE->SYN_SENT->CLOSE).
    pub failed_connects: u64,
    /// From the client's start to the server's end (its listener closed).
    pub seconds: f64,
}

impl Load {
    pub fn from_reports(c: &ClientReport, s: &ServerReport) -> Load {
        Load {
            connections: c.ok + 1,
            failed_connects: c.failed,
            seconds: s.end_ns.saturating_sub(c.start_ns) as f64 / 1e9,
        }
    }

    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.connections as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Transitions the kernel made for this run in the bench namespace: 10 per connection,
    /// 2 per failed connect, 2 for the listener.
    pub fn expected_events(&self) -> u64 {
        crate::TRANSITIONS_PER_CONNECTION * self.connections + 2 * self.failed_connects + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_from_reports() {
        let c = ClientReport {
            ok: 999,
            failed: 1,
            first_error: None,
            timed_out: false,
            start_ns: 1_000_000_000,
            end_ns: 1_400_000_000,
        };
        let s = ServerReport {
            handled: 1000,
            accept_errors: 0,
            client_count: Some(999),
            start_ns: 900_000_000,
            end_ns: 1_500_000_000,
        };
        let l = Load::from_reports(&c, &s);
        assert_eq!(l.connections, 1000);
        assert!((l.seconds - 0.5).abs() < 1e-9);
        assert!((l.rate() - 2000.0).abs() < 1e-6);
        assert_eq!(l.expected_events(), 10_000 + 2 + 2);
    }

    #[test]
    fn reports_round_trip_as_json() {
        let c = ClientReport {
            ok: 3,
            failed: 0,
            first_error: Some("refused".into()),
            timed_out: true,
            start_ns: 1,
            end_ns: 2,
        };
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ClientReport>(&j).unwrap(), c);
    }
}
