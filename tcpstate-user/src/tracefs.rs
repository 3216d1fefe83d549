//! Finds tracefs, mounting it when it is not mounted (as bpftool and
//! libbpf-tools do): on this kind of machine it is not mounted at boot.

use std::{ffi::CString, path::PathBuf};

use crate::error::UserError;

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const TRACEFS_MAGIC: i64 = 0x74726163;

fn is_tracefs(path: &str) -> bool {
    let Ok(c) = CString::new(path) else {
        return false;
    };
    // SAFETY: zeroed statfs is a valid out-buffer; c is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == TRACEFS_MAGIC
}

/// Testing hook: a directory used as the tracefs root instead of the real one
/// (never mounted or checked), so tests can hand the tool an old or broken
/// `format` file. Not a user option; see docs/security.md. Ignored when the
/// binary runs with file capabilities or setuid (AT_SECURE), so an
/// unprivileged caller cannot steer a `setcap` binary with it.
pub const ROOT_OVERRIDE_ENV: &str = "TCPSTATE_TRACEFS";

/// Returns the tracefs root, mounting it at /sys/kernel/tracing if needed.
/// `say` receives one line per action taken (shown with --verbose).
pub fn ensure(say: &mut dyn FnMut(&str)) -> Result<PathBuf, UserError> {
    // SAFETY: getauxval has no preconditions.
    let secure = unsafe { libc::getauxval(libc::AT_SECURE) } != 0;
    let hook = std::env::var_os(ROOT_OVERRIDE_ENV).filter(|r| !r.is_empty() && !secure);
    if let Some(root) = hook {
        let root = PathBuf::from(root);
        say(&format!(
            "tracefs root from ${ROOT_OVERRIDE_ENV}: {}",
            root.display()
        ));
        return Ok(root);
    }
    if let Some(p) = CANDIDATES.iter().find(|p| is_tracefs(p)) {
        return Ok(PathBuf::from(p));
    }
    let target = CANDIDATES[0];
    let src = CString::new("nodev").unwrap();
    let dst = CString::new(target).unwrap();
    let fstype = CString::new("tracefs").unwrap();
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(UserError::runtime(format!(
            "tracefs is not mounted and mounting it at {target} failed: {err}"
        ))
        .hint(
            "mount it once as root: mount -t tracefs nodev /sys/kernel/tracing \
             (mounting needs CAP_SYS_ADMIN; tracing itself only CAP_BPF and CAP_PERFMON)",
        ));
    }
    say(&format!("mounted tracefs at {target}"));
    Ok(PathBuf::from(target))
}
