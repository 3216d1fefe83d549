//! Content negotiation. `prometheus-client` writes OpenMetrics text, which
//! Prometheus asks for first. Clients that do not (curl, `promtool check
//! metrics`, older scrapers) get the classic text format 0.0.4, as the Go
//! client serves it: a counter's family is named with its `_total`, and
//! `# UNIT` and `# EOF` (unknown there) are left out.

pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub(crate) const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the request's `Accept` header asks for OpenMetrics.
pub(crate) fn wants_openmetrics(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
        })
    })
}

/// OpenMetrics text (as `prometheus-client` writes it) to text format 0.0.4.
pub(crate) fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# HELP ") {
            // Held until its TYPE line says whether the name changes.
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "gauge" | "histogram" | "summary" => (name.to_string(), kind),
                _ => (name.to_string(), "untyped"),
            };
            if let Some(h) = help.take() {
                let text = h
                    .strip_prefix("# HELP ")
                    .and_then(|h| h.split_once(' '))
                    .map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_name_and_openmetrics_lines_go() {
        let om = "# HELP tcpstate_transitions Transitions.\n# TYPE tcpstate_transitions counter\n\
                  tcpstate_transitions_total{a=\"b\"} 1\n# HELP tcpstate_d Time.\n\
                  # TYPE tcpstate_d_seconds histogram\n# UNIT tcpstate_d_seconds seconds\n\
                  tcpstate_d_seconds_count 2\n# EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP tcpstate_transitions_total Transitions.\n# TYPE tcpstate_transitions_total counter\n\
             tcpstate_transitions_total{a=\"b\"} 1\n# HELP tcpstate_d_seconds Time.\n\
             # TYPE tcpstate_d_seconds histogram\ntcpstate_d_seconds_count 2\n"
        );
    }

    #[test]
    fn accept_header_decides() {
        assert!(wants_openmetrics(
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n"
        ));
        assert!(!wants_openmetrics(
            b"GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n"
        ));
        assert!(!wants_openmetrics(b"GET /metrics HTTP/1.1\r\n\r\n"));
    }
}
