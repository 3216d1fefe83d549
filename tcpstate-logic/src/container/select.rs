//! `--cgroup PATH` and `--container ID`: keep only rows whose owner runs
//! there. A row whose owner is unknown (or gone before it could be looked
//! up) is left out while either filter is set: it cannot be shown to match.

use super::Attribution;

#[derive(Debug, Clone, Default)]
pub struct Select {
    /// Cgroup paths: a row matches at the path or below it.
    pub cgroups: Vec<String>,
    /// Container IDs or their prefixes (as `podman` accepts them).
    pub containers: Vec<String>,
}

impl Select {
    pub fn new(cgroups: &[String], containers: &[String]) -> Self {
        Select {
            cgroups: cgroups
                .iter()
                .map(|c| {
                    let t = c.trim().trim_end_matches('/');
                    if t.starts_with('/') {
                        t.to_string()
                    } else {
                        format!("/{t}")
                    }
                })
                .collect(),
            containers: containers
                .iter()
                .map(|c| c.trim().to_ascii_lowercase())
                .collect(),
        }
    }

    pub fn is_active(&self) -> bool {
        !(self.cgroups.is_empty() && self.containers.is_empty())
    }

    pub fn matches(&self, a: Option<&Attribution>) -> bool {
        if !self.is_active() {
            return true;
        }
        let Some(a) = a else { return false };
        let in_cgroup = self.cgroups.is_empty()
            || self.cgroups.iter().any(|c| {
                c == "/"
                    || a.cgroup == *c
                    || a.cgroup
                        .strip_prefix(c.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            });
        let in_container = self.containers.is_empty()
            || a.container_id
                .as_deref()
                .is_some_and(|id| self.containers.iter().any(|c| id.starts_with(c.as_str())));
        in_cgroup && in_container
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4c8a3ab0e1c8d7b6f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f8e";

    fn at(path: &str) -> Attribution {
        Attribution::from_path(path)
    }

    #[test]
    fn no_filter_keeps_everything_even_unknown() {
        let s = Select::default();
        assert!(s.matches(None));
        assert!(s.matches(Some(&at("/"))));
    }

    #[test]
    fn cgroup_matches_the_path_and_below_only() {
        let s = Select::new(&["/system.slice/".into()], &[]);
        assert!(s.matches(Some(&at("/system.slice"))));
        assert!(s.matches(Some(&at("/system.slice/nginx.service"))));
        assert!(!s.matches(Some(&at("/system.slicefoo"))));
        assert!(!s.matches(Some(&at("/user.slice"))));
        assert!(!s.matches(None));
        assert!(Select::new(&["/".into()], &[]).matches(Some(&at("/a/b"))));
    }

    #[test]
    fn container_matches_an_id_prefix() {
        let path = format!("/libpod_parent/libpod-{ID}");
        for id in [ID, &ID[..12], "4C8A"] {
            assert!(
                Select::new(&[], &[id.into()]).matches(Some(&at(&path))),
                "{id}"
            );
        }
        assert!(!Select::new(&[], &["4c8b".into()]).matches(Some(&at(&path))));
        assert!(!Select::new(&[], &["4c8a".into()]).matches(Some(&at("/user.slice"))));
        // Both filters: both must hold.
        let both = Select::new(&["/libpod_parent".into()], &[ID[..6].into()]);
        assert!(both.matches(Some(&at(&path))));
        let wrong = Select::new(&["/machine.slice".into()], &[ID[..6].into()]);
        assert!(!wrong.matches(Some(&at(&path))));
    }
}
