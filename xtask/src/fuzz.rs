//! `cargo xtask fuzz`: libFuzzer targets for the inputs an attacker or a user controls (profile
//! YAML, ring-buffer records, DNS messages), run briefly against the corpus kept in
//! monitor/fuzz/corpus. `cargo xtask test` runs it after the tests.
//!
//! cargo-fuzz passes compiler flags that need a nightly compiler; this machine only has Debian's
//! stable one, so the build sets RUSTC_BOOTSTRAP=1 (the documented switch that lets a stable
//! compiler accept them) and uses no sanitizer: a panic, an abort or a timeout is the finding.

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _};

pub const TARGETS: [&str; 3] = ["profile_parse", "event_decode", "dns_parse"];
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz, installed beside the toolchain when missing (with `niceness` added to the
/// install's priority, its output to `log` when given).
fn cargo_fuzz(
    toolchain_dir: &Path,
    niceness: u32,
    log: Option<&std::fs::File>,
) -> anyhow::Result<std::path::PathBuf> {
    let bin = toolchain_dir.join("bin/cargo-fuzz");
    let have = Command::new(&bin).arg("--version").output().ok();
    if have.is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)) {
        return Ok(bin);
    }
    eprintln!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    let mut install = crate::niced(niceness, "cargo");
    if let Some(log) = log {
        install.stdout(log.try_clone()?).stderr(log.try_clone()?);
    }
    let status = install
        .args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
            "--root",
        ])
        .arg(toolchain_dir)
        .status()
        .context("cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("installing cargo-fuzz failed ({status})");
    }
    Ok(bin)
}

/// Builds every target as `run` runs them (installing cargo-fuzz first when missing), with
/// `niceness` added to the build's priority (`cargo xtask test` builds them in the background
/// while the tests run).
pub fn build(
    root: &Path,
    toolchain_dir: &Path,
    niceness: u32,
    log: &std::fs::File,
) -> anyhow::Result<()> {
    let bin = cargo_fuzz(toolchain_dir, niceness, Some(log))?;
    let status = crate::niced(niceness, &bin)
        .arg("build")
        .args(BUILD_FLAGS)
        .current_dir(root.join("monitor"))
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .env("RUSTC_BOOTSTRAP", "1")
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status})");
    }
    Ok(())
}

/// How the targets are built, by `build` and `run` alike: no sanitizer (a stable compiler),
/// without optimizations (the build is most of the fuzz run's time in CI; 20 s of unoptimized
/// fuzzing still runs each target thousands of times).
const BUILD_FLAGS: [&str; 3] = ["--sanitizer", "none", "--dev"];

/// Runs every target for `seconds`, starting from the kept corpus (read-only: new inputs go to a
/// scratch directory, so a test run leaves the repository as it was).
pub fn run(root: &Path, toolchain_dir: &Path, seconds: u32) -> anyhow::Result<()> {
    let bin = cargo_fuzz(toolchain_dir, 0, None)?;
    let crate_dir = root.join("monitor");
    for target in TARGETS {
        let scratch = tempfile_dir(&format!("monitor-fuzz-{target}"))?;
        let kept = crate_dir.join("fuzz/corpus").join(target);
        eprintln!("fuzz: {target} for {seconds} s");
        let status = Command::new(&bin)
            .arg("run")
            .args(BUILD_FLAGS)
            .arg(target)
            .arg(&scratch)
            .arg(&kept)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-timeout=10")
            .current_dir(&crate_dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .status()
            .context("running cargo fuzz")?;
        let _ = std::fs::remove_dir_all(&scratch);
        if !status.success() {
            bail!("fuzz target {target} failed ({status}): the crashing input is in monitor/fuzz/artifacts/{target}/");
        }
    }
    Ok(())
}

fn tempfile_dir(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
