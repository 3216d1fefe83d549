//! The guest's initramfs: Debian's static busybox, the few modules needed to reach the host's
//! file system (9p over virtio, overlay), and an /init that mounts the host's `/` read-only
//! with a tmpfs overlay on top, chroots into it and runs the run's `stage2.sh` (see
//! [`super::qemu`]). Host binaries and test programs then run unchanged in the guest.

use std::{collections::BTreeSet, fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use super::{cpio::Archive, kernel::Kernel};
use crate::util::run_captured;

/// Where `busybox-static` installs its binary (the plain `busybox` package's is dynamic).
const BUSYBOX: &str = "/bin/busybox";

/// Modules the init needs before the host's `/` is reachable; their dependencies (e.g.
/// `netfs` for 9p on 6.12) come from `modules.dep`. The rest (nftables, veth, ...) is loaded
/// on demand by the host's `modprobe` once the package's modules are bound at
/// `/lib/modules/<release>`. Built-in ones (listed in `modules.builtin`) are skipped.
const WANTED: &[&str] = &[
    "virtio_pci",
    "virtio_console",
    "9pnet_virtio",
    "9p",
    "overlay",
];

/// The guest's PID 1. `vm_results` and `vm_modules` come from the kernel command line (the
/// kernel hands unknown `name=value` parameters to init as environment variables).
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /mnt/lower /mnt/rw /mnt/root /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The kernel log and our own status lines go to the serial port (a file on the host).
log() { echo "vm-init: $*" > /dev/ttyS0; }
die() { log "$*"; echo "VM-EXIT-STATUS=125" > /dev/ttyS0; sync; poweroff -f; echo o > /proc/sysrq-trigger; sleep 10; }
for m in $(cat /modules.order); do insmod "/modules/$m" || die "cannot insmod $m"; done
R=/mnt/root
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /mnt/lower || die "cannot mount the host's / over 9p"
mount -t tmpfs -o mode=755 tmpfs /mnt/rw || die "tmpfs"
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work $R || die "cannot mount the overlay"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results "$R$vm_results" || die "cannot mount the results export at $vm_results"
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tracefs tracefs $R/sys/kernel/tracing
mount -t bpf bpf $R/sys/fs/bpf
# The host's layout: a tmpfs at /sys/fs/cgroup with cgroup2 at unified/.
mount -t tmpfs -o mode=755 cgroup $R/sys/fs/cgroup
mkdir -p $R/sys/fs/cgroup/unified
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup/unified
mount -t tmpfs tmpfs $R/tmp
mount -t tmpfs tmpfs $R/run
# The guest kernel's modules where its modprobe looks for them.
mkdir -p "$R/lib/modules/$(uname -r)"
mount --bind "$R$vm_modules" "$R/lib/modules/$(uname -r)" || die "cannot bind the modules"
# The kernel runs modprobe (module autoloading: nf_tables, tcp_diag, veth, ...) from the
# initial root, this initramfs, not from our chroot: hand those requests to the chroot's.
printf '#!/bin/busybox sh\nexec /bin/busybox chroot /mnt/root /sbin/modprobe "$@"\n' > /bin/modprobe-chroot
chmod 755 /bin/modprobe-chroot
echo /bin/modprobe-chroot > /proc/sys/kernel/modprobe
ip link set lo up
hostname "vm-$(uname -r)"
log "init reached after $(cut -d' ' -f1 /proc/uptime) s; running the command"
chroot $R /bin/sh "$vm_results/stage2.sh" </dev/hvc0 >/dev/hvc0 2>&1
status=$?
echo "VM-EXIT-STATUS=$status" > /dev/ttyS0
sync
poweroff -f
echo o > /proc/sysrq-trigger
sleep 10
"#;

/// Writes `dest`, the initramfs for `kernel`. Returns a line saying what is in it.
pub fn build(kernel: &Kernel, dest: &Path) -> Result<String> {
    let busybox = fs::read(BUSYBOX).with_context(|| {
        format!("cannot read {BUSYBOX}: install Debian's busybox-static (cargo xtask setup)")
    })?;
    let mut a = Archive::default();
    for d in ["bin", "dev", "modules"] {
        a.dir(d);
    }
    a.char_dev("dev/console", 5, 1);
    a.file("bin/busybox", 0o755, &busybox);
    a.file("init", 0o755, INIT.as_bytes());
    let modules = load_order(kernel)?;
    let mut order = String::new();
    for rel in &modules {
        let name = module_name(rel);
        let ko = read_module(&kernel.modules().join(rel))?;
        a.file(&format!("modules/{name}.ko"), 0o644, &ko);
        order.push_str(&format!("{name}.ko\n"));
    }
    a.file("modules.order", 0o644, order.as_bytes());
    let bytes = a.finish();
    fs::write(dest, &bytes).with_context(|| format!("cannot write {}", dest.display()))?;
    let names: Vec<String> = modules.iter().map(|m| module_name(m)).collect();
    Ok(format!(
        "{} KB, modules: {}",
        bytes.len() >> 10,
        names.join(" ")
    ))
}

/// `kernel/fs/9p/9p.ko.xz` -> `9p`.
fn module_name(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    file.split(".ko").next().unwrap_or(file).to_string()
}

/// Module names compare with `-` and `_` as one.
fn same_module(a: &str, b: &str) -> bool {
    a.replace('-', "_") == b.replace('-', "_")
}

/// The modules to insmod, each after its dependencies (paths relative to the modules dir).
fn load_order(kernel: &Kernel) -> Result<Vec<String>> {
    let dir = kernel.modules();
    let dep_file = dir.join("modules.dep");
    let deps = fs::read_to_string(&dep_file)
        .with_context(|| format!("cannot read {}", dep_file.display()))?;
    let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let table: Vec<(&str, Vec<&str>)> = deps
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m.trim(), d.split_whitespace().collect()))
        .collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for &want in WANTED {
        if builtin.lines().any(|l| same_module(&module_name(l), want)) {
            continue;
        }
        let Some((path, _)) = table
            .iter()
            .find(|(m, _)| same_module(&module_name(m), want))
        else {
            bail!(
                "kernel {} has no module {want} (built in or in {})",
                kernel.release,
                dep_file.display()
            );
        };
        visit(path, &table, &mut seen, &mut order);
    }
    Ok(order)
}

/// Post-order walk: dependencies first.
fn visit<'a>(
    path: &'a str,
    table: &[(&'a str, Vec<&'a str>)],
    seen: &mut BTreeSet<&'a str>,
    order: &mut Vec<String>,
) {
    if !seen.insert(path) {
        return;
    }
    if let Some((_, deps)) = table.iter().find(|(m, _)| *m == path) {
        for d in deps {
            visit(d, table, seen, order);
        }
    }
    order.push(path.to_string());
}

/// A module file, decompressed: busybox's insmod takes only plain `.ko` files (6.12's are
/// `.ko.xz`).
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else if name.ends_with(".ko.gz") {
        "gzip"
    } else {
        return fs::read(path).with_context(|| format!("cannot read {name}"));
    };
    Ok(run_captured(Command::new(tool).arg("-dc").arg(path))?.stdout)
}
