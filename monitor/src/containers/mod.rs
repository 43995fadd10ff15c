//! Containers: which container a process runs in, and what the container runtime says of it.
//!
//! The kernel stamps every record with the process's cgroup (v2) id. A container runtime puts
//! each container in a cgroup of its own whose last path component names the container: Docker
//! with the cgroupfs driver `/docker/<id>` (or `/<cgroup-parent>/<id>`, the GitHub runner's
//! `actions_job`), with the systemd driver `/system.slice/docker-<id>.scope`, Podman
//! `libpod-<id>.scope`, containerd's CRI `cri-containerd-<id>.scope`. The agent reads the
//! process's `/proc/<pid>/cgroup` the first time it meets a cgroup id and remembers the answer
//! per id, so the cost is one small read per cgroup, not per event; the id is what names it on
//! hybrid hosts (v1 controllers with v2 at `/sys/fs/cgroup/unified`, where runc also joins the
//! unified hierarchy) and on v2-only hosts alike.
//!
//! What a container is (image, name, privileges, mounts) comes from the runtime's own API
//! (`docker`): the agent turns it into `Detail::Container` events, judged in order with the
//! kernel's.

pub mod clients;
pub mod docker;
pub mod kernel_facts;

use serde::{Deserialize, Serialize};

/// A container as its runtime describes it, with what matters for judging it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMeta {
    /// The full id (64 hex digits for Docker).
    pub id: String,
    /// Its name, without Docker's leading `/`.
    pub name: String,
    /// The image as asked for (`alpine:3`, a digest, ...).
    pub image: String,
    /// `docker`, ...
    pub runtime: String,
    /// `--privileged`: every capability and every device.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// The host's namespaces it shares: `pid`, `network`, `ipc`, `uts`, `user`, `cgroup`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_namespaces: Vec<String>,
    /// Host paths mounted into it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<ContainerBind>,
    /// Capabilities added to the default set (`SYS_ADMIN`, `ALL`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_capabilities: Vec<String>,
    /// Host devices passed in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Its addresses on the runtime's networks (known once it has started).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<std::net::IpAddr>,
    /// The user-defined networks it is on (not Docker's default `bridge`, `host`, `none`): a
    /// network a runner makes for a job joins its job and service containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
}

/// A host path mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerBind {
    /// The host path.
    pub source: String,
    /// Where the container sees it.
    pub destination: String,
    pub read_only: bool,
}

impl ContainerMeta {
    /// The first 12 digits of the id, as `docker ps` shows it.
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    /// The host path behind a path seen inside the container, through its binds (the longest
    /// destination that contains it).
    pub fn host_path_of(&self, container_path: &str) -> Option<String> {
        self.binds
            .iter()
            .filter_map(|b| {
                let dest = b.destination.trim_end_matches('/');
                let rest = container_path.strip_prefix(dest)?;
                (rest.is_empty() || rest.starts_with('/')).then_some((dest.len(), b, rest))
            })
            .max_by_key(|(len, _, _)| *len)
            .map(|(_, b, rest)| format!("{}{rest}", b.source.trim_end_matches('/')))
    }
}

/// The container id a cgroup path names, if any: a component that is, or ends in, 64 hex digits
/// (`<id>`, `docker-<id>.scope`, `libpod-<id>.scope`, `cri-containerd-<id>.scope`). The deepest
/// one wins (a container nested in a container's cgroup is the inner one).
pub fn container_id_in_cgroup_path(path: &str) -> Option<String> {
    path.split('/').rev().find_map(|component| {
        let component = component.strip_suffix(".scope").unwrap_or(component);
        let id = component.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| id.to_ascii_lowercase())
    })
}

/// The path of one `/proc/<pid>/cgroup` line (`hierarchy:controllers:path`).
fn line_path(line: &str) -> Option<&str> {
    line.splitn(3, ':').nth(2)
}

/// The unified (`0::`) line's path, when there is one and it is not the root (the cgroup the
/// kernel's id names; on hybrid hosts runc joins it too).
fn unified_path(text: &str) -> Option<&str> {
    text.lines()
        .find(|l| l.starts_with("0::"))
        .and_then(line_path)
        .filter(|p| *p != "/")
}

/// The container a `/proc/<pid>/cgroup` text places its process in: the unified (`0::`) line
/// when there is one (the cgroup the kernel's id names), else any controller's line.
pub fn container_id_in_proc_cgroup(text: &str) -> Option<String> {
    match unified_path(text) {
        Some(path) => container_id_in_cgroup_path(path),
        None => text
            .lines()
            .filter_map(line_path)
            .find_map(container_id_in_cgroup_path),
    }
}

/// Where a process's cgroup places it: the container its path names by a runtime's id layout,
/// and the path itself (for a container named otherwise, see `container_named_by_path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupPlace {
    pub container: Option<String>,
    /// The unified hierarchy's path when it is not the root, else the first controller's path
    /// that is not (v1-only hosts), else `/`.
    pub path: String,
    /// Its mount namespace's inode (live: `/proc/<pid>/ns/mnt`; None when not read).
    pub mount_namespace: Option<u64>,
}

/// The place a `/proc/<pid>/cgroup` text gives.
pub fn cgroup_place(text: &str) -> CgroupPlace {
    let path = unified_path(text)
        .or_else(|| text.lines().filter_map(line_path).find(|p| *p != "/"))
        .unwrap_or("/")
        .to_string();
    CgroupPlace {
        container: container_id_in_proc_cgroup(text),
        path,
        mount_namespace: None,
    }
}

/// Reads `/proc/<pid>/cgroup`; `None` when the file could not be read (the process is gone:
/// nothing learnt).
pub fn cgroup_place_of_process(pid: u32) -> Option<CgroupPlace> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mount_namespace = std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .and_then(|l| namespace_inode(&l.to_string_lossy()));
    Some(CgroupPlace {
        mount_namespace,
        ..cgroup_place(&text)
    })
}

/// How the agent tells one container's processes from another's (`--container-identity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerIdentity {
    /// By cgroup where a cgroup v2 hierarchy is mounted (v2 and hybrid hosts), else by mount
    /// namespace.
    #[default]
    Auto,
    /// By the cgroup (v2) id every record carries.
    Cgroup,
    /// By the mount namespace every record carries: for hosts with cgroup v1 only, where
    /// every process is in the unified hierarchy's root (the runtime still makes each
    /// container a mount namespace of its own).
    MountNamespace,
}

impl ContainerIdentity {
    /// Whether this comes to telling containers by mount namespace here.
    pub fn by_mount_namespace(self) -> bool {
        match self {
            ContainerIdentity::Cgroup => false,
            ContainerIdentity::MountNamespace => true,
            ContainerIdentity::Auto => crate::enforce::cgroup2_root().is_err(),
        }
    }
}

/// The host's mount namespace (its inode): init's (the agent may run in a namespace of its own,
/// as the systemd unit's ProtectSystem makes it), else the agent's own (an init that is not
/// the host's, in a sandbox, may not be readable).
pub fn host_mount_namespace() -> anyhow::Result<u32> {
    let link = std::fs::read_link("/proc/1/ns/mnt")
        .or_else(|init| {
            log::warn!("reading /proc/1/ns/mnt: {init}; the agent's own mount namespace is taken for the host's");
            std::fs::read_link("/proc/self/ns/mnt")
        })
        .map_err(|e| anyhow::anyhow!("reading the host's mount namespace: {e}"))?;
    namespace_inode(&link.to_string_lossy())
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| anyhow::anyhow!("/proc/1/ns/mnt names no namespace: {}", link.display()))
}

/// The inode of a namespace link's target (`mnt:[4026531841]`).
fn namespace_inode(link: &str) -> Option<u64> {
    link.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}

/// Bound on a container name taken from a cgroup path.
const MAX_NAME_BYTES: usize = 128;

/// The name a runtime gave a container whose cgroup path does not follow an id layout (`ctr run
/// IMAGE x1` is `/<namespace>/x1`, `runc run x1` is `/x1`, BuildKit's steps `/docker/buildkit/
/// <id>`): the path's last component, kept to the characters runtimes allow in ids (others
/// become `_`) and bounded. `None` for the root.
pub fn container_named_by_path(path: &str) -> Option<String> {
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let last = last.strip_suffix(".scope").unwrap_or(last);
    if last.is_empty() {
        return None;
    }
    Some(
        last.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(MAX_NAME_BYTES)
            .collect(),
    )
}

/// Whether `id` has the shape of the ids Docker's API describes (64 hex digits): a container
/// named otherwise is never described by it, and nothing waits for that.
pub fn is_docker_shaped(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "68b32f19a2ebfbe4b4ff840b0893ecd6a8ef14b887e8889724463deb2bf58b1a";

    #[test]
    fn container_ids_are_read_from_every_runtime_layout() {
        for path in [
            format!("/docker/{ID}"),
            format!("/actions_job/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"),
            format!("/system.slice/docker-{ID}.scope/init"),
        ] {
            let found = if path.ends_with("/init") {
                // A sub-cgroup a container made for itself still names its container.
                container_id_in_cgroup_path(path.trim_end_matches("/init"))
            } else {
                container_id_in_cgroup_path(&path)
            };
            assert_eq!(found.as_deref(), Some(ID), "{path}");
        }
        for path in [
            "/",
            "/user.slice/user-0.slice/session-3.scope",
            "/system.slice/ssh.service",
        ] {
            assert_eq!(container_id_in_cgroup_path(path), None, "{path}");
        }
        // Not quite 64 hex digits.
        assert_eq!(
            container_id_in_cgroup_path(&format!("/docker/{}", &ID[1..])),
            None
        );
    }

    #[test]
    fn the_unified_line_decides_on_hybrid_hosts() {
        let hybrid =
            format!("9:name=systemd:/docker/{ID}\n4:memory:/docker/{ID}\n0::/docker/{ID}\n");
        assert_eq!(container_id_in_proc_cgroup(&hybrid).as_deref(), Some(ID));
        let host = "4:memory:/user.slice\n0::/user.slice/user-0.slice/session-1.scope\n";
        assert_eq!(container_id_in_proc_cgroup(host), None);
        // v1 only (the unified line is the root): the controllers' paths say it.
        let v1 = format!("4:memory:/docker/{ID}\n0::/\n");
        assert_eq!(container_id_in_proc_cgroup(&v1).as_deref(), Some(ID));
    }

    #[test]
    fn a_cgroups_place_is_its_unified_path_else_a_controllers() {
        let ctr = "9:name=systemd:/exp/x1\n4:memory:/exp/x1\n0::/exp/x1\n";
        assert_eq!(
            cgroup_place(ctr),
            CgroupPlace {
                container: None,
                path: "/exp/x1".into(),
                mount_namespace: None,
            }
        );
        let v1 = "9:name=systemd:/\n4:memory:/process_api/5b31\n0::/\n";
        assert_eq!(cgroup_place(v1).path, "/process_api/5b31");
        assert_eq!(cgroup_place("0::/\n").path, "/");
        assert_eq!(
            cgroup_place(&format!("0::/docker/{ID}\n"))
                .container
                .as_deref(),
            Some(ID)
        );
    }

    #[test]
    fn a_container_named_by_its_path_keeps_only_id_characters() {
        assert_eq!(container_named_by_path("/exp/x1").as_deref(), Some("x1"));
        assert_eq!(
            container_named_by_path("/docker/buildkit/abc.def_1-2").as_deref(),
            Some("abc.def_1-2")
        );
        assert_eq!(
            container_named_by_path("/a/b c\u{e9}$(x)").as_deref(),
            Some("b_c___x_")
        );
        assert_eq!(container_named_by_path("/"), None);
        assert_eq!(
            container_named_by_path(&format!("/{}", "y".repeat(500)))
                .unwrap()
                .len(),
            MAX_NAME_BYTES
        );
        assert!(is_docker_shaped(ID));
        assert_eq!(namespace_inode("mnt:[4026531841]"), Some(4026531841));
        assert_eq!(namespace_inode("mnt:4026531841"), None);
        assert!(!is_docker_shaped("x1"));
    }

    #[test]
    fn host_paths_are_found_through_the_longest_bind() {
        let meta = ContainerMeta {
            binds: vec![
                ContainerBind {
                    source: "/root".into(),
                    destination: "/h".into(),
                    read_only: false,
                },
                ContainerBind {
                    source: "/srv/cache".into(),
                    destination: "/h/cache".into(),
                    read_only: true,
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            meta.host_path_of("/h/.npmrc").as_deref(),
            Some("/root/.npmrc")
        );
        assert_eq!(
            meta.host_path_of("/h/cache/x").as_deref(),
            Some("/srv/cache/x")
        );
        assert_eq!(meta.host_path_of("/h").as_deref(), Some("/root"));
        assert_eq!(meta.host_path_of("/hx/y"), None);
        assert_eq!(meta.host_path_of("/etc/passwd"), None);
    }
}
