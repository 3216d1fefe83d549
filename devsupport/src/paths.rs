//! Where things are: the workspace root, and programs on `$PATH`.

use std::path::{Path, PathBuf};

/// The workspace root (the directory holding the top-level Cargo.toml): this crate lives one
/// level below it, and the path is fixed when the crate is compiled.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("devsupport/ lives one level below the workspace root")
        .to_path_buf()
}

/// Finds the executable `name` in a directory of `$PATH`, like `which`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    find_executable(name, std::env::split_paths(&path))
}

/// Directories where Debian installs system tools, searched by [`which_or_system`] after
/// `$PATH`: libbpf-tools' `tcpstates` lands in /usr/sbin, which a user's `$PATH` (or sudo's)
/// may leave out.
pub const SYSTEM_DIRS: [&str; 3] = ["/usr/sbin", "/usr/bin", "/sbin"];

/// [`which`], then [`SYSTEM_DIRS`].
pub fn which_or_system(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(SYSTEM_DIRS.iter().map(PathBuf::from));
    find_executable(name, dirs)
}

fn find_executable(name: &str, dirs: impl Iterator<Item = PathBuf>) -> Option<PathBuf> {
    dirs.map(|dir| dir.join(name)).find(|p| is_executable(p))
}

/// A regular file with an execute bit set.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("devsupport").is_dir());
    }

    #[test]
    fn finds_executables_only() {
        let sh = which("sh").expect("sh on PATH");
        assert!(is_executable(&sh));
        assert!(which("no-such-program-here").is_none());
        assert!(which_or_system("sh").is_some());
        assert!(!is_executable(&workspace_root().join("Cargo.toml")));
        assert!(!is_executable(&workspace_root()));
    }

    #[test]
    fn system_dirs_come_after_path() {
        let dir = std::env::temp_dir().join(format!("devsupport-which-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let found = find_executable(
            "sh",
            [dir.clone()]
                .into_iter()
                .chain(SYSTEM_DIRS.iter().map(PathBuf::from)),
        );
        assert!(found.is_some_and(|p| p.starts_with("/usr") || p.starts_with("/sbin")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
