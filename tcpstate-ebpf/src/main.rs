//! tcpstate's kernel side. One short handler per hook:
//! - `inet_sock_set_state_btf`: every TCP state change, on the BTF (raw)
//!   tracepoint, which gets the socket itself and builds no trace record;
//! - `inet_sock_set_state_nested`: the changes the kernel skipped the first
//!   program for because it was already running on that CPU;
//! - `inet_sock_set_state`: the same handler on the classic tracepoint,
//!   loaded instead when kernel BTF does not give the socket layout;
//! - `tcp_retransmit_synack_btf` (BTF tracepoint), or `tcp_retransmit_synack`
//!   (classic) as its fallback: half-open connections that linger;
//! - `tcp_send_reset`, `tcp_receive_reset`, `inet_sk_error_report`,
//!   `tcp_retransmit_skb` (BTF tracepoints): the causes that explain a
//!   connection's end, emitted only when they happen (see `cause`).
//!
//! Events go through one BPF ring buffer; see `maps` for the shared state.
#![no_std]
#![no_main]
// Map keys and values are passed by reference on purpose: by value, a
// `Borrow<V>` argument copies the struct onto the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod cause;
mod event;
mod kernel;
mod maps;
mod record;
mod reset;
mod retransmit;
mod sk_error;
mod state_change;
mod synack;

use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_probe_read_kernel,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tcpstate_common::{TracepointLayout, stat};

use crate::{
    maps::{RUNNING, config, count_in, slot},
    record::{SockRecord, TracepointRecord},
    state_change::Runner,
};

/// The socket's address as a plain number (a key, an event field, logged):
/// loaded from the context directly it would be a typed kernel pointer, on
/// which the verifier refuses arithmetic.
#[inline(always)]
fn btf_args(ctx: &BtfTracePointContext) -> Option<(u64, u8, u8)> {
    let sk: u64 = unsafe { bpf_probe_read_kernel(ctx.as_ptr() as *const u64) }.ok()?;
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    (sk != 0).then_some((sk, old as u8, new as u8))
}

/// `inet_sock_set_state(const struct sock *sk, int oldstate, int newstate)`.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> u32 {
    let running = RUNNING.get_ptr_mut(0);
    if let Some(r) = running {
        unsafe { *r = 1 };
    }
    if let Some((sk, old, new)) = btf_args(&ctx)
        && let Some(rec) = SockRecord::new(sk)
    {
        let runner = Runner {
            row: stat::ROW_TRACING,
            slot: slot::MAIN,
        };
        let _ = state_change::handle(&ctx, runner, &rec, sk, old, new);
    }
    if let Some(r) = running {
        unsafe { *r = 0 };
    }
    0
}

/// Attached after the main program on the same hook, with its own link and
/// so its own recursion guard: when the main program is running on this CPU
/// (interrupted by a softirq that changes another socket's state), the
/// kernel skips it for the nested change, and this one handles it. Otherwise
/// it returns at once.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_nested(ctx: BtfTracePointContext) -> u32 {
    let Some(running) = RUNNING.get_ptr(0) else {
        return 0;
    };
    if unsafe { *running } == 0 {
        return 0;
    }
    if let Some((sk, old, new)) = btf_args(&ctx)
        && let Some(rec) = SockRecord::new(sk)
    {
        count_in(stat::ROW_NESTED, stat::RESCUED);
        let runner = Runner {
            row: stat::ROW_NESTED,
            slot: slot::NESTED,
        };
        let _ = state_change::handle(&ctx, runner, &rec, sk, old, new);
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
        let runner = Runner {
            row: stat::ROW_TRACING,
            slot: slot::MAIN,
        };
        let _ = state_change::handle(&ctx, runner, &rec, sk, old as u8, new as u8);
    }
    0
}

#[tracepoint]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    let _ = synack::from_tracepoint(&ctx);
    0
}

#[btf_tracepoint(function = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack_btf(ctx: BtfTracePointContext) -> u32 {
    let _ = synack::from_btf(&ctx);
    0
}

/// A cause hook: one BTF tracepoint program whose handler writes a cause
/// event or nothing (its result only says which).
macro_rules! cause_program {
    ($name:ident, $function:tt, $handler:path) => {
        #[btf_tracepoint(function = $function)]
        pub fn $name(ctx: BtfTracePointContext) -> u32 {
            let _ = $handler(&ctx);
            0
        }
    };
}

cause_program!(tcp_send_reset, "tcp_send_reset", reset::sent);
cause_program!(tcp_receive_reset, "tcp_receive_reset", reset::received);
cause_program!(
    inet_sk_error_report,
    "inet_sk_error_report",
    sk_error::handle
);
cause_program!(tcp_retransmit_skb, "tcp_retransmit_skb", retransmit::handle);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
