//! `monitor`: the agent and its command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use monitor::{agent, doctor, probes::ProbeOptions};

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
    /// Load the probes and stream every event as one JSON object per line.
    Run {
        /// Write events to this file (created 0600, appended) instead of stdout.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Create this file (containing the agent's pid) once the probes are attached.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Size of the kernel ring buffer in bytes (a power of two, multiple of the page size).
        #[arg(long, default_value_t = 8 * 1024 * 1024)]
        ring_bytes: u32,
        /// Send every successful open, not only watched files (learning/debugging; costly).
        #[arg(long)]
        all_opens: bool,
        /// Bound on the process table.
        #[arg(long, default_value_t = 65_536)]
        max_processes: usize,
    },
    /// Check that this machine can run the monitor and say what to fix.
    Doctor {
        /// Only inspect; do not load the programs.
        #[arg(long)]
        no_load: bool,
    },
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            events,
            ready_file,
            ring_bytes,
            all_opens,
            max_processes,
        } => {
            if !ring_bytes.is_power_of_two() || ring_bytes < 4096 {
                anyhow::bail!(
                    "--ring-bytes must be a power of two of at least 4096, got {ring_bytes}"
                );
            }
            let options = agent::RunOptions {
                events,
                ready_file,
                probe: ProbeOptions {
                    ring_bytes,
                    open_all: all_opens,
                    ..Default::default()
                },
                max_processes,
                ..Default::default()
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(agent::run(options))
        }
        Command::Doctor { no_load } => {
            let checks = doctor::run_checks(!no_load);
            if doctor::print(&checks) {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
    }
}
