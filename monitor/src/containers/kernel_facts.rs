//! What a container is, read from the kernel's view of its process when no runtime API describes
//! it (`ctr run`, `runc run`, BuildKit's steps, Podman without its service): the namespaces it
//! shares with the host, the capabilities it may hold, and the host paths mounted into it.
//! These are what `container-escape-risk` judges, and they are the container's whatever client
//! asked for it, so a step that goes around Docker's API to containerd's is judged the same.
//!
//! Read once, from the container's first process the agent meets, while it runs (`/proc/<pid>`):
//! a container whose only process has exited by then is described by its id alone.

use std::path::Path;

use super::{ContainerBind, ContainerMeta};

/// Namespaces compared with the host's init, by `/proc/<pid>/ns` name and the name findings
/// give them. Not the user namespace: a rootful container shares the host's unless the runtime
/// maps ids, which is no grant of the host.
const NAMESPACES: &[(&str, &str)] = &[
    ("pid", "pid"),
    ("net", "network"),
    ("ipc", "ipc"),
    ("uts", "uts"),
    ("mnt", "mount"),
    ("cgroup", "cgroup"),
];

/// Docker's and containerd's default capability set (`oci.defaultUnixCaps`): holding only
/// these is an ordinary container.
const DEFAULT_CAPABILITIES: &[u32] = &[
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    13, // NET_RAW
    18, // SYS_CHROOT
    27, // MKNOD
    29, // AUDIT_WRITE
    31, // SETFCAP
];

/// Capability names by number (`linux/capability.h`), as Docker spells them.
const CAPABILITY_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The runtimes' own state directories: what they mount from inside these into a container
/// (its `/etc/resolv.conf` and `/etc/hosts`, BuildKit's cache and bind mounts of a build's
/// snapshots) is theirs, made for it. A socket in them is not (the runtime's API).
const RUNTIME_STATE_DIRS: &[&str] = &[
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/buildkit",
    "/var/lib/containers",
    "/run/docker",
    "/run/containerd",
    "/run/buildkit",
    "/run/containers",
];

/// Host files a runtime gives a container in the host's network namespace, read-only, as
/// they are (ctr's `--net-host`): its name and resolvers, nothing of the host's to take.
const HOST_NETWORK_FILES: &[&str] = &["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"];

/// Drops the binds that are `HOST_NETWORK_FILES` given read-only where the host has them.
fn without_host_network_files(binds: &mut Vec<ContainerBind>) {
    binds.retain(|b| {
        !(b.read_only
            && b.source == b.destination
            && HOST_NETWORK_FILES.contains(&b.source.as_str()))
    });
}

/// Bound on the mount table read (a container with more mounts is described by the first).
const MAX_MOUNTINFO_BYTES: u64 = 1 << 20;

/// The container `id` as its process `pid` shows it (under `proc`, `/proc` live), next to the
/// host's init (`proc/1`). `runtime` names the daemon that started it. `None` when the process
/// is gone.
pub fn describe(
    proc: &Path,
    pid: u32,
    start_ticks: u64,
    id: &str,
    runtime: &str,
) -> Option<ContainerMeta> {
    let dir = proc.join(pid.to_string());
    // Still that process, not another given its number since.
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let (_, _, started) = crate::process_tree::parse_stat(&stat)?;
    if started != start_ticks {
        return None;
    }
    let host = proc.join("1");
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    // Unreadable (gone since): the namespaces and capabilities still say much.
    let mountinfo = read_bounded(&dir.join("mountinfo")).unwrap_or_default();
    let host_mountinfo = read_bounded(&host.join("mountinfo")).unwrap_or_default();
    let host_status = std::fs::read_to_string(host.join("status")).unwrap_or_default();
    let host_namespaces = NAMESPACES
        .iter()
        .filter(|(ns, _)| is_the_hosts(&dir.join("ns").join(ns), &host, ns))
        .map(|(_, name)| name.to_string())
        .collect();
    Some(ContainerMeta {
        id: id.to_string(),
        runtime: runtime.to_string(),
        host_namespaces,
        added_capabilities: added_capabilities(
            capability_set(&status, "CapBnd"),
            capability_set(&host_status, "CapBnd"),
        ),
        binds: host_binds(&mountinfo, &host_mountinfo),
        ..Default::default()
    })
}

/// What two views of one container say together (what it was asked for, what its program
/// shows): every risk either shows. A view made up by the container's own processes cannot
/// hide what the other shows.
pub fn union(a: ContainerMeta, b: ContainerMeta) -> ContainerMeta {
    let mut host_namespaces = a.host_namespaces;
    for ns in b.host_namespaces {
        if !host_namespaces.contains(&ns) {
            host_namespaces.push(ns);
        }
    }
    let mut added_capabilities = a.added_capabilities;
    for cap in b.added_capabilities {
        if !added_capabilities.contains(&cap) {
            added_capabilities.push(cap);
        }
    }
    if added_capabilities.iter().any(|c| c == "ALL") {
        added_capabilities = vec!["ALL".into()];
    }
    let mut binds = a.binds;
    binds.extend(b.binds);
    binds.sort();
    binds.dedup();
    ContainerMeta {
        host_namespaces,
        added_capabilities,
        binds,
        privileged: a.privileged || b.privileged,
        ..a
    }
}

/// A mount table, bounded; bytes that are not UTF-8 (a mount point may be any bytes) are
/// replaced, not a reason to lose the rest.
/// Whether the namespace link at `link` is the host's init's (`host` is its /proc directory)
/// namespace of kind `ns` (`/proc/<pid>/ns/` names: `net`, `mnt`, ...).
fn is_the_hosts(link: &Path, host: &Path, ns: &str) -> bool {
    let theirs = std::fs::read_link(link);
    let hosts = std::fs::read_link(host.join("ns").join(ns));
    matches!((theirs, hosts), (Ok(a), Ok(b)) if a == b)
}

/// Bound on an OCI bundle's `config.json`.
const MAX_BUNDLE_CONFIG_BYTES: u64 = 4 << 20;

/// The container `id` as its OCI bundle (`<bundle>/config.json`, what its runtime was asked to
/// make: runc's and crun's `--bundle`) declares it: the namespaces it does not get of its own
/// (or joins the host's by path), its capability bounding set, its bind mounts and a root that
/// is a host directory. There until the container is deleted, so it still answers for a
/// container whose process has already exited. `proc` is `/proc` live (the host's init's
/// namespaces and capabilities). `None` when there is no such file or it is not a spec.
pub fn describe_bundle(
    proc: &Path,
    bundle: &Path,
    id: &str,
    runtime: &str,
) -> Option<ContainerMeta> {
    let spec = read_bundle_spec(bundle)?;
    Some(describe_spec(proc, &spec, bundle, id, runtime))
}

/// An OCI bundle's spec (`<bundle>/config.json`), bounded; `None` when there is none. Read as
/// soon as the runtime is started with it (the container may be gone, and its bundle with it,
/// by the time its first program's record is judged).
pub fn read_bundle_spec(bundle: &Path) -> Option<serde_json::Value> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(bundle.join("config.json"))
        .ok()?
        .take(MAX_BUNDLE_CONFIG_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    let spec: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    spec.get("ociVersion")?;
    Some(spec)
}

/// `describe_bundle` for a spec already read.
pub fn describe_spec(
    proc: &Path,
    spec: &serde_json::Value,
    bundle: &Path,
    id: &str,
    runtime: &str,
) -> ContainerMeta {
    let host = proc.join("1");
    let namespaces = spec["linux"]["namespaces"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let host_namespaces = NAMESPACES
        .iter()
        // The OCI spec names namespace types as findings do (`network`, `mount`).
        .filter(
            |(ns, oci_type)| match namespaces.iter().find(|n| n["type"] == *oci_type) {
                // Not asked for: the runtime leaves it the host's.
                None => true,
                // Joined by path: the host's when it is the host's init's.
                Some(n) => n["path"]
                    .as_str()
                    .is_some_and(|path| is_the_hosts(Path::new(path), &host, ns)),
            },
        )
        .map(|(_, name)| name.to_string())
        .collect();
    let bounding: u64 = spec["process"]["capabilities"]["bounding"]
        .as_array()
        .map(|caps| {
            caps.iter()
                .filter_map(|c| c.as_str())
                .filter_map(|c| {
                    let name = c.strip_prefix("CAP_").unwrap_or(c);
                    CAPABILITY_NAMES.iter().position(|n| *n == name)
                })
                .map(|bit| 1u64 << bit)
                .sum()
        })
        .unwrap_or(0);
    let host_status = std::fs::read_to_string(host.join("status")).unwrap_or_default();
    let mut binds: Vec<ContainerBind> = spec["mounts"]
        .as_array()
        .map(|mounts| {
            mounts
                .iter()
                .filter_map(|m| {
                    let options: Vec<&str> = m["options"]
                        .as_array()
                        .map(|o| o.iter().filter_map(|x| x.as_str()).collect())
                        .unwrap_or_default();
                    let bind = m["type"] == "bind"
                        || options.iter().any(|o| *o == "bind" || *o == "rbind");
                    let source = m["source"].as_str()?;
                    (bind && source.starts_with('/') && !runtimes_own(source)).then(|| {
                        ContainerBind {
                            source: source.to_string(),
                            destination: m["destination"].as_str().unwrap_or_default().to_string(),
                            read_only: options.contains(&"ro"),
                        }
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    // A host directory given as its root (a relative root is the runtime's own snapshot).
    if let Some(root) = spec["root"]["path"].as_str() {
        if root.starts_with('/')
            && within(root, &bundle.to_string_lossy()).is_none()
            && !runtimes_own(root)
        {
            binds.push(ContainerBind {
                source: root.to_string(),
                destination: "/".into(),
                read_only: spec["root"]["readonly"] == true,
            });
        }
    }
    without_host_network_files(&mut binds);
    binds.sort();
    binds.dedup();
    ContainerMeta {
        id: id.to_string(),
        runtime: runtime.to_string(),
        host_namespaces,
        added_capabilities: added_capabilities(bounding, capability_set(&host_status, "CapBnd")),
        binds,
        ..Default::default()
    }
}

fn read_bounded(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_MOUNTINFO_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// A `Cap*:` line of `/proc/<pid>/status`.
fn capability_set(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

/// The capabilities the container may hold beyond the default set: `ALL` when it may hold
/// every one the host's init may (`--privileged`, `--cap-add ALL`), else their names.
fn added_capabilities(bounding: u64, host_bounding: u64) -> Vec<String> {
    let default: u64 = DEFAULT_CAPABILITIES.iter().map(|c| 1u64 << c).sum();
    if host_bounding != 0 && bounding & host_bounding == host_bounding {
        return vec!["ALL".into()];
    }
    (0..64u32)
        .filter(|c| bounding & (1u64 << c) != 0 && default & (1u64 << c) == 0)
        .map(|c| {
            CAPABILITY_NAMES
                .get(c as usize)
                .map_or_else(|| format!("CAP_{c}"), |n| n.to_string())
        })
        .collect()
}

/// One `/proc/<pid>/mountinfo` line's fields that matter here.
struct Mount<'a> {
    device: &'a str,
    fs_type: &'a str,
    root: String,
    mount_point: String,
    read_only: bool,
}

fn mounts(mountinfo: &str) -> Vec<Mount<'_>> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            // Optional fields end at a lone `-`; the file system's type follows it.
            let separator = f.iter().skip(6).position(|x| *x == "-")? + 6;
            Some(Mount {
                device: f.get(2)?,
                fs_type: f.get(separator + 1)?,
                root: unescape(f.get(3)?),
                mount_point: unescape(f.get(4)?),
                read_only: f.get(5)?.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The container's mounts of file systems the host has mounted too, with the host path each
/// shows: where the host mounts that device, joined with the part of it the container's mount
/// shows. Its root too (a host directory given as its root is a bind like any other; an image's
/// overlay is on no device the host mounts). Not what a runtime mounts from its own state
/// (`RUNTIME_STATE_DIRS`), nor its cgroups (runc binds the container's own cgroup directories
/// on cgroup v1 hosts).
fn host_binds(mountinfo: &str, host_mountinfo: &str) -> Vec<ContainerBind> {
    let host = mounts(host_mountinfo);
    let mut binds: Vec<ContainerBind> = mounts(mountinfo)
        .into_iter()
        .filter(|m| !matches!(m.fs_type, "cgroup" | "cgroup2"))
        .filter_map(|m| {
            // The host's mount of the same device whose root holds this one's, deepest root
            // first (the shortest host path).
            let (host_mount, rest) = host
                .iter()
                .filter(|h| h.device == m.device)
                .filter_map(|h| Some((h, within(&m.root, &h.root)?)))
                .max_by_key(|(h, _)| h.root.len())?;
            let source = join(&host_mount.mount_point, rest);
            (!runtimes_own(&source)).then_some(ContainerBind {
                source,
                destination: m.mount_point,
                read_only: m.read_only,
            })
        })
        .collect();
    without_host_network_files(&mut binds);
    binds.sort();
    binds.dedup();
    binds
}

/// Whether `source` is something a runtime made for a container in its own state: strictly
/// inside one of its state directories, and not a socket.
fn runtimes_own(source: &str) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    RUNTIME_STATE_DIRS
        .iter()
        .any(|d| within(source, d).is_some_and(|rest| !rest.is_empty()))
        && !std::fs::symlink_metadata(source).is_ok_and(|m| m.file_type().is_socket())
}

/// What is left of `path` below `root` (`""` when equal), if it is inside it.
fn within<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    if root == "/" {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(root)?;
    (rest.is_empty() || rest.starts_with('/')).then(|| rest.trim_start_matches('/'))
}

fn join(base: &str, rest: &str) -> String {
    match (base.trim_end_matches('/'), rest) {
        ("", "") => "/".into(),
        (base, "") => base.into(),
        (base, rest) => format!("{base}/{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw
30 22 8:2 / /var/lib rw shared:2 - xfs /dev/sda2 rw
40 22 0:30 / /sys/fs/cgroup/memory rw shared:9 - cgroup cgroup rw,memory
";

    #[test]
    fn host_paths_mounted_into_a_container_are_found_through_the_hosts_mounts() {
        let container = "\
600 500 0:90 / / rw - overlay overlay rw
601 600 0:91 / /proc rw - proc proc rw
602 600 8:1 / /host ro,relatime - ext4 /dev/sda1 rw
603 600 8:1 /root /h rw - ext4 /dev/sda1 rw
604 600 8:2 /containerd/io.containerd/x/resolv.conf /etc/resolv.conf rw - xfs /dev/sda2 rw
609 600 8:2 /docker /var/lib/docker ro - xfs /dev/sda2 rw
605 600 8:2 /monitor-tests/rootfs /data ro - xfs /dev/sda2 rw
606 600 0:21 / /hostproc rw - proc proc rw
607 600 8:1 /home/a\\040b /spaced rw - ext4 /dev/sda1 rw
608 600 0:30 /exp/x1 /sys/fs/cgroup/memory ro master:9 - cgroup cgroup rw,memory
";
        let binds = host_binds(container, HOST);
        let said: Vec<(String, String, bool)> = binds
            .into_iter()
            .map(|b| (b.source, b.destination, b.read_only))
            .collect();
        assert_eq!(
            said,
            vec![
                ("/".into(), "/host".into(), true),
                ("/home/a b".into(), "/spaced".into(), false),
                ("/proc".into(), "/hostproc".into(), false),
                ("/root".into(), "/h".into(), false),
                ("/var/lib/docker".into(), "/var/lib/docker".into(), true),
                ("/var/lib/monitor-tests/rootfs".into(), "/data".into(), true),
            ]
        );
        // A host directory given as the root is a bind of it at `/`.
        let given_root = "700 500 8:1 /srv/rootfs / rw - ext4 /dev/sda1 rw\n";
        let binds = host_binds(given_root, HOST);
        assert_eq!(
            (binds[0].source.as_str(), binds[0].destination.as_str()),
            ("/srv/rootfs", "/")
        );
    }

    #[test]
    fn capabilities_beyond_the_default_are_named_and_every_one_is_all() {
        let default: u64 = DEFAULT_CAPABILITIES.iter().map(|c| 1u64 << c).sum();
        let host = (1u64 << 41) - 1;
        assert!(added_capabilities(default, host).is_empty());
        assert_eq!(
            added_capabilities(default | 1 << 21 | 1 << 19, host),
            vec!["SYS_PTRACE", "SYS_ADMIN"]
        );
        assert_eq!(added_capabilities(host, host), vec!["ALL"]);
        let status = "Name:\tcat\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(capability_set(status, "CapBnd"), 0x1ff_ffff_ffff);
    }

    #[test]
    fn a_bundle_says_what_the_runtime_was_asked_for() {
        let bundle = tempfile::tempdir().unwrap();
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"capabilities": {"bounding": ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_KILL"]}},
            "root": {"path": "/srv/rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/h", "type": "bind", "source": "/root", "options": ["rbind", "ro"]},
                {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/containerd/x/hosts", "options": ["rbind"]},
                {"destination": "/host", "type": "none", "source": "/", "options": ["rbind", "rw"]},
                {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "ro"]},
                {"destination": "/etc/passwd", "type": "bind", "source": "/etc/passwd", "options": ["rbind", "ro"]}
            ],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]}
        });
        std::fs::write(bundle.path().join("config.json"), config.to_string()).unwrap();
        let meta =
            describe_bundle(Path::new("/proc"), bundle.path(), "x1@7", "containerd").unwrap();
        assert_eq!(meta.added_capabilities, vec!["SYS_ADMIN"]);
        assert!(
            meta.host_namespaces.contains(&"network".to_string()),
            "{meta:?}"
        );
        assert!(
            !meta.host_namespaces.contains(&"pid".to_string()),
            "{meta:?}"
        );
        let binds: Vec<(&str, &str, bool)> = meta
            .binds
            .iter()
            .map(|b| (b.source.as_str(), b.destination.as_str(), b.read_only))
            .collect();
        assert_eq!(
            binds,
            vec![
                ("/", "/host", false),
                ("/etc/passwd", "/etc/passwd", true),
                ("/root", "/h", true),
                ("/srv/rootfs", "/", false)
            ]
        );
        assert!(describe_bundle(Path::new("/proc"), Path::new("/nonexistent"), "x", "y").is_none());
    }

    #[test]
    fn two_views_together_keep_every_risk_either_shows() {
        let bind = |s: &str, d: &str| ContainerBind {
            source: s.into(),
            destination: d.into(),
            read_only: false,
        };
        let declared = ContainerMeta {
            id: "x1@3".into(),
            binds: vec![bind("/srv/r", "/")],
            added_capabilities: vec!["SYS_ADMIN".into()],
            ..Default::default()
        };
        let shown = ContainerMeta {
            id: "x1@3".into(),
            binds: vec![bind("/", "/host"), bind("/srv/r", "/")],
            host_namespaces: vec!["pid".into()],
            added_capabilities: vec!["ALL".into()],
            ..Default::default()
        };
        let both = union(declared, shown);
        assert_eq!(both.id, "x1@3");
        assert_eq!(both.binds.len(), 2);
        assert_eq!(both.host_namespaces, vec!["pid"]);
        assert_eq!(both.added_capabilities, vec!["ALL"]);
    }

    #[test]
    fn this_process_is_described_and_shares_every_namespace_with_the_host() {
        // The test runs on the host: every namespace compared is the host's (when it may read
        // init's), and a gone process is no description.
        let me_pid = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{me_pid}/stat")).unwrap();
        let (_, _, started) = crate::process_tree::parse_stat(&stat).unwrap();
        let me = describe(Path::new("/proc"), me_pid, started, "x", "test").unwrap();
        assert!(
            describe(Path::new("/proc"), me_pid, started + 1, "x", "test").is_none(),
            "another process given the number"
        );
        assert_eq!(me.id, "x");
        if std::fs::read_link("/proc/1/ns/pid").is_ok() {
            assert!(me.host_namespaces.contains(&"pid".to_string()), "{me:?}");
        }
        assert!(describe(Path::new("/proc"), u32::MAX, 0, "x", "test").is_none());
    }
}
