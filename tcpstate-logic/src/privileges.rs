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

pub(crate) fn parse_cap_eff(status: &str) -> Option<u64> {
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

/// The one line said (without --verbose) when the start-up read lacked a
/// privilege: what is missing, and the capability that restores it. None
/// when nothing was refused.
pub fn degraded_line(namespaces_denied: usize, processes_denied: usize) -> Option<String> {
    let mut parts = Vec::new();
    if namespaces_denied > 0 {
        parts.push(format!(
            "{namespaces_denied} other network namespaces not read (their existing sockets, \
             listener owners, timewait and half-open rows; entering them needs CAP_SYS_ADMIN)"
        ));
    }
    if processes_denied > 0 {
        parts.push(format!(
            "owners unknown for sockets of {processes_denied} processes of other users or with \
             more capabilities (reading their open files needs CAP_SYS_PTRACE)"
        ));
    }
    (!parts.is_empty()).then(|| {
        format!(
            "tcpstate: with fewer privileges: {}; every kernel transition is still traced (docs/security.md)",
            parts.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_degraded_line_names_what_restores_each_loss() {
        assert_eq!(degraded_line(0, 0), None);
        let l = degraded_line(15, 0).unwrap();
        assert!(
            l.contains("15 other network namespaces") && l.contains("CAP_SYS_ADMIN"),
            "{l}"
        );
        assert!(!l.contains("CAP_SYS_PTRACE"), "{l}");
        let l = degraded_line(0, 3).unwrap();
        assert!(
            l.contains("3 processes") && l.contains("CAP_SYS_PTRACE"),
            "{l}"
        );
        assert!(!l.contains('\n'));
    }

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
