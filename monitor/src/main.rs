//! `monitor`: the agent and its command line.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use monitor::{
    agent,
    control::{self, Request},
    doctor,
    output::{terminal_line, terminal_text},
    probes::ProbeOptions,
    profile::{Profile, ProfileSource},
    replay::{self, machine_engine_config, ReadStats},
    rules::exfil_services::ExfilServices,
};

#[derive(Parser)]
#[command(
    name = "monitor",
    version,
    about = "eBPF runtime security monitor for CI runners"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the probes, stream every event as JSON lines and report findings as they happen.
    Run {
        /// Write events to this file (created 0600, appended) instead of stdout.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Write findings to this file (created 0600, appended) instead of stderr.
        #[arg(long)]
        findings: Option<PathBuf>,
        /// The expected behaviour profile (YAML; docs/profile.md). Default: the built-in one.
        #[arg(long, conflicts_with = "config")]
        profile: Option<PathBuf>,
        /// A configuration file (docs/config.md): profiles per repository or workflow, and
        /// outputs. A flag given on the command line wins over the same setting in it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Create this file (containing the agent's pid) once the probes are attached.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Size of the kernel ring buffer in bytes (a power of two, multiple of the page size).
        #[arg(long, default_value_t = 8 * 1024 * 1024)]
        ring_bytes: u32,
        /// Send every successful open, not only watched files (learning/debugging; costly).
        #[arg(long)]
        all_opens: bool,
        /// Which kernel hooks see file opens and new file names (rename, link, symlink):
        /// `best` (BPF-LSM, else fentry, else tracepoints, for each: the start-up log says
        /// which and why), or one tier for both, refusing to start without it.
        #[arg(long, alias = "open-hook", value_enum, default_value = "best")]
        hook_tier: monitor::hook_tier::HookChoice,
        /// Where in bpffs to pin what must outlive the agent (the kernel's log of signals sent
        /// to it, read by the next agent when one killed it).
        #[arg(long, default_value = monitor::agent::tamper_log::PIN_DIR)]
        pin_dir: PathBuf,
        /// Do not leave the kernel's enforcement (block mode, kill responses) in place when the
        /// agent stops or dies, and remove what a dead agent left there.
        #[arg(long)]
        release_enforcement: bool,
        /// Bound on the process table.
        #[arg(long, default_value_t = 65_536)]
        max_processes: usize,
        /// The control socket for `monitor job` and `monitor hook` [default: /run/monitor/control.sock].
        #[arg(long)]
        control_socket: Option<PathBuf>,
        /// Let this group use the control socket (mode 0660; default: root only, 0600).
        #[arg(long)]
        control_group: Option<String>,
        /// Do not open a control socket.
        #[arg(long, conflicts_with_all = ["control_socket", "control_group"])]
        no_control_socket: bool,
        /// Serve Prometheus metrics at http://ADDRESS/metrics (port 0: any free port)
        /// [default: 127.0.0.1:9477].
        #[arg(long)]
        metrics_address: Option<std::net::SocketAddr>,
        /// Do not serve metrics.
        #[arg(long, conflicts_with = "metrics_address")]
        no_metrics: bool,
        /// Write each job's report (JSON, Markdown, HTML; owner-only) here when the job ends
        /// [default: /var/lib/monitor/reports].
        #[arg(long)]
        reports: Option<PathBuf>,
        /// Do not write reports.
        #[arg(long, conflicts_with = "reports")]
        no_reports: bool,
        /// Rotate the event and findings logs past this size (bytes), keeping 3 old files
        /// [default: 268435456].
        #[arg(long)]
        log_max_bytes: Option<u64>,
        /// A home whose credentials and start-up files are watched by identity from the start
        /// (repeatable), beside /root, /home/* and /etc/passwd's: a runner user known only to
        /// LDAP, or living elsewhere [config: watch_homes].
        #[arg(long = "watch-home", value_name = "DIR")]
        watch_homes: Vec<PathBuf>,
        /// The Docker Engine API's socket, asked what each container is (image, privileges,
        /// mounts); `none`: containers are told by their cgroup only [default:
        /// /var/run/docker.sock] [config: docker_socket].
        #[arg(long, value_name = "PATH")]
        docker_socket: Option<PathBuf>,
        /// Another container runtime's API socket (repeatable; `none`: only Docker's): what its
        /// daemon starts in a cgroup of its own is a container, named after its client's step
        /// [default: containerd's, dockerd's containerd, Podman's, CRI-O's, BuildKit's]
        /// [config: runtime_sockets].
        #[arg(long = "runtime-socket", value_name = "PATH")]
        runtime_sockets: Vec<PathBuf>,
        /// How containers are told apart: `cgroup` (the cgroup v2 id every record carries),
        /// `mount-namespace` (hosts with cgroup v1 only, where every process is in the unified
        /// root), or `auto`: by cgroup where a cgroup v2 hierarchy is mounted [default: auto]
        /// [config: container_identity].
        #[arg(long, value_enum, value_name = "HOW")]
        container_identity: Option<monitor::containers::ContainerIdentity>,
        /// A list of services that take data from anyone (request bins, tunnels, webhooks),
        /// replacing the built-in one; same format as profiles/exfil-services.yml [config:
        /// exfil_services].
        #[arg(long, value_name = "PATH")]
        exfil_services: Option<PathBuf>,
        /// Where baselines across runs are kept: a SQLite file or a postgres:// URL [default:
        /// /var/lib/monitor/baseline.db] [config: baseline.store].
        #[arg(long, value_name = "STORE")]
        baseline: Option<String>,
        /// What standard output shows: `console` (findings as one line each, a status line;
        /// events to the event log, /var/log/monitor/events.jsonl unless --events), `json`
        /// (every event as a JSON line, unless --events), or `auto`: console on a terminal.
        #[arg(long, value_enum, default_value = "auto")]
        output: monitor::console::OutputMode,
        /// Keep no baselines (no `new-behaviour` findings).
        #[arg(long, conflicts_with = "baseline")]
        no_baseline: bool,
        /// Where runs wait while the baseline store cannot take them [default: beside a SQLite
        /// store, else /var/lib/monitor/baseline-pending] [config: baseline.pending_dir].
        #[arg(long, value_name = "DIR")]
        baseline_pending: Option<PathBuf>,
    },
    /// Rebuild a job's report from recorded events (without JOB: list the jobs in the logs).
    Report {
        /// The job: its key (`job.key`), run id, or name.
        job: Option<String>,
        /// Event logs written by `monitor run --events` (rotated files too, oldest first).
        #[arg(long = "events", required = true, num_args = 1..)]
        events: Vec<PathBuf>,
        /// The profile to judge against (default: the built-in one).
        #[arg(long)]
        profile: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "json")]
        format: ReportFormat,
        /// Write here (0600) instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// (Internal) the agent's pipeline heartbeat: one UDP connect to loopback.
    #[command(hide = true)]
    Heartbeat {
        #[arg(long)]
        port: u16,
    },
    /// Tell the agent where a job begins and ends (for CI systems it does not recognise).
    Job {
        #[command(subcommand)]
        command: JobCommand,
        /// The agent's control socket.
        #[arg(long, global = true, default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Entry points for the GitHub runner's job hooks (ACTIONS_RUNNER_HOOK_JOB_STARTED and
    /// ACTIONS_RUNNER_HOOK_JOB_COMPLETED scripts run `monitor hook job-started|job-completed`).
    Hook {
        #[command(subcommand)]
        command: HookCommand,
        #[arg(long, global = true, default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Fail the job when the agent cannot be told (default: warn in the job log and go on,
        /// so a monitor that is down never breaks builds, unless the job's profile says
        /// `hooks: {fail_closed: true}`).
        #[arg(long, global = true)]
        fail_closed: bool,
        /// The configuration whose profiles say whether hooks fail closed.
        #[arg(long, global = true, default_value = "/etc/monitor/monitor.yml")]
        config: PathBuf,
    },
    /// Point a GitHub Actions runner's job hooks at this monitor (edits RUNNER_DIR/.env,
    /// idempotent, keeps every other setting; --remove undoes it).
    InstallRunnerHooks {
        runner_dir: PathBuf,
        #[arg(long, default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Hooks fail the job when the agent is unreachable.
        #[arg(long)]
        fail_closed: bool,
        #[arg(long)]
        remove: bool,
    },
    /// Run the detection engine on recorded events and print the findings it gives.
    Replay {
        /// The profile to judge against (default: the built-in one).
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Event logs written by `monitor run --events`.
        #[arg(required = true)]
        events: Vec<PathBuf>,
    },
    /// Check, learn and compare expected behaviour profiles.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// Check a configuration file and every profile it names.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Re-enact real CI supply-chain attacks (and their benign twins) against the real agent on
    /// this machine and print a scorecard; exits 1 on a miss or a false positive, 2 when a
    /// scenario could not run (a program it needs is missing).
    Selftest(monitor::selftest::SelftestArgs),
    /// Baselines across runs: status, what a run brought, forget, export as a profile.
    Baseline(monitor::baseline::cli::BaselineArgs),
    /// Check that this machine can run the monitor and say what to fix.
    Doctor {
        /// Only inspect; do not load the programs.
        #[arg(long)]
        no_load: bool,
        /// The Docker Engine API's socket to ask (`none`: not asked) [default:
        /// /var/run/docker.sock].
        #[arg(long, value_name = "PATH")]
        docker_socket: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate: prints `file:line:column: problem` and exits 1 when anything is broken.
    Check { config: PathBuf },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Json,
    Markdown,
    Html,
}

#[derive(Subcommand)]
enum JobCommand {
    /// A job begins: the process PID (default: the caller, usually the CI's job shell) and its
    /// descendants are the job until `monitor job stop`.
    Start {
        /// The job's name (default: the CI identity in this environment: GITHUB_*, CI_*).
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// The job ends: the agent writes its report.
    Stop {
        /// The name given to `job start` (default: the CI identity in this environment).
        #[arg(long, conflicts_with = "key")]
        id: Option<String>,
        /// The job's key as findings show it (`job.key`).
        #[arg(long)]
        key: Option<String>,
    },
    /// The agent's jobs and counters, as JSON.
    Status,
}

#[derive(Subcommand)]
enum HookCommand {
    /// Run by the runner before the job: anchors the job at this Runner.Worker.
    JobStarted,
    /// Run by the runner after the job: ends it and writes its report.
    JobCompleted,
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// Validate a profile: prints `file:line:column: problem` and exits 1 when it is broken.
    Check { profile: PathBuf },
    /// Print the built-in profile.
    Default,
    /// Write a profile that allows everything the recorded (clean) runs did.
    Learn {
        /// Start from this profile instead of an empty one.
        #[arg(long)]
        base: Option<PathBuf>,
        /// Write the profile here (0600) instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Learn only from this job (its key, or its CI run id); repeatable. Default: every
        /// job in the logs.
        #[arg(long = "job")]
        jobs: Vec<String>,
        #[arg(required = true)]
        events: Vec<PathBuf>,
    },
    /// Show what the recorded runs did that the profile does not allow, and the YAML to add.
    Diff {
        #[arg(long)]
        profile: PathBuf,
        #[arg(required = true)]
        events: Vec<PathBuf>,
    },
}

/// One line of text for a YAML comment: control characters (newlines included) become `?`.
fn comment_safe(text: &str) -> String {
    terminal_line(text).replace(|c: char| c.is_control(), "?")
}

/// Where reports go unless told otherwise.
const DEFAULT_REPORTS: &str = "/var/lib/monitor/reports";

/// Where and how baselines are kept: flags over the configuration's `baseline:` section over the
/// defaults (on, SQLite under /var/lib/monitor).
fn baseline_options(
    store: Option<String>,
    off: bool,
    pending: Option<PathBuf>,
    section: Option<&monitor::baseline::BaselineConfig>,
) -> Option<monitor::baseline::BaselineOptions> {
    use monitor::baseline::{DEFAULT_PENDING_DIR, DEFAULT_STORE};
    if off || section.is_some_and(|s| !s.enabled) {
        return None;
    }
    let store = store
        .or_else(|| section.and_then(|s| s.store.clone()))
        .unwrap_or_else(|| DEFAULT_STORE.into());
    let pending_dir = pending
        .or_else(|| section.and_then(|s| s.pending_dir.clone()))
        .unwrap_or_else(|| {
            let file = store.strip_prefix("sqlite://").unwrap_or(&store);
            match Path::new(file).parent() {
                Some(dir) if !store.starts_with("postgres") && !dir.as_os_str().is_empty() => {
                    dir.join("baseline-pending")
                }
                _ => DEFAULT_PENDING_DIR.into(),
            }
        });
    Some(monitor::baseline::BaselineOptions {
        store,
        thresholds: section.map(|s| s.thresholds()).unwrap_or_default(),
        pending_dir,
    })
}

/// Where `monitor run --output console` keeps the event and findings logs when none is named.
const DEFAULT_LOG_DIR: &str = "/var/log/monitor";

fn load_profile(path: Option<&Path>) -> anyhow::Result<Profile> {
    match path {
        Some(p) => Ok(Profile::load(p)?),
        None => Ok(Profile::default_profile()),
    }
}

fn main() -> anyhow::Result<()> {
    // Log lines carry what jobs named (job keys, paths, program names): control characters and
    // bidirectional marks are escaped so none reaches an administrator's terminal or journal raw.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            use std::io::Write as _;
            let style = buf.default_level_style(record.level());
            writeln!(
                buf,
                "[{} {style}{:<5}{style:#} {}] {}",
                buf.timestamp(),
                record.level(),
                record.target(),
                monitor::output::terminal_line(&record.args().to_string())
            )
        })
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            events,
            findings,
            profile,
            config,
            ready_file,
            ring_bytes,
            all_opens,
            hook_tier,
            pin_dir,
            release_enforcement,
            max_processes,
            control_socket,
            control_group,
            no_control_socket,
            metrics_address,
            no_metrics,
            reports,
            no_reports,
            log_max_bytes,
            watch_homes,
            docker_socket,
            runtime_sockets,
            container_identity,
            exfil_services,
            baseline,
            no_baseline,
            baseline_pending,
            output,
        } => {
            // Everything the agent creates (logs, reports, sockets before their chmod) is
            // owner-only unless it says otherwise.
            // SAFETY: umask(2) only sets the process's file mode mask.
            unsafe { libc::umask(0o077) };
            if !ring_bytes.is_power_of_two() || ring_bytes < 4096 {
                anyhow::bail!(
                    "--ring-bytes must be a power of two of at least 4096, got {ring_bytes}"
                );
            }
            // Flags win over the configuration file, which wins over the defaults. The file is
            // read once here; SIGHUP reads it (and its profiles) again.
            let (file, profile_source) = match (&config, &profile) {
                (Some(path), _) => (
                    monitor::config::Config::load(path)?,
                    ProfileSource::Config(path.clone()),
                ),
                (None, Some(path)) => (
                    monitor::config::Config::default(),
                    ProfileSource::Profile(path.clone()),
                ),
                (None, None) => (monitor::config::Config::default(), ProfileSource::BuiltIn),
            };
            let profiles = match &config {
                Some(path) => file.profiles_beside(path)?,
                None => profile_source.load()?,
            };
            let exfil_services = match (&exfil_services, &config) {
                (Some(list), _) => ExfilServices::load(list)?,
                (None, Some(path)) => file.exfil_services_beside(path)?,
                (None, None) => ExfilServices::built_in(),
            };
            let baseline = baseline_options(
                baseline,
                no_baseline,
                baseline_pending,
                file.baseline.as_ref(),
            );
            let console = output.resolved() == monitor::console::OutputMode::Console;
            // A person at a terminal reads findings; the events go to the log, whose directory
            // is made owner-only when missing.
            let events = events.or(file.events);
            let findings = findings.or(file.findings);
            let (events, findings) = if console {
                let dir = Path::new(DEFAULT_LOG_DIR);
                if events.is_none() || findings.is_none() {
                    use std::os::unix::fs::DirBuilderExt as _;
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                (
                    Some(events.unwrap_or_else(|| dir.join("events.jsonl"))),
                    Some(findings.unwrap_or_else(|| dir.join("findings.jsonl"))),
                )
            } else {
                (events, findings)
            };
            let defaults = agent::RunOptions::default();
            let options = agent::RunOptions {
                outputs: file.outputs.clone(),
                runner: file.runner.clone().unwrap_or_default(),
                console,
                baseline,
                exfil_services: std::sync::Arc::new(exfil_services),
                events,
                findings,
                profiles,
                profile_source,
                ready_file,
                probe: ProbeOptions {
                    ring_bytes,
                    open_all: all_opens,
                    pin_dir: Some(pin_dir),
                    hook_tier,
                    ..Default::default()
                },
                release_enforcement,
                max_processes,
                control_socket: (!no_control_socket).then(|| {
                    control_socket
                        .or(file.control_socket)
                        .unwrap_or_else(|| control::DEFAULT_SOCKET.into())
                }),
                control_group: control_group.or(file.control_group),
                metrics_address: (!no_metrics).then(|| {
                    metrics_address.or(file.metrics_address).unwrap_or_else(|| {
                        agent::DEFAULT_METRICS_ADDRESS
                            .parse()
                            .expect("a valid default address")
                    })
                }),
                reports: (!no_reports).then(|| {
                    reports
                        .or(file.reports)
                        .unwrap_or_else(|| DEFAULT_REPORTS.into())
                }),
                log_max_bytes: log_max_bytes
                    .or(file.log_max_bytes)
                    .unwrap_or(defaults.log_max_bytes),
                watch_homes: if watch_homes.is_empty() {
                    file.watch_homes.clone()
                } else {
                    watch_homes
                },
                docker_socket: match docker_socket.or_else(|| file.docker_socket.clone()) {
                    Some(p) if p.as_os_str() == "none" => None,
                    Some(p) => Some(p),
                    None => defaults.docker_socket.clone(),
                },
                runtime_sockets: {
                    let given = if runtime_sockets.is_empty() {
                        file.runtime_sockets.clone()
                    } else {
                        Some(runtime_sockets)
                    };
                    match given {
                        Some(list) => list
                            .into_iter()
                            .filter(|p| p.as_os_str() != "none")
                            .collect(),
                        None => defaults.runtime_sockets.clone(),
                    }
                },
                container_identity: container_identity
                    .or(file.container_identity)
                    .unwrap_or_default(),
                ..defaults
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(agent::run(options))
        }
        Command::Replay { profile, events } => {
            use std::io::Write as _;
            let profile = load_profile(profile.as_deref())?;
            let mut stats = ReadStats::default();
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let mut count = 0u64;
            replay::replay(&events, profile, machine_engine_config(), &mut stats, |f| {
                count += 1;
                let _ = serde_json::to_writer(&mut out, &f);
                let _ = out.write_all(b"\n");
            })?;
            out.flush()?;
            eprintln!("replay: {}, {count} findings", stats.report());
            Ok(())
        }
        Command::Report {
            job,
            events,
            profile,
            format,
            output,
        } => {
            let profile = load_profile(profile.as_deref())?;
            let mut stats = ReadStats::default();
            let wanted = job.clone();
            let reports =
                replay::reports(&events, profile, machine_engine_config(), &mut stats, |j| {
                    wanted
                        .as_deref()
                        .is_none_or(|w| j.key == w || j.run_id.as_deref() == Some(w) || j.name == w)
                })?;
            eprintln!("report: {}", stats.report());
            let Some(job) = job else {
                for r in &reports {
                    println!(
                        "{}\t{}\t{} findings\t{}",
                        terminal_line(&r.job.key),
                        terminal_line(&r.started),
                        r.summary.findings,
                        if r.ended.is_some() {
                            "ended"
                        } else {
                            "running"
                        }
                    );
                }
                return Ok(());
            };
            let report = match reports.as_slice() {
                [one] => one,
                [] => anyhow::bail!(
                    "no job {} in these logs (run without a job to list them)",
                    terminal_line(&job)
                ),
                many => anyhow::bail!(
                    "{} names {} jobs; give a key: {}",
                    terminal_line(&job),
                    many.len(),
                    terminal_line(
                        &many
                            .iter()
                            .map(|r| r.job.key.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                ),
            };
            let text = match format {
                ReportFormat::Json => serde_json::to_string_pretty(report)? + "\n",
                ReportFormat::Markdown => monitor::report::markdown::render(report),
                ReportFormat::Html => monitor::report::html::render(report),
            };
            match output {
                Some(path) => {
                    use std::io::Write as _;
                    let _ = std::fs::remove_file(&path);
                    monitor::output::open_private(&path)?.write_all(text.as_bytes())?;
                }
                None => print!("{}", terminal_text(&text)),
            }
            Ok(())
        }
        Command::Heartbeat { port } => {
            let socket = std::net::UdpSocket::bind(("127.0.0.1", 0))?;
            socket.connect(("127.0.0.1", port))?;
            // And an addressed datagram (nothing listens): it is seen only by the cgroup egress
            // hooks, so its coming back proves they are still attached.
            let unconnected = std::net::UdpSocket::bind(("127.0.0.1", 0))?;
            let _ = unconnected.send_to(b"", ("127.0.0.1", port));
            Ok(())
        }
        Command::Profile { command } => profile_command(command),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => {
            let checked = monitor::config::Config::load(&config).and_then(|file| {
                let profiles = file.profiles_beside(&config)?;
                let list = file.exfil_services_beside(&config)?;
                Ok((profiles.chosen.len() + 1, list.len(), file))
            });
            match checked {
                Ok((n, services, file)) => {
                    let baseline = match &file.baseline {
                        Some(b) if !b.enabled => "baselines off".to_string(),
                        Some(b) => format!(
                            "baselines in {}",
                            monitor::baseline::store::shown_location(
                                b.store
                                    .as_deref()
                                    .unwrap_or(monitor::baseline::DEFAULT_STORE)
                            )
                        ),
                        None => format!("baselines in {}", monitor::baseline::DEFAULT_STORE),
                    };
                    println!(
                        "{}: valid ({n} profiles, {services} known exfiltration services, {} output(s), {baseline})",
                        config.display(),
                        file.outputs.len()
                    );
                    Ok(())
                }
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1)
                }
            }
        }
        Command::Job { command, socket } => job_command(command, &socket),
        Command::Hook {
            command,
            socket,
            fail_closed,
            config,
        } => match hook_command(command, &socket) {
            Ok(()) => Ok(()),
            Err(e) if !fail_closed && !profile_wants_fail_closed(&config) => {
                // Shown in the job's log by the runner; the job goes on.
                eprintln!("monitor hook: {e:#} (the job continues unmonitored: pass --fail-closed to fail it instead)");
                Ok(())
            }
            Err(e) => Err(e),
        },
        Command::InstallRunnerHooks {
            runner_dir,
            socket,
            fail_closed,
            remove,
        } => {
            // /proc/self/exe, or an absolute argv[0] where /proc is not mounted (a chroot).
            let monitor = std::env::current_exe()
                .ok()
                .or_else(|| {
                    std::env::args_os()
                        .next()
                        .map(PathBuf::from)
                        .filter(|p| p.is_absolute())
                })
                .context(
                    "locating this monitor binary (no /proc/self/exe; run it by its absolute path)",
                )?;
            let done = monitor::runner_hooks::install(
                &runner_dir,
                &monitor,
                &socket,
                fail_closed,
                remove,
            )?;
            if remove {
                println!(
                    "removed the monitor's job hooks from {}",
                    done.env_file.display()
                );
            } else {
                println!(
                    "{} now runs {} (restart the runner service for it to take effect)",
                    done.env_file.display(),
                    done.scripts
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" and ")
                );
            }
            Ok(())
        }
        Command::Baseline(args) => monitor::baseline::cli::run(args),
        Command::Selftest(args) => {
            let card = match monitor::selftest::run(&args) {
                Ok(card) => card,
                Err(e) if e.is::<monitor::selftest::Interrupted>() => {
                    eprintln!("selftest: interrupted; everything it made is removed");
                    std::process::exit(130)
                }
                Err(e) => return Err(e),
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&card)?);
            } else {
                print!("{}", card.table());
            }
            std::process::exit(card.exit_code())
        }
        Command::Doctor {
            no_load,
            docker_socket,
        } => {
            let socket = match docker_socket {
                Some(p) if p.as_os_str() == "none" => None,
                Some(p) => Some(p),
                None => Some(PathBuf::from(agent::DEFAULT_DOCKER_SOCKET)),
            };
            let checks = doctor::run_checks(!no_load, socket.as_deref());
            if doctor::print(&checks) {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
    }
}

/// Whether the profile that would judge this job (from the configuration, by the job's own
/// identity variables) asks hooks to fail closed. Unreadable configuration: no.
fn profile_wants_fail_closed(config: &Path) -> bool {
    let Ok(profiles) = ProfileSource::Config(config.to_path_buf()).load() else {
        return false;
    };
    let env = control::own_identity_env();
    match monitor::ci::identity_from_env(&env) {
        Some((job, _)) => profiles.for_job(&job).hooks.fail_closed,
        None => profiles.default.hooks.fail_closed,
    }
}

/// `monitor hook job-started|job-completed`, as the runner's job hooks run it.
fn hook_command(command: HookCommand, socket: &Path) -> anyhow::Result<()> {
    let env = control::own_identity_env();
    let request = match command {
        HookCommand::JobStarted => Request::JobStart {
            env,
            anchor_pid: control::runner_worker_or_parent(Path::new("/proc")),
            via: "hook".into(),
        },
        HookCommand::JobCompleted => Request::JobEnd {
            job: None,
            env,
            via: "hook".into(),
        },
    };
    let response = send(socket, &request)?;
    // The hook runs as the runner's user: the step summary file is its to append to.
    if let (Some(markdown), Some(summary)) = (
        response.summary_markdown.as_deref(),
        std::env::var_os("GITHUB_STEP_SUMMARY"),
    ) {
        use std::io::{Read as _, Write as _};
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&summary)
            .with_context(|| {
                format!("opening GITHUB_STEP_SUMMARY {}", summary.to_string_lossy())
            })?;
        // Steps write to this file too: close whatever they left open (a comment, a code
        // fence, <details>) so it cannot hide the agent's block. GitHub reads at most 1 MiB.
        // One that would hide the block anyway, or push the page past what GitHub shows,
        // gets the block first.
        use monitor::report::markdown::{with_block, SummaryWrite, STEP_SUMMARY_LIMIT};
        let mut existing = Vec::new();
        (&mut file)
            .take(STEP_SUMMARY_LIMIT as u64 + 1)
            .read_to_end(&mut existing)?;
        match with_block(&String::from_utf8_lossy(&existing), markdown) {
            SummaryWrite::Append(text) => file.write_all(text.as_bytes())?,
            SummaryWrite::Rewrite(whole) => {
                file.set_len(0)?;
                file.write_all(whole.as_bytes())?;
            }
        }
    }
    // The job's profile fails jobs with such findings (`hooks.fail_on`): after the summary is
    // written, and whatever `--fail-closed` says (the agent answered).
    if let Some(reason) = &response.fail_job {
        eprintln!("monitor hook: failing the job: {}", terminal_line(reason));
        std::process::exit(1);
    }
    Ok(())
}

/// Sends a control request; prints the agent's answer (without the Markdown summary); fails
/// when the agent refused.
fn send(socket: &Path, request: &Request) -> anyhow::Result<control::Response> {
    let response = control::request(socket, request)?;
    let shown = control::Response {
        summary_markdown: None,
        ..response.clone()
    };
    println!("{}", serde_json::to_string(&shown)?);
    if !response.ok {
        anyhow::bail!("the agent refused: {}", response.error.unwrap_or_default());
    }
    Ok(response)
}

fn job_command(command: JobCommand, socket: &Path) -> anyhow::Result<()> {
    let identity = |id: Option<String>| match id {
        Some(id) => [("MONITOR_JOB_ID".to_string(), id)].into_iter().collect(),
        None => control::own_identity_env(),
    };
    let request = match command {
        JobCommand::Start { id, pid } => Request::JobStart {
            env: identity(id),
            anchor_pid: pid.unwrap_or_else(std::os::unix::process::parent_id),
            via: "job start".into(),
        },
        JobCommand::Stop { id, key } => Request::JobEnd {
            env: if key.is_some() {
                Default::default()
            } else {
                identity(id)
            },
            job: key,
            via: "job stop".into(),
        },
        JobCommand::Status => Request::Status {},
    };
    send(socket, &request).map(|_| ())
}

fn profile_command(command: ProfileCommand) -> anyhow::Result<()> {
    match command {
        ProfileCommand::Check { profile } => match Profile::load(&profile) {
            Ok(_) => {
                println!("{}: valid", profile.display());
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1)
            }
        },
        ProfileCommand::Default => {
            print!("{}", monitor::profile::DEFAULT_PROFILE);
            Ok(())
        }
        ProfileCommand::Learn {
            base,
            output,
            jobs,
            events,
        } => {
            let base = match base {
                Some(p) => Profile::load(&p)?,
                None => Profile {
                    version: monitor::profile::PROFILE_VERSION,
                    ..Default::default()
                },
            };
            let mut stats = ReadStats::default();
            let learnt =
                replay::learn(&events, base, machine_engine_config(), &mut stats, |job| {
                    jobs.is_empty()
                        || jobs
                            .iter()
                            .any(|j| *j == job.key || job.run_id.as_deref() == Some(j.as_str()))
                })?;
            // Each entry with the finding that called for it, so a reviewer can tell what the
            // run did (comments: the file stays a valid profile).
            let why: String = learnt
                .added
                .iter()
                .map(|(entry, f)| {
                    let step = f.step.as_ref().map(|s| s.id.as_str()).unwrap_or("-");
                    let job = f.job.as_ref().map(|j| j.key.as_str()).unwrap_or("-");
                    format!(
                        "#   {} <- {} in job {}, step {}: {}\n",
                        comment_safe(entry),
                        f.rule,
                        comment_safe(job),
                        comment_safe(step),
                        comment_safe(&f.summary)
                    )
                })
                .collect();
            let yaml = format!(
                "# Learnt by `monitor profile learn` from {} ({}).\n# Added, and why:\n{}{}",
                events
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                stats.report().lines().next().unwrap_or_default(),
                if why.is_empty() {
                    "#   nothing\n".to_string()
                } else {
                    why
                },
                learnt.profile.to_yaml()
            );
            let unallowable = learnt.unallowable;
            match output {
                Some(path) => {
                    use std::io::Write as _;
                    let _ = std::fs::remove_file(&path);
                    let mut file = monitor::output::open_private(&path)?;
                    file.write_all(yaml.as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                None => print!("{yaml}"),
            }
            eprintln!("learn: {}", stats.report());
            for f in unallowable {
                eprintln!(
                    "learn: not allowable, review it: [{}] {} {}",
                    f.severity.name(),
                    f.rule,
                    terminal_line(&f.summary)
                );
            }
            Ok(())
        }
        ProfileCommand::Diff { profile, events } => {
            let current = Profile::load(&profile)?;
            let responses = current.responses;
            let mut additions = Profile {
                version: monitor::profile::PROFILE_VERSION,
                ..Default::default()
            };
            let mut stats = ReadStats::default();
            let mut count = 0;
            replay::replay(&events, current, machine_engine_config(), &mut stats, |f| {
                count += 1;
                // What the profile's responses did, or would do, to the process.
                let response = match f.response {
                    Some(r) => format!(" [{}]", r.as_str().replace('_', " ")),
                    None if responses.kills_for(f.rule, f.hook.is_some()) => {
                        " [would kill]".to_string()
                    }
                    None => String::new(),
                };
                println!(
                    "[{}] {} {}{}{response}",
                    f.severity.name(),
                    f.rule,
                    terminal_line(&f.summary),
                    f.step
                        .as_ref()
                        .map(|s| format!(" (step {})", terminal_line(&s.id)))
                        .unwrap_or_default()
                );
                if let Some(a) = &f.allowance {
                    additions.allow(a);
                }
            })?;
            if count == 0 {
                println!("the profile allows everything these runs did");
            } else {
                println!(
                    "\n# To allow it, add to {}:\n{}",
                    profile.display(),
                    terminal_text(&additions.to_yaml())
                );
            }
            eprintln!("diff: {}", stats.report());
            Ok(())
        }
    }
}
