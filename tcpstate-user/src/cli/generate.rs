//! Shell completions and the man page, generated from the clap definition
//! (`tcpstate --completions bash|zsh|fish|elvish|powershell`, `tcpstate
//! --man`; both hidden from `--help`). `cargo xtask dist` writes them all
//! under target/dist/.

use std::io::Write;

use clap::CommandFactory as _;

use super::Cli;

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "tcpstate", out);
}

/// Writes the man page (roff) for tcpstate(8).
pub fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    let cmd = Cli::command();
    clap_mangen::Man::new(cmd).section("8").render(out)
}

/// Handles `--completions` and `--man`: `Some(exit status)` when one was
/// asked for (nothing else runs then), `None` otherwise.
pub fn from_cli(cli: &Cli) -> Option<i32> {
    let mut stdout = std::io::stdout().lock();
    let result = if let Some(shell) = cli.completions {
        completions(shell, &mut stdout);
        stdout.flush()
    } else if cli.man {
        man_page(&mut stdout).and_then(|_| stdout.flush())
    } else {
        return None;
    };
    Some(match result {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("tcpstate: error: writing to stdout: {e}");
            1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_name_the_flags() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let s = String::from_utf8(out).unwrap();
            for flag in ["lifecycle", "trigger", "diagram", "color", "port"] {
                assert!(s.contains(flag), "{shell:?} lacks {flag}");
            }
        }
    }

    #[test]
    fn man_page_has_the_sections() {
        let mut out = Vec::new();
        man_page(&mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with(".ie \\n(.g .ds Aq") || s.contains(".TH tcpstate 8"),
            "{s}"
        );
        assert!(s.contains(".TH tcpstate 8"), "{s}");
        assert!(s.contains("\\-\\-lifecycle"), "{s}");
        assert!(s.contains("CLOSE_WAIT"), "examples are included");
    }
}
