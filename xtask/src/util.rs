//! Small helpers shared by the subcommands: paths, running commands, timing (what the tests
//! and the benchmark also need is in `tcpstate-devsupport`, re-exported here).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
pub use tcpstate_devsupport::{is_executable, which, workspace_root};

/// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `<repo>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Path of the release binary of tcpstate-user.
pub fn tcpstate_bin() -> PathBuf {
    target_dir().join("release").join("tcpstate")
}

/// The cargo that runs us (`$CARGO`, set by `cargo run`), so nested builds use the same
/// toolchain as `cargo xtask`; plain `cargo` otherwise.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Renders a command line for messages.
pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains([' ', '"', '\'', '\x1f']) {
            s.push_str(&format!(" {arg:?}"));
        } else {
            s.push(' ');
            s.push_str(&arg);
        }
    }
    s
}

/// Runs `cmd` with inherited stdio, echoing it first; fails if it does not exit 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    println!("xtask: $ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` with its output captured; on failure the error carries the last lines of it.
pub fn run_captured(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}); its last output lines:\n{}",
            display(cmd),
            out.status,
            tail(&out, 40)
        );
    }
    Ok(out)
}

/// The last `n` lines of a command's stdout followed by its stderr.
pub fn tail(out: &Output, n: usize) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Puts `dir` first on this process's `$PATH` (inherited by every command we start).
pub fn prepend_path(dir: &Path) -> Result<()> {
    let old = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&old));
    let new: OsString = std::env::join_paths(dirs).context("cannot build PATH")?;
    // SAFETY: xtask is single-threaded; nothing reads the environment concurrently.
    unsafe { std::env::set_var("PATH", new) };
    Ok(())
}

/// Formats a duration for humans: `12 ms`, `12.3 s`.
pub fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Runs one named step, printing `<prefix>: <name>: <what it found or did> (<time>)`.
pub fn step(prefix: &str, name: &str, f: impl FnOnce() -> Result<String>) -> Result<()> {
    let start = Instant::now();
    match f() {
        Ok(msg) => {
            println!("{prefix}: {name}: {msg} ({})", secs(start.elapsed()));
            Ok(())
        }
        Err(e) => {
            eprintln!("{prefix}: {name}: FAILED after {}", secs(start.elapsed()));
            Err(e.context(format!("{prefix} step `{name}` failed")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_odd_arguments() {
        let mut cmd = Command::new("cargo");
        cmd.args(["build", "a b", ""]);
        assert_eq!(display(&cmd), r#"cargo build "a b" """#);
    }
}
