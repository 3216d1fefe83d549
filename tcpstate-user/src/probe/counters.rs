//! The kernel side's counters: the STATS array read from memory (it is
//! mmap-able, so reading it needs no syscall, which would itself make the
//! kernel skip tracing programs on that CPU), and each program's
//! `recursion_misses`.

use std::os::fd::AsRawFd;

use aya::Ebpf;
use tcpstate_common::{names, stat};

pub use tcpstate_logic::kernel_stats::KernelStats;

/// The kernel's counters, read from memory (the map is BPF_F_MMAPABLE): no
/// syscall, so reading them cannot make the kernel skip our program.
pub(super) struct StatsView {
    ptr: *const u64,
    len_bytes: usize,
    ncpus: u32,
}

impl StatsView {
    pub(super) fn map(ebpf: &Ebpf, ncpus: u32) -> std::io::Result<StatsView> {
        use std::os::fd::AsFd;
        let map = ebpf
            .map(names::STATS)
            .ok_or_else(|| std::io::Error::other("STATS map missing"))?;
        let fd = match map {
            aya::maps::Map::Array(d) => d.fd().as_fd().as_raw_fd(),
            _ => return Err(std::io::Error::other("STATS is not an array")),
        };
        let len_bytes = (ncpus * stat::ROWS * stat::COUNT) as usize * 8;
        // SAFETY: mapping a BPF array map fd read-only for its byte size.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(StatsView {
            ptr: ptr.cast(),
            len_bytes,
            ncpus,
        })
    }

    pub(super) fn sum(&self, slot: u32) -> u64 {
        (0..self.ncpus * stat::ROWS)
            .map(|row| {
                let i = (row * stat::COUNT + slot) as usize;
                // SAFETY: i < ncpus * ROWS * COUNT, inside the mapping;
                // aligned u64 words, each written whole by the kernel.
                unsafe { std::ptr::read_volatile(self.ptr.add(i)) }
            })
            .sum()
    }
}

impl Drop for StatsView {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.ptr.cast_mut().cast(), self.len_bytes) };
    }
}

/// `recursion_misses` from BPF_OBJ_GET_INFO_BY_FD: aya's ProgramInfo does not
/// expose it, so ask the kernel directly with its own struct layout.
pub(super) fn recursion_misses(prog_fd: i32) -> Option<u64> {
    use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = prog_fd as u32;
    attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    attr.info.info = &mut info as *mut _ as u64;
    // SAFETY: attr points to a valid bpf_attr for BPF_OBJ_GET_INFO_BY_FD.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as i32,
            &mut attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>() as u32,
        )
    };
    (rc == 0).then_some(info.recursion_misses)
}
