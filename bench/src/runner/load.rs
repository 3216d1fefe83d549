//! The load of a run: `loadgen server` and `loadgen client` in the bench namespace, and their
//! reports.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use tcpstate_bench::loadgen::{ClientReport, ServerReport};

use super::{
    one::Ctx,
    procs::{pin, wait_rusage},
};

fn spawn_loadgen(ctx: &Ctx, pinned: bool, args: &[String]) -> Result<Child> {
    let mut cmd = Command::new(&ctx.loadgen);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    pin(
        &mut cmd,
        pinned.then_some(ctx.cli.load_cpu),
        Some(ctx.netns),
    );
    cmd.spawn()
        .with_context(|| format!("cannot start {}", ctx.loadgen.display()))
}

fn child_stderr(c: &mut Child) -> String {
    let mut s = String::new();
    if let Some(e) = c.stderr.as_mut() {
        let _ = e.read_to_string(&mut s);
    }
    s.trim().to_string()
}

/// Server, then client; returns their reports and the share of the load CPU their processes
/// got while the load ran (well under 1: something else ran there too).
pub fn run_load(ctx: &Ctx, pinned: bool) -> Result<(ClientReport, ServerReport, f64)> {
    let port = ctx.cli.port.to_string();
    let mut server = spawn_loadgen(
        ctx,
        pinned,
        &["server".into(), "--port".into(), port.clone()],
    )?;
    let mut sout = BufReader::new(server.stdout.take().expect("piped"));
    let mut line = String::new();
    sout.read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = server.kill();
        let _ = server.wait();
        bail!(
            "loadgen server did not start: {}",
            child_stderr(&mut server)
        );
    }
    let mut client = spawn_loadgen(
        ctx,
        pinned,
        &[
            "client".into(),
            "--port".into(),
            port,
            "--count".into(),
            ctx.connections.to_string(),
            "--max-secs".into(),
            ctx.cli.max_secs.to_string(),
        ],
    )?;
    let mut cout = String::new();
    client
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut cout)?;
    let (cstatus, ccpu) = wait_rusage(&client)?;
    if !cstatus.success() {
        let _ = server.kill();
        let _ = server.wait();
        bail!(
            "loadgen client failed ({cstatus}): {}",
            child_stderr(&mut client)
        );
    }
    let mut sjson = String::new();
    sout.read_to_string(&mut sjson)?;
    let (sstatus, scpu) = wait_rusage(&server)?;
    if !sstatus.success() {
        bail!(
            "loadgen server failed ({sstatus}): {}",
            child_stderr(&mut server)
        );
    }
    let c: ClientReport =
        serde_json::from_str(cout.trim()).with_context(|| format!("client report {cout:?}"))?;
    let s: ServerReport =
        serde_json::from_str(sjson.trim()).with_context(|| format!("server report {sjson:?}"))?;
    if s.handled != c.ok + 1 || s.client_count != Some(c.ok) {
        bail!(
            "server handled {} connections, client made {} + 1",
            s.handled,
            c.ok
        );
    }
    let share = (ccpu + scpu) / (s.end_ns.saturating_sub(c.start_ns) as f64 / 1e9);
    Ok((c, s, share))
}
