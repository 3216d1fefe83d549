//! The one writer of `Event`. Each handler gathers what it knows into
//! `Fields` and writes it with `Fields::write`, which sets every field, so a
//! ring-buffer slot or scratch slot never keeps a value from an earlier use.

use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, generated};
use tcpstate_common::{COMM_LEN, Config, Event, Owner, stat};

use crate::maps::{EVENTS, count_in, wakeup_flags};

/// Everything an event says except its addresses (read last, straight into
/// the event, to keep 32 bytes off the stack).
pub struct Fields {
    pub now: u64,
    pub skaddr: u64,
    pub dwell: u64,
    pub cgroup_id: u64,
    pub owner: Owner,
    pub on_cpu: Owner,
    pub netns: u32,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub old: u8,
    pub new: u8,
    /// A `Hook` value.
    pub source: u8,
    pub flags: u8,
    pub retransmits: u8,
    pub detail: u8,
}

impl Fields {
    #[inline(always)]
    pub fn write(&self, ev: &mut Event, saddr: [u8; 16], daddr: [u8; 16]) {
        ev.ts_ns = self.now;
        ev.skaddr = self.skaddr;
        ev.dwell_ns = self.dwell;
        ev.cgroup_id = self.cgroup_id;
        ev.owner_pid = self.owner.pid;
        copy_comm(&mut ev.owner_comm, &self.owner.comm);
        ev.cpu_pid = self.on_cpu.pid;
        copy_comm(&mut ev.cpu_comm, &self.on_cpu.comm);
        ev.netns = self.netns;
        ev.sport = self.sport;
        ev.dport = self.dport;
        ev.family = self.family;
        ev.oldstate = self.old;
        ev.newstate = self.new;
        ev.source = self.source;
        ev.flags = self.flags;
        ev.retransmits = self.retransmits;
        ev.detail = self.detail;
        ev.saddr = saddr;
        ev.daddr = daddr;
    }
}

/// The task on the CPU now: the socket's owner only where the kernel runs
/// in the owner's context, whoever was there otherwise.
#[inline(always)]
pub fn on_cpu() -> Owner {
    Owner {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    }
}

/// The task on the CPU now, written into the event's `cpu_*` fields: the
/// helper fills the event's memory directly (no copy through the stack).
#[inline(always)]
pub fn set_on_cpu(ev: &mut Event) {
    ev.cpu_pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let comm = ev.cpu_comm.as_mut_ptr();
    // SAFETY: the helper writes at most COMM_LEN bytes, NUL-terminated.
    if unsafe { generated::bpf_get_current_comm(comm.cast(), COMM_LEN as u32) } != 0 {
        copy_comm(&mut ev.cpu_comm, &[0; COMM_LEN]);
    }
}

/// An owner from a pid and a task name (copied as words, see [`copy_comm`]).
#[inline(always)]
pub fn owner(pid: u32, comm: &[u8; COMM_LEN]) -> Owner {
    let mut o = Owner {
        pid,
        _pad: 0,
        comm: [0; COMM_LEN],
    };
    copy_comm(&mut o.comm, comm);
    o
}

/// Copies a task name as two words. Every `comm` field is 8-byte aligned
/// (asserted in tcpstate-common), and a plain array assignment would become
/// a call to a byte-loop `memcpy` whose every iteration the verifier walks.
#[inline(always)]
pub fn copy_comm(dst: &mut [u8; COMM_LEN], src: &[u8; COMM_LEN]) {
    let s = src.as_ptr().cast::<u64>();
    let d = dst.as_mut_ptr().cast::<u64>();
    // SAFETY: both are 16 bytes at an 8-byte aligned address.
    unsafe {
        d.write(s.read());
        d.add(1).write(s.add(1).read());
    }
}

/// Writes an event straight into a reserved ring-buffer slot (no copy) and
/// submits it, or discards the slot if `write` fails; counts the outcome in
/// counter row `row`.
#[inline(always)]
pub fn submit(row: u32, cfg: &Config, write: impl FnOnce(&mut Event) -> Option<()>) {
    let wake = wakeup_flags(cfg);
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            // SAFETY: the reserved slot is ours until submitted or discarded.
            let ev = unsafe { &mut *entry.as_mut_ptr() };
            if write(ev).is_some() {
                entry.submit(wake);
                count_in(row, stat::SUBMITTED);
            } else {
                entry.discard(0);
            }
        }
        None => count_in(row, stat::RINGBUF_FULL),
    }
}
