use tcpstate::{
    cli::Cli,
    clock::WallClock,
    enrich::{self, Enricher},
    error::UserError,
    gate::Gate,
    metrics, netns,
    probe::{Probe, ProbeOptions},
    reader::{self, Stop},
    render,
    summary::Summary,
};

fn main() {
    let cli = Cli::parse_or_exit();
    if let Some(code) = render::generate::from_cli(&cli) {
        std::process::exit(code);
    }
    if let Err(msg) = cli.validate() {
        UserError::usage(msg).report(false);
        std::process::exit(2);
    }
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            e.report(cli.verbose);
            e.exit_code
        }
    };
    std::process::exit(code);
}

fn run(cli: &Cli) -> Result<i32, UserError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| UserError::runtime(format!("starting the runtime: {e}")))?;
    runtime.block_on(async {
        let mut probe = Probe::load(&ProbeOptions::from_cli(cli))?;
        let ring = probe.take_events()?;
        let containers = cli.container_options();
        let attributor = containers.attributor();
        let recorder = match cli.metrics_options() {
            Some(opts) => {
                let (recorder, registry) = metrics::Recorder::new(&opts);
                let bound = metrics::serve(opts.addr, registry).await.map_err(|e| {
                    UserError::runtime(format!("serving metrics on {}: {e}", opts.addr))
                })?;
                if cli.verbose {
                    eprintln!("tcpstate: metrics at http://{bound}/metrics");
                }
                Some(recorder)
            }
            None => None,
        };
        let mut gate = Gate::new(attributor.clone(), containers.select, recorder);
        let mut render = render::for_cli(cli, WallClock::now(), attributor);
        let mut summary = Summary::default();
        let mut enrich = Enricher::new(enrich::Options {
            stuck: cli.stuck,
            max_tracked: cli.max_tracked as usize,
            rst_reasons: probe.rst_reasons.clone(),
        });
        let start = reader::Start {
            netns: match &cli.netns {
                Some(spec) => netns::resolve(spec)?,
                None => 0,
            },
            filter: enrich::Filter::from_cli(cli),
            rows: cli.wants_snapshot(),
        };
        let mut stages = reader::Stages {
            enrich: &mut enrich,
            gate: &mut gate,
            render: render.as_mut(),
            summary: &mut summary,
        };
        let stop = reader::run(
            &mut probe,
            ring,
            &mut stages,
            reader::Options {
                flush_interval: cli.flush_interval,
                duration: cli.duration,
                start,
            },
        )
        .await?;
        if stop != Stop::ClosedPipe {
            eprint!("{}", summary.report(&probe.stats()));
            let c = &enrich.counters;
            if c.untracked > 0 {
                eprintln!(
                    "tcpstate: {} half-open/timewait sockets not followed (raise --max-tracked)",
                    c.untracked
                );
            }
            if c.lookup_errors > 0 {
                eprintln!(
                    "tcpstate: {} of {} sock_diag dumps failed (last: {})",
                    c.lookup_errors,
                    c.lookups,
                    c.last_error.as_deref().unwrap_or("?")
                );
            }
        }
        Ok(0)
    })
}
