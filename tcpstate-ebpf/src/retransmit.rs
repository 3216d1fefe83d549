//! `tcp:tcp_retransmit_skb`: a segment resent after a timeout or loss. In
//! SYN_SENT it is the SYN (a connect that gets no answer); otherwise data.
//! Fires only on retransmits, so a healthy connection costs nothing here.

use aya_ebpf::programs::BtfTracePointContext;
use tcpstate_common::Hook;

use crate::{cause, kernel::arg, maps::config};

/// `tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb
/// [, int err])`.
#[inline(always)]
pub fn handle(ctx: &BtfTracePointContext) -> Option<()> {
    if config().retransmit_err_arg != 0 {
        let err: i64 = ctx.arg(2);
        if err as i32 != 0 {
            // Not sent (the kernel will try again): not a retransmit on the wire.
            return None;
        }
    }
    cause::emit(arg(ctx, 0), Hook::Retransmit, 0)
}
