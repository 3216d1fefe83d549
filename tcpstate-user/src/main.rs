use tcpstate::{
    cli::{Cli, generate},
    clock::WallClock,
    enrich::Enricher,
    error::UserError,
    exit_report::ExitReport,
    gate::Gate,
    metrics,
    probe::Probe,
    reader::{self, Stop},
    render,
    settings::Settings,
};

fn main() {
    let cli = Cli::parse_or_exit();
    if let Some(code) = generate::from_cli(&cli) {
        std::process::exit(code);
    }
    if let Err(msg) = cli.validate() {
        UserError::usage(msg).report(false);
        std::process::exit(2);
    }
    let verbose = cli.verbose;
    let code = match Settings::from_cli(&cli).and_then(run) {
        Ok(code) => code,
        Err(e) => {
            e.report(verbose);
            e.exit_code
        }
    };
    std::process::exit(code);
}

fn run(settings: Settings) -> Result<i32, UserError> {
    let Settings {
        probe: probe_options,
        enrich: enrich_options,
        render: render_options,
        containers,
        metrics: metrics_options,
        start,
        flush_interval,
        duration,
        verbose,
    } = settings;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| UserError::runtime(format!("starting the runtime: {e}")))?;
    runtime.block_on(async {
        let mut probe = Probe::load(&probe_options)?;
        let ring = probe.take_events()?;
        let attributor = containers.attributor();
        let recorder = match metrics_options {
            Some(opts) => {
                let (recorder, registry) = metrics::Recorder::new(&opts);
                let bound = metrics::serve(opts.addr, registry).await.map_err(|e| {
                    UserError::runtime(format!("serving metrics on {}: {e}", opts.addr))
                })?;
                if verbose {
                    eprintln!("tcpstate: metrics at http://{bound}/metrics");
                }
                Some(recorder)
            }
            None => None,
        };
        let mut gate = Gate::new(attributor.clone(), containers.select, recorder)
            .with_kernel_verdicts(probe.take_cgroup_verdicts());
        let mut render = render::build(&render_options, WallClock::now(), attributor);
        let mut report = ExitReport::default();
        let mut enrich = Enricher::new(enrich_options, probe.rst_reasons.clone());
        let mut stages = reader::Stages {
            enrich: &mut enrich,
            gate: &mut gate,
            render: render.as_mut(),
            report: &mut report,
        };
        let stop = reader::run(
            &mut probe,
            ring,
            &mut stages,
            reader::Options {
                flush_interval,
                duration,
                start,
            },
        )
        .await?;
        if stop == Stop::Interrupted {
            eprintln!("tcpstate: stopped during the start-up read, before tracing began");
            return Ok(0);
        }
        if stop == Stop::ClosedPipe {
            eprint!("{}", report.notes_text());
        } else {
            eprint!("{}", report.text(&probe.stats(), &enrich.counters));
        }
        // A file the user asked for that could not be written fails the run.
        Ok(if report.failed() { 1 } else { 0 })
    })
}
