//! `cargo xtask bench`: what the agent costs the build it watches, next to what users would
//! otherwise install to see the same syscalls: auditd (rules for exec, connect, open, fork) and
//! bpftrace (the equivalent tracepoints, printing every event).
//!
//! Each round runs every workload under each tool in turn (nothing, this monitor, auditd,
//! bpftrace; the order rotates every round so drift does not favour one), and medians over the
//! rounds give the ratios. Per tool and workload it records the tool's CPU time, its events and
//! its dropped events; per tool its peak RSS. The raw samples are saved
//! (`docs/benchmarks/results.json`, with the auditd rules and bpftrace script used beside it) and
//! `docs/benchmarks.md` and `docs/benchmarks.png` are written from them;
//! `cargo xtask bench --replot` redraws both from the saved samples without running anything.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::output;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Number of rounds (each runs every workload under every tool).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Scale every workload (1.0 = default sizes).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Only nothing vs this monitor (no auditd, no bpftrace; writes no docs).
    #[arg(long)]
    monitor_only: bool,
    /// Redraw docs/benchmarks.md and .png from the saved results without running anything.
    #[arg(long)]
    replot: bool,
}

struct Workload {
    name: &'static str,
    run: Box<dyn Fn(&Path) -> anyhow::Result<()>>,
    /// The operations it makes that some tools are meant to record (a tool recording fewer
    /// than half of them did not watch the workload: its ratio is not printed).
    watch: Option<Watch>,
}

/// Operations a workload makes, and the tools meant to record each of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Watch {
    ops: u64,
    by: Vec<Tool>,
}

/// All the peers: the monitor (when it watches what the workload touches), auditd's rules and
/// bpftrace's script (exec, connect, every open, fork).
fn watched_by(monitor: bool) -> Vec<Tool> {
    let mut by = vec![Tool::Auditd, Tool::Bpftrace];
    if monitor {
        by.push(Tool::Monitor);
    }
    by
}

fn scaled(n: usize, scale: f64) -> usize {
    ((n as f64 * scale) as usize).max(1)
}

/// The workloads; the builds (npm install, cargo build) work in `builds`, a directory in memory:
/// on disk each of their runs took the time ext4 spent finding inodes for its new files among
/// those the run before had deleted seconds earlier (`recently_deleted` and the inode bitmap
/// scan led a profile; npm install with nothing watching took 1.4 to 3.5 s on disk, run after
/// run, and 1.0 to 1.3 s in memory), which buried every tool's cost.
fn workloads(scale: f64, builds: &Path) -> Vec<Workload> {
    let npm_root = builds.join("npm-tree");
    let npm_cache = builds.join("npm-cache");
    let krate = builds.join("bench-crate");
    let execs = scaled(2000, scale);
    let opens = scaled(200_000, scale);
    let watched = scaled(20_000, scale);
    let connects = scaled(3000, scale);
    let renames = scaled(50_000, scale);
    vec![
        Workload {
            name: "exec storm",
            watch: Some(Watch {
                ops: execs as u64,
                by: watched_by(true),
            }),
            run: Box::new(move |_| {
                for _ in 0..execs {
                    let status = Command::new("/bin/true").status()?;
                    if !status.success() {
                        bail!("/bin/true failed");
                    }
                }
                Ok(())
            }),
        },
        Workload {
            name: "open storm (unwatched dir)",
            watch: Some(Watch {
                ops: opens as u64,
                by: watched_by(false),
            }),
            run: Box::new(move |dir| {
                let file = dir.join("unwatched.txt");
                std::fs::write(&file, "x")?;
                for _ in 0..opens {
                    drop(std::fs::File::open(&file)?);
                }
                Ok(())
            }),
        },
        Workload {
            name: "open storm (watched file)",
            watch: Some(Watch {
                ops: watched as u64,
                by: watched_by(true),
            }),
            run: Box::new(move |dir| {
                let file = dir.join(".npmrc");
                std::fs::write(&file, "x")?;
                for _ in 0..watched {
                    drop(std::fs::File::open(&file)?);
                }
                Ok(())
            }),
        },
        Workload {
            // What `sed -i`, editors and package stores do all the time: a temporary file
            // renamed over another (the name hooks' cost on names nobody watches).
            name: "rename storm (unwatched)",
            watch: None,
            run: Box::new(move |dir| {
                let (a, b) = (dir.join("a.tmp"), dir.join("b.txt"));
                std::fs::write(&a, "x")?;
                for _ in 0..renames {
                    std::fs::rename(&a, &b)?;
                    std::fs::rename(&b, &a)?;
                }
                Ok(())
            }),
        },
        Workload {
            // Build tools make and delete temporary files by the thousand: the unlink hooks'
            // cost on names nobody watches (with the open of each file).
            name: "unlink storm (unwatched)",
            watch: Some(Watch {
                ops: renames as u64,
                by: watched_by(false),
            }),
            run: Box::new(move |_| {
                // In memory (tmpfs): on disk each round's time was mostly the file system's
                // write-back (0.7 s to 19 s for the same 50,000 files with nothing watching).
                let shm = tempfile::tempdir_in("/dev/shm")?;
                let gone = shm.path().join("gone.tmp");
                for _ in 0..renames {
                    std::fs::write(&gone, "x")?;
                    std::fs::remove_file(&gone)?;
                }
                Ok(())
            }),
        },
        Workload {
            name: "connect storm (loopback)",
            watch: Some(Watch {
                ops: connects as u64,
                by: watched_by(true),
            }),
            run: Box::new(move |_| {
                // Connect and accept in lockstep: an acceptor thread that falls behind lets the
                // backlog overflow, and the dropped SYNs wait a 1 s retransmit (measured: 1.06 s
                // vs 0.05 s), which would time TCP, not the probes.
                let listener = TcpListener::bind("127.0.0.1:0")?;
                let addr = listener.local_addr()?;
                for _ in 0..connects {
                    let stream = TcpStream::connect(addr)?;
                    let (accepted, _) = listener.accept()?;
                    drop(stream);
                    drop(accepted);
                }
                Ok(())
            }),
        },
        Workload {
            // The same connects, each to the next of 64 loopback listeners in turn: no two
            // consecutive connects are identical, so the monitor writes and judges each one
            // (the storm above is one destination again and again, which it writes as a run:
            // docs/events.md, `repeats`).
            name: "connect storm (64 ports in turn)",
            watch: Some(Watch {
                ops: connects as u64,
                by: watched_by(true),
            }),
            run: Box::new(move |_| {
                let listeners = (0..64)
                    .map(|_| TcpListener::bind("127.0.0.1:0"))
                    .collect::<Result<Vec<_>, _>>()?;
                let addrs = listeners
                    .iter()
                    .map(TcpListener::local_addr)
                    .collect::<Result<Vec<_>, _>>()?;
                for i in 0..connects {
                    let k = i % listeners.len();
                    let stream = TcpStream::connect(addrs[k])?;
                    let (accepted, _) = listeners[k].accept()?;
                    drop(stream);
                    drop(accepted);
                }
                Ok(())
            }),
        },
        Workload {
            name: "npm install (local tree)",
            watch: None,
            run: Box::new(move |_| {
                let app = npm_root.join("app");
                if !app.exists() {
                    write_npm_tree(&npm_root)?;
                }
                let _ = std::fs::remove_dir_all(app.join("node_modules"));
                let _ = std::fs::remove_file(app.join("package-lock.json"));
                let out = Command::new("npm")
                    .args([
                        "install",
                        "--offline",
                        "--no-audit",
                        "--no-fund",
                        "--loglevel=error",
                    ])
                    .current_dir(&app)
                    .env("NPM_CONFIG_UPDATE_NOTIFIER", "false")
                    .env("npm_config_cache", &npm_cache)
                    .output()?;
                if !out.status.success() {
                    bail!(
                        "npm install failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                Ok(())
            }),
        },
        Workload {
            name: "cargo build (small crate)",
            watch: None,
            run: Box::new(move |_| {
                if !krate.exists() {
                    write_bench_crate(&krate)?;
                }
                let _ = std::fs::remove_dir_all(krate.join("target"));
                let out = Command::new("cargo")
                    .args(["build", "--offline", "--quiet"])
                    .current_dir(&krate)
                    .env_remove("RUSTC_BOOTSTRAP")
                    .output()?;
                if !out.status.success() {
                    bail!(
                        "bench crate build failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                Ok(())
            }),
        },
    ]
}

/// A dependency-free crate with a build script and enough code to take a few seconds.
fn write_bench_crate(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"bench-crate\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )?;
    std::fs::write(
        dir.join("build.rs"),
        "fn main() { println!(\"cargo:rerun-if-changed=build.rs\"); }\n",
    )?;
    let mut lib = String::new();
    for m in 0..40 {
        lib.push_str(&format!("pub mod m{m} {{\n"));
        for f in 0..25 {
            lib.push_str(&format!(
                "    pub fn f{f}(x: &[u64]) -> u64 {{ x.iter().enumerate().map(|(i, v)| v.wrapping_mul(i as u64 + {f})).fold({m}, |a, b| a ^ b.rotate_left({f})) }}\n"
            ));
        }
        lib.push_str("}\n");
    }
    std::fs::write(dir.join("src/lib.rs"), lib)?;
    Ok(())
}

/// An app depending on 40 local packages (tarballs made by `npm pack`, 20 files each; two with
/// install scripts, as native modules have), installed without any registry.
fn write_npm_tree(root: &Path) -> anyhow::Result<()> {
    let packages = root.join("packages");
    let tarballs = root.join("tarballs");
    std::fs::create_dir_all(&tarballs)?;
    let mut deps = Vec::new();
    for p in 0..40 {
        let name = format!("bench-dep-{p}");
        let dir = packages.join(&name);
        std::fs::create_dir_all(dir.join("lib"))?;
        let scripts = if p % 20 == 0 {
            r#","scripts":{"postinstall":"node -e \"require('fs').writeFileSync('built','ok')\""}"#
        } else {
            ""
        };
        std::fs::write(
            dir.join("package.json"),
            format!(r#"{{"name":"{name}","version":"1.0.0","main":"lib/f0.js"{scripts}}}"#),
        )?;
        for f in 0..20 {
            std::fs::write(
                dir.join(format!("lib/f{f}.js")),
                format!("module.exports = function f{f}(x) {{ return x * {f} + {p}; }};\n"),
            )?;
        }
        let out = Command::new("npm")
            .args(["pack", "--silent", "--pack-destination"])
            .arg(&tarballs)
            .current_dir(&dir)
            .output()?;
        if !out.status.success() {
            bail!("npm pack: {}", String::from_utf8_lossy(&out.stderr));
        }
        deps.push(format!(
            r#""{name}":"file:{}""#,
            tarballs.join(format!("{name}-1.0.0.tgz")).display()
        ));
    }
    std::fs::create_dir_all(root.join("app"))?;
    std::fs::write(
        root.join("app/package.json"),
        format!(
            r#"{{"name":"bench-app","version":"1.0.0","dependencies":{{{}}}}}"#,
            deps.join(",")
        ),
    )?;
    Ok(())
}

/// Timed runs of each workload per tool and round: three, and every ratio is the median
/// of all of them. One run per round moved by a quarter from round to round on a shared 2-core
/// machine (open storm with nothing watching: 0.98, 0.70, 0.71 s), the builds as much (cargo
/// build with nothing watching: 5.57, 4.85, 4.98 s; with one run a round the builds' ratios were
/// the noise's).
const REPEATS: usize = 3;

/// Timed runs per round of a workload that takes under `SHORT_SECONDS` (the connect storms,
/// 0.1 s; the watched-file open storm, 0.05 s): a run that short moves by a tenth from one run
/// to the next with nothing watching (0.099-0.122 s for the same 3,000 connects), as large as
/// the overhead it measures, and nine cost the round a few seconds.
const SHORT_REPEATS: usize = 9;
const SHORT_SECONDS: f64 = 0.3;

/// The run time of each of `programs` over one run of `workload`, with the kernel's statistics
/// on for that run only.
fn probe_run(
    workload: &Workload,
    dir: &Path,
    programs: &[u32],
) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    let on = crate::probe_time::StatsOn::new().map_err(anyhow::Error::msg)?;
    let before = crate::probe_time::programs();
    time(workload, dir)?;
    let after = crate::probe_time::programs();
    drop(on);
    // Its records are not counted against the timed run's (read before this run).
    std::thread::sleep(Duration::from_millis(500));
    Ok(crate::probe_time::spent(programs, &before, &after))
}

fn time(workload: &Workload, dir: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    (workload.run)(dir).with_context(|| workload.name)?;
    Ok(started.elapsed().as_secs_f64())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Tool {
    Nothing,
    Monitor,
    Auditd,
    Bpftrace,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::Nothing => "nothing",
            Tool::Monitor => "this monitor",
            Tool::Auditd => "auditd",
            Tool::Bpftrace => "bpftrace",
        }
    }
}

/// The audit rules: the syscalls the monitor watches (exec, connect, every open, fork).
const AUDIT_RULES: &[&str] = &[
    "-a always,exit -F arch=b64 -S execve,execveat -k bench-exec",
    "-a always,exit -F arch=b64 -S connect -k bench-connect",
    "-a always,exit -F arch=b64 -S open,openat,openat2,creat -F success=1 -k bench-open",
    "-a always,exit -F arch=b64 -S clone,clone3,fork,vfork -k bench-fork",
];

/// The bpftrace equivalent: the same tracepoints, each event printed with its process and
/// path or address (what one would write to watch a runner with bpftrace).
const BPFTRACE_SCRIPT: &str = r#"BEGIN { printf("ready\n"); }
tracepoint:syscalls:sys_enter_execve { printf("exec %d %s %s\n", pid, comm, str(args->filename)); }
tracepoint:syscalls:sys_enter_execveat { printf("exec %d %s %s\n", pid, comm, str(args->filename)); }
tracepoint:sched:sched_process_fork { printf("fork %d %d\n", args->parent_pid, args->child_pid); }
tracepoint:sched:sched_process_exit { printf("exit %d\n", pid); }
tracepoint:syscalls:sys_enter_connect { printf("connect %d %s\n", pid, comm); }
tracepoint:syscalls:sys_enter_openat { @path[tid] = args->filename; }
tracepoint:syscalls:sys_exit_openat /@path[tid]/ { if (args->ret >= 0) { printf("open %d %s %s\n", pid, comm, str(@path[tid])); } delete(@path[tid]); }
tracepoint:syscalls:sys_enter_open { @path[tid] = args->filename; }
tracepoint:syscalls:sys_exit_open /@path[tid]/ { if (args->ret >= 0) { printf("open %d %s %s\n", pid, comm, str(@path[tid])); } delete(@path[tid]); }
END { clear(@path); }
"#;

/// A tool watching the machine.
struct Running {
    tool: Tool,
    child: Option<Child>,
    /// Processes whose CPU is the tool's (the agent; auditd and the kernel's kauditd; bpftrace).
    pids: Vec<u32>,
    dir: PathBuf,
    metrics: Option<String>,
    /// auditd: how far its log has been counted, and the events counted so far.
    audit_read: std::cell::Cell<(u64, u64)>,
    /// The monitor: its BPF programs (ids).
    programs: Vec<u32>,
}

fn start(tool: Tool, bin: &Path, dir: &Path) -> anyhow::Result<Running> {
    let dir = dir.join(format!("{tool:?}").to_lowercase());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let wait = |what: &str, ready: &dyn Fn() -> bool, child: &mut Child| -> anyhow::Result<()> {
        while !ready() {
            if let Some(status) = child.try_wait()? {
                bail!("{what} exited before it was ready ({status})");
            }
            if Instant::now() > deadline {
                bail!("{what} not ready after 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    };
    let mut running = Running {
        tool,
        child: None,
        pids: Vec::new(),
        dir: dir.clone(),
        metrics: None,
        audit_read: Default::default(),
        programs: Vec::new(),
    };
    match tool {
        Tool::Nothing => {}
        Tool::Monitor => {
            let ready = dir.join("ready");
            let loaded_before = crate::probe_time::programs();
            let mut child = Command::new(bin)
                .args(["run", "--events"])
                .arg(dir.join("events.jsonl"))
                .arg("--ready-file")
                .arg(&ready)
                // Never take over a real agent's socket or port on this machine.
                .args([
                    "--no-control-socket",
                    "--no-reports",
                    "--metrics-address",
                    "127.0.0.1:0",
                ])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("agent.log"))?)
                .spawn()
                .context("starting the agent")?;
            wait("the agent", &|| ready.exists(), &mut child)?;
            // The programs loaded since are the agent's (nothing else loads any meanwhile).
            running.programs = crate::probe_time::programs()
                .into_keys()
                .filter(|id| !loaded_before.contains_key(id))
                .collect();
            let metrics = std::fs::read_to_string(&ready)?
                .lines()
                .find_map(|l| l.strip_prefix("metrics="))
                .map(str::to_string);
            running.pids = vec![child.id()];
            running.child = Some(child);
            running.metrics = metrics;
        }
        Tool::Auditd => {
            let conf = std::fs::read_to_string("/etc/audit/auditd.conf")
                .context("auditd is not installed (/etc/audit/auditd.conf)")?;
            let log = dir.join("audit.log");
            let conf: String = conf
                .lines()
                .map(|l| {
                    let key = l.split('=').next().unwrap_or("").trim();
                    if key == "log_file" {
                        format!("log_file = {}", log.display())
                    } else if key == "max_log_file_action" {
                        // One growing file, so every record is counted (no rotation away).
                        "max_log_file_action = ignore".to_string()
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            let conf_dir = dir.join("conf");
            std::fs::create_dir_all(&conf_dir)?;
            std::fs::write(conf_dir.join("auditd.conf"), conf + "\n")?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                conf_dir.join("auditd.conf"),
                std::fs::Permissions::from_mode(0o600),
            )?;
            let mut child = Command::new("auditd")
                .args(["-n", "-c"])
                .arg(&conf_dir)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("auditd.err"))?)
                .spawn()
                .context("starting auditd")?;
            let id = child.id();
            wait(
                "auditd",
                &|| output("auditctl", &["-s"]).is_some_and(|s| s.contains(&format!("pid {id}"))),
                &mut child,
            )?;
            auditctl(&["-D"])?;
            auditctl(&["-b", "8192"])?;
            for rule in AUDIT_RULES {
                auditctl(&rule.split_whitespace().collect::<Vec<_>>())?;
            }
            let mut pids = vec![child.id()];
            pids.extend(pids_named("kauditd"));
            running.pids = pids;
            running.child = Some(child);
        }
        Tool::Bpftrace => {
            let script = dir.join("bench.bt");
            std::fs::write(&script, BPFTRACE_SCRIPT)?;
            let out = dir.join("bpftrace.out");
            let mut child = Command::new("bpftrace")
                .arg("-o")
                .arg(&out)
                .arg(&script)
                .env("BPFTRACE_STRLEN", "200")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("bpftrace.err"))?)
                .spawn()
                .context("starting bpftrace (apt-get install bpftrace)")?;
            wait(
                "bpftrace",
                &|| std::fs::read_to_string(&out).is_ok_and(|t| t.contains("ready\n")),
                &mut child,
            )?;
            running.pids = vec![child.id()];
            running.child = Some(child);
        }
    }
    Ok(running)
}

fn auditctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("auditctl").args(args).output()?;
    if !out.status.success() {
        bail!(
            "auditctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn pids_named(comm: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// (cpu seconds, peak RSS KiB) of a live process.
fn cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are stat fields 14 and 15: indexes 11 and 12 after the comm.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (ticks as f64 / 100.0, hwm)
}

/// What a tool has done so far: (cpu seconds, peak RSS KiB, events, dropped events, the
/// monitor's drops by cause).
fn counters(r: &Running) -> (f64, u64, u64, u64, BTreeMap<String, u64>) {
    let (mut cpu, mut rss) = (0.0, 0);
    for pid in &r.pids {
        let (c, m) = cpu_and_rss(*pid);
        cpu += c;
        rss = rss.max(m);
    }
    let mut by_cause = BTreeMap::new();
    let (events, drops) = match r.tool {
        Tool::Nothing => (0, 0),
        Tool::Monitor => {
            let text = r
                .metrics
                .as_deref()
                .and_then(|a| http_get(&format!("http://{a}/metrics")).ok())
                .unwrap_or_default();
            by_cause = samples_by_label(&text, "monitor_events_dropped_total", "cause");
            (
                sum_samples(&text, "monitor_events_total"),
                sum_samples(&text, "monitor_events_dropped_total"),
            )
        }
        Tool::Auditd => {
            // Records carry `msg=audit(<time>:<serial>)`; an event's records are adjacent and
            // share the serial. Only what was appended since the last count is read.
            let (offset, mut counted) = r.audit_read.get();
            let mut log = Vec::new();
            if let Ok(mut f) = std::fs::File::open(r.dir.join("audit.log")) {
                use std::io::{Read as _, Seek as _};
                let _ = f.seek(std::io::SeekFrom::Start(offset));
                let _ = f.read_to_end(&mut log);
            }
            // Count complete lines only; a half-written one is read next time.
            let complete = log.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            let mut last = String::new();
            for line in String::from_utf8_lossy(&log[..complete]).lines() {
                if let Some(serial) = line
                    .split("msg=audit(")
                    .nth(1)
                    .and_then(|r| r.split(')').next())
                {
                    if serial != last {
                        counted += 1;
                        last = serial.to_string();
                    }
                }
            }
            r.audit_read.set((offset + complete as u64, counted));
            let lost = output("auditctl", &["-s"])
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("lost ")?.trim().parse().ok())
                })
                .unwrap_or(0);
            (counted, lost)
        }
        Tool::Bpftrace => {
            let out = std::fs::read_to_string(r.dir.join("bpftrace.out")).unwrap_or_default();
            let err = std::fs::read_to_string(r.dir.join("bpftrace.err")).unwrap_or_default();
            let events = out.lines().filter(|l| !l.starts_with("Lost ")).count() as u64;
            // "Lost N events" lines, in either stream.
            let lost = out
                .lines()
                .chain(err.lines())
                .filter_map(|l| {
                    l.strip_prefix("Lost ")?
                        .split_whitespace()
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum();
            (events, lost)
        }
    };
    (cpu, rss, events, drops, by_cause)
}

/// The samples of `name` summed by the value of their `label` (drops by cause: a ring that was
/// full and a group refused its fair share are different stories).
fn samples_by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let key = format!("{label}=\"");
    for l in text
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
    {
        let rest = &l[name.len()..];
        let Some(value) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let Some(at) = rest.find(&key) else { continue };
        let cause = rest[at + key.len()..].split('"').next().unwrap_or("");
        *out.entry(cause.to_string()).or_default() += value as u64;
    }
    out
}

fn sum_samples(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn http_get(url: &str) -> anyhow::Result<String> {
    let rest = url.strip_prefix("http://").context("http only")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut conn = TcpStream::connect(host)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(conn, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut body = String::new();
    std::io::Read::read_to_string(&mut conn, &mut body)?;
    Ok(body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

fn stop(r: Running) -> anyhow::Result<()> {
    if r.tool == Tool::Auditd {
        // Leave the machine's audit state as it was: no rules, auditing off.
        let _ = auditctl(&["-D"]);
        let _ = auditctl(&["-e", "0"]);
    }
    if let Some(mut child) = r.child {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&r.dir);
    Ok(())
}

/// One measurement: a workload under a tool in a round.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sample {
    round: usize,
    tool: Tool,
    workload: String,
    seconds: f64,
    tool_cpu_seconds: f64,
    events: u64,
    dropped: u64,
    /// The monitor's drops by cause (`monitor_events_dropped_total`'s `cause`).
    #[serde(default)]
    dropped_by_cause: BTreeMap<String, u64>,
    /// The monitor: time its BPF programs ran during the workload (ns) and how often, per
    /// program (the kernel's own statistics).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    probes: BTreeMap<String, (u64, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Results {
    /// When and where it ran.
    machine: BTreeMap<String, String>,
    rounds: usize,
    scale: f64,
    tools: Vec<Tool>,
    workloads: Vec<String>,
    samples: Vec<Sample>,
    /// Peak RSS of each tool's process over the whole run, KiB.
    peak_rss_kib: BTreeMap<String, u64>,
    audit_rules: Vec<String>,
    bpftrace_script: String,
    /// What recording a job's run in the baseline costs (absent in older results).
    #[serde(default)]
    baseline: Option<BaselineCost>,
    /// Per workload, the operations some tools are meant to record (absent in older results).
    #[serde(default)]
    watch: BTreeMap<String, Watch>,
}

/// The baseline's cost at a job's end, measured on the SQLite store (docs/baseline.md).
#[derive(Debug, Serialize, Deserialize, Clone)]
struct BaselineCost {
    runs: usize,
    behaviours_per_run: usize,
    /// Compare and record one run (snapshot read, comparison, one transaction), milliseconds.
    ms_per_run: f64,
    /// The database (with its write-ahead log) after `runs` runs, bytes.
    bytes: u64,
}

/// Records `RUNS` runs of one job (6 steps of 50 behaviours, one behaviour different in each
/// run, as a temporary path the generaliser does not catch would be) with the real CLI into a
/// fresh SQLite store: the time per run and the database's size.
fn baseline_cost(bin: &Path, dir: &Path) -> anyhow::Result<BaselineCost> {
    const RUNS: usize = 1_000;
    const STEPS: usize = 6;
    const PER_STEP: usize = 50;
    let runs_dir = dir.join("baseline-runs");
    std::fs::create_dir_all(&runs_dir)?;
    let mut files = Vec::new();
    for n in 0..RUNS {
        let mut steps = serde_json::Map::new();
        for s in 0..STEPS {
            let mut behaviours: Vec<serde_json::Value> = (0..PER_STEP - 1)
                .map(|i| {
                    let (kind, item) = match i % 3 {
                        0 => ("destination", format!("tcp host{i}.example.com:443")),
                        1 => ("executable", format!("/usr/lib/tool{i}/bin/run")),
                        _ => (
                            "credential-access",
                            format!("~/.config/tool{i}/token by tool{i}"),
                        ),
                    };
                    serde_json::json!({"kind": kind, "item": item})
                })
                .collect();
            behaviours.push(
                serde_json::json!({"kind": "executable", "item": format!("/opt/run-{n}/step{s}")}),
            );
            steps.insert(format!("step{s}"), serde_json::Value::Array(behaviours));
        }
        let record = serde_json::json!({
            "job": "github:bench/app/CI/build",
            "run": format!("github/bench/app/{n}/1/build"),
            "run_id": n.to_string(),
            "ended": "2026-12-01T00:00:00Z",
            "steps": steps,
        });
        let file = runs_dir.join(format!("{n:05}.json"));
        std::fs::write(&file, record.to_string())?;
        files.push(file);
    }
    let db = dir.join("baseline-bench.db");
    let started = Instant::now();
    let out = Command::new(bin)
        .args(["baseline", "--store"])
        .arg(&db)
        .arg("import")
        .args(&files)
        .output()
        .context("monitor baseline import")?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "monitor baseline import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let bytes = size(db.clone()) + size(db.with_extension("db-wal"));
    Ok(BaselineCost {
        runs: RUNS,
        behaviours_per_run: STEPS * PER_STEP,
        ms_per_run: seconds * 1000.0 / RUNS as f64,
        bytes,
    })
}

fn machine_info(monitor: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    // Which hooks the monitor used here (`monitor doctor`): on a kernel with BPF-LSM or fentry
    // the open and rename syscall tracepoints are not attached, and the costs differ.
    // (Doctor exits non-zero when a check fails, e.g. no agent is running: its lines still say.)
    let doctor = Command::new(monitor)
        .arg("doctor")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    let tiers: Vec<String> = ["file opens: ", "file names: ", "exec checks: "]
        .iter()
        .filter_map(|family| {
            let rest = doctor.lines().find_map(|l| l.split(family).nth(1))?;
            Some(format!("{family}{}", rest.split_whitespace().next()?))
        })
        .collect();
    m.insert("monitor hook tiers".into(), tiers.join(", "));
    let get = |p: &str, a: &[&str]| {
        output(p, a)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    m.insert("kernel".into(), get("uname", &["-r"]));
    m.insert("cpus".into(), get("nproc", &[]));
    m.insert("date".into(), get("date", &["-u", "+%Y-%m-%dT%H:%MZ"]));
    m.insert(
        "memory".into(),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .next()
                    .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            })
            .unwrap_or_default(),
    );
    m.insert("auditd".into(), get("auditctl", &["-v"]));
    m.insert("bpftrace".into(), get("bpftrace", &["--version"]));
    m.insert("node".into(), get("node", &["--version"]));
    m.insert("cargo".into(), get("cargo", &["--version"]));
    m
}

fn median(values: Vec<f64>) -> f64 {
    quantile(&sorted(values), 0.5)
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(|a, b| a.total_cmp(b));
    values
}

/// The value at quantile `q` (0 to 1) of `sorted` values, by nearest rank (the median is the
/// upper middle one of an even count).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// What the peer comparison runs, each with a command that proves it works and its Debian package.
const PEER_PROGRAMS: &[(&str, &[&str], &str)] = &[
    ("auditctl", &["-v"], "auditd"),
    ("bpftrace", &["--version"], "bpftrace"),
    ("npm", &["--version"], "npm"),
    ("test", &["-f", FONT], "fonts-dejavu-core"),
];

pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Set in the bench process `run_auditable` starts.
const AUDITABLE: &str = "MONITOR_BENCH_AUDITABLE";

/// Runs the bench again in a new process, once auditing has been switched on at least once
/// since boot. The kernel gives a process its audit context when it is forked, and only once
/// auditing was ever enabled: a bench process started before that (the usual case on a
/// machine that has never run auditd) is never audited, and neither are the workloads it runs
/// in its own process (the open, rename, unlink and connect storms), whatever rules auditd
/// loads later (it recorded 16 events for 200,000 opens). The machine's audit state is put
/// back as it was.
fn run_auditable() -> anyhow::Result<()> {
    let enabled = output("auditctl", &["-s"])
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("enabled ")?.trim().parse::<u32>().ok())
        })
        .context("auditctl -s: the kernel's audit state")?;
    if enabled == 0 {
        auditctl(&["-e", "1"])?;
        auditctl(&["-e", "0"])?;
    }
    let status = Command::new(std::env::current_exe().context("the bench's own program")?)
        .args(std::env::args_os().skip(1))
        .env(AUDITABLE, "1")
        .status()
        .context("running the bench in an audited process")?;
    if !status.success() {
        bail!("the bench failed ({status})");
    }
    Ok(())
}

pub fn run(root: &Path, args: BenchArgs) -> anyhow::Result<()> {
    let docs = root.join("docs");
    let saved = docs.join("benchmarks/results.json");
    if args.replot {
        let results: Results = serde_json::from_str(
            &std::fs::read_to_string(&saved)
                .with_context(|| format!("reading {}", saved.display()))?,
        )?;
        return write_docs(&docs, &results);
    }
    if !args.monitor_only {
        crate::ensure_programs("the bench's peers", PEER_PROGRAMS)?;
        if !pids_named("auditd").is_empty() {
            bail!("auditd is already running here; stop it first (the bench runs its own, with its own rules)");
        }
        if std::env::var_os(AUDITABLE).is_none() {
            return run_auditable();
        }
    }
    let bin = root.join("target/release/monitor");
    let work = tempfile::tempdir_in(root.join("target")).context("bench work dir")?;
    let dir = work.path();
    let builds =
        tempfile::tempdir_in("/dev/shm").context("the builds' directory in memory (/dev/shm)")?;
    let loads = workloads(args.scale, builds.path());
    // Warm-up: build the npm tree and the bench crate once so every timed run starts the same.
    // Its time says how many timed runs a round each workload gets.
    let mut repeats = Vec::new();
    for w in &loads {
        let warm = time(w, dir)?;
        repeats.push(if warm < SHORT_SECONDS {
            SHORT_REPEATS
        } else {
            REPEATS
        });
    }
    let tools: Vec<Tool> = if args.monitor_only {
        vec![Tool::Nothing, Tool::Monitor]
    } else {
        vec![Tool::Nothing, Tool::Monitor, Tool::Auditd, Tool::Bpftrace]
    };
    // The kernel's per-program run times (`probe_time`) cost each program run two clock reads:
    // on during the timed runs they were charged to the monitor and bpftrace (measured: the
    // monitor's open storm 1.25x with them off, 1.30x on). So every timed run has them off, and
    // the probes' table comes from a second, untimed run of each workload under the monitor
    // with them on. Checked here, so a kernel without them is said once.
    let stats_available = match crate::probe_time::StatsOn::new() {
        Ok(on) => {
            drop(on);
            true
        }
        Err(why) => {
            eprintln!("bench: no per-program times ({why}): the probes' table is left out");
            false
        }
    };
    let mut samples = Vec::new();
    let mut peak_rss: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0..args.rounds {
        // Rotate the order each round, so no tool always runs on a warmer or cooler machine.
        let mut order = tools.clone();
        order.rotate_left(round % tools.len());
        for tool in order {
            eprintln!(
                "bench: round {}/{}: {}",
                round + 1,
                args.rounds,
                tool.label()
            );
            let running = start(tool, &bin, dir)?;
            let mut first_runs = Vec::new();
            for (w, repeat) in loads
                .iter()
                .zip(&repeats)
                .flat_map(|(w, &n)| (0..n).map(move |repeat| (w, repeat)))
            {
                let (cpu0, _, ev0, drop0, causes0) = counters(&running);
                let seconds = time(w, dir)?;
                // Let the tool finish what is queued before its CPU and counters are read; with
                // nothing watching too, so every timed run starts after the same pause (a run
                // after an idle half second started on a cooler machine: the 64-port connect
                // storm with nothing watching, median 0.104 s back to back, 0.108 s after one).
                std::thread::sleep(Duration::from_millis(500));
                let (cpu1, rss, ev1, drop1, causes1) = counters(&running);
                if repeat == 0 {
                    first_runs.push((w, samples.len()));
                }
                let peak = peak_rss
                    .entry(format!("{tool:?}").to_lowercase())
                    .or_default();
                *peak = (*peak).max(rss);
                samples.push(Sample {
                    round,
                    tool,
                    workload: w.name.to_string(),
                    seconds,
                    tool_cpu_seconds: cpu1 - cpu0,
                    events: ev1.saturating_sub(ev0),
                    dropped: drop1.saturating_sub(drop0),
                    dropped_by_cause: causes1
                        .into_iter()
                        .map(|(c, n)| {
                            let n = n.saturating_sub(*causes0.get(&c).unwrap_or(&0));
                            (c, n)
                        })
                        .filter(|(_, n)| *n > 0)
                        .collect(),
                    probes: Default::default(),
                });
            }
            // Only the monitor's programs are counted, in an untimed run of each workload after
            // its timed ones (before them, a build's timed runs would follow an extra build);
            // kept with the round's first sample.
            if stats_available && !running.programs.is_empty() {
                for (w, at) in first_runs.drain(..) {
                    samples[at].probes = probe_run(w, dir, &running.programs)?;
                }
            }
            stop(running)?;
        }
    }
    eprintln!("bench: baseline recording (1,000 runs into SQLite)");
    let baseline = Some(baseline_cost(&bin, dir)?);
    let results = Results {
        baseline,
        machine: machine_info(&bin),
        rounds: args.rounds,
        scale: args.scale,
        tools,
        workloads: loads.iter().map(|w| w.name.to_string()).collect(),
        watch: loads
            .iter()
            .filter_map(|w| Some((w.name.to_string(), w.watch.clone()?)))
            .collect(),
        samples,
        peak_rss_kib: peak_rss,
        audit_rules: AUDIT_RULES.iter().map(|s| s.to_string()).collect(),
        bpftrace_script: BPFTRACE_SCRIPT.to_string(),
    };
    print!("{}", table(&results));
    if let Some(probes) = probe_table(&results) {
        print!("{probes}");
    }
    if let Some(b) = &results.baseline {
        print!("{}", baseline_table(b));
    }
    std::io::stdout().flush()?;
    if !args.monitor_only {
        std::fs::create_dir_all(docs.join("benchmarks"))?;
        std::fs::write(&saved, serde_json::to_string_pretty(&results)? + "\n")?;
        std::fs::write(
            docs.join("benchmarks/audit.rules"),
            AUDIT_RULES.join("\n") + "\n",
        )?;
        std::fs::write(docs.join("benchmarks/bench.bt"), BPFTRACE_SCRIPT)?;
        write_docs(&docs, &results)?;
        eprintln!(
            "bench: wrote docs/benchmarks.md, docs/benchmarks.png and docs/benchmarks/results.json"
        );
    }
    Ok(())
}

/// Median over rounds of one field, for a tool and workload.
fn med(r: &Results, tool: Tool, workload: &str, field: fn(&Sample) -> f64) -> f64 {
    median(values(r, tool, workload, field))
}

/// `field` of every sample of `tool` on `workload`.
fn values(r: &Results, tool: Tool, workload: &str, field: fn(&Sample) -> f64) -> Vec<f64> {
    r.samples
        .iter()
        .filter(|s| s.tool == tool && s.workload == workload)
        .map(field)
        .collect()
}

/// The monitor's probes, per workload, from the kernel's per-program statistics: their time
/// per round (median), that time as a share of the workload's time with nothing watching (the
/// in-kernel overhead, without the run-to-run noise of wall time), and the program that took
/// the most with its time per run. None when no sample has them (older results).
fn probe_table(r: &Results) -> Option<String> {
    let monitor: Vec<&Sample> = r
        .samples
        .iter()
        .filter(|s| s.tool == Tool::Monitor && !s.probes.is_empty())
        .collect();
    if monitor.is_empty() {
        return None;
    }
    let mut md = String::from(
        "\n## Time in the monitor's probes\n\n\
         From the kernel's own statistics (`kernel.bpf_stats_enabled`): the time the \
         monitor's BPF programs ran during each workload, median over rounds, and as a share of \
         the workload's time with nothing watching. It is the in-kernel part of the overhead, \
         measured directly (wall-time ratios on a shared machine move by tens of percent from \
         round to round); the agent's own CPU time is in the table above. The statistics cost \
         each program run two clock reads, so they are off for every timed run: once a round, \
         after its timed runs, each workload runs again under the monitor, untimed, with them \
         on, and this table is from those runs. Program names are the kernel's first 15 characters.\n\n\
         | workload | probes (ms per round) | share of nothing's time | most time in | its ns per run |\n\
         |---|---:|---:|---|---:|\n",
    );
    for w in &r.workloads {
        // The runs with the statistics on (the first of each round's repeats).
        let of_workload: Vec<&&Sample> = monitor
            .iter()
            .filter(|s| &s.workload == w && !s.probes.is_empty())
            .collect();
        if of_workload.is_empty() {
            continue;
        }
        let total = |s: &Sample| s.probes.values().map(|(ns, _)| *ns).sum::<u64>() as f64;
        let mut by_total = of_workload.clone();
        by_total.sort_by(|a, b| total(a).total_cmp(&total(b)));
        // The median round, and the program that took the most in it (keys are `name#id`:
        // program ids differ from round to round).
        let middle = by_total[by_total.len() / 2];
        let ms = total(middle) / 1e6;
        let nothing = med(r, Tool::Nothing, w, |s| s.seconds);
        let (top, (ns, runs)) = middle
            .probes
            .iter()
            .max_by_key(|(_, (ns, _))| *ns)
            .map(|(key, v)| (key.split('#').next().unwrap_or(key), *v))
            .unwrap_or(("-", (0, 1)));
        md.push_str(&format!(
            "| {w} | {ms:.2} | {:.1}% | `{top}` | {:.0} |\n",
            100.0 * ms / 1e3 / nothing.max(1e-9),
            ns as f64 / runs.max(1) as f64
        ));
    }
    Some(md)
}

/// The middle half of a tool's runs of a workload (its 25th to 75th percentile time) as ratios
/// to the median with nothing watching: how much of a ratio the machine's own noise can be.
fn spread(r: &Results, tool: Tool, workload: &str) -> (f64, f64) {
    let times = sorted(values(r, tool, workload, |s| s.seconds));
    let nothing = med(r, Tool::Nothing, workload, |s| s.seconds);
    (
        quantile(&times, 0.25) / nothing,
        quantile(&times, 0.75) / nothing,
    )
}

/// A table's heading rows: `lead` (its first cells, `| workload |` and any after it, each
/// right-aligned but the first), then for each peer its label joined to `per_tool`'s first
/// cell, and its other cells.
fn table_head(lead: &[&str], peers: &[Tool], per_tool: &[&str]) -> String {
    let mut md = String::from("|");
    for cell in lead {
        md.push_str(&format!(" {cell} |"));
    }
    for t in peers {
        md.push_str(&format!(" {}{} |", t.label(), per_tool.join(" | ")));
    }
    md.push_str("\n|---|");
    for _ in 1..lead.len() {
        md.push_str("---:|");
    }
    for _ in 0..peers.len() * per_tool.len() {
        md.push_str("---:|");
    }
    md.push('\n');
    md
}

/// The spread section of the page: every tool's middle half, nothing's too.
fn spread_table(r: &Results) -> String {
    let mut md = String::from(
        "\n## How far the runs spread\n\nThe middle half of each tool's runs (25th to 75th percentile of its times), as ratios to the median with nothing watching. Nothing's own range is the machine's noise: a difference between two tools' medians smaller than it is not one this run can show.\n\n",
    );
    let peers = peers(r);
    md.push_str(&table_head(&["workload", "nothing"], &peers, &[""]));
    for w in &r.workloads {
        md.push_str(&format!("| {w} |"));
        for t in std::iter::once(Tool::Nothing).chain(peers.iter().copied()) {
            let (low, high) = spread(r, t, w);
            md.push_str(&format!(" {low:.2}-{high:.2} |"));
        }
        md.push('\n');
    }
    md
}

fn ratio(r: &Results, tool: Tool, workload: &str) -> f64 {
    med(r, tool, workload, |s| s.seconds) / med(r, Tool::Nothing, workload, |s| s.seconds)
}

/// For a tool meant to record the workload's operations: (the events it recorded, median over
/// rounds; the operations).
fn coverage(r: &Results, tool: Tool, workload: &str) -> Option<(f64, u64)> {
    let watch = r.watch.get(workload).filter(|w| w.by.contains(&tool))?;
    Some((med(r, tool, workload, |s| s.events as f64), watch.ops))
}

/// A tool's ratio on a workload, or why there is none: a tool that recorded fewer than half
/// the operations it is meant to see did not watch the workload, and its speed says nothing
/// (auditd once recorded 16 events of a 200,000-open storm and looked free).
fn shown_ratio(r: &Results, tool: Tool, workload: &str) -> String {
    match coverage(r, tool, workload) {
        Some((events, ops)) if events < ops as f64 / 2.0 => {
            format!("unwatched {events:.0}/{ops}")
        }
        _ => format!("{:.3}", ratio(r, tool, workload)),
    }
}

/// The tools measured against running nothing.
fn peers(r: &Results) -> Vec<Tool> {
    r.tools
        .iter()
        .copied()
        .filter(|t| *t != Tool::Nothing)
        .collect()
}

/// The plain-text summary printed at the end of a run.
fn table(r: &Results) -> String {
    let peers = peers(r);
    let mut out = format!("{:<28} {:>10}", "workload", "nothing (s)");
    for t in &peers {
        out.push_str(&format!(" {:>14}", format!("{} x", t.label())));
    }
    out.push('\n');
    for w in &r.workloads {
        out.push_str(&format!(
            "{:<28} {:>10.3}",
            w,
            med(r, Tool::Nothing, w, |s| s.seconds)
        ));
        for t in &peers {
            out.push_str(&format!(" {:>14}", shown_ratio(r, *t, w)));
        }
        out.push('\n');
    }
    for t in &peers {
        let cpu: f64 = r
            .workloads
            .iter()
            .map(|w| med(r, *t, w, |s| s.tool_cpu_seconds))
            .sum();
        let wall: f64 = r
            .workloads
            .iter()
            .map(|w| med(r, *t, w, |s| s.seconds))
            .sum();
        let events: f64 = r
            .workloads
            .iter()
            .map(|w| med(r, *t, w, |s| s.events as f64))
            .sum();
        let drops: u64 = r
            .samples
            .iter()
            .filter(|s| s.tool == *t)
            .map(|s| s.dropped)
            .sum();
        out.push_str(&format!(
            "{}: {:.2} CPU s per pass (one run of each workload; {:.1}% of one core over {:.1} s), peak RSS {:.1} MiB, {:.0} events per pass ({:.0}/s), {} dropped over all runs\n",
            t.label(),
            cpu,
            100.0 * cpu / wall.max(1e-9),
            wall,
            *r.peak_rss_kib.get(&format!("{t:?}").to_lowercase()).unwrap_or(&0) as f64 / 1024.0,
            events,
            events / wall.max(1e-9),
            drops
        ));
        // Where the drops came from, per workload and cause (the monitor names its causes).
        let mut where_from: BTreeMap<(String, String), u64> = BTreeMap::new();
        for s in r.samples.iter().filter(|s| s.tool == *t) {
            for (cause, n) in &s.dropped_by_cause {
                *where_from
                    .entry((s.workload.clone(), cause.clone()))
                    .or_default() += n;
            }
        }
        for ((workload, cause), n) in where_from {
            out.push_str(&format!("  dropped in {workload}: {n} ({cause})\n"));
        }
    }
    out
}

fn baseline_table(b: &BaselineCost) -> String {
    format!(
        "\n## Baselines across runs\n\nRecording a job's run at its end (read the job's baseline, compare, one transaction), \
         measured with `monitor baseline import` into a fresh SQLite store: {} runs of {} behaviours each, one new per step and run.\n\n\
         | per run | database after {} runs |\n|---:|---:|\n| {:.2} ms | {:.1} MiB |\n",
        b.runs,
        b.behaviours_per_run,
        b.runs,
        b.ms_per_run,
        b.bytes as f64 / (1024.0 * 1024.0)
    )
}

fn write_docs(docs: &Path, r: &Results) -> anyhow::Result<()> {
    let peers = peers(r);
    let mut md = String::from(
        "# Overhead against what users would otherwise install\n\n\
         Generated by `cargo xtask bench` (run it again to measure your machine; `cargo xtask bench --replot`\n\
         redraws this page and the chart from the saved samples). Every round runs each workload with\n\
         nothing watching, under this monitor (its default profile), under auditd with rules for the same\n\
         syscalls ([benchmarks/audit.rules](benchmarks/audit.rules)) and under bpftrace with the equivalent\n\
         tracepoints ([benchmarks/bench.bt](benchmarks/bench.bt)); the order rotates every round. Values are\n\
         medians over every run (each workload runs three times a round, nine times when it takes under 0.3 s); the raw samples are in [benchmarks/results.json](benchmarks/results.json).\n\n",
    );
    md.push_str("Machine: ");
    md.push_str(
        &r.machine
            .iter()
            .map(|(k, v)| format!("{k} `{v}`"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    md.push_str(&format!("; {} rounds, scale {}.\n\n", r.rounds, r.scale));
    md.push_str("![Overhead per workload](benchmarks.png)\n\n## Wall time (ratio to nothing watching)\n\nA tool meant to record a workload's operations (exec, open, connect) that recorded fewer than half of them did not watch it: its ratio is not given (`unwatched recorded/operations`). The monitor records watched files only: the unwatched storms are not counted against it.\n\n");
    md.push_str(&table_head(&["workload", "nothing (s)"], &peers, &[""]));
    for w in &r.workloads {
        md.push_str(&format!(
            "| {w} | {:.3} |",
            med(r, Tool::Nothing, w, |s| s.seconds)
        ));
        for t in &peers {
            let shown = shown_ratio(r, *t, w);
            if shown.starts_with("unwatched") {
                md.push_str(&format!(" {shown} events |"));
            } else {
                md.push_str(&format!(" {shown}x |"));
            }
        }
        md.push('\n');
    }
    md.push_str(&spread_table(r));
    md.push_str("\n## What each tool cost and saw, per workload\n\nTool CPU seconds (the tool's own processes: the agent; auditd and the kernel's kauditd; bpftrace. Time spent in the probes is charged to the traced programs and shows in the wall time above), events it recorded and events it dropped.\n\n");
    md.push_str(&table_head(
        &["workload"],
        &peers,
        &[" CPU s", "events", "dropped"],
    ));
    for w in &r.workloads {
        md.push_str(&format!("| {w} |"));
        for t in &peers {
            let dropped: u64 = r
                .samples
                .iter()
                .filter(|s| s.tool == *t && s.workload == *w)
                .map(|s| s.dropped)
                .max()
                .unwrap_or(0);
            md.push_str(&format!(
                " {:.2} | {:.0} | {} |",
                med(r, *t, w, |s| s.tool_cpu_seconds),
                med(r, *t, w, |s| s.events as f64),
                dropped
            ));
        }
        md.push('\n');
    }
    if let Some(probes) = probe_table(r) {
        md.push_str(&probes);
    }
    md.push_str("\n## Peak memory\n\n| tool | peak RSS (MiB) |\n|---|---:|\n");
    for t in &peers {
        md.push_str(&format!(
            "| {} | {:.1} |\n",
            t.label(),
            *r.peak_rss_kib
                .get(&format!("{t:?}").to_lowercase())
                .unwrap_or(&0) as f64
                / 1024.0
        ));
    }
    md.push_str(
        "\n## Reading it\n\n\
         - The tools do not do the same work. This monitor resolves every open in the kernel and sends only\n\
         \x20 watched files (credentials, persistence places, `.pth`, source maps) to userspace, where it\n\
         \x20 attributes each event to a CI job and step and judges it. auditd writes a record for every\n\
         \x20 matching syscall and judges nothing; the bpftrace script prints every event and judges nothing.\n\
         - \"dropped\" is the worst run: the monitor counts ring-buffer and queue losses, auditd its `lost`\n\
         \x20 counter (records the kernel could not queue), bpftrace its `Lost N events` lines.\n\
         - Small workloads (a fraction of a second) have noisy ratios; the build workloads are the ones a CI\n\
         \x20 job feels. The builds and the unlink storm work in memory (/dev/shm): on disk their runs\n\
         \x20 timed the file system's reuse of the inodes the run before had just deleted.\n\
         - The loopback connect storm is one process connecting to one address again and again: the\n\
         \x20 monitor receives and counts every connect (`events`) but writes such a run as its first record\n\
         \x20 and one record at most every half second for the rest (docs/events.md, `repeats`). The storm\n\
         \x20 over 64 ports in turn has nothing to fold: every connect is written and judged.\n\
         - The monitor's hook tier is on the machine line (`monitor hook tiers`, docs/kernel-tiers.md):\n\
         \x20 `tracepoint` means every open and rename syscall of every process enters a probe. On kernels\n\
         \x20 with BPF-LSM or fentry those tracepoints are not attached and the security hooks run instead;\n\
         \x20 that tier cannot be measured on a machine that refuses it (nor in an emulated VM).\n",
    );
    if let Some(b) = &r.baseline {
        md.push_str(&baseline_table(b));
    }
    std::fs::write(docs.join("benchmarks.md"), md)?;
    chart(&docs.join("benchmarks.png"), r, &peers)
}

/// Grouped bars: per workload, each tool's overhead in percent of the unwatched wall time.
fn chart(path: &Path, r: &Results, peers: &[Tool]) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let font: &'static [u8] = Box::leak(
        std::fs::read(FONT)
            .with_context(|| format!("{FONT} (apt-get install fonts-dejavu-core)"))?
            .into_boxed_slice(),
    );
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("{FONT} is not a usable font"))?;
    // A tool that did not watch a workload gets no bar there.
    let overhead = |t: Tool, w: &str| match coverage(r, t, w) {
        Some((events, ops)) if events < ops as f64 / 2.0 => f64::NAN,
        _ => (ratio(r, t, w) - 1.0) * 100.0,
    };
    let values: Vec<f64> = r
        .workloads
        .iter()
        .flat_map(|w| peers.iter().map(move |t| overhead(*t, w)))
        .filter(|v| v.is_finite())
        .collect();
    let top = values.iter().copied().fold(10.0f64, f64::max) * 1.15;
    let bottom = values.iter().copied().fold(0.0f64, f64::min).min(0.0) * 1.15;
    let root = BitMapBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = r.workloads.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Wall-time overhead vs nothing watching (median of runs)",
            ("sans-serif", 26),
        )
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..n as f64, bottom..top)?;
    let names = r.workloads.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 && i < names.len() {
                names[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc("overhead (%)")
        .y_label_formatter(&|y| format!("{y:.0}%"))
        .label_style(("sans-serif", 15))
        .draw()?;
    let colours = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
    ];
    let width = 0.8 / peers.len() as f64;
    for (k, t) in peers.iter().enumerate() {
        let colour = colours[k % colours.len()];
        chart
            .draw_series(r.workloads.iter().enumerate().map(|(i, w)| {
                let x0 = i as f64 + 0.1 + k as f64 * width;
                let v = overhead(*t, w);
                let v = if v.is_finite() { v } else { 0.0 };
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], colour.filled())
            }))?
            .label(t.label())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], colour.filled()));
        chart.draw_series(r.workloads.iter().enumerate().map(|(i, w)| {
            let x0 = i as f64 + 0.1 + k as f64 * width;
            let v = overhead(*t, w);
            Text::new(
                if v.is_finite() {
                    format!("{v:.0}%")
                } else {
                    "unwatched".to_string()
                },
                (
                    x0,
                    if v.is_finite() { v.max(0.0) } else { 0.0 } + top * 0.01,
                ),
                ("sans-serif", 12),
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(round: usize, tool: Tool, workload: &str, seconds: f64) -> Sample {
        Sample {
            round,
            tool,
            workload: workload.into(),
            seconds,
            tool_cpu_seconds: 0.1,
            events: 10,
            dropped: 0,
            dropped_by_cause: BTreeMap::new(),
            probes: BTreeMap::new(),
        }
    }

    #[test]
    fn the_probes_time_is_a_share_of_the_workloads_time_with_nothing_watching() {
        let mut samples = Vec::new();
        for round in 0..3 {
            samples.push(sample(round, Tool::Nothing, "connect storm", 0.1));
            let mut s = sample(round, Tool::Monitor, "connect storm", 0.13);
            // 5 ms per round: 4 in one program (4,000 runs of 1,000 ns), 1 in another.
            s.probes = BTreeMap::from([
                ("sys_exit_connec#7".to_string(), (4_000_000, 4_000)),
                ("egress_connect4#8".to_string(), (1_000_000, 4_000)),
            ]);
            samples.push(s);
        }
        let mut r = Results {
            machine: BTreeMap::new(),
            rounds: 3,
            scale: 1.0,
            tools: vec![Tool::Nothing, Tool::Monitor],
            workloads: vec!["connect storm".into()],
            samples,
            peak_rss_kib: BTreeMap::new(),
            audit_rules: Vec::new(),
            bpftrace_script: String::new(),
            baseline: None,
            watch: BTreeMap::new(),
        };
        let md = probe_table(&r).expect("a probes section");
        assert!(
            md.contains("| connect storm | 5.00 | 5.0% | `sys_exit_connec` | 1000 |"),
            "{md}"
        );
        // Older results (no probe times): no section.
        r.samples.iter_mut().for_each(|s| s.probes.clear());
        assert!(probe_table(&r).is_none());
    }

    #[test]
    fn saved_samples_redraw_the_table_and_the_chart() {
        let tools = vec![Tool::Nothing, Tool::Monitor, Tool::Auditd, Tool::Bpftrace];
        let mut samples = Vec::new();
        for round in 0..3 {
            // Medians: nothing 2.0 s, monitor 2.2 s (1.100x), auditd 3.0 s, bpftrace 2.5 s;
            // the outliers of one round do not move them.
            let noise = if round == 1 { 5.0 } else { 0.0 };
            samples.push(sample(round, Tool::Nothing, "build", 2.0 + noise));
            samples.push(sample(round, Tool::Monitor, "build", 2.2 + noise));
            samples.push(sample(round, Tool::Auditd, "build", 3.0));
            samples.push(sample(round, Tool::Bpftrace, "build", 2.5));
        }
        // The monitor recorded all 30 of the operations it is meant to see.
        for s in samples.iter_mut().filter(|s| s.tool == Tool::Monitor) {
            s.events = 30;
        }
        let results = Results {
            machine: BTreeMap::from([("kernel".to_string(), "test".to_string())]),
            rounds: 3,
            scale: 1.0,
            tools,
            workloads: vec!["build".into()],
            samples,
            peak_rss_kib: BTreeMap::from([("monitor".to_string(), 2048)]),
            audit_rules: Vec::new(),
            bpftrace_script: String::new(),
            baseline: None,
            // auditd is meant to record the build's 30 operations and recorded 10: unwatched;
            // the monitor recorded 30; bpftrace is not meant to (not listed).
            watch: BTreeMap::from([(
                "build".to_string(),
                Watch {
                    ops: 30,
                    by: vec![Tool::Auditd, Tool::Monitor],
                },
            )]),
        };
        let dir = tempfile::tempdir().unwrap();
        write_docs(dir.path(), &results).unwrap();
        let md = std::fs::read_to_string(dir.path().join("benchmarks.md")).unwrap();
        assert!(
            md.contains("| build | 2.000 | 1.100x | unwatched 10/30 events | 1.250x |"),
            "{md}"
        );
        // The middle half of the runs, to nothing's median: of three runs the upper quartile
        // is round 1's outlier, which the medians above do not show.
        assert!(
            md.contains("| build | 1.00-3.50 | 1.10-3.60 | 1.50-1.50 | 1.25-1.25 |"),
            "{md}"
        );
        assert!(table(&results).contains("unwatched 10/30"));
        assert!(md.contains("| this monitor | 2.0 |"), "{md}");
        let png = std::fs::read(dir.path().join("benchmarks.png")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 10_000, "an empty picture: {} bytes", png.len());
    }

    #[test]
    fn metric_samples_are_summed_by_name() {
        let text = "# HELP monitor_events_total x\nmonitor_events_total{kind=\"exec\"} 3\nmonitor_events_total{kind=\"open\"} 4\nmonitor_events_dropped_total{kind=\"open\",reason=\"kernel\"} 2\n";
        assert_eq!(sum_samples(text, "monitor_events_total"), 7);
        assert_eq!(sum_samples(text, "monitor_events_dropped_total"), 2);
    }
}
