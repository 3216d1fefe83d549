//! Checks the capabilities tcpstate needs before touching the kernel, so a
//! missing one is reported by name instead of as a bare EPERM.

/// Capability bit numbers (linux/capability.h).
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capability set, from `CapEff:` in /proc/self/status.
pub fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

pub fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// Names of the capabilities missing for loading and attaching the tracer.
/// CAP_SYS_ADMIN alone also suffices (older kernels, and it implies both).
pub fn missing_for_tracing(caps: u64) -> Vec<&'static str> {
    if has(caps, CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(caps, CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(caps, CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_everything() {
        let caps = parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n").unwrap();
        assert!(missing_for_tracing(caps).is_empty());
    }

    #[test]
    fn bpf_and_perfmon_without_sys_admin_suffice() {
        let caps = (1u64 << CAP_BPF) | (1u64 << CAP_PERFMON);
        assert!(missing_for_tracing(caps).is_empty());
    }

    #[test]
    fn missing_capabilities_are_named() {
        assert_eq!(missing_for_tracing(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_for_tracing(1u64 << CAP_BPF), vec!["CAP_PERFMON"]);
    }

    #[test]
    fn unparsable_status_is_none() {
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(parse_cap_eff(""), None);
    }
}
