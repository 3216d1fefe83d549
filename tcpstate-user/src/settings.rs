//! The one place flags become settings: [`Settings::from_cli`] turns the
//! parsed command line ([`crate::cli::Cli`], which only parses) into one
//! options value per component. No component below sees the command line,
//! so each can be built and tested from its own options, and the arrows run
//! one way: cli -> settings -> probe / enrich / render / reader.

use std::time::Duration;

use tcpstate_common::{AF_INET, AF_INET6, port_match};

use crate::{cli::Cli, container, enrich, error::UserError, metrics, probe::ProbeOptions, render};

/// Everything the run needs, per component.
pub struct Settings {
    pub probe: ProbeOptions,
    pub enrich: enrich::Options,
    pub render: render::Options,
    pub containers: container::Options,
    pub metrics: Option<metrics::Options>,
    /// The start-up read of existing sockets.
    pub start: crate::reader::Start,
    pub flush_interval: Duration,
    pub duration: Option<Duration>,
    pub verbose: bool,
}

impl Settings {
    pub fn from_cli(cli: &Cli) -> Result<Settings, UserError> {
        let family = if cli.ipv4 {
            AF_INET
        } else if cli.ipv6 {
            AF_INET6
        } else {
            0
        };
        Ok(Settings {
            probe: ProbeOptions {
                netns: cli.netns.clone(),
                family,
                ports: port_bits(&cli.ports, &cli.lports, &cli.rports),
                ring_size: cli.ring_size,
                max_sockets: cli.max_sockets,
                verbose: cli.verbose,
                half_open: !cli.no_half_open,
                classic: cli.classic_tracepoint,
                kernel_btf: !cli.no_kernel_btf,
                cgroup_filter: cli.container_options().select.is_active(),
            },
            enrich: enrich::Options {
                stuck: cli.stuck,
                max_tracked: cli.max_tracked as usize,
            },
            render: render::Options {
                rows: rows(cli, family),
                summary: cli.summary.then_some(if cli.json {
                    render::SummaryReport::Json
                } else {
                    render::SummaryReport::Text
                }),
                color: cli.color,
                time: if cli.datetime {
                    render::timefmt::TimeFormat::DateTime
                } else if cli.timestamp {
                    render::timefmt::TimeFormat::SinceStart
                } else {
                    render::timefmt::TimeFormat::Clock
                },
                max_histories: cli.max_histories as usize,
                max_tracked: cli.max_tracked as usize,
                trigger: cli.trigger.clone(),
                diagram: cli.diagram.clone(),
            },
            containers: cli.container_options(),
            metrics: metrics_options(cli, family),
            start: crate::reader::Start {
                filter: start_filter(cli, family),
                rows: cli.wants_snapshot(),
            },
            flush_interval: cli.flush_interval,
            duration: cli.duration,
            verbose: cli.verbose,
        })
    }
}

/// What is printed per event: the flags' precedence, decided here once.
fn rows(cli: &Cli, family: u16) -> render::Rows {
    if cli.top {
        render::Rows::Top(crate::top::Options {
            interval: cli.interval,
            netns: cli.netns.clone(),
            filter: start_filter(cli, family),
            select: cli.container_options().select,
        })
    } else if cli.lifecycle {
        render::Rows::Lifecycle { json: cli.json }
    } else if cli.summary || cli.quiet {
        render::Rows::Nothing
    } else if cli.json {
        render::Rows::Json
    } else if cli.csv {
        render::Rows::Csv
    } else {
        render::Rows::Text {
            wide: cli.wide,
            explain: cli.explain,
        }
    }
}

/// The `--metrics` settings, when asked for.
fn metrics_options(cli: &Cli, family: u16) -> Option<metrics::Options> {
    Some(metrics::Options {
        addr: cli.metrics?,
        ports: cli.distinct_ports(),
        port_cap: cli.metrics_max_ports as usize,
        container_cap: cli
            .metrics_container_labels
            .then_some(cli.metrics_max_containers as usize),
        top: metrics::top::Options {
            netns: cli.netns.clone(),
            filter: start_filter(cli, family),
            correct: !cli.container_options().select.is_active(),
            timewait_top: cli.metrics_timewait_top as usize,
        },
    })
}

/// The port and family filters as sock_diag results are checked against.
fn start_filter(cli: &Cli, family: u16) -> enrich::Filter {
    enrich::Filter {
        local_ports: cli.ports.iter().chain(&cli.lports).copied().collect(),
        remote_ports: cli.ports.iter().chain(&cli.rports).copied().collect(),
        family,
    }
}

/// `--port`/`--lport`/`--rport` as the kernel side's port table: each port
/// once, with the ends it applies to.
fn port_bits(both: &[u16], local: &[u16], remote: &[u16]) -> Vec<(u16, u8)> {
    let mut ports: Vec<(u16, u8)> = Vec::new();
    let mut add = |p: u16, bits: u8| match ports.iter_mut().find(|(q, _)| *q == p) {
        Some((_, b)) => *b |= bits,
        None => ports.push((p, bits)),
    };
    for &p in both {
        add(p, port_match::LOCAL | port_match::REMOTE);
    }
    for &p in local {
        add(p, port_match::LOCAL);
    }
    for &p in remote {
        add(p, port_match::REMOTE);
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn settings(args: &[&str]) -> Settings {
        let cli =
            Cli::try_parse_from(std::iter::once("tcpstate").chain(args.iter().copied())).unwrap();
        Settings::from_cli(&cli).unwrap()
    }

    #[test]
    fn a_port_named_twice_applies_to_the_union_of_its_ends() {
        assert_eq!(
            port_bits(&[80], &[80, 443], &[22]),
            vec![
                (80, port_match::LOCAL | port_match::REMOTE),
                (443, port_match::LOCAL),
                (22, port_match::REMOTE)
            ]
        );
    }

    #[test]
    fn flags_reach_each_component() {
        let s = settings(&["--port", "10050", "-4", "--stuck", "5s", "-w", "-T"]);
        assert_eq!(s.probe.family, AF_INET);
        assert_eq!(
            s.probe.ports,
            vec![(10050, port_match::LOCAL | port_match::REMOTE)]
        );
        assert_eq!(s.enrich.stuck, Some(Duration::from_secs(5)));
        assert!(matches!(
            s.render.rows,
            render::Rows::Text {
                wide: true,
                explain: false
            }
        ));
        assert_eq!(s.render.time, render::timefmt::TimeFormat::DateTime);
        assert!(s.start.rows, "a port filter takes the snapshot by default");
        assert_eq!(s.start.filter.local_ports, vec![10050]);
    }

    #[test]
    fn one_printer_by_the_flags_precedence() {
        let rows = |args: &[&str]| settings(args).render.rows;
        assert!(matches!(rows(&["--top"]), render::Rows::Top(_)));
        assert!(matches!(
            rows(&["--lifecycle", "-j"]),
            render::Rows::Lifecycle { json: true }
        ));
        assert!(matches!(rows(&["--summary", "-j"]), render::Rows::Nothing));
        assert!(matches!(rows(&["--quiet"]), render::Rows::Nothing));
        assert!(matches!(rows(&["-j"]), render::Rows::Json));
        assert!(matches!(rows(&["--csv"]), render::Rows::Csv));
        let s = settings(&["--summary", "-j"]);
        assert_eq!(s.render.summary, Some(render::SummaryReport::Json));
        assert_eq!(settings(&[]).render.summary, None);
    }

    #[test]
    fn metrics_flags_reach_the_metrics_options() {
        let s = settings(&[
            "--metrics",
            "127.0.0.1:9979",
            "-q",
            "-p",
            "80",
            "--lport",
            "443",
        ]);
        let m = s.metrics.unwrap();
        assert_eq!(m.addr.to_string(), "127.0.0.1:9979");
        assert_eq!(m.ports, [80, 443]);
        assert_eq!(m.container_cap, None);
        assert_eq!(m.top.filter.local_ports, [80, 443]);
        assert!(m.top.correct);
        assert_eq!(m.port_cap, metrics::top::DEFAULT_MAX_PORTS as usize);
        assert_eq!(
            m.top.timewait_top,
            metrics::top::DEFAULT_TIMEWAIT_TOP as usize
        );
        let m = settings(&[
            "--metrics",
            "[::1]:1",
            "--metrics-container-labels",
            "--metrics-max-containers",
            "5",
            "--metrics-max-ports",
            "3",
            "--metrics-timewait-top",
            "0",
            "--container",
            "4c8a",
        ])
        .metrics
        .unwrap();
        assert_eq!(m.container_cap, Some(5));
        assert_eq!((m.port_cap, m.top.timewait_top), (3, 0));
        assert!(
            !m.top.correct,
            "a container filter: the dumps cannot stand for it"
        );
        assert!(settings(&[]).metrics.is_none());
    }
}
