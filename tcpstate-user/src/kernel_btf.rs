//! Resolves, from the running kernel's BTF, the struct offsets the eBPF
//! program needs to read a socket's network namespace
//! (`sk->__sk_common.skc_net.net->ns.inum`). Rust eBPF programs have no CO-RE,
//! so these are looked up here and handed over in the program's config.

use anyhow::{Context, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use tcpstate_common::NetnsOffsets;

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

/// Offsets of `sock.__sk_common.skc_net.net`, `net.ns.inum`, and (optional,
/// 0 when missing) `net.net_cookie`, `sock.sk_flags` with SOCK_DONE's bit.
pub fn netns_offsets(path: &str) -> Result<NetnsOffsets> {
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
    Ok(NetnsOffsets {
        skc_net,
        ns_inum,
        net_cookie: offset_of(&btf, &net, &["net_cookie"]).unwrap_or(0),
        // `sk_flags` is a macro for `__sk_common.skc_flags` since 6.x.
        sk_flags: offset_of(&btf, &sock, &["__sk_common", "skc_flags"])
            .or_else(|_| offset_of(&btf, &sock, &["sk_flags"]))
            .unwrap_or(0),
        sock_done_bit: enum_value(&btf, "sock_flags", "SOCK_DONE").unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs the running kernel's BTF; skipped where there is none.
    #[test]
    fn resolves_netns_offsets_on_this_kernel() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            return;
        }
        let off = netns_offsets(VMLINUX_BTF).unwrap();
        assert!(off.skc_net > 0 && off.skc_net < 256, "{off:?}");
        assert!(off.ns_inum < 512, "{off:?}");
        assert!(off.net_cookie > 0, "{off:?}");
        assert!(off.sk_flags > 0, "{off:?}");
        assert_eq!(off.sock_done_bit, 1, "{off:?}");
    }
}
