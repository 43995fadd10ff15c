//! `monitor doctor`: can this machine run the monitor, and if not, what to do about it.

use crate::hook_tier::{HookFamily, HookTier};
use std::path::Path;

use crate::{kernel_layout, probes};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do when it is not Ok.
    pub remedy: String,
}

fn check(
    name: &'static str,
    status: Status,
    detail: impl Into<String>,
    remedy: impl Into<String>,
) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        remedy: remedy.into(),
    }
}

/// Effective capability bits from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0)
}

const CAP_SYS_ADMIN: u64 = 21;
const CAP_PERFMON: u64 = 38;
const CAP_BPF: u64 = 39;

pub fn run_checks(try_load: bool, docker_socket: Option<&std::path::Path>) -> Vec<Check> {
    let mut checks = Vec::new();
    let caps = effective_caps();
    let has = |cap: u64| caps & (1 << cap) != 0;
    checks.push(if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        check("privileges", Status::Ok, format!("CapEff={caps:#x}"), "")
    } else {
        check(
            "privileges",
            Status::Fail,
            format!("CapEff={caps:#x}: neither CAP_SYS_ADMIN nor CAP_BPF+CAP_PERFMON"),
            "run as root, or grant CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE (the systemd unit does)",
        )
    });

    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let version: Vec<u32> = release
        .split(['.', '-'])
        .take(2)
        .filter_map(|p| p.parse().ok())
        .collect();
    checks.push(match version.as_slice() {
        [major, minor] if (*major, *minor) >= (5, 8) => check("kernel", Status::Ok, release, ""),
        _ => check("kernel", Status::Fail, release, "a 5.8 or newer kernel is needed (ring buffer); Ubuntu 22.04 (5.15) and 24.04 (6.8) are supported"),
    });

    match kernel_layout::BtfIndex::open(Path::new(kernel_layout::VMLINUX_BTF)).and_then(|b| b.layout()) {
        Ok(layout) => {
            checks.push(check("btf", Status::Ok, "all structure offsets found in /sys/kernel/btf/vmlinux", ""));
            checks.push(if layout.io_uring_layout == monitor_common::IO_URING_LAYOUT_NONE {
                check("io_uring", Status::Warn, "io_uring_complete not found: io_uring opens are not seen", "a kernel with CONFIG_IO_URING and its tracepoints")
            } else {
                check("io_uring", Status::Ok, format!("io_uring_complete layout {}", layout.io_uring_layout), "")
            });
        }
        Err(e) => checks.push(check("btf", Status::Fail, e.to_string(), "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (all Ubuntu, Debian, Fedora kernels are)")),
    }

    let tracefs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .find(|d| Path::new(d).join("events").is_dir());
    checks.push(match tracefs {
        Some(dir) => check("tracefs", Status::Ok, dir, ""),
        None => check(
            "tracefs",
            Status::Warn,
            "not mounted (the agent mounts it at start)",
            "mount -t tracefs nodev /sys/kernel/tracing",
        ),
    });
    if let Some(dir) = tracefs {
        let problems = crate::tracefs_layout::check(Path::new(dir), probes::HOOKS);
        checks.push(if problems.is_empty() {
            check(
                "tracepoint records",
                Status::Ok,
                "every field the probes read is where this kernel's format files say",
                "",
            )
        } else {
            check(
                "tracepoint records",
                Status::Fail,
                problems.join("; "),
                "this kernel lays the records out differently from what the probes were built for: report it with `uname -r`",
            )
        });
        for hook in probes::HOOKS.iter().filter(|h| h.category.is_some()) {
            let path = Path::new(dir)
                .join("events")
                .join(hook.category.unwrap_or_default())
                .join(hook.name);
            if !path.is_dir() {
                checks.push(check(
                    "tracepoint",
                    if hook.optional {
                        Status::Warn
                    } else {
                        Status::Fail
                    },
                    format!("{} missing", path.display()),
                    "a kernel with CONFIG_FTRACE_SYSCALLS=y",
                ));
            }
        }
    }

    let bpffs = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("bpf"));
    checks.push(if bpffs {
        check("bpffs", Status::Ok, "mounted", "")
    } else {
        check(
            "bpffs",
            Status::Warn,
            "not mounted (not needed yet; block mode pins programs there)",
            "mount -t bpf bpf /sys/fs/bpf",
        )
    });
    let cgroup2 = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string());
    checks.push(match cgroup2 {
        Some(at) => check("cgroup2", Status::Ok, format!("mounted at {at}"), ""),
        None => check(
            "cgroup2",
            Status::Warn,
            "no cgroup v2 hierarchy: egress by io_uring, 32-bit syscalls, TCP Fast Open and addressed datagrams is not seen, and block mode cannot run",
            "mount -t cgroup2 none /sys/fs/cgroup/unified",
        ),
    });

    // How containers will be told apart (`--container-identity auto`).
    let by_mount_namespace = crate::containers::ContainerIdentity::Auto
        .by_mount_namespace()
        .then(crate::containers::host_mount_namespace);
    checks.push(match by_mount_namespace {
        None => check("container identity", Status::Ok, "by cgroup (a cgroup v2 hierarchy is mounted)", ""),
        Some(Ok(host)) => check(
            "container identity",
            Status::Ok,
            format!("by mount namespace (no cgroup v2 hierarchy: every cgroup id is its root's; the host's namespace is mnt:[{host}])"),
            "",
        ),
        Some(Err(e)) => check(
            "container identity",
            Status::Warn,
            format!("neither cgroup v2 nor the host's mount namespace: {e:#}"),
            "mount -t cgroup2 none /sys/fs/cgroup/unified",
        ),
    });

    if try_load && checks.iter().all(|c| c.status != Status::Fail) {
        let mut result = kernel_layout::running_kernel_layout()
            .map_err(anyhow::Error::from)
            .and_then(|layout| {
                probes::Probes::load(
                    &layout,
                    &crate::watch::WatchList::defaults(),
                    &probes::ProbeOptions::default(),
                )
            });
        if let Ok(p) = &mut result {
            checks.push(verifier_budget_check(&p.report.verifier_cost));
            let open_tier = p.report.tier(HookFamily::Opens);
            checks.push(responses_check(&mut p.ebpf, open_tier));
            for tier in &p.report.tiers {
                checks.push(check(
                    match tier.family {
                        HookFamily::Opens => "open hook",
                        HookFamily::Names => "name hook",
                        HookFamily::ExecChecks => "exec check hook",
                    },
                    match tier.tier {
                        HookTier::Tracepoint => Status::Warn,
                        _ => Status::Ok,
                    },
                    tier.describe(),
                    "a kernel with BPF-LSM (`bpf` in /sys/kernel/security/lsm) or fentry sees every route",
                ));
            }
            checks.push(check(
                "other hooks",
                Status::Ok,
                crate::hook_tier::FIXED_FAMILIES.join("; "),
                "",
            ));
        }
        checks.push(match result {
            Ok(p) => check(
                "load",
                if p.report.skipped.is_empty() {
                    Status::Ok
                } else {
                    Status::Warn
                },
                format!(
                    "attached {}; skipped {:?}",
                    p.report.attached.len(),
                    p.report.skipped
                ),
                "",
            ),
            Err(e) => check(
                "load",
                Status::Fail,
                format!("{e:#}"),
                "see the message: it includes the verifier's reason",
            ),
        });
    }
    checks.push(control_socket_check(std::path::Path::new(
        crate::control::DEFAULT_SOCKET,
    )));
    checks.push(container_runtime_check(docker_socket));
    let others: Vec<std::path::PathBuf> = crate::agent::DEFAULT_RUNTIME_SOCKETS
        .iter()
        .map(std::path::PathBuf::from)
        .collect();
    checks.push(runtime_sockets_check(&others));
    checks
}

/// Which other container runtimes run here (their API sockets, and the daemon listening on
/// each): what those daemons start in cgroups of their own is judged as a container.
pub fn runtime_sockets_check(paths: &[std::path::PathBuf]) -> Check {
    let found: Vec<String> = paths
        .iter()
        .filter(|p| p.exists())
        .map(|p| {
            let daemons = crate::containers::clients::listeners_of(&[p.as_path()]);
            match daemons.as_slice() {
                [] => format!("{} (no daemon listening)", p.display()),
                pids => format!("{} (daemon pid {pids:?})", p.display()),
            }
        })
        .collect();
    if found.is_empty() {
        return check(
            "container runtimes",
            Status::Ok,
            "no containerd, Podman, CRI-O or BuildKit socket here",
            "",
        );
    }
    check(
        "container runtimes",
        Status::Ok,
        format!(
            "{}: their clients are named as they connect, what their daemons start in cgroups of their own is a container",
            found.join(", ")
        ),
        "a runtime with its socket elsewhere: --runtime-socket (config: runtime_sockets)",
    )
}

/// How close the heaviest programs came to the verifier's limit here: a kernel whose verifier
/// prunes less (older ones) walks more of the same program, and refuses it past the limit.
fn verifier_budget_check(cost: &[(String, u32)]) -> Check {
    let Some((heaviest, walked)) = cost.first() else {
        return check(
            "verifier budget",
            Status::Ok,
            "this kernel does not report what its verifier walked (before 5.16)",
            "",
        );
    };
    let budget = probes::VERIFIER_BUDGET;
    // The three heaviest, and every other program past a tenth of the limit.
    let top: Vec<String> = cost
        .iter()
        .enumerate()
        .take_while(|(i, (_, n))| *i < 3 || *n > budget / 10)
        .map(|(_, program)| program)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    check(
        "verifier budget",
        if *walked > budget / 2 {
            Status::Warn
        } else {
            Status::Ok
        },
        format!(
            "heaviest: {} of {budget} instructions ({} walked for {heaviest})",
            top.join(", "),
            walked
        ),
        "past half the limit here, an older kernel's verifier may refuse the program",
    )
}

/// Which responses the kernel can take: kills come from `bpf_send_signal` in the open's exit
/// (every probe kernel has it); the environment and install-time code kills also need the exec
/// scanner, which needs `bpf_loop` (5.17+): it is loaded here to prove it. Opens are refused
/// too where the open hook is BPF-LSM's; else why not is told.
fn responses_check(ebpf: &mut aya::Ebpf, open_tier: HookTier) -> Check {
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").ok();
    let lsm = if open_tier == HookTier::Lsm {
        "opens the job's policy kills for are also refused with EPERM (BPF-LSM file_open)"
    } else {
        match lsm.as_deref() {
            Some(list) if list.trim().split(',').any(|m| m == "bpf") => {
                "not used: BPF-LSM is active but its file_open program did not attach (see open hook)"
            }
            Some(_) => "not used: BPF-LSM is not in the kernel's active LSM list",
            None => "not used: the LSM list is not readable (securityfs not mounted)",
        }
    };
    let scanner = crate::enforce::load_tail_call(ebpf, "exec_scan", "EXEC_SCANNERS", "bpf_loop");
    match scanner {
        Ok(()) => check(
            "responses",
            Status::Ok,
            format!("kill: bpf_send_signal at the open's exit, every kill response available; refuse: {lsm}"),
            "",
        ),
        Err(e) => check(
            "responses",
            Status::Warn,
            format!("kill: process-memory-read only; the exec scanner (process-environ-read, credential-read kills) does not load: {e:#}; refuse: {lsm}"),
            "Linux 5.17 or newer (bpf_loop) for every kill response",
        ),
    }
}

/// Whether the container runtime's API answers (the agent asks it what each container is).
pub fn container_runtime_check(socket: Option<&std::path::Path>) -> Check {
    let Some(socket) = socket else {
        return check(
            "containers",
            Status::Ok,
            "the container runtime's API is not asked (docker_socket: none): containers are told by their cgroup only",
            "",
        );
    };
    if !socket.exists() {
        return check(
            "containers",
            Status::Ok,
            format!(
                "no Docker daemon socket at {}: no containers to ask about",
                socket.display()
            ),
            "if Docker runs with another socket, give it with --docker-socket (config: docker_socket)",
        );
    }
    let asked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let docker = crate::containers::docker::connect(socket).await?;
                let version = docker.version().await?;
                anyhow::Ok((
                    version.version.unwrap_or_default(),
                    version.api_version.unwrap_or_default(),
                ))
            })
        });
    match asked {
        Ok((version, api)) => check(
            "containers",
            Status::Ok,
            format!("Docker {version} (API {api}) answers at {}", socket.display()),
            "",
        ),
        Err(e) => check(
            "containers",
            Status::Fail,
            format!("the Docker API at {} does not answer: {e:#}", socket.display()),
            "start the Docker daemon, or point --docker-socket at the one that runs; without it containers' images, privileges and mounts are unknown and container-escape-risk cannot be raised",
        ),
    }
}

/// Whether the runner's hooks can reach the control socket: a socket given to a group must sit
/// in a directory that group may enter, or every hook fails open.
pub fn control_socket_check(socket: &std::path::Path) -> Check {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let Ok(meta) = std::fs::symlink_metadata(socket) else {
        return check(
            "control",
            Status::Warn,
            format!("no control socket at {}", socket.display()),
            "start the agent (`monitor run`, or the ci-runtime-monitor service); without its socket the runner's hooks cannot bound jobs",
        );
    };
    if !meta.file_type().is_socket() {
        return check(
            "control",
            Status::Fail,
            format!("{} is not a socket", socket.display()),
            "remove it and restart the agent",
        );
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o060 == 0 {
        return check(
            "control",
            Status::Ok,
            format!(
                "{} is root-only ({mode:o}): only root may bound jobs",
                socket.display()
            ),
            "",
        );
    }
    let gid = meta.gid();
    let dir = socket.parent().unwrap_or(std::path::Path::new("/"));
    let reachable = std::fs::metadata(dir).is_ok_and(|d| crate::control::group_may_enter(&d, gid));
    if reachable {
        check(
            "control",
            Status::Ok,
            format!(
                "{} ({mode:o}, group {gid}) reachable by its group",
                socket.display()
            ),
            "",
        )
    } else {
        check(
            "control",
            Status::Fail,
            format!(
                "{} is for group {gid}, but its directory {} does not let that group in",
                socket.display(),
                dir.display()
            ),
            "restart the agent with --control-group (it makes the directory 0750 for the group), or chgrp the directory to the group and chmod 0750",
        )
    }
}

pub fn print(checks: &[Check]) -> bool {
    let mut ok = true;
    for c in checks {
        let tag = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => {
                ok = false;
                "FAIL"
            }
        };
        println!("{tag} {:<11} {}", c.name, c.detail);
        if c.status != Status::Ok && !c.remedy.is_empty() {
            println!("     {:<11} fix: {}", "", c.remedy);
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_group_socket_in_a_directory_the_group_cannot_enter_fails() {
        let dir = tempfile::tempdir().unwrap();
        let sockets = dir.path().join("run");
        std::fs::create_dir(&sockets).unwrap();
        std::fs::set_permissions(&sockets, std::fs::Permissions::from_mode(0o700)).unwrap();
        let socket = sockets.join("control.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        // Root-only socket: fine as it is.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(control_socket_check(&socket).status, Status::Ok);
        // For a group, in a 0700 directory: the group can never reach it.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();
        let c = control_socket_check(&socket);
        assert_eq!(c.status, Status::Fail, "{}", c.detail);
        // The directory opened to the socket's group (same group: both made by this user).
        std::fs::set_permissions(&sockets, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(control_socket_check(&socket).status, Status::Ok);
        assert_eq!(
            control_socket_check(&sockets.join("missing.sock")).status,
            Status::Warn
        );
    }
}
