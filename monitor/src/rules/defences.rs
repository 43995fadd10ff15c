//! The host's other defences, and what turning them off looks like: the kernel's hardening
//! switches, the audit and logging services and their configuration, the system logs, kernel
//! modules. A job switching them off prepares the ground for what the monitor cannot see and
//! erases what others could (`defence-tampering`).
//!
//! Two routes are judged here, both by effect where the kernel shows one: writing the files
//! (whatever program writes them: `sysctl`, `echo >`, `truncate`, an editor) and asking a
//! service manager to stop the services (`systemctl`, `service`), whose signal then comes from
//! the service manager, not from the job. Loading a kernel module is seen in the kernel
//! (`module_load`, any syscall or tool).

use std::sync::LazyLock;

use crate::profile::PathPattern;

use super::tool_matches;

/// A place whose modification weakens the host's defences.
pub struct DefencePlace {
    pub name: &'static str,
    pub patterns: Vec<PathPattern>,
    /// Programs whose own work writes there (package managers logging what they installed,
    /// the logging services themselves).
    pub owners: &'static [&'static str],
}

fn place(name: &'static str, patterns: &[&str], owners: &'static [&'static str]) -> DefencePlace {
    DefencePlace {
        name,
        patterns: patterns
            .iter()
            .map(|p| PathPattern::new(p).expect("built-in defence pattern"))
            .collect(),
        owners,
    }
}

pub static PLACES: LazyLock<Vec<DefencePlace>> = LazyLock::new(|| {
    vec![
        place(
            "kernel-hardening",
            &[
                "/proc/sys/kernel/randomize_va_space",
                "/proc/sys/kernel/yama/ptrace_scope",
                "/proc/sys/kernel/kptr_restrict",
                "/proc/sys/kernel/dmesg_restrict",
                "/proc/sys/kernel/modules_disabled",
                "/proc/sys/kernel/perf_event_paranoid",
                "/proc/sys/kernel/unprivileged_bpf_disabled",
                "/proc/sys/kernel/kexec_load_disabled",
                "/proc/sys/kernel/core_pattern",
                "/proc/sys/fs/protected_*",
            ],
            &[],
        ),
        place(
            "audit-config",
            &["/etc/audit/**", "/etc/audisp/**"],
            &["dpkg*", "apt*"],
        ),
        place(
            "logging-config",
            &[
                "/etc/rsyslog.conf",
                "/etc/rsyslog.d/**",
                "/etc/syslog-ng/**",
                "/etc/systemd/journald.conf",
                "/etc/systemd/journald.conf.d/**",
            ],
            &["dpkg*", "apt*"],
        ),
        place(
            "system-logs",
            &["/var/log/*", "/var/log/journal/**", "/run/log/journal/**"],
            &[
                "systemd-journal*",
                "rsyslogd",
                "syslog-ng",
                "dpkg*",
                "apt*",
                "unattended-upgr*",
                "sshd",
                "login",
                "cloud-init",
                // Their own logs, written during an ordinary package install.
                "update-alternatives",
                "fc-cache",
                "useradd",
                "groupadd",
                "usermod",
                "adduser",
            ],
        ),
        place(
            "kernel-modules",
            &[
                "/etc/modprobe.d/**",
                "/etc/modules-load.d/**",
                "/etc/modules",
                "/lib/modules/**",
                "/usr/lib/modules/**",
            ],
            &["dpkg*", "apt*", "depmod", "update-initramfs"],
        ),
    ]
});

/// The place `path` is, when writing it weakens a defence.
pub fn classify(path: &str) -> Option<&'static DefencePlace> {
    PLACES
        .iter()
        .find(|p| p.patterns.iter().any(|pat| pat.matches(path)))
}

impl DefencePlace {
    pub fn owned_by(&self, tool: &str) -> bool {
        self.owners.iter().any(|o| tool_matches(o, tool))
    }
}

/// Services that log, audit or watch the host: a job has no business stopping them.
const GUARD_SERVICES: &[&str] = &[
    "systemd-journald",
    "journald",
    "auditd",
    "rsyslog",
    "rsyslogd",
    "syslog",
    "syslog-ng",
    "falco",
    "tetragon",
    "kunai",
    "osqueryd",
    "wazuh-agent",
    "ossec",
    "apparmor",
    // This monitor's own unit (deploy/debian).
    "ci-runtime-monitor",
];

/// Verbs of `systemctl`/`service` that stop a service or keep it from starting.
const STOP_VERBS: &[&str] = &[
    "stop", "kill", "disable", "mask", "isolate", "freeze", "clean",
];

fn is_guard_unit(arg: &str) -> bool {
    let unit = arg.trim_end_matches(".service").trim_end_matches(".socket");
    // `systemd-journald-audit.socket`, `rsyslog@x`: the family counts.
    GUARD_SERVICES.iter().any(|s| {
        unit == *s
            || unit
                .strip_prefix(s)
                .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('@'))
    })
}

/// What a command line does to the host's defences, when it turns one off: a service manager
/// asked to stop a guard service, the audit rules deleted or auditing disabled, security
/// enforcement turned off, a module loaded or unloaded, the journal's stored logs removed.
pub fn command_disables(tool: &str, argv: &[String]) -> Option<String> {
    let args: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    match tool {
        "systemctl" => {
            // The verb is the first word that is neither an option nor an option's value.
            const WITH_VALUE: &[&str] = &[
                "-s",
                "--signal",
                "-p",
                "--property",
                "-H",
                "--host",
                "-M",
                "--machine",
                "-t",
                "--type",
                "--state",
                "--kill-whom",
                "--kill-who",
                "-n",
                "--lines",
                "-o",
                "--output",
                "--root",
                "--job-mode",
                "--what",
            ];
            let mut words = args.iter().enumerate().filter(|(i, a)| {
                !a.starts_with('-') && !(*i > 0 && WITH_VALUE.contains(&args[i - 1]))
            });
            let (_, verb) = words.next()?;
            if !STOP_VERBS.contains(verb) {
                return None;
            }
            let units: Vec<&str> = args
                .iter()
                .copied()
                .filter(|a| !a.starts_with('-') && a != verb && is_guard_unit(a))
                .collect();
            (!units.is_empty()).then(|| format!("systemctl {verb} {}", units.join(" ")))
        }
        "service" => {
            let (unit, verb) = (args.first()?, args.get(1)?);
            (is_guard_unit(unit) && STOP_VERBS.contains(verb))
                .then(|| format!("service {unit} {verb}"))
        }
        "auditctl" => {
            let deletes = args.iter().any(|a| *a == "-D");
            let disables = args.windows(2).any(|w| w[0] == "-e" && w[1] == "0");
            (deletes || disables).then(|| format!("auditctl {}", args.join(" ")))
        }
        "setenforce" => (args.first() == Some(&"0")).then(|| "setenforce 0".to_string()),
        "aa-teardown" => Some("aa-teardown".to_string()),
        "insmod" | "rmmod" => Some(format!("{tool} {}", args.join(" "))),
        "modprobe" => {
            // `modprobe -n` / `--dry-run` and `-c` load nothing.
            let dry = args
                .iter()
                .any(|a| matches!(*a, "-n" | "--dry-run" | "-c" | "--showconfig"));
            (!dry).then(|| format!("modprobe {}", args.join(" ")))
        }
        "journalctl" => args
            .iter()
            .any(|a| a.starts_with("--vacuum") || *a == "--rotate" || *a == "--relinquish-var")
            .then(|| format!("journalctl {}", args.join(" "))),
        "pkill" | "killall" => args
            .iter()
            .any(|a| !a.starts_with('-') && is_guard_unit(a))
            .then(|| format!("{tool} {}", args.join(" "))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defence_places() {
        assert_eq!(
            classify("/proc/sys/kernel/randomize_va_space")
                .unwrap()
                .name,
            "kernel-hardening"
        );
        assert_eq!(
            classify("/proc/sys/fs/protected_symlinks").unwrap().name,
            "kernel-hardening"
        );
        assert_eq!(classify("/var/log/auth.log").unwrap().name, "system-logs");
        assert!(classify("/var/log/dpkg.log").unwrap().owned_by("dpkg"));
        assert_eq!(
            classify("/etc/audit/rules.d/x.rules").unwrap().name,
            "audit-config"
        );
        assert!(classify("/proc/sys/net/ipv4/ip_forward").is_none());
        assert!(classify("/w/app/log/build.log").is_none());
        assert!(classify("/var/log.txt").is_none());
    }

    #[test]
    fn commands_that_turn_defences_off() {
        let off = |tool: &str, argv: &[&str]| command_disables(tool, &v(argv));
        assert!(off("systemctl", &["systemctl", "stop", "auditd"]).is_some());
        assert!(off(
            "systemctl",
            &[
                "systemctl",
                "--no-block",
                "mask",
                "systemd-journald.service"
            ]
        )
        .is_some());
        assert!(off("systemctl", &["systemctl", "kill", "-s", "STOP", "rsyslog"]).is_some());
        assert!(off("service", &["service", "auditd", "stop"]).is_some());
        assert!(off("auditctl", &["auditctl", "-D"]).is_some());
        assert!(off("auditctl", &["auditctl", "-e", "0"]).is_some());
        assert!(off("modprobe", &["modprobe", "dummy"]).is_some());
        assert!(off("journalctl", &["journalctl", "--vacuum-time=1s"]).is_some());
        assert!(off("pkill", &["pkill", "-STOP", "auditd"]).is_some());
        // An option's value is not the verb.
        assert!(off("systemctl", &["systemctl", "-s", "KILL", "kill", "auditd"]).is_some());
        // Benign twins: services of the job's own, status queries, reading logs.
        assert!(off("systemctl", &["systemctl", "stop", "postgresql"]).is_none());
        assert!(off("systemctl", &["systemctl", "status", "auditd"]).is_none());
        assert!(off("systemctl", &["systemctl", "restart", "docker"]).is_none());
        assert!(off("auditctl", &["auditctl", "-l"]).is_none());
        assert!(off("modprobe", &["modprobe", "-n", "dummy"]).is_none());
        assert!(off("journalctl", &["journalctl", "-u", "auditd"]).is_none());
        assert!(off("pkill", &["pkill", "node"]).is_none());
    }
}
