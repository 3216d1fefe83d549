//! Errors the user can act on: one line saying what failed, one saying what to
//! do about it, and the exit status (2 usage, 1 runtime). No backtraces.

use std::fmt;

#[derive(Debug)]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
    pub exit_code: i32,
    /// Extra detail shown only with --verbose (e.g. the verifier log).
    pub detail: Option<String>,
}

impl UserError {
    pub fn runtime(message: impl Into<String>) -> Self {
        UserError {
            message: message.into(),
            hint: None,
            exit_code: 1,
            detail: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        UserError {
            exit_code: 2,
            ..Self::runtime(message)
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Prints the error to stderr as `tcpstate: error: ...` plus its hint.
    /// Messages may quote user input (paths, names): control characters are
    /// escaped so they stay one line each and cannot drive the terminal.
    pub fn report(&self, verbose: bool) {
        eprintln!("tcpstate: error: {}", printable(&self.message, false));
        if let Some(h) = &self.hint {
            eprintln!("  hint: {}", printable(h, false));
        }
        if verbose && let Some(d) = &self.detail {
            eprintln!("{}", printable(d, true));
        }
    }
}

/// `s` with control characters as `\xNN` (keeping newlines and tabs when
/// `multiline`, for details such as the verifier log).
pub fn printable(s: &str, multiline: bool) -> std::borrow::Cow<'_, str> {
    let keep = |c: char| multiline && (c == '\n' || c == '\t');
    if !s.chars().any(|c| c.is_control() && !keep(c)) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() && !keep(c) {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// Maps an OS error number to the advice a user needs.
pub fn permission_hint(errno: Option<i32>) -> Option<&'static str> {
    match errno {
        Some(libc::EPERM) | Some(libc::EACCES) => Some(
            "run as root with CAP_BPF and CAP_PERFMON (a container, capsh or setpriv may \
             drop them), or give the binary just those two: \
             sudo setcap cap_bpf,cap_perfmon+ep $(which tcpstate)",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable("plain /run/netns/a", false), "plain /run/netns/a");
        assert_eq!(printable("a\x1b[31m\nb", false), "a\\x1b[31m\\x0ab");
        assert_eq!(printable("log\n\tline\x07", true), "log\n\tline\\x07");
    }
}
