//! Project tasks: `cargo xtask setup | run | test | bench | fuzz | package | vm | kernel-matrix`.
//!
//! `setup` makes a fresh Debian 12 machine able to build the kernel programs (see
//! docs/toolchain.md for why each step exists). Every step checks first, so a second run takes
//! well under a second.

mod bench;
mod fuzz;
mod kernel_matrix;
mod package;
mod probe_time;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

/// Where the BPF toolchain pieces live (override with MONITOR_TOOLCHAIN_DIR).
const DEFAULT_TOOLCHAIN_DIR: &str = "/opt/monitor-toolchain";
/// The rustup name monitor/build.rs builds the eBPF crate with.
const BPF_TOOLCHAIN: &str = "monitor-bpf";
const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install and link everything needed to build the kernel programs (idempotent).
    Setup,
    /// Set up, build in release mode and start the agent (arguments after -- go to `monitor run`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run every test (unit and privileged end-to-end).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure the agent's overhead: wall-time ratios with vs without it, CPU, RSS, throughput.
    Bench(bench::BenchArgs),
    /// Run the fuzz targets briefly against the kept corpus (monitor/fuzz).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 20)]
        seconds: u32,
    },
    /// Build the Debian package (target/package/ci-runtime-monitor_<version>_<arch>.deb).
    Package {
        /// Package the debug build (what the tests check) instead of a release build.
        #[arg(long)]
        dev: bool,
    },
    /// Run the hook-tier tests in Debian's stock 6.1 kernel (the VM of `vm`), with BPF-LSM and
    /// with fentry. Not yet part of `test`: the agent's open program exceeds 6.1's verifier
    /// budget (docs/kernel-tiers.md).
    KernelMatrix,
    /// Run a shell command as root in Debian's stock 6.1 kernel under QEMU, where fentry, fexit
    /// and BPF-LSM load (this host's kernel refuses them); exits with the command's status.
    Vm {
        /// The command line, run by /bin/sh in the workspace root (host's files, read-only).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Task::Setup => setup(),
        Task::Run { args } => {
            setup()?;
            cargo(&["build", "--release", "--package", "monitor"])?;
            let bin = workspace_root().join("target/release/monitor");
            let mut command = Command::new(&bin);
            command.arg("run").args(&args);
            let status = command
                .status()
                .with_context(|| format!("starting {}", bin.display()))?;
            if !status.success() {
                bail!("monitor exited with {status}");
            }
            Ok(())
        }
        Task::Test { args } => {
            setup()?;
            // The privileged tests start the real agent binary, and install the package.
            cargo(&["build", "--package", "monitor"])?;
            let deb = package::build(
                &workspace_root(),
                &workspace_root().join("target/debug/monitor"),
            )?;
            eprintln!("test: package {}", deb.display());
            // Only on the full run (no filter given): the hook tiers this kernel refuses
            // (BPF-LSM, fentry), proven on a second kernel in a VM, and a short fuzz of every
            // target. What they need (the release agent the VM runs, the fuzz targets: 20 of
            // CI's minutes built cold one after the other) is built in the background at the
            // lowest priority while the tests run, which mostly wait on the programs they start.
            // Its output goes to target/prebuild.log (shown if it fails), not among the tests'.
            let log_path = workspace_root().join("target/prebuild.log");
            // The release agent is announced on its own as soon as it is built, so the VM can
            // start while the fuzz targets are still building (the VM waited ~5 minutes).
            let (release_built, release_ready) = std::sync::mpsc::channel::<Result<(), String>>();
            let prebuild = args.is_empty().then(|| {
                let log_path = log_path.clone();
                std::thread::spawn(move || -> anyhow::Result<()> {
                    let log = std::fs::File::create(&log_path)?;
                    let release =
                        cargo_niced(&["build", "--release", "--package", "monitor"], 19, &log);
                    let _ = release_built
                        .send(release.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")));
                    release?;
                    fuzz::build(&workspace_root(), &toolchain_dir(), 19, &log)
                })
            });
            let show_log = || {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            };
            const PREBUILD_FAILED: &str = "the background build for the kernel VM and the fuzz run (its output above, all of it in target/prebuild.log)";
            // Default members: every crate but monitor-ebpf, which only builds for the BPF target.
            let mut test_args = vec!["test"];
            test_args.extend(args.iter().map(String::as_str));
            let tested = cargo(&test_args);
            let Some(prebuild) = prebuild else {
                return tested;
            };
            let release = release_ready
                .recv()
                .unwrap_or_else(|_| Err("the background build ended without a word".into()));
            if tested.is_err() || release.is_err() {
                // Either way the run has failed: wait for the builder (it holds cargo's lock).
                let _ = prebuild.join();
                if release.is_err() {
                    show_log();
                }
                tested?;
                return release.map_err(anyhow::Error::msg).context(PREBUILD_FAILED);
            }
            kernel_matrix::run(&workspace_root())?;
            let built = prebuild
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the background build panicked")));
            if built.is_err() {
                show_log();
            }
            built.context(PREBUILD_FAILED)?;
            fuzz::run(&workspace_root(), &toolchain_dir(), 20)?;
            Ok(())
        }
        Task::Fuzz { seconds } => {
            setup()?;
            fuzz::run(&workspace_root(), &toolchain_dir(), seconds)
        }
        Task::Package { dev } => {
            setup()?;
            let binary = if dev {
                cargo(&["build", "--package", "monitor"])?;
                workspace_root().join("target/debug/monitor")
            } else {
                cargo(&["build", "--release", "--package", "monitor"])?;
                workspace_root().join("target/release/monitor")
            };
            let deb = package::build(&workspace_root(), &binary)?;
            println!("{}", deb.display());
            Ok(())
        }
        Task::KernelMatrix => {
            setup()?;
            kernel_matrix::run(&workspace_root())
        }
        Task::Vm { command } => {
            let status =
                vm::run_in_vm(&workspace_root(), &command.join(" "), &vm::forwarded_env())?;
            std::process::exit(status)
        }
        Task::Bench(args) => {
            setup()?;
            cargo(&["build", "--release", "--package", "monitor"])?;
            bench::run(&workspace_root(), args)
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// A command running `program` with `niceness` added to its priority (`nice(1)`; 0: as is).
pub fn niced(niceness: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("nice");
    command.arg(format!("-n{niceness}")).arg(program);
    command
}

/// Runs cargo with `niceness` added to its priority (`nice(1)`), its output to `log`.
fn cargo_niced(args: &[&str], niceness: u32, log: &std::fs::File) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = niced(niceness, &cargo)
        .args(args)
        .current_dir(workspace_root())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .status()
        .with_context(|| format!("running nice cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn toolchain_dir() -> PathBuf {
    std::env::var_os("MONITOR_TOOLCHAIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_TOOLCHAIN_DIR.into())
}

pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_step(what: &str, command: &mut Command) -> anyhow::Result<()> {
    eprintln!("setup: {what}");
    let status = command
        .status()
        .with_context(|| format!("{what}: could not start {command:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status}): {command:?}");
    }
    Ok(())
}

pub fn setup() -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = toolchain_dir();

    // 1. A Rust whose library sources match it exactly (rustup cannot fetch rust-src here).
    let library = Path::new("/usr/lib/rustlib/src/rust/library/core");
    if !library.is_dir() || !Path::new("/usr/bin/rustc").exists() {
        apt_install(
            "Debian's Rust with its library sources",
            &["rustc-web", "cargo-web", "rust-web-src"],
        )?;
    }
    let rustc_info = output("/usr/bin/rustc", &["-vV"]).context("/usr/bin/rustc -vV")?;
    let llvm_major = rustc_info
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc -vV reports no LLVM version")?
        .to_string();

    // 2. Expose it to rustup under a fixed name (aya-build runs `rustup run <name> cargo`).
    let rust_dir = dir.join("rust");
    std::fs::create_dir_all(rust_dir.join("bin"))
        .with_context(|| format!("creating {}", rust_dir.display()))?;
    for tool in ["rustc", "cargo", "rustdoc"] {
        symlink(
            Path::new("/usr/bin").join(tool),
            rust_dir.join("bin").join(tool),
        )?;
    }
    symlink("/usr/lib".into(), rust_dir.join("lib"))?;
    // Re-linked every time (cheap), so a changed MONITOR_TOOLCHAIN_DIR is picked up.
    run_step(
        "linking the BPF toolchain into rustup",
        Command::new("rustup")
            .args(["toolchain", "link", BPF_TOOLCHAIN])
            .arg(&rust_dir),
    )?;

    // 3. bpf-linker built against the same LLVM as that rustc (its runtime library suffices).
    let linker = dir.join("bin/bpf-linker");
    let have = output(linker.to_str().unwrap_or_default(), &["--version"]).unwrap_or_default();
    if !have.contains(BPF_LINKER_VERSION) {
        let ldd = output("ldd", &["/usr/bin/rustc"]).context("ldd /usr/bin/rustc")?;
        let libllvm = ldd
            .lines()
            .filter(|l| l.contains("libLLVM"))
            .find_map(|l| {
                l.split("=>")
                    .nth(1)?
                    .split_whitespace()
                    .next()
                    .map(str::to_string)
            })
            .context("rustc is not linked to a shared libLLVM")?;
        let llvm_prefix = dir.join("llvm");
        std::fs::create_dir_all(llvm_prefix.join("lib"))?;
        symlink(PathBuf::from(&libllvm), llvm_prefix.join("lib/libLLVM.so"))?;
        run_step(
            &format!("building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm_major}"),
            Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--locked",
                    "--no-default-features",
                ])
                .args(["--features", &format!("llvm-{llvm_major}")])
                .arg("--root")
                .arg(&dir)
                .env("LLVM_PREFIX", &llvm_prefix),
        )?;
    }

    // 4. What the tests drive for real: package managers, Prometheus and promtool.
    ensure_test_programs()?;

    // 5. Kernel filesystems the agent and tests use (no-ops when mounted).
    mount_if_missing(
        "tracefs",
        "/sys/kernel/tracing",
        "/sys/kernel/tracing/events",
    );
    mount_if_missing("bpf", "/sys/fs/bpf", "");

    // 6. The libraries and firmware of the QEMU that `cargo xtask vm` unpacks.
    vm::ensure_host_packages()?;
    eprintln!(
        "setup: ready in {:.1} s (toolchain in {})",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}

/// Programs the end-to-end tests run, each with a command that proves it works and the Debian
/// package that provides it.
const TEST_PROGRAMS: &[(&str, &[&str], &str)] = &[
    ("npm", &["--version"], "npm"),
    ("python3", &["-c", "import venv"], "python3"),
    ("python3", &["-m", "pip", "--version"], "python3-pip"),
    ("python3", &["-m", "ensurepip", "--version"], "python3-venv"),
    ("git", &["--version"], "git"),
    ("curl", &["--version"], "curl"),
    // The benchmark chart's font (the bench's drawing is tested).
    ("test", &["-f", bench::FONT], "fonts-dejavu-core"),
    ("promtool", &["--version"], "prometheus"),
    ("prometheus", &["--version"], "prometheus"),
    ("setpriv", &["--version"], "util-linux"),
    ("unshare", &["--version"], "util-linux"),
    ("chromium", &["--version"], "chromium"),
    ("dnsmasq", &["--version"], "dnsmasq-base"),
    ("ip", &["-V"], "iproute2"),
    ("debootstrap", &["--version"], "debootstrap"),
    ("systemd-analyze", &["--version"], "systemd"),
    // The real-build corpus (tests/corpus): C builds, a signing and deploy job.
    ("make", &["--version"], "make"),
    ("gcc", &["--version"], "gcc"),
    ("g++", &["--version"], "g++"),
    ("tar", &["--version"], "tar"),
    ("gpg", &["--version"], "gnupg"),
    ("gpg-agent", &["--version"], "gpg-agent"),
    // ssh-keygen and ssh-agent come with it; they have no option that exits 0.
    ("ssh", &["-V"], "openssh-client"),
    // The container tests: a Docker daemon of their own (containerd and runc come with it) and
    // a static busybox to make images from (nothing is pulled from a registry).
    ("dockerd", &["--version"], "docker.io"),
    ("docker", &["--version"], "docker.io"),
    // Podman without its service (conmon, runc and crun come with it).
    ("podman", &["--version"], "podman"),
    // Compose (v1, Debian's) over the Docker API.
    ("docker-compose", &["version"], "docker-compose"),
    // The outputs' tests: a syslog receiver of their own, with TLS.
    ("rsyslogd", &["-v"], "rsyslog"),
    (
        "sh",
        &["-c", "ls /usr/lib/*/rsyslog/lmnsd_gtls.so"],
        "rsyslog-gnutls",
    ),
    // The shared baseline's tests: a PostgreSQL cluster of their own (initdb, pg_ctl).
    (
        "sh",
        &["-c", "ls /usr/lib/postgresql/*/bin/initdb"],
        "postgresql",
    ),
    (
        "sh",
        &[
            "-c",
            "test -x /bin/busybox && ! ldd /bin/busybox >/dev/null 2>&1",
        ],
        "busybox-static",
    ),
];

fn ensure_test_programs() -> anyhow::Result<()> {
    ensure_programs("test programs", TEST_PROGRAMS)
}

/// Installs the Debian packages behind the `(program, proving arguments, package)` entries whose
/// program does not work here.
pub fn ensure_programs(what: &str, programs: &[(&str, &[&str], &str)]) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = programs
        .iter()
        .filter(|(program, args, _)| output(program, args).is_none())
        .map(|(_, _, package)| *package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(what, &missing)
}

/// `apt-get install` without prompts. Debian starts the packaged Prometheus and auditd services
/// where systemd runs; the tests and the bench start their own, so those are stopped again.
fn apt_install(what: &str, packages: &[&str]) -> anyhow::Result<()> {
    run_step(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    run_step(
        &format!("installing {what}: {}", packages.join(", ")),
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    for service in ["prometheus", "auditd", "rsyslog", "postgresql"] {
        if packages.contains(&service) {
            let _ = Command::new("systemctl")
                .args(["disable", "--now", service])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
    Ok(())
}

fn symlink(target: PathBuf, link: PathBuf) -> anyhow::Result<()> {
    if std::fs::read_link(&link)
        .map(|t| t == target)
        .unwrap_or(false)
    {
        return Ok(());
    }
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}

fn mount_if_missing(fstype: &str, target: &str, probe: &str) {
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(target));
    if mounted || (!probe.is_empty() && Path::new(probe).exists()) {
        return;
    }
    let status = Command::new("mount")
        .args(["-t", fstype, "nodev", target])
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("setup: warning: could not mount {fstype} at {target} (not root?)");
    }
}
