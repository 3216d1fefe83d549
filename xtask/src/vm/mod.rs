//! Other kernels under QEMU: `cargo xtask vm-run --kernel 6.1 -- CMD...` runs one command in a
//! guest booted from Debian's kernel package, in the host's own file system; `cargo xtask
//! vm-test [--kernel 6.1|6.12|all]` runs a subset of the end-to-end tests in each kernel of the
//! matrix against the host's release binary. Everything lives under `target/vm/`.
//!
//! - [`kernel`]: fetch and unpack the packages (apt-get download, dpkg-deb -x), cached;
//! - [`vmlinux`]: the uncompressed ELF kernel QEMU boots directly (PVH);
//! - [`initramfs`] (with [`cpio`]): busybox, 9p/overlay modules and the guest's /init;
//! - [`qemu`]: one guest run with a timeout, its output and exit status;
//! - [`subset`] and [`matrix`]: the tests the matrix runs and its summary.

mod cpio;
mod initramfs;
mod kernel;
mod matrix;
mod qemu;
mod subset;
mod vmlinux;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Result, bail};

use crate::util::{self, step};
pub use matrix::run_matrix;

#[derive(clap::Args, Debug)]
pub struct RunOptions {
    /// The guest kernel line: one of 6.1, 6.12.
    #[arg(long, default_value = "6.1")]
    pub kernel: String,
    /// Kill the guest after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Keep the run's directory (console output, kernel log) under target/vm/runs/.
    #[arg(long)]
    pub keep: bool,
    /// The command and its arguments, run as root in the guest's copy of the host's `/`,
    /// in the current directory.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct TestOptions {
    /// Which kernels: 6.1, 6.12 or all.
    #[arg(long, default_value = "all")]
    pub kernel: String,
    /// Keep each run's directory (console output, kernel log) even when it passed.
    #[arg(long)]
    pub keep: bool,
}

/// A bootable guest: the unpacked package, its vmlinux and our initramfs.
pub struct Guest {
    pub kernel: kernel::Kernel,
    pub vmlinux: PathBuf,
    pub initramfs: PathBuf,
}

pub fn vm_dir() -> PathBuf {
    util::target_dir().join("vm")
}

/// Fetches (when missing) and prepares the guest of one kernel line.
pub fn prepare(line_name: &str) -> Result<Guest> {
    let line = kernel::line(line_name)?;
    let mut k = None;
    step("vm", &format!("kernel {line_name}"), || {
        let (kernel, what) = kernel::ensure(line)?;
        let msg = format!("{what}: {}", kernel.release);
        k = Some(kernel);
        Ok(msg)
    })?;
    let Some(kernel) = k else {
        bail!("no kernel for {line_name}")
    };
    let vmlinux = kernel.root.join(format!("vmlinux-{}", kernel.release));
    step("vm", &format!("vmlinux {}", kernel.release), || {
        vmlinux::ensure(&kernel.vmlinuz(), &vmlinux)
    })?;
    let initramfs = kernel.root.join("initramfs.cpio");
    step("vm", &format!("initramfs {}", kernel.release), || {
        initramfs::build(&kernel, &initramfs)
    })?;
    Ok(Guest {
        kernel,
        vmlinux,
        initramfs,
    })
}

/// A fresh directory for one guest run, unique so that runs may overlap.
pub(super) fn run_dir(label: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    vm_dir()
        .join("runs")
        .join(format!("{label}-{}-{n}", std::process::id()))
}

/// `cargo xtask vm-run`: the command's output on our stdout, its exit status as ours.
pub fn vm_run(opts: &RunOptions) -> Result<()> {
    crate::setup::ensure(&[crate::setup::Part::VmPackages])?;
    let guest = prepare(&opts.kernel)?;
    let dir = run_dir(&opts.kernel);
    let cwd = std::env::current_dir()?;
    let out = qemu::run(
        &guest,
        &qemu::Request {
            argv: &opts.command,
            env: &[],
            cwd: &cwd,
            timeout: Duration::from_secs(opts.timeout),
            echo: true,
            dir: &dir,
            files: &[],
        },
    )?;
    let boot = out.boot.map(util::secs).unwrap_or_else(|| "?".into());
    eprintln!(
        "vm-run: kernel {}: booted in {boot}, wall {}, exit status {}",
        guest.kernel.release,
        util::secs(out.wall),
        out.status.map_or("none".to_string(), |s| s.to_string())
    );
    let failure = out.failure();
    if opts.keep || failure.is_some() {
        eprintln!("vm-run: run directory kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match (failure, out.status) {
        (None, _) => Ok(()),
        // The command's own status is passed on, like a local run (no extra error line).
        (Some(_), Some(s)) => std::process::exit(s),
        (Some(why), None) => bail!("vm-run on {}: {why}", guest.kernel.release),
    }
}
