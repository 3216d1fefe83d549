//! What is mounted where, from `/proc/self/mounts` (the fstab-like view: source, mount
//! point, filesystem type, options, and two unused numbers per line).

use std::{fs, io};

/// One line of `/proc/self/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// What is mounted (`nodev`, `bpf`, `/dev/sda1`, ...).
    pub source: String,
    /// Where it is mounted.
    pub point: String,
    /// Filesystem type (`tracefs`, `bpf`, ...).
    pub fstype: String,
    /// Mount options, comma-separated as the kernel prints them.
    pub options: String,
}

/// Parses `/proc/self/mounts`-style text. The kernel writes a space, tab, newline or
/// backslash inside a field as a three-digit octal escape (`\040`); they are decoded.
/// Lines with fewer than three fields are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace().map(unescape);
            Some(Mount {
                source: f.next()?,
                point: f.next()?,
                fstype: f.next()?,
                options: f.next().unwrap_or_default(),
            })
        })
        .collect()
}

/// Decodes the kernel's `\NNN` octal escapes.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = (b[i] == b'\\')
            .then(|| b.get(i + 1..i + 4))
            .flatten()
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts this process sees.
pub fn read() -> io::Result<Vec<Mount>> {
    Ok(parse(&fs::read_to_string("/proc/self/mounts")?))
}

/// Whether `mounts` has a filesystem of type `fstype` at `point`.
pub fn has(mounts: &[Mount], point: &str, fstype: &str) -> bool {
    mounts
        .iter()
        .any(|m| m.point == point && m.fstype == fstype)
}

/// Whether this process sees a filesystem of type `fstype` mounted at `point`.
pub fn is_mounted(point: &str, fstype: &str) -> io::Result<bool> {
    Ok(has(&read()?, point, fstype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_finds() {
        let text = "sysfs /sys sysfs rw 0 0\nnodev /sys/kernel/tracing tracefs rw,relatime 0 0\n\
                    short line\n/dev/sdb1 /mnt/my\\040disk ext4 ro 0 0\n";
        let m = parse(text);
        assert_eq!(m.len(), 3, "the two-field line is skipped");
        assert_eq!(
            m[1],
            Mount {
                source: "nodev".into(),
                point: "/sys/kernel/tracing".into(),
                fstype: "tracefs".into(),
                options: "rw,relatime".into(),
            }
        );
        assert!(has(&m, "/sys/kernel/tracing", "tracefs"));
        assert!(!has(&m, "/sys/fs/bpf", "bpf"));
        assert!(!has(&m, "/sys", "tracefs"));
        assert!(has(&m, "/mnt/my disk", "ext4"));
        assert_eq!(m[2].options, "ro");
    }

    #[test]
    fn unescapes_octal_only() {
        assert_eq!(unescape(r"a\040b\011c"), "a b\tc");
        assert_eq!(unescape(r"a\\b"), r"a\\b");
        assert_eq!(unescape(r"end\04"), r"end\04");
        assert_eq!(unescape(r"\999"), r"\999");
    }

    #[test]
    fn proc_is_mounted_here() {
        assert!(is_mounted("/proc", "proc").unwrap());
    }
}
