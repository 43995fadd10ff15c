//! Containers as a way to the host's root: what, in a container's settings, hands a job's code
//! the host (`container-escape-risk`).
//!
//! A step that may talk to the Docker daemon may ask it for anything the daemon (root) can do:
//! a container in the host's PID namespace reads every process's memory and environment, one
//! with the host's `/` mounted rewrites the host, one with the daemon's socket starts more such
//! containers. These are judged from the runtime's own description of the container, whatever
//! client asked for it (the CLI, compose, an SDK, a raw HTTP request to the socket).

use crate::containers::{ContainerBind, ContainerMeta};

/// Host paths whose bind mount hands over the host (or its secrets): the mount of a parent
/// (`/var`) is as much the mount of these.
const SENSITIVE_HOST_PATHS: &[&str] = &[
    "/",
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/boot",
    "/root",
    "/home",
    "/usr",
    "/lib",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd",
    "/var/run/containerd",
    "/run/podman",
    "/var/log",
    "/etc/systemd",
];

/// Capabilities that are root on the host from inside a container.
const HOST_CAPABILITIES: &[&str] = &[
    "ALL",
    "SYS_ADMIN",
    "SYS_PTRACE",
    "SYS_MODULE",
    "DAC_READ_SEARCH",
    "SYS_RAWIO",
    "BPF",
    "PERFMON",
    "NET_ADMIN",
];

/// Why a container's settings reach the host, one reason each (empty: they do not). `guarded`
/// are further host paths to treat as sensitive with everything inside them (the runner's
/// directory, the job's home), except what lies in `exempt` (the runner's work directory, where
/// the job's checkout is built: `docker run -v $PWD:/src` is every container build).
pub fn escape_risks(meta: &ContainerMeta, guarded: &[String], exempt: &[String]) -> Vec<String> {
    let mut risks = Vec::new();
    if meta.privileged {
        risks.push("privileged (every capability and device)".to_string());
    }
    for ns in &meta.host_namespaces {
        // The host's UTS namespace (its hostname) gives nothing away; its cgroup namespace is
        // the default on cgroup v1 hosts and shows only cgroup paths.
        if ns != "uts" && ns != "cgroup" {
            risks.push(format!("the host's {ns} namespace"));
        }
    }
    for cap in &meta.added_capabilities {
        let cap = cap.trim_start_matches("CAP_").to_ascii_uppercase();
        if HOST_CAPABILITIES.contains(&cap.as_str()) {
            risks.push(format!("capability {cap}"));
        }
    }
    for bind in &meta.binds {
        if let Some(what) = sensitive_bind(bind, guarded, exempt) {
            risks.push(what);
        }
    }
    for device in &meta.devices {
        risks.push(format!("host device {device}"));
    }
    risks
}

fn sensitive_bind(bind: &ContainerBind, guarded: &[String], exempt: &[String]) -> Option<String> {
    let source = normalise(&bind.source);
    let guarded: Vec<String> = guarded.iter().map(|g| normalise(g)).collect();
    if exempt.iter().any(|x| contains(&normalise(x), &source)) {
        return None;
    }
    let sensitive: Vec<String> = SENSITIVE_HOST_PATHS
        .iter()
        .map(|p| p.to_string())
        .chain(guarded.iter().cloned())
        .collect();
    // The mount of a sensitive path or of one of its parents first; then a path inside one
    // (every path is inside `/`, which is not that).
    let hit = sensitive
        .iter()
        .find(|s| contains(&source, s))
        .or_else(|| {
            sensitive
                .iter()
                .filter(|s| s.as_str() != "/")
                .find(|s| contains(s, &source))
        })?
        .clone();
    let mode = if bind.read_only {
        "read-only"
    } else {
        "writable"
    };
    Some(if hit == source {
        format!("the host's {source} mounted {mode} at {}", bind.destination)
    } else if contains(&source, &hit) {
        format!(
            "the host's {source} mounted {mode} at {} (it holds {hit})",
            bind.destination
        )
    } else {
        // Below a sensitive path: only the most revealing ones are risks of their own.
        let is_guarded = guarded.contains(&hit);
        return (is_guarded || below_is_risky(&source, &hit)).then(|| {
            format!(
                "the host's {source} mounted {mode} at {} (inside {hit})",
                bind.destination
            )
        });
    })
}

/// A path inside a sensitive one is a risk when it is the sensitive part itself (a home's
/// credentials, the runtime's state, the host's configuration), not a project directory under
/// `/home/<user>/work`.
fn below_is_risky(source: &str, parent: &str) -> bool {
    match parent {
        // A home: its dot-directories and the home itself, not the workspaces under it.
        "/home" | "/root" => {
            let rest = source.strip_prefix(parent).unwrap_or_default();
            let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
            match parent {
                "/home" => parts.len() == 1 || parts.get(1).is_some_and(|p| p.starts_with('.')),
                _ => parts.first().is_some_and(|p| p.starts_with('.')),
            }
        }
        // Programs and libraries: a read of them is harmless, a write is persistence; the
        // container's own mounts of /usr/share data are common.
        "/usr" | "/lib" | "/var/log" => false,
        _ => true,
    }
}

fn normalise(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }
}

/// Whether `outer` is `inner` or one of its parents.
fn contains(outer: &str, inner: &str) -> bool {
    outer == "/"
        || inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(source: &str, destination: &str) -> ContainerBind {
        ContainerBind {
            source: source.into(),
            destination: destination.into(),
            read_only: false,
        }
    }

    fn meta(binds: Vec<ContainerBind>) -> ContainerMeta {
        ContainerMeta {
            binds,
            ..Default::default()
        }
    }

    #[test]
    fn the_host_root_its_processes_and_the_daemon_are_risks() {
        for source in [
            "/",
            "/proc",
            "/var/run/docker.sock",
            "/etc",
            "/var",
            "/root",
        ] {
            let risks = escape_risks(&meta(vec![bind(source, "/host")]), &[], &[]);
            assert_eq!(risks.len(), 1, "{source}: {risks:?}");
        }
        let privileged = ContainerMeta {
            privileged: true,
            host_namespaces: vec!["pid".into(), "uts".into()],
            added_capabilities: vec!["CAP_SYS_PTRACE".into(), "NET_BIND_SERVICE".into()],
            ..Default::default()
        };
        assert_eq!(
            escape_risks(&privileged, &[], &[]),
            vec![
                "privileged (every capability and device)".to_string(),
                "the host's pid namespace".to_string(),
                "capability SYS_PTRACE".to_string(),
            ]
        );
    }

    #[test]
    fn a_project_directory_is_not_a_risk_but_a_home_and_its_secrets_are() {
        // `docker run -v $PWD:/src` of a checkout, a cache volume, the runner's temp files.
        for source in [
            "/home/runner/work/app/app",
            "/srv/cache",
            "/tmp/build",
            "/usr/share/zoneinfo",
            "/root/work/app",
        ] {
            assert!(
                escape_risks(&meta(vec![bind(source, "/src")]), &[], &[]).is_empty(),
                "{source}"
            );
        }
        for source in ["/home/runner", "/home/runner/.npmrc", "/root/.ssh", "/root"] {
            assert_eq!(
                escape_risks(&meta(vec![bind(source, "/h")]), &[], &[]).len(),
                1,
                "{source}"
            );
        }
        // The runner's own directory, named by the agent: all of it but its work directory.
        let guarded = vec!["/opt/actions-runner".to_string()];
        let exempt = vec!["/opt/actions-runner/_work".to_string()];
        for source in ["/opt/actions-runner", "/opt", "/opt/actions-runner/bin"] {
            assert_eq!(
                escape_risks(&meta(vec![bind(source, "/r")]), &guarded, &exempt).len(),
                1,
                "{source}"
            );
        }
        assert!(escape_risks(
            &meta(vec![bind("/opt/actions-runner/_work/app/app", "/src")]),
            &guarded,
            &exempt
        )
        .is_empty());
    }
}
