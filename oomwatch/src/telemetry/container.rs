//! Container identity from a cgroup path, for Kubernetes pods under the
//! kubelet's two cgroup drivers and the usual runtimes:
//!
//! * cgroupfs: `/kubepods/burstable/pod<uid>/<container id>`,
//!   `/kubepods/pod<uid>/<id>` (Guaranteed QoS);
//! * systemd: `/kubepods.slice/kubepods-burstable.slice/
//!   kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`
//!   (also `crio-<id>.scope`, `docker-<id>.scope`).
//!
//! A cgroup path carries the pod's UID and the container's ID, not the pod's
//! name or namespace: those live in the API server, which oomwatch does not
//! query. Dashboards join them from kube-state-metrics' `kube_pod_info` on
//! `uid`.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    /// `guaranteed`, `burstable` or `besteffort`.
    pub qos: String,
    /// The pod's UID, with dashes.
    pub pod_uid: String,
    /// The container's runtime ID; None for the pod's own cgroup.
    pub container_id: Option<String>,
}

/// The pod (and container) a cgroup path belongs to, if it is a kubepods one.
pub fn from_cgroup_path(path: &str) -> Option<Container> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let root = parts
        .iter()
        .position(|p| *p == "kubepods" || *p == "kubepods.slice")?;
    let mut qos = "guaranteed".to_owned();
    let mut pod_uid = None;
    let mut container_id = None;
    for p in &parts[root + 1..] {
        let name = p.strip_suffix(".slice").unwrap_or(p);
        let name = name.strip_prefix("kubepods-").unwrap_or(name);
        if let Some(q) = ["burstable", "besteffort"].iter().find(|q| name == **q) {
            qos = (*q).to_owned();
            continue;
        }
        let pod = name
            .strip_prefix("burstable-")
            .or_else(|| name.strip_prefix("besteffort-"))
            .unwrap_or(name);
        if let Some(uid) = pod.strip_prefix("pod") {
            if pod_uid.is_none() {
                pod_uid = Some(uid.replace('_', "-"));
                continue;
            }
        }
        if pod_uid.is_some() && container_id.is_none() {
            let id = p.strip_suffix(".scope").unwrap_or(p);
            let id = ["cri-containerd-", "crio-", "docker-", "containerd-"]
                .iter()
                .find_map(|pre| id.strip_prefix(pre))
                .unwrap_or(id);
            container_id = Some(id.to_owned());
        }
    }
    Some(Container {
        qos,
        pod_uid: pod_uid?,
        container_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_driver() {
        let c = from_cgroup_path(
            "/kubepods/burstable/pod6f1c2a7e-33b8-4c1e-9a55-0d8e1f2b3c4d/8d2f0a5e9b7c",
        )
        .unwrap();
        assert_eq!(c.qos, "burstable");
        assert_eq!(c.pod_uid, "6f1c2a7e-33b8-4c1e-9a55-0d8e1f2b3c4d");
        assert_eq!(c.container_id.as_deref(), Some("8d2f0a5e9b7c"));
        let g = from_cgroup_path("/kubepods/pod1234/").unwrap();
        assert_eq!(
            (g.qos.as_str(), g.pod_uid.as_str(), g.container_id),
            ("guaranteed", "1234", None)
        );
    }

    #[test]
    fn systemd_driver_and_runtimes() {
        let c = from_cgroup_path(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6f1c2a7e_33b8_4c1e_9a55_0d8e1f2b3c4d.slice/cri-containerd-8d2f0a5e9b7c.scope",
        )
        .unwrap();
        assert_eq!(c.qos, "besteffort");
        assert_eq!(c.pod_uid, "6f1c2a7e-33b8-4c1e-9a55-0d8e1f2b3c4d");
        assert_eq!(c.container_id.as_deref(), Some("8d2f0a5e9b7c"));
        let g = from_cgroup_path("/kubepods.slice/kubepods-podabc_1.slice/crio-77.scope").unwrap();
        assert_eq!(
            (g.qos.as_str(), g.pod_uid.as_str()),
            ("guaranteed", "abc-1")
        );
        assert_eq!(g.container_id.as_deref(), Some("77"));
    }

    #[test]
    fn other_paths_are_not_containers() {
        assert_eq!(from_cgroup_path("/system.slice/nginx.service"), None);
        assert_eq!(from_cgroup_path("/kubepods/burstable"), None);
        assert_eq!(from_cgroup_path("/"), None);
    }
}
