//! `cargo xtask bench`: what the agent costs the build it watches.
//!
//! Each round runs every workload without the agent, then starts the release agent and runs them
//! again, so the pairs share the machine's state (rounds alternate; medians reduce drift). For the
//! with-agent phase it reads the agent's CPU time and peak RSS from /proc and its event and drop
//! counters from the summary it prints on SIGTERM.

use std::{
    io::Write as _,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Number of paired rounds (without, with).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Scale every workload (1.0 = default sizes).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
}

struct Workload {
    name: &'static str,
    run: Box<dyn Fn(&Path) -> anyhow::Result<()>>,
}

fn scaled(n: usize, scale: f64) -> usize {
    ((n as f64 * scale) as usize).max(1)
}

fn workloads(scale: f64) -> Vec<Workload> {
    let execs = scaled(2000, scale);
    let opens = scaled(200_000, scale);
    let watched = scaled(20_000, scale);
    let connects = scaled(3000, scale);
    vec![
        Workload {
            name: "exec storm",
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
            name: "connect storm (loopback)",
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
            name: "cargo build (small crate)",
            run: Box::new(|dir| {
                let krate = dir.join("bench-crate");
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

fn time(workload: &Workload, dir: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    (workload.run)(dir).with_context(|| workload.name)?;
    Ok(started.elapsed().as_secs_f64())
}

struct AgentRun {
    child: Child,
    log: PathBuf,
}

fn start_agent(bin: &Path, dir: &Path) -> anyhow::Result<AgentRun> {
    let ready = dir.join("ready");
    let _ = std::fs::remove_file(&ready);
    let log = dir.join("agent.log");
    let child = Command::new(bin)
        .args(["run", "--events"])
        .arg(dir.join("events.jsonl"))
        .arg("--ready-file")
        .arg(&ready)
        // Never take over a real agent's socket or port on this machine.
        .args(["--no-control-socket", "--metrics-address", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting the agent")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        if Instant::now() > deadline {
            bail!(
                "agent not ready: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(AgentRun { child, log })
}

/// (cpu seconds, peak RSS KiB) of a live process.
fn cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are stat fields 14 and 15: indexes 11 and 12 after the comm.
    let ticks: u64 = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (ticks as f64 / 100.0, hwm)
}

fn stop_agent(agent: AgentRun) -> anyhow::Result<serde_json::Value> {
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) };
    let mut child = agent.child;
    child.wait()?;
    let log = std::fs::read_to_string(&agent.log)?;
    let line = log
        .lines()
        .find(|l| l.starts_with("{\"stats\""))
        .context("agent printed no stats")?;
    Ok(serde_json::from_str(line)?)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

pub fn run(root: &Path, args: BenchArgs) -> anyhow::Result<()> {
    let bin = root.join("target/release/monitor");
    let work = tempfile::tempdir()?;
    let dir = work.path();
    let loads = workloads(args.scale);
    // Warm-up: build the bench crate once so every timed build starts from the same state.
    for w in &loads {
        time(w, dir)?;
    }
    let mut without = vec![Vec::new(); loads.len()];
    let mut with = vec![Vec::new(); loads.len()];
    let (mut cpu, mut peak_rss, mut events, mut drops, mut with_seconds) =
        (0.0, 0u64, 0u64, 0u64, 0.0);
    for round in 0..args.rounds {
        eprintln!("bench: round {}/{}", round + 1, args.rounds);
        for (i, w) in loads.iter().enumerate() {
            without[i].push(time(w, dir)?);
        }
        let agent = start_agent(&bin, dir)?;
        let pid = agent.child.id();
        let (cpu_before, _) = cpu_and_rss(pid);
        let phase = Instant::now();
        for (i, w) in loads.iter().enumerate() {
            with[i].push(time(w, dir)?);
        }
        // Let the agent finish what is queued before its CPU is read.
        std::thread::sleep(Duration::from_millis(500));
        with_seconds += phase.elapsed().as_secs_f64();
        let (cpu_after, rss) = cpu_and_rss(pid);
        cpu += cpu_after - cpu_before;
        peak_rss = peak_rss.max(rss);
        let stats = stop_agent(agent)?;
        let sum = |v: &serde_json::Value| {
            v.as_object()
                .map(|o| o.values().filter_map(|x| x.as_u64()).sum::<u64>())
                .unwrap_or(0)
        };
        events += sum(&stats["stats"]["events"]);
        drops += sum(&stats["stats"]["kernel_losses"])
            + stats["stats"]["channel_full_drops"].as_u64().unwrap_or(0)
            + stats["stats"]["decode_errors"].as_u64().unwrap_or(0);
    }
    let mut report = String::new();
    report.push_str(&format!(
        "{:<30} {:>12} {:>12} {:>10}\n",
        "workload", "without (s)", "with (s)", "ratio"
    ));
    for (i, w) in loads.iter().enumerate() {
        let a = median(&mut without[i]);
        let b = median(&mut with[i]);
        report.push_str(&format!(
            "{:<30} {:>12.3} {:>12.3} {:>10.3}\n",
            w.name,
            a,
            b,
            b / a
        ));
    }
    report.push_str(&format!(
        "agent: {:.2} CPU s over {:.1} s with-agent time ({:.1}% of one core), peak RSS {:.1} MiB\n",
        cpu,
        with_seconds,
        100.0 * cpu / with_seconds.max(1e-9),
        peak_rss as f64 / 1024.0
    ));
    report.push_str(&format!(
        "agent: {events} events handled ({:.0}/s while workloads ran), {drops} dropped (kernel + decode + channel)\n",
        events as f64 / with_seconds.max(1e-9)
    ));
    print!("{report}");
    std::io::stdout().flush()?;
    Ok(())
}
