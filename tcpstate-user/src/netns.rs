//! Resolves `--netns NAME|PATH|INODE` to the namespace inode number the kernel
//! program compares against.

use std::{os::unix::fs::MetadataExt, path::Path};

use crate::error::UserError;

pub fn resolve(spec: &str) -> Result<u32, UserError> {
    let spec = spec.trim();
    if let Ok(inode) = spec.parse::<u64>() {
        return u32::try_from(inode)
            .ok()
            .filter(|i| *i != 0)
            .ok_or_else(|| UserError::usage(format!("--netns {spec}: not a namespace inode")));
    }
    let path = if spec.contains('/') {
        Path::new(spec).to_path_buf()
    } else {
        Path::new("/run/netns").join(spec)
    };
    let meta = std::fs::metadata(&path).map_err(|e| {
        UserError::usage(format!("--netns {spec}: {}: {e}", path.display()))
            .hint("give a name from `ip netns list`, a path like /proc/PID/ns/net, or an inode")
    })?;
    u32::try_from(meta.ino())
        .map_err(|_| UserError::usage(format!("--netns {spec}: inode out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_by_path() {
        let ino = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_eq!(resolve("/proc/self/ns/net").unwrap() as u64, ino);
    }

    #[test]
    fn inode_numbers_pass_through() {
        assert_eq!(resolve("4026531840").unwrap(), 4026531840);
        assert!(resolve("0").is_err());
    }

    #[test]
    fn missing_names_are_usage_errors() {
        let e = resolve("no-such-namespace-tcpstate").unwrap_err();
        assert_eq!(e.exit_code, 2);
        assert!(e.message.contains("/run/netns/no-such-namespace-tcpstate"));
    }
}
