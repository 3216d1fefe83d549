//! Turning what the kernel and aya refuse into one-line errors with a hint
//! (missing capabilities, verifier rejections, absent hooks).

use aya::programs::ProgramError;

use crate::{
    error::{UserError, permission_hint},
    privileges,
};

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
