//! The uncompressed ELF `vmlinux` inside a bzImage `vmlinuz`, found the way the kernel's
//! `scripts/extract-vmlinux` does it: look for each compressor's magic and try to decompress
//! from there until the output is an ELF file. QEMU boots the ELF through PVH, which skips
//! the bzImage's own decompressor: 2-4 s to init under TCG instead of much longer.

use std::{
    fs,
    io::{Read as _, Write as _},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// (name, magic, command decompressing stdin to stdout). Each tool stops at, or only warns
/// about, the bytes that follow the compressed kernel; only the ELF check counts.
const FORMATS: &[(&str, &[u8], &[&str])] = &[
    ("xz", b"\xfd7zXZ\x00", &["xz", "-dc", "--single-stream"]),
    ("zstd", b"\x28\xb5\x2f\xfd", &["zstd", "-dcq"]),
    ("gzip", b"\x1f\x8b\x08", &["gzip", "-dc"]),
];

/// Writes `dest` from `vmlinuz` unless it is already there and newer. Returns what it did.
pub fn ensure(vmlinuz: &Path, dest: &Path) -> Result<String> {
    if is_newer(dest, vmlinuz) {
        return Ok("cached".into());
    }
    let image = fs::read(vmlinuz).with_context(|| format!("cannot read {}", vmlinuz.display()))?;
    for &(name, magic, cmd) in FORMATS {
        for offset in find_all(&image, magic) {
            let out = decompress(cmd, &image[offset..])?;
            if out.starts_with(b"\x7fELF") {
                let tmp = dest.with_extension("partial");
                fs::write(&tmp, &out).with_context(|| format!("cannot write {}", tmp.display()))?;
                fs::rename(&tmp, dest)?;
                return Ok(format!(
                    "extracted ({name} at offset {offset}, {} MB)",
                    out.len() >> 20
                ));
            }
        }
    }
    bail!(
        "found no xz, zstd or gzip stream in {} that decompresses to an ELF vmlinux",
        vmlinuz.display()
    )
}

fn is_newer(a: &Path, b: &Path) -> bool {
    let m = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((m(a), m(b)), (Some(a), Some(b)) if a >= b)
}

fn find_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// Runs the decompressor on `input`; its exit status is ignored (trailing data makes some
/// complain after writing everything).
fn decompress(cmd: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {} (install it)", cmd[0]))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    // Feed from a thread so a decompressor that fills its stdout pipe cannot deadlock us.
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let mut out = Vec::new();
    stdout.read_to_end(&mut out)?;
    let _ = feeder.join();
    let _ = child.wait();
    Ok(out)
}
