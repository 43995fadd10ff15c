//! `cargo xtask package`: the Debian package an operator installs on a runner: the binary, a
//! hardened systemd unit, its defaults under /etc, the default profile, the runner hook scripts
//! and the documentation. Built with `dpkg-deb` from files in deploy/debian.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

pub const PACKAGE: &str = "ci-runtime-monitor";

fn install(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Builds the package from `binary`; returns the .deb's path (under target/package).
pub fn build(root: &Path, binary: &Path) -> anyhow::Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let arch = String::from_utf8(
        Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .context("dpkg --print-architecture")?
            .stdout,
    )?
    .trim()
    .to_string();
    let out = root.join("target/package");
    let tree = out.join("tree");
    let _ = std::fs::remove_dir_all(&tree);
    let deb = root.join("deploy/debian");
    let files: &[(PathBuf, &str, u32)] = &[
        (binary.to_path_buf(), "usr/bin/monitor", 0o755),
        (
            deb.join("ci-runtime-monitor.service"),
            "lib/systemd/system/ci-runtime-monitor.service",
            0o644,
        ),
        (deb.join("default"), "etc/default/ci-runtime-monitor", 0o644),
        (
            root.join("profiles/default.yml"),
            "etc/monitor/profile.yml",
            0o644,
        ),
        (deb.join("monitor.yml"), "etc/monitor/monitor.yml", 0o644),
        (
            deb.join("job-started.sh"),
            "usr/lib/ci-runtime-monitor/job-started.sh",
            0o755,
        ),
        (
            deb.join("job-completed.sh"),
            "usr/lib/ci-runtime-monitor/job-completed.sh",
            0o755,
        ),
        (
            root.join("deploy/prometheus/monitor-alerts.yml"),
            "usr/share/ci-runtime-monitor/monitor-alerts.yml",
            0o644,
        ),
        (
            root.join("README.md"),
            "usr/share/doc/ci-runtime-monitor/README.md",
            0o644,
        ),
    ];
    for (from, to, mode) in files {
        install(from, &tree.join(to), *mode)?;
    }
    // Debug information stays out of the package (it is most of a debug build's size).
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg(tree.join("usr/bin/monitor"))
        .status()
        .context("running strip (binutils)")?;
    if !status.success() {
        bail!("strip failed ({status})");
    }
    for doc in std::fs::read_dir(root.join("docs"))? {
        let doc = doc?.path();
        if doc.extension().is_some_and(|e| e == "md") {
            let name = doc.file_name().expect("file name");
            install(
                &doc,
                &tree
                    .join("usr/share/doc/ci-runtime-monitor/docs")
                    .join(name),
                0o644,
            )?;
        }
    }
    let control = tree.join("DEBIAN");
    std::fs::create_dir_all(&control)?;
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o755))?;
    let installed_kib = walk_size(&tree)? / 1024;
    std::fs::write(
        control.join("control"),
        format!(
            "Package: {PACKAGE}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: ci-runtime-monitor developers <security@localhost>\n\
             Installed-Size: {installed_kib}\nDepends: libc6, passwd\nSection: admin\nPriority: optional\n\
             Description: eBPF runtime security monitor for CI runners\n \
             Watches what CI jobs execute, read and connect to on a self-hosted runner, attributes it\n \
             to the job and step, and reports install-time code, credential reads and unexpected\n \
             egress (Prometheus metrics, per-job reports).\n"
        ),
    )?;
    std::fs::write(
        control.join("conffiles"),
        "/etc/default/ci-runtime-monitor\n/etc/monitor/monitor.yml\n/etc/monitor/profile.yml\n",
    )?;
    for script in ["postinst", "prerm", "postrm"] {
        install(&deb.join(script), &control.join(script), 0o755)?;
    }
    let package = out.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zxz"])
        .arg(&tree)
        .arg(&package)
        .status()
        .context("running dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb failed ({status})");
    }
    Ok(package)
}

fn walk_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            walk_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
