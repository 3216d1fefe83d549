//! Where a state change's fields come from. The BTF tracepoint passes the
//! socket itself (`struct sock *`) and the program reads the fields from it;
//! the classic tracepoint passes a record the kernel built, whose layout the
//! loader read from the tracepoint's format file. The state-change handler
//! is written once over [`Record`].

use aya_ebpf::{EbpfContext as _, programs::TracePointContext};
use tcpstate_common::{AF_INET, Config, SockHead, TracepointLayout};

use crate::kernel::read;

pub trait Record {
    fn protocol(&self, cfg: &Config) -> Option<u16>;
    fn family(&self, cfg: &Config) -> Option<u16>;
    /// (local port, remote port), host order.
    fn ports(&self, cfg: &Config) -> Option<(u16, u16)>;
    /// (local, remote) addresses, network order; IPv4 in the first 4 bytes.
    fn addrs(&self, cfg: &Config, family: u16) -> Option<([u8; 16], [u8; 16])>;
}

/// A socket read through its kernel address (BTF tracepoint). The head of
/// `sock_common` (IPv4 addresses, ports, family) is read in one helper call.
pub struct SockRecord {
    pub sk: u64,
    head: SockHead,
}

impl SockRecord {
    #[inline(always)]
    pub fn new(sk: u64) -> Option<Self> {
        Some(SockRecord {
            sk,
            head: read::<SockHead>(sk)?,
        })
    }

    /// (local port, remote port) as `sock_common` holds them: what a
    /// request socket, which has no `inet_sock`, carries.
    #[inline(always)]
    pub fn common_ports(&self) -> (u16, u16) {
        (self.head.num, u16::from_be(self.head.dport_be))
    }
}

impl Record for SockRecord {
    #[inline(always)]
    fn protocol(&self, cfg: &Config) -> Option<u16> {
        read::<u16>(self.sk + cfg.offsets.sk_protocol as u64)
    }

    #[inline(always)]
    fn family(&self, _cfg: &Config) -> Option<u16> {
        Some(self.head.family)
    }

    #[inline(always)]
    fn ports(&self, cfg: &Config) -> Option<(u16, u16)> {
        let sport = read::<u16>(self.sk + cfg.offsets.inet_sport as u64)?;
        Some((u16::from_be(sport), u16::from_be(self.head.dport_be)))
    }

    #[inline(always)]
    fn addrs(&self, cfg: &Config, family: u16) -> Option<([u8; 16], [u8; 16])> {
        if family == AF_INET {
            Some((v4(self.head.rcv_saddr), v4(self.head.daddr)))
        } else {
            // skc_v6_daddr, then skc_v6_rcv_saddr (checked at load time).
            let both = read::<[[u8; 16]; 2]>(self.sk + cfg.offsets.skc_v6_daddr as u64)?;
            Some((both[1], both[0]))
        }
    }
}

/// An IPv4 address in the first 4 bytes of an address field, built by
/// element so no `memcpy` call is emitted (the verifier walks its loop).
#[inline(always)]
pub fn v4(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// The `sock:inet_sock_set_state` record (classic tracepoint).
pub struct TracepointRecord<'a> {
    pub ctx: &'a TracePointContext,
}

const K: TracepointLayout = TracepointLayout::SINCE_5_6;

impl TracepointRecord<'_> {
    /// A field of the record. With the layout of Linux >= 5.6 (checked
    /// against the format file at load time) the offset is a constant and
    /// the field is loaded straight from the context, which the verifier
    /// allows for tracepoints; any other layout is read with a helper call
    /// at the offset the format file gave. `fast_layout` is read-only data,
    /// so the verifier drops the branch not taken.
    #[inline(always)]
    pub fn field<T: Copy>(&self, cfg: &Config, known: u16, runtime: u16) -> Option<T> {
        if cfg.fast_layout != 0 {
            // Volatile: one load instruction at ctx + constant, never a copy
            // through a computed pointer (the verifier refuses those).
            Some(unsafe {
                core::ptr::read_volatile(
                    self.ctx
                        .as_ptr()
                        .cast::<u8>()
                        .add(known as usize)
                        .cast::<T>(),
                )
            })
        } else {
            unsafe { self.ctx.read_at::<T>(runtime as usize) }.ok()
        }
    }

    #[inline(always)]
    fn v4(&self, cfg: &Config, known: u16, runtime: u16) -> Option<[u8; 4]> {
        if cfg.fast_layout != 0 {
            Some(self.field::<u32>(cfg, known, runtime)?.to_ne_bytes())
        } else {
            unsafe { self.ctx.read_at::<[u8; 4]>(runtime as usize) }.ok()
        }
    }

    #[inline(always)]
    fn v6(&self, cfg: &Config, known: u16, runtime: u16) -> Option<[u8; 16]> {
        if cfg.fast_layout != 0 {
            let hi = self.field::<u64>(cfg, known, runtime)?;
            let lo = self.field::<u64>(cfg, known + 8, runtime)?;
            Some(unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([hi, lo]) })
        } else {
            unsafe { self.ctx.read_at::<[u8; 16]>(runtime as usize) }.ok()
        }
    }
}

impl Record for TracepointRecord<'_> {
    #[inline(always)]
    fn protocol(&self, cfg: &Config) -> Option<u16> {
        let l = cfg.layout;
        if cfg.fast_layout != 0 {
            self.field(cfg, K.protocol, l.protocol)
        } else if l.protocol_size == 1 {
            Some(unsafe { self.ctx.read_at::<u8>(l.protocol as usize) }.ok()? as u16)
        } else {
            unsafe { self.ctx.read_at::<u16>(l.protocol as usize) }.ok()
        }
    }

    #[inline(always)]
    fn family(&self, cfg: &Config) -> Option<u16> {
        self.field(cfg, K.family, cfg.layout.family)
    }

    #[inline(always)]
    fn ports(&self, cfg: &Config) -> Option<(u16, u16)> {
        Some((
            self.field(cfg, K.sport, cfg.layout.sport)?,
            self.field(cfg, K.dport, cfg.layout.dport)?,
        ))
    }

    #[inline(always)]
    fn addrs(&self, cfg: &Config, family: u16) -> Option<([u8; 16], [u8; 16])> {
        let l = cfg.layout;
        if family == AF_INET {
            Some((
                v4(self.v4(cfg, K.saddr, l.saddr)?),
                v4(self.v4(cfg, K.daddr, l.daddr)?),
            ))
        } else {
            Some((
                self.v6(cfg, K.saddr_v6, l.saddr_v6)?,
                self.v6(cfg, K.daddr_v6, l.daddr_v6)?,
            ))
        }
    }
}
