use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("tcpstate").chain(args.iter().copied()))
}

#[test]
fn port_filters_are_repeatable() {
    let c = parse(&[
        "--port", "10050", "-p", "80", "--lport", "443", "--rport", "5432",
    ])
    .unwrap();
    assert_eq!(c.ports, vec![10050, 80]);
    assert_eq!(c.lports, vec![443]);
    assert_eq!(c.rports, vec![5432]);
    assert!(c.has_port_filter());
}

#[test]
fn port_zero_and_too_large_are_usage_errors() {
    for bad in ["0", "65536", "70000", "-1", "http"] {
        let e = parse(&["--port", bad]).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{bad}");
    }
}

#[test]
fn ipv4_and_ipv6_contradict() {
    let e = parse(&["-4", "-6"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn json_and_wide_contradict() {
    assert!(parse(&["-j", "-w"]).is_err());
}

#[test]
fn output_flags_parse_and_contradictions_are_usage_errors() {
    use crate::event::TcpState;
    use crate::render::{color::ColorChoice, trigger::TriggerSpec};
    let c = parse(&[
        "--trigger",
        "closing",
        "--trigger",
        "ESTABLISHED->CLOSE",
        "--lifecycle",
        "-t",
        "--color",
        "never",
        "--max-histories",
        "10",
    ])
    .unwrap();
    assert_eq!(
        c.trigger,
        [
            TriggerSpec::State(TcpState::Closing),
            TriggerSpec::Transition(TcpState::Established, TcpState::Close)
        ]
    );
    assert!(c.lifecycle && c.timestamp && c.max_histories == 10);
    assert_eq!(c.color, ColorChoice::Never);
    let d = parse(&["--summary", "--diagram", "x.dot", "-T"]).unwrap();
    assert!(d.summary && d.datetime && d.diagram.is_some());
    assert_eq!(parse(&[]).unwrap().color, ColorChoice::Auto);
    for bad in [
        &["--csv", "-j"][..],
        &["--csv", "-w"],
        &["--csv", "--lifecycle"],
        &["-T", "-t"],
        &["-j", "-T"],
        &["--summary", "--trigger", "CLOSING"],
        &["--trigger", "OPEN"],
        &["--trigger", "SYN_SENT->"],
        &["--color", "sometimes"],
        &["--max-histories", "0"],
        &["--completions", "bash", "--port", "1"],
    ] {
        let e = parse(bad).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn ring_size_accepts_powers_of_two_with_suffixes() {
    assert_eq!(ring_size("4096"), Ok(4096));
    assert_eq!(ring_size("256K"), Ok(256 << 10));
    assert_eq!(ring_size("8M"), Ok(8 << 20));
    assert!(ring_size("3M").unwrap_err().contains("power of two"));
    assert!(ring_size("1000").is_err());
    assert!(ring_size("2G").is_err());
    assert!(ring_size("lots").is_err());
    assert!(ring_size("99999999999999999999G").is_err());
}

#[test]
fn durations_parse_and_reject_zero() {
    let c = parse(&["-d", "1m30s"]).unwrap();
    assert_eq!(c.duration, Some(Duration::from_secs(90)));
    assert!(parse(&["--duration", "0s"]).is_err());
    assert!(parse(&["--duration", "soon"]).is_err());
    assert!(parse(&["--flush-interval", "5s"]).is_err());
}

#[test]
fn defaults() {
    let c = parse(&[]).unwrap();
    assert!(!c.has_port_filter());
    assert_eq!(c.ring_size, 2 << 20);
    assert_eq!(c.max_sockets, 65536);
    assert_eq!(c.flush_interval, Duration::from_millis(10));
    assert!(c.validate().is_ok());
}

#[test]
fn too_many_ports_is_rejected() {
    let mut args = Vec::new();
    for p in 1..=1100u32 {
        args.push("-p".to_string());
        args.push(p.to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = parse(&refs).unwrap();
    assert!(c.validate().unwrap_err().contains("at most 1024"));
}

#[test]
fn clap_errors_become_one_line_with_a_hint() {
    let (msg, hint) = one_line(&parse(&["--port", "0"]).unwrap_err());
    assert_eq!(
        msg,
        "invalid value '0' for '--port <PORT>': port 0 is out of range 1-65535"
    );
    assert_eq!(hint, "see tcpstate --help");
    let (_, hint) = one_line(&parse(&["--color", "sometimes"]).unwrap_err());
    assert!(hint.starts_with("possible values: "), "{hint}");
    let (msg, hint) = one_line(&parse(&["--prot", "1"]).unwrap_err());
    assert_eq!(msg, "unexpected argument '--prot' found");
    assert!(hint.contains("'--port'"), "{hint}");
    let args: Vec<std::ffi::OsString> = ["tcpstate", "--port", "\x1b[2J\n"]
        .iter()
        .map(Into::into)
        .collect();
    let e = Cli::try_parse_from(&args).unwrap_err();
    let (msg, _) = usage_error(&args, &e);
    assert_eq!(
        msg,
        "invalid value '\\x1b[2J\\x0a' for '--port <PORT>': `\\x1b[2J\\x0a` is not a port number"
    );
}

#[test]
fn snapshot_defaults_on_with_a_port_filter() {
    assert!(!parse(&[]).unwrap().wants_snapshot());
    assert!(parse(&["--snapshot"]).unwrap().wants_snapshot());
    assert!(parse(&["-p", "80"]).unwrap().wants_snapshot());
    assert!(
        !parse(&["-p", "80", "--no-snapshot"])
            .unwrap()
            .wants_snapshot()
    );
    assert!(
        parse(&["--no-snapshot", "--snapshot"])
            .unwrap()
            .wants_snapshot()
    );
}

#[test]
fn half_open_watching_is_on_unless_refused() {
    assert!(!parse(&[]).unwrap().no_half_open);
    assert!(parse(&["--no-half-open"]).unwrap().no_half_open);
}

#[test]
fn stuck_takes_a_duration() {
    let c = parse(&["--stuck", "5s"]).unwrap();
    assert_eq!(c.stuck, Some(Duration::from_secs(5)));
    assert!(parse(&["--stuck", "0s"]).is_err());
}

#[test]
fn fleet_flags_become_component_options() {
    let c = parse(&["--metrics", "127.0.0.1:9979", "-q", "-p", "80"]).unwrap();
    assert!(!c.container_options().enabled, "nothing shows containers");
    let c = parse(&["--metrics", "[::1]:1", "--metrics-container-labels"]).unwrap();
    assert!(c.container_options().enabled);
    assert!(parse(&["-j"]).unwrap().container_options().enabled);
    let f = parse(&["--container", "4c8a", "--cgroup", "/system.slice"]).unwrap();
    assert!(f.validate().is_ok() && f.container_options().select.is_active());
    for bad in [
        &["--metrics-container-labels"][..],
        &["--metrics", "localhost"],
        &["--metrics", "127.0.0.1:1", "--metrics-max-ports", "0"],
        &["--metrics", "127.0.0.1:1", "--metrics-timewait-top", "65"],
        &["-q", "-j"],
        &["-q", "--lifecycle"],
    ] {
        assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
    }
    assert!(
        parse(&["--container", "nginx"])
            .unwrap()
            .validate()
            .is_err()
    );
    assert!(parse(&["--cgroup", " "]).unwrap().validate().is_err());
}

#[test]
fn empty_netns_is_rejected() {
    let c = parse(&["--netns", " "]).unwrap();
    assert!(c.validate().is_err());
}
