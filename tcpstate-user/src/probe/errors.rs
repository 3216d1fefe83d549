//! Turning what the kernel and aya refuse into one-line errors with a hint
//! (missing capabilities, verifier rejections, absent hooks).

use aya::programs::ProgramError;

use crate::{
    error::{UserError, permission_hint},
    privileges,
};

/// The oldest kernel with everything the programs need at their plainest
/// (classic tracepoints): the BPF ring buffer (5.8), bounded loops and
/// `bpf_probe_read_kernel` (5.5) and the tracepoint's `protocol` field
/// (5.6, which also fixed its layout).
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// Refuses a kernel older than [`MIN_KERNEL`] with one line naming it, rather
/// than whatever the first map or program creation would fail with.
pub(super) fn check_kernel_version() -> Result<(), UserError> {
    let release = kernel_release();
    match parse_release(&release) {
        Some(v) if v < MIN_KERNEL => Err(UserError::runtime(format!(
            "this kernel ({release}) is older than Linux {}.{}, which tcpstate needs for the \
             BPF ring buffer",
            MIN_KERNEL.0, MIN_KERNEL.1
        ))
        .hint("tcpstate runs on Linux 5.8 and newer; see the README's kernel table")),
        _ => Ok(()),
    }
}

/// `uname -r`.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// (major, minor) of a release like "6.1.0-57-amd64".
pub(super) fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(['.', '-', '+']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

pub(super) fn check_privileges() -> Result<(), UserError> {
    let Some(caps) = privileges::effective() else {
        return Ok(()); // cannot tell: let the kernel decide
    };
    let missing = privileges::missing_for_tracing(caps);
    if missing.is_empty() {
        return Ok(());
    }
    let who = if unsafe { libc::geteuid() } == 0 {
        "running as root but without"
    } else {
        "not root and without"
    };
    Err(
        UserError::runtime(format!("{who} {}", missing.join(" and ")))
            .hint(permission_hint(Some(libc::EPERM)).unwrap_or_default()),
    )
}

pub(super) fn load_error(e: aya::EbpfError) -> UserError {
    let errno = match &e {
        aya::EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. }) => {
            io_error.raw_os_error()
        }
        _ => None,
    };
    let mut err = UserError::runtime(format!("loading the eBPF object failed: {e}"));
    if let Some(h) = permission_hint(errno) {
        err = err.hint(h);
    }
    err
}

pub(super) fn program_error(what: &str, e: ProgramError) -> UserError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let mut err = UserError::runtime(format!(
                "the kernel's verifier rejected the program: {io_error}"
            ))
            .detail(format!("verifier log:\n{verifier_log}"));
            // The verifier answers EACCES for a program it rejects; only EPERM
            // means missing privileges.
            err = match io_error.raw_os_error() {
                Some(libc::EPERM) => {
                    err.hint(permission_hint(Some(libc::EPERM)).unwrap_or_default())
                }
                _ => err.hint("run with --verbose to see the verifier log"),
            };
            err
        }
        ProgramError::SyscallError(s) => {
            let errno = s.io_error.raw_os_error();
            let mut err = UserError::runtime(format!("{what}: {} failed: {}", s.call, s.io_error));
            if let Some(h) = permission_hint(errno) {
                err = err.hint(h);
            }
            err
        }
        other => UserError::runtime(format!("{what}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_are_read_as_major_minor() {
        assert_eq!(parse_release("6.1.0-57-amd64"), Some((6, 1)));
        assert_eq!(parse_release("6.12.63+deb12-amd64"), Some((6, 12)));
        assert_eq!(parse_release("5.4.0"), Some((5, 4)));
        assert!(parse_release("5.4.0").unwrap() < MIN_KERNEL);
        assert_eq!(parse_release("garbage"), None);
    }
}
