//! Running a helper command (`ip`, `nft`, `sysctl`, ...) to completion.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Runs `cmd` to completion, feeding it `stdin` if given (else no standard input), and
/// returns its stdout. When it cannot start or does not exit 0, the error names the command
/// and carries its exit status, stdout and stderr.
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {desc}"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .with_context(|| format!("writing to {desc}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {desc}"))?;
    if !out.status.success() {
        bail!(
            "{desc} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_stdout_and_feeds_stdin() {
        assert_eq!(run(Command::new("echo").arg("hi"), None).unwrap(), "hi\n");
        assert_eq!(run(&mut Command::new("cat"), Some("fed")).unwrap(), "fed");
    }

    #[test]
    fn failure_carries_the_output() {
        let err = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("out\nerr"), "{err}");
        let err = run(&mut Command::new("/nonexistent/program"), None).unwrap_err();
        assert!(err.to_string().starts_with("cannot run"), "{err}");
    }
}
