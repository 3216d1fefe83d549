//! `tcp:tcp_send_reset` and `tcp:tcp_receive_reset`: who reset a connection,
//! and with which of the kernel's reasons. Local aborts (close() with unread
//! data, SO_LINGER 0) move the socket to CLOSE *before* the reset goes out,
//! so userspace holds such a CLOSE row until this event arrives.

use aya_ebpf::programs::BtfTracePointContext;
use tcpstate_common::{DETAIL_NONE, Hook};

use crate::{cause, kernel::arg, maps::config};

/// `tcp_send_reset(const struct sock *sk, const struct sk_buff *skb,
/// const enum sk_rst_reason reason)`; `sk` is NULL for a reset answering a
/// segment no socket wanted (e.g. a SYN to a closed port).
#[inline(always)]
pub fn sent(ctx: &BtfTracePointContext) -> Option<()> {
    let sk = arg(ctx, 0);
    let reason = if config().rst_reason_arg != 0 {
        let r: u64 = ctx.arg(2);
        r.min(DETAIL_NONE as u64 - 1) as u8
    } else {
        DETAIL_NONE
    };
    cause::emit(sk, Hook::ResetSent, reason)
}

/// `tcp_receive_reset(struct sock *sk)`, called from `tcp_reset()` before
/// the socket is done.
#[inline(always)]
pub fn received(ctx: &BtfTracePointContext) -> Option<()> {
    cause::emit(arg(ctx, 0), Hook::ResetReceived, 0)
}
