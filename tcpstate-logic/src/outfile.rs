//! Checks, before tracing starts, that a file the user asked us to write
//! (`--diagram FILE.dot`, and the FILE.svg beside it) can be written: a
//! mistake found only at exit would cost the whole run's data.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

/// Ok when `path` can be created or overwritten now: its directory exists
/// and is writable, it is not itself a directory, and its file system has
/// space left. The file is not created (an interrupted run leaves nothing).
pub fn check_writable(flag: &str, path: &Path) -> Result<(), String> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        return Err(format!("{flag} needs a file name"));
    }
    if path.is_dir() {
        return Err(format!("{flag} {shown}: is a directory"));
    }
    let dir = parent(path);
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "{flag} {shown}: {} is not a directory",
                dir.display()
            ));
        }
        Err(e) => return Err(format!("{flag} {shown}: {}: {e}", dir.display())),
    }
    // An existing file must be writable itself; a new one needs the directory.
    let target = if path.exists() { path } else { dir.as_path() };
    access_w(target).map_err(|e| format!("{flag} {shown}: {}: {e}", target.display()))?;
    if no_space(&dir) {
        return Err(format!(
            "{flag} {shown}: no space left on the file system of {}",
            dir.display()
        ));
    }
    Ok(())
}

/// The directory a new file at `path` would go in.
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// access(W_OK): the kernel's own answer for this process's credentials
/// (read-only mounts included, root's override included).
fn access_w(p: &Path) -> std::io::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// True when the file system of `dir` has no block left for us.
fn no_space(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and a zeroed out-struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    // Root may use the reserved blocks (f_bfree), others only f_bavail;
    // either way zero free blocks means the first write fails.
    // SAFETY: geteuid has no preconditions.
    let free = if unsafe { libc::geteuid() } == 0 {
        st.f_bfree
    } else {
        st.f_bavail
    };
    free == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_refused() {
        let e = check_writable("--diagram", Path::new("/nonexistent/dir/x.dot")).unwrap_err();
        assert!(
            e.contains("--diagram") && e.contains("/nonexistent/dir"),
            "{e}"
        );
    }

    #[test]
    fn a_directory_is_refused() {
        let e = check_writable("--diagram", Path::new("/tmp")).unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
    }

    #[test]
    fn a_file_below_a_file_is_refused() {
        let e = check_writable("--diagram", Path::new("/etc/hostname/x.dot")).unwrap_err();
        assert!(e.contains("not a directory"), "{e}");
    }

    #[test]
    fn a_new_file_in_a_writable_directory_is_fine_and_not_created() {
        let p = std::env::temp_dir().join(format!("tcpstate-outfile-{}.dot", std::process::id()));
        check_writable("--diagram", &p).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn a_bare_name_means_the_working_directory() {
        assert_eq!(parent(Path::new("x.dot")), PathBuf::from("."));
    }
}
