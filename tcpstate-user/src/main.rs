use tcpstate::{
    cli::Cli,
    clock::WallClock,
    error::UserError,
    probe::{Probe, ProbeOptions},
    reader::{self, Stop},
    render,
    summary::Summary,
};

fn main() {
    let cli = Cli::parse_or_exit();
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
        let mut render = render::for_cli(cli, WallClock::now());
        let mut summary = Summary::default();
        eprintln!("Tracing TCP state changes. Hit Ctrl-C to end.");
        let stop = reader::run(
            &probe,
            ring,
            render.as_mut(),
            &mut summary,
            reader::Options {
                flush_interval: cli.flush_interval,
                duration: cli.duration,
            },
        )
        .await?;
        if stop != Stop::ClosedPipe {
            eprint!("{}", summary.report(&probe.stats()));
        }
        Ok(0)
    })
}
