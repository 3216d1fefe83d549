//! Pure parsing: a process's cgroup path from `/proc/<pid>/cgroup`, and the
//! container ID and Kubernetes pod UID that container runtimes write into it.
//!
//! Formats recognised (the innermost match wins, so a runtime's own
//! sub-cgroup such as podman's `libpod-<ID>.scope/container` still names it):
//!
//! | driver / runtime | path |
//! |---|---|
//! | systemd, containerd | `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<UID with _>.slice/cri-containerd-<ID>.scope` |
//! | systemd, CRI-O | `.../kubepods-pod<UID>.slice/crio-<ID>.scope` (guaranteed QoS has no `<qos>` part) |
//! | systemd, docker / podman | `/system.slice/docker-<ID>.scope`, `/machine.slice/libpod-<ID>.scope` |
//! | cgroupfs, kubelet | `/kubepods/<qos>/pod<UID>/<ID>` (or `/kubepods/pod<UID>/<ID>`) |
//! | cgroupfs, podman / docker | `/libpod_parent/libpod-<ID>`, `/docker/<ID>` |
//!
//! `<ID>` is 64 lowercase hex digits. Paths seen from inside a cgroup
//! namespace may start with `/..`; only the components matter.

/// Which runtime named the container, from the cgroup component's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
    Podman,
    /// A bare 64-hex component (cgroupfs driver): the runtime does not say.
    Unknown,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::Crio => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Unknown => "unknown",
        }
    }
}

/// What a cgroup path says about its process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub container_id: Option<String>,
    pub runtime: Option<Runtime>,
    /// With dashes, as `kubectl get pod -o jsonpath='{.metadata.uid}'` shows it.
    pub pod_uid: Option<String>,
}

/// The cgroup-v2 path (`0::PATH`) of a `/proc/<pid>/cgroup` file; on a
/// v1-only host, the `name=systemd` hierarchy's, else the first line's.
pub(crate) fn proc_cgroup_path(contents: &str) -> Option<&str> {
    fn path_of(line: &str) -> Option<&str> {
        line.splitn(3, ':').nth(2)
    }
    let lines = || contents.lines().filter(|l| !l.is_empty());
    lines()
        .find(|l| l.starts_with("0::"))
        .or_else(|| lines().find(|l| l.split(':').nth(1) == Some("name=systemd")))
        .or_else(|| lines().next())
        .and_then(path_of)
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Prefixes runtimes put before the ID in a systemd scope or cgroupfs name.
const PREFIXES: [(&str, Runtime); 4] = [
    ("cri-containerd-", Runtime::Containerd),
    ("crio-", Runtime::Crio),
    ("docker-", Runtime::Docker),
    ("libpod-", Runtime::Podman),
];

fn container_of(component: &str) -> Option<(&str, Runtime)> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    if is_container_id(name) {
        return Some((name, Runtime::Unknown));
    }
    PREFIXES.iter().find_map(|&(prefix, runtime)| {
        name.strip_prefix(prefix)
            .filter(|id| is_container_id(id))
            .map(|id| (id, runtime))
    })
}

fn is_uid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `pod<UID>` (cgroupfs) or `kubepods[-<qos>]-pod<UID with _>.slice` (systemd).
fn pod_of(component: &str) -> Option<String> {
    let uid = if let Some(slice) = component.strip_suffix(".slice") {
        let at = slice.rfind("-pod")?;
        if !slice.starts_with("kubepods") {
            return None;
        }
        slice[at + 4..].replace('_', "-")
    } else {
        component.strip_prefix("pod")?.to_string()
    };
    is_uid(&uid).then_some(uid)
}

/// The container ID, its runtime and the pod UID a cgroup path carries.
pub fn parse(path: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for component in path.rsplit('/') {
        if parsed.container_id.is_none()
            && let Some((id, runtime)) = container_of(component)
        {
            parsed.container_id = Some(id.to_string());
            parsed.runtime = Some(runtime);
            continue;
        }
        if parsed.pod_uid.is_none()
            && let Some(uid) = pod_of(component)
        {
            parsed.pod_uid = Some(uid);
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4c8a3ab0e1c8d7b6f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f8e";
    const UID: &str = "0e5a9b44-1c3d-4f2a-9e6b-7d8c9a0b1c2d";

    fn uid_underscored() -> String {
        UID.replace('-', "_")
    }

    fn check(path: &str, runtime: Runtime, pod: Option<&str>) {
        let p = parse(path);
        assert_eq!(p.container_id.as_deref(), Some(ID), "{path}");
        assert_eq!(p.runtime, Some(runtime), "{path}");
        assert_eq!(p.pod_uid.as_deref(), pod, "{path}");
    }

    #[test]
    fn systemd_driver_containerd_cri_o_docker_podman() {
        let u = uid_underscored();
        check(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"
            ),
            Runtime::Containerd,
            Some(UID),
        );
        check(
            &format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope"
            ),
            Runtime::Crio,
            Some(UID),
        );
        // Guaranteed QoS: no QoS slice.
        check(
            &format!("/kubepods.slice/kubepods-pod{u}.slice/docker-{ID}.scope"),
            Runtime::Docker,
            Some(UID),
        );
        check(
            &format!("/machine.slice/libpod-{ID}.scope"),
            Runtime::Podman,
            None,
        );
        check(
            &format!("/system.slice/docker-{ID}.scope"),
            Runtime::Docker,
            None,
        );
    }

    #[test]
    fn cgroupfs_driver_kubelet_podman_docker() {
        check(
            &format!("/kubepods/besteffort/pod{UID}/{ID}"),
            Runtime::Unknown,
            Some(UID),
        );
        check(
            &format!("/kubepods/pod{UID}/{ID}"),
            Runtime::Unknown,
            Some(UID),
        );
        check(
            &format!("/libpod_parent/libpod-{ID}"),
            Runtime::Podman,
            None,
        );
        // `/docker/<ID>`: the ID component itself names no runtime.
        check(&format!("/docker/{ID}"), Runtime::Unknown, None);
    }

    #[test]
    fn innermost_container_wins_and_subcgroups_are_followed() {
        // podman (systemd) puts the payload in a `container` sub-cgroup.
        check(
            &format!("/machine.slice/libpod-{ID}.scope/container"),
            Runtime::Podman,
            None,
        );
        // Seen from inside a cgroup namespace.
        check(
            &format!("/../../libpod_parent/libpod-{ID}"),
            Runtime::Podman,
            None,
        );
    }

    #[test]
    fn conmon_host_and_lookalikes_are_not_containers() {
        for path in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/ssh.service",
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            &format!("/system.slice/crio-conmon-{ID}.scope"),
            "/docker/abc123",
            &format!("/docker/{}", ID.to_uppercase()),
            &format!("/docker/{ID}0"),
        ] {
            assert_eq!(parse(path).container_id, None, "{path}");
        }
        // A pod's own slice, before any container: the pod alone.
        let p = parse(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            uid_underscored()
        ));
        assert_eq!((p.container_id, p.pod_uid.as_deref()), (None, Some(UID)));
        assert_eq!(parse("/podcast/x").pod_uid, None);
        assert_eq!(parse("/system.slice/foo-pod1.slice").pod_uid, None);
    }

    #[test]
    fn proc_file_prefers_the_v2_line() {
        let hybrid = format!(
            "12:pids:/libpod_parent/libpod-{ID}\n1:name=systemd:/libpod_parent/libpod-{ID}\n0::/libpod_parent/libpod-{ID}\n"
        );
        assert_eq!(
            proc_cgroup_path(&hybrid),
            Some(format!("/libpod_parent/libpod-{ID}").as_str())
        );
        assert_eq!(proc_cgroup_path("0::/\n"), Some("/"));
        assert_eq!(
            proc_cgroup_path("3:cpu:/a\n1:name=systemd:/user.slice\n"),
            Some("/user.slice")
        );
        assert_eq!(proc_cgroup_path("3:cpu:/a\n"), Some("/a"));
        assert_eq!(proc_cgroup_path(""), None);
    }
}
