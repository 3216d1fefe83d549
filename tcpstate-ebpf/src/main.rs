//! tcpstate's kernel side. One short handler per hook:
//! - `inet_sock_set_state_btf`: every TCP state change, on the BTF (raw)
//!   tracepoint, which gets the socket itself and builds no trace record;
//! - `inet_sock_set_state`: the same handler on the classic tracepoint,
//!   loaded instead when kernel BTF does not give the socket layout;
//! - `tcp_retransmit_synack`: half-open connections that linger.
//!
//! Events go through one BPF ring buffer; see `maps` for the shared state.
#![no_std]
#![no_main]
// Map keys and values are passed by reference on purpose: by value, a
// `Borrow<V>` argument copies the struct onto the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod kernel;
mod maps;
mod record;
mod state_change;
mod synack;

use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_probe_read_kernel,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tcpstate_common::TracepointLayout;

use crate::{
    maps::config,
    record::{SockRecord, TracepointRecord},
};

/// `inet_sock_set_state(const struct sock *sk, int oldstate, int newstate)`.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> u32 {
    // The socket's address as a plain number (a key, an event field, logged):
    // loaded from the context directly it would be a typed kernel pointer,
    // on which the verifier refuses arithmetic.
    let sk: u64 = unsafe { bpf_probe_read_kernel(ctx.as_ptr() as *const u64) }.unwrap_or(0);
    if sk == 0 {
        return 0;
    }
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    if let Some(rec) = SockRecord::new(sk) {
        let _ = state_change::handle(&ctx, &rec, sk, old as u8, new as u8);
    }
    0
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let cfg = config();
    let rec = TracepointRecord { ctx: &ctx };
    const K: TracepointLayout = TracepointLayout::SINCE_5_6;
    let l = cfg.layout;
    let fields = (
        rec.field::<u64>(&cfg, K.skaddr, l.skaddr),
        rec.field::<i32>(&cfg, K.oldstate, l.oldstate),
        rec.field::<i32>(&cfg, K.newstate, l.newstate),
    );
    if let (Some(sk), Some(old), Some(new)) = fields {
        let _ = state_change::handle(&ctx, &rec, sk, old as u8, new as u8);
    }
    0
}

#[tracepoint]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    let _ = synack::handle(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
