//! The Debian package, installed for real: a throwaway Debian root (debootstrap, with systemd so
//! the unit can be verified against it), `dpkg -i` running the package's maintainer scripts,
//! `systemd-analyze verify` on the unit, the installed binary working, and remove/purge
//! leaving what they should.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

fn package() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/package");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no package in {}: `cargo xtask test` builds it (or `cargo xtask package --dev`)",
                dir.display()
            )
        })
}

fn run(what: &str, command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

fn chroot(root: &Path, args: &[&str]) -> String {
    run(
        &format!("chroot {args:?}"),
        Command::new("chroot").arg(root).args(args),
    )
}

#[test]
fn debian_package_installs_verifies_and_uninstalls_cleanly() {
    let deb = package();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    run(
        "debootstrap (Debian's debootstrap; `cargo xtask setup` installs it)",
        Command::new("debootstrap")
            .args(["--variant=minbase", "--include=systemd", "bookworm"])
            .arg(&root)
            .arg("http://deb.debian.org/debian"),
    );
    std::fs::copy(&deb, root.join("tmp/monitor.deb")).unwrap();
    let installed = chroot(&root, &["dpkg", "-i", "/tmp/monitor.deb"]);
    assert!(
        installed.contains("install-runner-hooks"),
        "postinst tells what to do next:\n{installed}"
    );

    // Files, modes, the group and the directories the scripts made.
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("usr/bin/monitor"), 0o755);
    assert_eq!(mode("var/lib/monitor/reports"), 0o700);
    assert_eq!(mode("var/log/monitor"), 0o700);
    chroot(&root, &["getent", "group", "monitor"]);
    assert!(chroot(
        &root,
        &["dpkg-query", "-W", "-f=${Conffiles}", "ci-runtime-monitor"]
    )
    .contains("/etc/monitor/profile.yml"));

    // The unit is valid against a real systemd tree, hardened, and enabled.
    run(
        "systemd-analyze verify",
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg("ci-runtime-monitor.service"),
    );
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/ci-runtime-monitor.service"))
        .unwrap();
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "UMask=0077",
        "CapabilityBoundingSet=CAP_BPF",
    ] {
        assert!(unit.contains(line), "unit lacks {line}");
    }
    assert_eq!(
        chroot(
            &root,
            &["systemctl", "is-enabled", "ci-runtime-monitor.service"]
        )
        .trim(),
        "enabled"
    );

    // The installed binary works in that root: its default profile, and the runner hooks.
    assert!(chroot(
        &root,
        &[
            "/usr/bin/monitor",
            "profile",
            "check",
            "/etc/monitor/profile.yml"
        ]
    )
    .contains("valid"));
    std::fs::create_dir_all(root.join("home/runner/actions-runner")).unwrap();
    std::fs::write(
        root.join("home/runner/actions-runner/config.sh"),
        "#!/bin/sh\n",
    )
    .unwrap();
    chroot(
        &root,
        &[
            "/usr/bin/monitor",
            "install-runner-hooks",
            "/home/runner/actions-runner",
        ],
    );
    let env = std::fs::read_to_string(root.join("home/runner/actions-runner/.env")).unwrap();
    assert!(env.contains("ACTIONS_RUNNER_HOOK_JOB_STARTED=/home/runner/actions-runner/monitor-hooks/job-started.sh"), "{env}");
    let hook = std::fs::read_to_string(
        root.join("home/runner/actions-runner/monitor-hooks/job-started.sh"),
    )
    .unwrap();
    assert!(
        hook.contains("'/usr/bin/monitor' hook job-started"),
        "{hook}"
    );

    // Remove keeps configuration and evidence; purge takes everything.
    chroot(&root, &["dpkg", "-r", "ci-runtime-monitor"]);
    assert!(!root.join("usr/bin/monitor").exists());
    assert!(
        root.join("etc/monitor/profile.yml").exists()
            && root.join("var/lib/monitor/reports").exists()
    );
    chroot(&root, &["dpkg", "-P", "ci-runtime-monitor"]);
    assert!(!root.join("etc/monitor").exists() && !root.join("var/lib/monitor").exists());
    let group = Command::new("chroot")
        .arg(&root)
        .args(["getent", "group", "monitor"])
        .status()
        .unwrap();
    assert!(!group.success(), "purge removes the group");
}
