//! `sock:inet_sk_error_report`: the socket error an application sees
//! (ECONNREFUSED, ETIMEDOUT, ...). The kernel sets it before `tcp_done()`,
//! so it precedes the CLOSE it explains.

use aya_ebpf::programs::BtfTracePointContext;
use tcpstate_common::{DETAIL_NONE, Hook};

use crate::{
    cause,
    kernel::{arg, read},
    maps::config,
};

/// `inet_sk_error_report(const struct sock *sk)`.
#[inline(always)]
pub fn handle(ctx: &BtfTracePointContext) -> Option<()> {
    let sk = arg(ctx, 0);
    let off = config().offsets.sk_err;
    let err = if off != 0 && sk != 0 {
        read::<i32>(sk + off as u64).map_or(DETAIL_NONE, |e| e.clamp(0, 254) as u8)
    } else {
        DETAIL_NONE
    };
    cause::emit(sk, Hook::SockError, err)
}
