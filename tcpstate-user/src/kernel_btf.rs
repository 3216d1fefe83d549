//! Resolves, from the running kernel's BTF, the struct offsets the eBPF
//! program needs to read a socket's network namespace
//! (`sk->__sk_common.skc_net.net->ns.inum`). Rust eBPF programs have no CO-RE,
//! so these are looked up here and handed over in the program's config.

use anyhow::{Context, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use tcpstate_common::{KernelOffsets, SockHead, names};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Follows typedefs and qualifiers to the underlying struct/union.
fn resolve_struct(btf: &Btf, mut ty: Type) -> Result<btf_rs::Struct> {
    for _ in 0..16 {
        ty = match ty {
            Type::Struct(s) | Type::Union(s) => return Ok(s),
            Type::Typedef(ref t) => btf.resolve_chained_type(t)?,
            Type::Const(ref t) | Type::Volatile(ref t) | Type::Restrict(ref t) => {
                btf.resolve_chained_type(t)?
            }
            Type::TypeTag(ref t) => btf.resolve_chained_type(t)?,
            other => bail!("expected a struct, found {}", other.name()),
        };
    }
    bail!("type chain too deep")
}

fn struct_by_name(btf: &Btf, name: &str) -> Result<btf_rs::Struct> {
    for ty in btf.resolve_types_by_name(name)? {
        if let Type::Struct(s) = ty {
            return Ok(s);
        }
    }
    Err(anyhow!("struct {name} not found in kernel BTF"))
}

/// Byte offset of member `name` in `st`, looking through anonymous
/// structs/unions, with the member's own type.
fn member(btf: &Btf, st: &btf_rs::Struct, name: &str) -> Result<Option<(u32, Type)>> {
    for m in &st.members {
        let mname = btf.resolve_name(m).unwrap_or_default();
        if mname == name {
            return Ok(Some((m.bit_offset() / 8, btf.resolve_chained_type(m)?)));
        }
        if mname.is_empty() {
            let inner = resolve_struct(btf, btf.resolve_chained_type(m)?);
            if let Ok(inner) = inner
                && let Some((off, ty)) = member(btf, &inner, name)?
            {
                return Ok(Some((m.bit_offset() / 8 + off, ty)));
            }
        }
    }
    Ok(None)
}

fn offset_of(btf: &Btf, st: &btf_rs::Struct, path: &[&str]) -> Result<u32> {
    let mut st = st.clone();
    let mut total = 0;
    for (i, name) in path.iter().enumerate() {
        let (off, ty) =
            member(btf, &st, name)?.ok_or_else(|| anyhow!("member {name} not found"))?;
        total += off;
        if i + 1 < path.len() {
            st = resolve_struct(btf, ty)?;
        }
    }
    Ok(total)
}

/// The value of enumerator `name` of `enum enum_name`.
fn enum_value(btf: &Btf, enum_name: &str, name: &str) -> Result<u32> {
    for ty in btf.resolve_types_by_name(enum_name)? {
        if let Type::Enum(e) = ty {
            for m in &e.members {
                if btf.resolve_name(m).unwrap_or_default() == name {
                    return Ok(m.val());
                }
            }
        }
    }
    bail!("enum {enum_name} has no {name}")
}

/// What the loader needs from kernel BTF.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelBtf {
    pub offsets: KernelOffsets,
    /// The id of the `btf_trace_inet_sock_set_state` typedef, when the BTF
    /// program can be used: the tracepoint exists, `sock_common` starts as
    /// [`SockHead`] says, `sk_protocol` is a plain u16, and the IPv6
    /// addresses are adjacent. `None`: use the classic tracepoint.
    pub state_change_btf_id: Option<u32>,
    /// Why the BTF program cannot be used, for `--verbose`.
    pub btf_program_unusable: Option<&'static str>,
    /// The id of `btf_trace_tcp_retransmit_synack`, when the BTF SYN-ACK
    /// program can read the request socket (`sock_common` as [`SockHead`]
    /// says, adjacent IPv6 addresses). `None`: the classic tracepoint.
    pub synack_btf_id: Option<u32>,
    /// The `btf_trace_*` typedef ids of the cause hooks this kernel has, in
    /// the order of [`CAUSE_HOOKS`] (`None`: that hook is missing).
    pub cause_btf_ids: [Option<u32>; 4],
    /// `tcp_send_reset` passes `enum sk_rst_reason` (Linux >= 6.10).
    pub rst_reason_arg: bool,
    /// `tcp_retransmit_skb` passes the transmit result (`int err`).
    pub retransmit_err_arg: bool,
}

/// The cause hooks: (program name, tracepoint). Each is optional: a kernel
/// without one loses only the reasons it gives.
pub const CAUSE_HOOKS: [(&str, &str); 4] = [
    (names::RESET_SENT_PROGRAM, "tcp_send_reset"),
    (names::RESET_RECEIVED_PROGRAM, "tcp_receive_reset"),
    (names::SOCK_ERROR_PROGRAM, "inet_sk_error_report"),
    (names::RETRANSMIT_PROGRAM, "tcp_retransmit_skb"),
];

/// The id of `btf_trace_<tp>` and how many arguments the tracepoint passes
/// (its function prototype less the leading `void *__data`).
fn trace_typedef(btf: &Btf, tp: &str) -> Option<(u32, usize)> {
    let id = btf
        .resolve_ids_by_name(&format!("btf_trace_{tp}"))
        .ok()?
        .into_iter()
        .next()?;
    let mut ty = btf.resolve_type_by_id(id).ok()?;
    for _ in 0..8 {
        ty = match ty {
            Type::FuncProto(p) => return Some((id, p.parameters.len().saturating_sub(1))),
            Type::Typedef(ref t) => btf.resolve_chained_type(t).ok()?,
            Type::Ptr(ref t) => btf.resolve_chained_type(t).ok()?,
            Type::Const(ref t) | Type::Volatile(ref t) => btf.resolve_chained_type(t).ok()?,
            _ => return None,
        };
    }
    None
}

/// Offsets of `sock.__sk_common.skc_net.net`, `net.ns.inum` and the other
/// fields the programs read (0 when missing), and whether the BTF state-change
/// program can be used on this kernel.
pub fn kernel_btf(path: &str) -> Result<KernelBtf> {
    // Mmap: look up the few members we need without parsing (and keeping)
    // all of the kernel's types, which costs tens of MB of memory.
    let btf = Btf::from_file_with_backend(path, btf_rs::Backend::Mmap)
        .or_else(|_| Btf::from_file(path))
        .with_context(|| format!("reading {path}"))?;
    let sock = struct_by_name(&btf, "sock")?;
    let skc_net = offset_of(&btf, &sock, &["__sk_common", "skc_net", "net"])?;
    let net = struct_by_name(&btf, "net")?;
    let ns_inum = offset_of(&btf, &net, &["ns", "inum"])?;
    if skc_net == 0 {
        bail!("unexpected zero offset for skc_net");
    }
    let opt = |st: &btf_rs::Struct, path: &[&str]| offset_of(&btf, st, path).unwrap_or(0);
    let tcp_sock = struct_by_name(&btf, "tcp_sock").ok();
    let tcp_req = struct_by_name(&btf, "tcp_request_sock").ok();
    let req = struct_by_name(&btf, "request_sock").ok();
    let v6_daddr = opt(&sock, &["__sk_common", "skc_v6_daddr"]);
    let v6_saddr = opt(&sock, &["__sk_common", "skc_v6_rcv_saddr"]);
    let offsets = KernelOffsets {
        skc_net,
        ns_inum,
        // `sk_flags` is a macro for `__sk_common.skc_flags` since 6.x.
        sk_flags: offset_of(&btf, &sock, &["__sk_common", "skc_flags"])
            .or_else(|_| offset_of(&btf, &sock, &["sk_flags"]))
            .unwrap_or(0),
        sock_done_bit: enum_value(&btf, "sock_flags", "SOCK_DONE").unwrap_or(1),
        sk_protocol: u16_member(&btf, &sock, "sk_protocol").unwrap_or(0),
        skc_v6_daddr: v6_daddr,
        srtt_us: tcp_sock.as_ref().map_or(0, |t| opt(t, &["srtt_us"])),
        snt_synack: tcp_req.as_ref().map_or(0, |t| opt(t, &["snt_synack"])),
        num_retrans: req.as_ref().map_or(0, |t| opt(t, &["num_retrans"])),
        inet_sport: struct_by_name(&btf, "inet_sock")
            .ok()
            .map_or(0, |t| opt(&t, &["inet_sport"])),
        sk_err: opt(&sock, &["sk_err"]),
        skc_state: opt(&sock, &["__sk_common", "skc_state"]),
        sk_cgroup: 0,
        cgroup_kn: 0,
        kn_id: 0,
    };
    let offsets = with_cgroup_offsets(&btf, &sock, offsets);
    let hooks = CAUSE_HOOKS.map(|(_, tp)| trace_typedef(&btf, tp));
    let head: Vec<u32> = [
        "skc_daddr",
        "skc_rcv_saddr",
        "skc_dport",
        "skc_num",
        "skc_family",
    ]
    .iter()
    .map(|m| opt(&sock, &["__sk_common", m]))
    .collect();
    let typedef = btf
        .resolve_ids_by_name("btf_trace_inet_sock_set_state")
        .ok()
        .and_then(|ids| ids.into_iter().next());
    // What both BTF programs read of `sock_common` (full and request sockets).
    let head_as_read = head == SockHead::OFFSETS;
    let v6_adjacent = v6_daddr != 0 && v6_saddr == v6_daddr + 16;
    let synack_btf_id = trace_typedef(&btf, "tcp_retransmit_synack")
        .filter(|&(_, args)| head_as_read && v6_adjacent && args == 2)
        .map(|(id, _)| id);
    let unusable = if typedef.is_none() {
        Some("no btf_trace_inet_sock_set_state in kernel BTF")
    } else if !head_as_read {
        Some("struct sock_common does not start as expected")
    } else if offsets.inet_sport == 0 {
        Some("no inet_sock.inet_sport")
    } else if offsets.sk_protocol == 0 {
        Some("sk_protocol is not a plain u16 (Linux < 5.6)")
    } else if !v6_adjacent {
        Some("skc_v6_rcv_saddr does not follow skc_v6_daddr")
    } else {
        None
    };
    Ok(KernelBtf {
        offsets,
        state_change_btf_id: if unusable.is_none() { typedef } else { None },
        btf_program_unusable: unusable,
        synack_btf_id,
        cause_btf_ids: hooks.map(|h| h.map(|(id, _)| id)),
        rst_reason_arg: hooks[0].is_some_and(|(_, n)| n >= 3),
        retransmit_err_arg: hooks[3].is_some_and(|(_, n)| n >= 3),
    })
}

/// `sock.sk_cgrp_data.cgroup`, `cgroup.kn` and `kernfs_node.id`, all or
/// none: before Linux 5.15 `sk_cgrp_data` packed the pointer with v1 data
/// and has no `cgroup` member, and a kernel without CONFIG_SOCK_CGROUP_DATA
/// has no `sk_cgrp_data`. None of the three can be at offset 0.
fn with_cgroup_offsets(btf: &Btf, sock: &btf_rs::Struct, mut o: KernelOffsets) -> KernelOffsets {
    let found = (|| {
        let sk = offset_of(btf, sock, &["sk_cgrp_data", "cgroup"]).ok()?;
        let kn = offset_of(btf, &struct_by_name(btf, "cgroup").ok()?, &["kn"]).ok()?;
        let id = offset_of(btf, &struct_by_name(btf, "kernfs_node").ok()?, &["id"]).ok()?;
        (sk != 0 && kn != 0 && id != 0).then_some((sk, kn, id))
    })();
    if let Some((sk, kn, id)) = found {
        (o.sk_cgroup, o.cgroup_kn, o.kn_id) = (sk, kn, id);
    }
    o
}

/// Offset of a plain (not bit-field) 2-byte member.
fn u16_member(btf: &Btf, st: &btf_rs::Struct, name: &str) -> Option<u32> {
    let m = st
        .members
        .iter()
        .find(|m| btf.resolve_name(*m).unwrap_or_default() == name)?;
    if m.bitfield_size().is_some_and(|b| b != 0) || m.bit_offset() % 8 != 0 {
        return None;
    }
    let mut ty = btf.resolve_chained_type(m).ok()?;
    for _ in 0..8 {
        ty = match ty {
            Type::Int(i) => return (i.size() == 2).then_some(m.bit_offset() / 8),
            Type::Typedef(ref t) => btf.resolve_chained_type(t).ok()?,
            Type::Const(ref t) | Type::Volatile(ref t) => btf.resolve_chained_type(t).ok()?,
            _ => return None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs the running kernel's BTF; skipped where there is none.
    #[test]
    fn resolves_offsets_on_this_kernel() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            return;
        }
        let k = kernel_btf(VMLINUX_BTF).unwrap();
        assert_eq!(k.btf_program_unusable, None);
        assert!(k.state_change_btf_id.is_some());
        assert!(k.synack_btf_id.is_some());
        let off = k.offsets;
        assert!(
            off.sk_protocol > 0 && off.srtt_us > 0 && off.snt_synack > 0,
            "{off:?}"
        );
        assert!(off.num_retrans > 0 && off.skc_v6_daddr > 0, "{off:?}");
        assert!(off.skc_net > 0 && off.skc_net < 256, "{off:?}");
        assert!(off.ns_inum < 512, "{off:?}");
        assert!(off.sk_flags > 0, "{off:?}");
        assert_eq!(off.sock_done_bit, 1, "{off:?}");
        assert!(off.sk_err > 0 && off.skc_state == 18, "{off:?}");
        assert!(k.cause_btf_ids.iter().all(Option::is_some), "{k:?}");
        assert!(k.rst_reason_arg, "6.10+ passes the reset reason");
        assert!(
            off.sk_cgroup > 0 && off.cgroup_kn > 0 && off.kn_id > 0,
            "{off:?}"
        );
    }
}
