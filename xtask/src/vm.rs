//! `cargo xtask vm -- CMD...`: runs a shell command as root inside Debian bookworm's stock kernel
//! (the `linux-image-amd64` package, 6.1) under QEMU, and exits with its status.
//!
//! Why a VM: this host's kernel refuses fentry, fexit, fmod_ret and BPF-LSM programs (EPERM at
//! `BPF_PROG_LOAD`, no `/sys/kernel/security/lsm`, no kprobes), so the probes built on them can
//! only be exercised in another kernel. Debian's has BTF and `bpf` in its default LSM list.
//!
//! Why software emulation (TCG): `/dev/kvm` here is PVM (`kvm_pvm`), which runs only PVM-aware
//! guest kernels; a stock kernel either crawls through its instruction emulator or stops with an
//! emulation failure. Under TCG a boot, one command and the power-off take about 7 s.
//!
//! The guest mounts this machine's root filesystem read-only over 9p, so host-built binaries
//! (target/debug/monitor, cargo's test executables) run unchanged; `target/vm-work` is shared
//! read-write at the same path, for results to come back. `/etc`, `/root`, `/tmp` and `/var` are
//! writable overlays that vanish at power-off. The guest's init is `xtask/vm/init`.
//!
//! QEMU and the kernel are `apt-get download`ed and unpacked with `dpkg-deb -x` into
//! `target/vm-cache/<kernel version>/` (installing qemu-system-x86 conflicts with the qemu-utils
//! backport here); only the libraries QEMU links against are installed, by `cargo xtask setup`.

use std::{
    fmt::Write as _,
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};

/// Packages unpacked into the cache besides the kernel image (never installed on the host).
const UNPACKED_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "busybox-static",
];

/// The files kept from the unpacked packages (relative paths; directories whole), besides the
/// kernel and its [`MODULES`]; the rest, mostly 390 MB of other modules, is dropped. QEMU finds
/// its TCG module (in `usr/lib/x86_64-linux-gnu/qemu`) relative to its own binary.
const KEPT_PATHS: &[&str] = &[
    "usr/bin/qemu-system-x86_64",
    "usr/lib/x86_64-linux-gnu/qemu",
    "usr/share/qemu",
    "bin/busybox",
];

/// What Debian builds as modules and the guest needs for its 9p mounts and overlays, in load
/// order (relative to `lib/modules/<version>/kernel`, without `.ko`).
const MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "net/9p/9pnet",
    "net/9p/9pnet_virtio",
    "fs/netfs/netfs",
    "fs/fscache/fscache",
    "fs/9p/9p",
    "fs/overlayfs/overlay",
];

/// Host packages the VM needs: xz for the kernel, then what the unpacked QEMU needs:
/// qemu-system-x86's library dependencies, the BIOS and option ROMs. `cargo xtask setup`
/// installs them.
pub const HOST_PACKAGES: &[&str] = &[
    "libaio1",
    "libbpf1",
    "libcapstone4",
    "libfdt1",
    "libfuse3-3",
    "libglib2.0-0",
    "libgmp10",
    "libgnutls30",
    "libhogweed6",
    "libibverbs1",
    "libjpeg62-turbo",
    "libnettle8",
    "libnuma1",
    "libpixman-1-0",
    "libpmem1",
    "libpng16-16",
    "librdmacm1",
    "libsasl2-2",
    "libseccomp2",
    "libslirp0",
    "libudev1",
    "liburing2",
    "libvdeplug2",
    "libzstd1",
    "zlib1g",
    "seabios",
    "ipxe-qemu",
    "xz-utils",
];

/// apt's package lists (see [`kernel_version`]).
const APT_LISTS: &str = "/var/lib/apt/lists";

/// Where the `seabios` package puts the BIOS QEMU boots (QEMU gets the directory with `-L`).
const SEABIOS_DIR: &str = "/usr/share/seabios";

/// The guest's PID 1.
const INIT: &str = include_str!("../vm/init");

/// Host environment variables `cargo xtask vm` hands on to the guest command, besides `MONITOR_*`.
const FORWARDED_ENV: &[&str] = &["CI", "RUST_BACKTRACE", "RUST_LOG"];

/// Used when the host has no PATH.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a guest may run before it is stopped (override with MONITOR_VM_TIMEOUT, seconds).
const DEFAULT_TIMEOUT_SECS: u64 = 1800;

/// Runs `command` with /bin/sh, as root, in the workspace root inside the VM, with PATH (the
/// host's), HOME=/root, TERM=dumb and `env`. Its output streams to stdout. Returns its exit status.
pub fn run_in_vm(
    workspace_root: &Path,
    command: &str,
    env: &[(String, String)],
) -> anyhow::Result<i32> {
    let timeout = timeout()?;
    let cache = workspace_root.join("target/vm-cache");
    let kernel = kernel_version(&cache)?;
    let files = unpacked(&cache, &kernel)?;
    check_host_libraries(&files)?;

    let work = workspace_root.join("target/vm-work");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let work_arg = work
        .to_str()
        .filter(|p| !p.contains(|c: char| c.is_whitespace() || c == '"'))
        .with_context(|| {
            format!(
                "{} cannot go on a kernel command line (spaces, quotes or not UTF-8)",
                work.display()
            )
        })?;
    // The command, its environment and later its exit status travel through this directory.
    let run = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&work)
        .with_context(|| format!("creating a run directory in {}", work.display()))?;
    fs::write(
        run.path().join("script"),
        guest_script(workspace_root, command, env)?,
    )
    .context("writing the guest's script")?;

    let mut initrd = tempfile::NamedTempFile::new_in(&files).context("creating the initramfs")?;
    initrd
        .write_all(&initramfs(&files, &kernel)?)
        .context("writing the initramfs")?;

    let mut qemu = Command::new(files.join("usr/bin/qemu-system-x86_64"));
    qemu.arg("-L")
        .arg(files.join("usr/share/qemu"))
        .args(["-L", SEABIOS_DIR])
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "3G"])
        .args(["-nic", "none", "-no-reboot", "-display", "none"])
        .args(["-monitor", "none", "-serial", "stdio"])
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=work,security_model=none,multidevs=remap",
            work_arg.replace(',', ",,")
        ))
        .arg("-kernel")
        .arg(files.join(kernel_image(&kernel)))
        .arg("-initrd")
        .arg(initrd.path())
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet loglevel=5 panic=-1 -- {work_arg} {}",
            run.path().display()
        ));
    eprintln!("vm: booting Linux {kernel} under QEMU (TCG)");
    boot(qemu, timeout)?;

    let status = fs::read_to_string(run.path().join("status"))
        .context("the guest powered off without reporting an exit status (its console is above)")?;
    status
        .trim()
        .parse()
        .with_context(|| format!("the guest reported the exit status {status:?}"))
}

/// The host's `CI`, `RUST_BACKTRACE`, `RUST_LOG` and `MONITOR_*` variables, for the guest.
pub fn forwarded_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(name, _)| FORWARDED_ENV.contains(&name.as_str()) || name.starts_with("MONITOR_"))
        .collect()
}

/// Installs the [`HOST_PACKAGES`] that are not installed yet (a step of `cargo xtask setup`).
pub fn ensure_host_packages() -> anyhow::Result<()> {
    let query = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Status}\n"])
        .args(HOST_PACKAGES)
        .stderr(Stdio::null())
        .output()
        .context("running dpkg-query")?;
    let listed = String::from_utf8_lossy(&query.stdout);
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .copied()
        .filter(|package| !listed.lines().any(|l| l == format!("{package} installed")))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    crate::apt_install(
        "QEMU's libraries and firmware (for `cargo xtask vm`)",
        &missing,
    )
}

/// The version `linux-image-amd64` currently points to, e.g. `6.1.0-57-amd64`. `apt-cache`
/// takes well over a second here (apt's binary cache is turned off), so the answer is kept in
/// `cache` with the modification time of apt's lists directory, which `apt-get update` changes
/// when it brings new lists.
fn kernel_version(cache: &Path) -> anyhow::Result<String> {
    let record = cache.join("kernel-version");
    let known = fs::read_to_string(&record).unwrap_or_default();
    if let Some((stamp, version)) = known.trim().split_once(' ') {
        if stamp == apt_lists_stamp() {
            return Ok(version.to_string());
        }
    }
    let lookup = || {
        crate::output("apt-cache", &["depends", "linux-image-amd64"])?
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
            .map(str::to_string)
    };
    let version = match lookup() {
        Some(version) => version,
        None => {
            apt_get_update()?;
            lookup()
                .context("apt-cache depends linux-image-amd64 names no linux-image-<version>")?
        }
    };
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    fs::write(&record, format!("{} {version}\n", apt_lists_stamp()))
        .with_context(|| format!("writing {}", record.display()))?;
    Ok(version)
}

/// When apt's package lists last changed (nanoseconds since the epoch; empty when unknown).
fn apt_lists_stamp() -> String {
    fs::metadata(APT_LISTS)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().to_string())
        .unwrap_or_default()
}

/// The kernel QEMU boots: the uncompressed ELF taken out of the package's bzImage.
fn kernel_image(kernel: &str) -> String {
    format!("boot/vmlinux-{kernel}")
}

fn module_path(kernel: &str, module: &str) -> String {
    format!("lib/modules/{kernel}/kernel/{module}.ko")
}

/// The cache directory holding QEMU, the kernel, busybox and the modules for `kernel`:
/// downloaded and unpacked on first use, then reused. Caches of other kernels are removed.
fn unpacked(cache: &Path, kernel: &str) -> anyhow::Result<PathBuf> {
    let dir = cache.join(kernel);
    // It is renamed into place only once whole, so the kernel shows it is complete (and laid out
    // as this code expects).
    if dir.join(kernel_image(kernel)).is_file() {
        return Ok(dir);
    }
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    eprintln!(
        "vm: downloading QEMU and Linux {kernel} into {}",
        cache.display()
    );
    let staging = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(cache)
        .context("creating a staging directory")?;
    let mut packages: Vec<String> = UNPACKED_PACKAGES.iter().map(|p| p.to_string()).collect();
    packages.push(format!("linux-image-{kernel}"));
    download(staging.path(), &packages)?;

    let root = staging.path().join("root");
    for entry in fs::read_dir(staging.path())? {
        let deb = entry?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            let status = Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(&root)
                .status()
                .context("running dpkg-deb")?;
            if !status.success() {
                bail!("dpkg-deb -x {} failed ({status})", deb.display());
            }
        }
    }

    let kept = staging.path().join("kept");
    let module_paths = MODULES.iter().map(|m| module_path(kernel, m));
    for path in KEPT_PATHS.iter().map(|p| p.to_string()).chain(module_paths) {
        let to = kept.join(&path);
        fs::create_dir_all(to.parent().expect("kept paths are relative"))?;
        fs::rename(root.join(&path), &to)
            .with_context(|| format!("the unpacked packages have no {path}"))?;
    }
    let bzimage = root.join(format!("boot/vmlinuz-{kernel}"));
    decompress_kernel(&bzimage, &kept.join(kernel_image(kernel)))?;
    if dir.is_dir() && !dir.join(kernel_image(kernel)).is_file() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    // A run that raced this one may have put its copy in place first; both are the same.
    if let Err(e) = fs::rename(&kept, &dir) {
        if !dir.join(kernel_image(kernel)).is_file() {
            return Err(e).with_context(|| format!("moving the cache into {}", dir.display()));
        }
    }

    for entry in fs::read_dir(cache)? {
        let entry = entry?;
        let name = entry.file_name();
        let old = name != kernel && !name.to_string_lossy().starts_with('.');
        if old && entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing the old cache {}", entry.path().display()))?;
        }
    }
    Ok(dir)
}

/// Writes the ELF kernel inside `bzimage` to `vmlinux`, for QEMU to boot through its PVH entry
/// point: the bzImage's own decompressor takes about 4 s under TCG, `xz` on the host under 1 s.
fn decompress_kernel(bzimage: &Path, vmlinux: &Path) -> anyhow::Result<()> {
    let image = fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    // x86 boot protocol: setup_sects at 0x1f1, "HdrS" at 0x202, and (since 2.08) the compressed
    // payload's offset from the protected-mode code at 0x248 and its length at 0x24c.
    let le32 = |at: usize| -> Option<usize> {
        let bytes = image.get(at..at + 4)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(bytes)).ok()
    };
    let setup_sectors = match image.get(0x1f1) {
        Some(0) => 4,
        Some(&sectors) => usize::from(sectors),
        None => 0,
    };
    let payload = (image.get(0x202..0x206) == Some(b"HdrS"))
        .then(|| {
            let start = (setup_sectors + 1) * 512 + le32(0x248)?;
            image.get(start..start + le32(0x24c)?)
        })
        .flatten()
        .filter(|payload| payload.starts_with(b"\xfd7zXZ\0"))
        .with_context(|| format!("{} holds no xz-compressed kernel", bzimage.display()))?;

    fs::create_dir_all(vmlinux.parent().expect("a file in a directory"))?;
    let output =
        fs::File::create(vmlinux).with_context(|| format!("creating {}", vmlinux.display()))?;
    // The payload ends with the kernel's size, after the xz stream.
    let mut xz = Command::new("xz")
        .args(["--decompress", "--single-stream", "--stdout"])
        .stdin(Stdio::piped())
        .stdout(output)
        .spawn()
        .context("running xz (`cargo xtask setup` installs xz-utils)")?;
    xz.stdin
        .take()
        .expect("stdin is piped")
        .write_all(payload)
        .context("feeding xz")?;
    let status = xz.wait().context("waiting for xz")?;
    if !status.success() {
        bail!(
            "xz could not decompress the kernel in {} ({status})",
            bzimage.display()
        );
    }
    Ok(())
}

/// `apt-get download`s `packages` into `dir`, updating the package lists once if that fails.
fn download(dir: &Path, packages: &[String]) -> anyhow::Result<()> {
    let attempt = || {
        Command::new("apt-get")
            .arg("download")
            .args(packages)
            .current_dir(dir)
            .output()
            .context("running apt-get download")
    };
    if attempt()?.status.success() {
        return Ok(());
    }
    apt_get_update()?;
    let retried = attempt()?;
    if !retried.status.success() {
        bail!(
            "apt-get download {} failed: {}",
            packages.join(" "),
            String::from_utf8_lossy(&retried.stderr).trim()
        );
    }
    Ok(())
}

fn apt_get_update() -> anyhow::Result<()> {
    crate::run_step(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )
}

/// Fails, naming `cargo xtask setup`, when a library the unpacked QEMU links against or the
/// BIOS it boots is missing on the host.
fn check_host_libraries(files: &Path) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for binary in [
        "usr/bin/qemu-system-x86_64",
        "usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so",
    ] {
        let ldd = Command::new("ldd")
            .arg(files.join(binary))
            .output()
            .context("running ldd")?;
        missing.extend(
            String::from_utf8_lossy(&ldd.stdout)
                .lines()
                .filter(|l| l.contains("=> not found"))
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string),
        );
    }
    let bios = Path::new(SEABIOS_DIR).join("bios-256k.bin");
    if !bios.exists() {
        missing.push(bios.display().to_string());
    }
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        bail!(
            "QEMU needs {} on this host: run `cargo xtask setup`, which installs its packages",
            missing.join(", ")
        );
    }
    Ok(())
}

/// The script the guest runs: the environment, `cd` to the workspace, then `command` as given.
fn guest_script(
    workspace_root: &Path,
    command: &str,
    env: &[(String, String)],
) -> anyhow::Result<String> {
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
    let mut script = String::new();
    for (name, value) in [("PATH", path.as_str()), ("HOME", "/root"), ("TERM", "dumb")]
        .into_iter()
        .chain(env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    {
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            bail!("{name:?} is not an environment variable name");
        }
        writeln!(script, "export {name}={}", shell_quote(value))?;
    }
    let root = workspace_root
        .to_str()
        .context("the workspace path is not UTF-8")?;
    writeln!(script, "cd {} || exit 125", shell_quote(root))?;
    writeln!(script, "{command}")?;
    Ok(script)
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The guest's initramfs, an uncompressed newc cpio archive (the kernel takes it as is; about
/// 3.5 MB): busybox, the init script and the modules, named `NN-name.ko` in load order. Built
/// anew for every boot (milliseconds), so it always holds the current `xtask/vm/init`.
fn initramfs(files: &Path, kernel: &str) -> anyhow::Result<Vec<u8>> {
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "modules", "newroot", "proc", "sys"] {
        cpio.entry(dir, 0o040_755, (0, 0), &[]);
    }
    // The console the kernel opens as init's stdin, stdout and stderr.
    cpio.entry("dev/console", 0o020_600, (5, 1), &[]);
    cpio.entry("init", 0o100_755, (0, 0), INIT.as_bytes());
    let busybox = files.join("bin/busybox");
    let busybox = fs::read(&busybox).with_context(|| format!("reading {}", busybox.display()))?;
    cpio.entry("bin/busybox", 0o100_755, (0, 0), &busybox);
    for (index, module) in MODULES.iter().enumerate() {
        let path = files.join(module_path(kernel, module));
        let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let name = module.rsplit('/').next().unwrap_or(module);
        cpio.entry(
            &format!("modules/{index:02}-{name}.ko"),
            0o100_644,
            (0, 0),
            &data,
        );
    }
    Ok(cpio.finish())
}

/// Writes the "newc" cpio format the kernel unpacks into its initial root filesystem.
#[derive(Default)]
struct Cpio {
    archive: Vec<u8>,
    inodes: u32,
}

impl Cpio {
    /// One entry: `mode` holds the file type bits, `device` is (major, minor) for device nodes.
    fn entry(&mut self, name: &str, mode: u32, device: (u32, u32), data: &[u8]) {
        self.inodes += 1;
        let fields = [
            self.inodes,
            mode,
            0, // uid
            0, // gid
            1, // links
            0, // mtime
            u32::try_from(data.len()).expect("initramfs files are small"),
            0, // device major
            0, // device minor
            device.0,
            device.1,
            u32::try_from(name.len() + 1).expect("short names"),
            0, // checksum
        ];
        self.archive.extend_from_slice(b"070701");
        for field in fields {
            self.archive
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.archive.extend_from_slice(name.as_bytes());
        self.archive.push(0);
        self.pad();
        self.archive.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.archive.len() % 4 != 0 {
            self.archive.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.archive
    }
}

/// MONITOR_VM_TIMEOUT seconds, or the default.
fn timeout() -> anyhow::Result<Duration> {
    let seconds = match std::env::var("MONITOR_VM_TIMEOUT") {
        Ok(value) => value
            .parse()
            .with_context(|| format!("MONITOR_VM_TIMEOUT={value:?} is not a number of seconds"))?,
        Err(_) => DEFAULT_TIMEOUT_SECS,
    };
    Ok(Duration::from_secs(seconds))
}

/// Runs QEMU until the guest powers off, copying its serial console to stdout as it comes
/// (without the terminal's carriage returns). A guest still running after `timeout` is killed.
fn boot(mut qemu: Command, timeout: Duration) -> anyhow::Result<()> {
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {:?}", qemu.get_program()))?;
    let mut console = child.stdout.take().expect("stdout is piped");
    let copier = thread::spawn(move || -> std::io::Result<()> {
        let mut buffer = [0; 8192];
        let mut stdout = std::io::stdout();
        loop {
            let read = console.read(&mut buffer)?;
            if read == 0 {
                return Ok(());
            }
            let text: Vec<u8> = buffer[..read]
                .iter()
                .copied()
                .filter(|&b| b != b'\r')
                .collect();
            stdout.write_all(&text)?;
            stdout.flush()?;
        }
    });

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the VM was still running after {} s (MONITOR_VM_TIMEOUT); QEMU was stopped",
                timeout.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    copier
        .join()
        .expect("the console copier does not panic")
        .context("copying the guest's console")?;
    if !status.success() {
        bail!("QEMU failed ({status})");
    }
    Ok(())
}
