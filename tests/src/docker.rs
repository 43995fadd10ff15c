//! A Docker daemon of the tests' own: one per test process, started on first use and stopped
//! when the process exits, with its own data root, exec root, socket, containerd namespace and
//! bridge, and told to leave the host's firewall and forwarding alone (`--iptables=false`,
//! `--ip-forward=false`), so the other tests' namespaces keep working. Images are made here from
//! the machine's static busybox (`docker import`): nothing is pulled from a registry.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

/// The bridge the daemon's containers sit on, and the host's address on it (a sink listening
/// there is reachable from every container, and from nothing else).
pub const BRIDGE: &str = "montest0";
pub const BRIDGE_HOST: &str = "10.213.7.1";
const BRIDGE_CIDR: &str = "10.213.7.1/24";
/// The image `busybox_image` makes.
pub const IMAGE: &str = "monitor-test/busybox:1";

pub struct Daemon {
    pub socket: PathBuf,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

static DAEMON: OnceLock<Daemon> = OnceLock::new();
static IMAGE_MADE: OnceLock<()> = OnceLock::new();

/// The test process's daemon, started if needed (fails loudly when Docker is not installed).
pub fn daemon() -> &'static Daemon {
    DAEMON.get_or_init(start)
}

fn run_ok(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start() -> Daemon {
    crate::require_root();
    assert!(
        Command::new("dockerd")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "dockerd is not installed (`cargo xtask setup` installs docker.io)"
    );
    let dir = PathBuf::from(format!(
        "/var/lib/monitor-tests/dockerd-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("daemon directory");
    // Our own bridge, so the daemon neither makes nor touches docker0.
    let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
    run_ok(&["ip", "link", "add", BRIDGE, "type", "bridge"]);
    run_ok(&["ip", "addr", "add", BRIDGE_CIDR, "dev", BRIDGE]);
    run_ok(&["ip", "link", "set", BRIDGE, "up"]);
    let socket = dir.join("docker.sock");
    let log = std::fs::File::create(dir.join("dockerd.log")).expect("daemon log");
    let child = Command::new("dockerd")
        .arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("dockerd.pid"))
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args([
            "--containerd-namespace",
            "monitor-tests",
            "--containerd-plugins-namespace",
            "monitor-tests-plugins",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            "--bridge",
            BRIDGE,
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting dockerd");
    let daemon = Daemon {
        socket,
        dir,
        child: Mutex::new(Some(child)),
    };
    // SAFETY: registering a plain extern "C" function to run at process exit.
    unsafe { libc::atexit(stop_at_exit) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if daemon
            .docker(&["version", "--format", "{{.Server.Version}}"])
            .status
            .success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dockerd did not answer in 60 s:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon
}

extern "C" fn stop_at_exit() {
    if let Some(daemon) = DAEMON.get() {
        daemon.stop();
    }
}

impl Daemon {
    /// `docker` against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .expect("running docker")
    }

    /// `docker ...`, which must succeed; its standard output.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `DOCKER_HOST` a job's steps use to reach this daemon.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// The containerd socket dockerd started for itself (in its exec root): `ctr` reaches the
    /// same daemon's containers through it, without Docker's API.
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("exec/containerd/containerd.sock")
    }

    /// A busybox image (`IMAGE`) made from the machine's static busybox, once per process.
    pub fn busybox_image(&self) -> &'static str {
        IMAGE_MADE.get_or_init(|| {
            let root = busybox_rootfs();
            let tar = root.path().with_extension("tar");
            run_ok(&[
                "tar",
                "-C",
                &root.path().display().to_string(),
                "-cf",
                &tar.display().to_string(),
                ".",
            ]);
            self.docker_ok(&["import", &tar.display().to_string(), IMAGE]);
            let _ = std::fs::remove_file(&tar);
        });
        IMAGE
    }

    fn stop(&self) {
        let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) else {
            return;
        };
        // Containers first, so their mounts go with them.
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        // Networks a test made (their bridges go with them).
        let _ = self.docker(&["network", "prune", "-f"]);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
        remove_tree(&self.dir);
    }
}

/// A root file system of the machine's static busybox (`sh`, `cat`, ... and a file of its own,
/// `/data/own.txt`), for an image or for a runtime given a root directly (`ctr run --rootfs`).
pub fn busybox_rootfs() -> tempfile::TempDir {
    let root = crate::tempdir_outside_tmp();
    let r = root.path();
    for d in ["bin", "etc", "tmp", "root", "data", "proc", "sys", "dev"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).expect("/bin/busybox (busybox-static)");
    for applet in [
        "sh", "cat", "ls", "sleep", "echo", "nc", "wget", "env", "httpd", "grep", "head", "sed",
        "id", "test", "cp", "mkdir", "printf", "true",
    ] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
    }
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(r.join("data/own.txt"), "the container's own file\n").unwrap();
    root
}

/// Removes the daemon's directory, unmounting what it left mounted there first.
fn remove_tree(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut under: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&*dir.to_string_lossy()))
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in under {
        let _ = Command::new("umount").args(["-l", m]).output();
    }
    let _ = std::fs::remove_dir_all(dir);
}
