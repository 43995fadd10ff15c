//! The second kernel (`cargo xtask kernel-matrix`): the hook-tier tests
//! (`tests/tests/kernel_tiers.rs`) and the evasion routes' tests in Debian's stock 6.1 kernel
//! (`vm.rs`), with the best tier it allows (BPF-LSM) and forced to fentry: the tiers this host's
//! kernel refuses.
//! One boot for all. Part of the full `cargo xtask test` (about 7 minutes: the verifier's walk
//! of every program under emulation is most of an agent's start there).

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _};

/// The tiers a test binary is run with: (what `--hook-tier` is forced to, the tier the tests must
/// find).
type Tiers = &'static [(Option<&'static str>, &'static str)];
/// The best tier 6.1 allows (BPF-LSM), and fentry forced.
const BOTH: Tiers = &[(None, "lsm"), (Some("fentry"), "fentry")];
/// And the syscall tracepoints forced: the tier of kernels without fentry, whose programs the
/// other tiers do not load (so 6.1's verifier would not otherwise see them).
const ALL: Tiers = &[
    (None, "lsm"),
    (Some("fentry"), "fentry"),
    (Some("tracepoint"), "tracepoint"),
];
const BEST: Tiers = &[(None, "lsm")];

/// The test binaries run in the VM, by `--test` name: the tier tests and the file routes (io_uring
/// and 32-bit opens, renames over start-up files, bind mounts and hard links of credentials)
/// under both open hooks; the egress and exec routes, which do not go through the open hook,
/// once.
const VM_TESTS: &[(&str, Tiers)] = &[
    ("kernel_tiers", ALL),
    ("file_routes", BOTH),
    ("egress_routes", BEST),
    ("exec_routes", BEST),
];

pub fn run(root: &Path) -> anyhow::Result<()> {
    // The release agent: the debug build's BTF parsing alone takes minutes under emulation.
    crate::cargo(&["build", "--release", "--package", "monitor"])?;
    let agent = root.join("target/release/monitor");
    let mut script = String::from("set -e\n");
    for (test, tiers) in VM_TESTS {
        let binary = test_binary(root, test)?;
        for (forced, expected) in tiers.iter() {
            script.push_str(&format!(
                "echo '== {test}: open hook {expected} =='\n\
                 MONITOR_TEST_OPEN_HOOK={} MONITOR_EXPECT_OPEN_TIER={expected} {} --test-threads=1\n",
                forced.unwrap_or(""),
                binary.display()
            ));
        }
    }
    let mut env = crate::vm::forwarded_env();
    env.retain(|(name, _)| {
        !name.starts_with("MONITOR_TEST_")
            && !name.starts_with("MONITOR_EXPECT_")
            && name != "MONITOR_BIN"
    });
    env.push(("RUST_BACKTRACE".into(), "1".into()));
    env.push(("MONITOR_BIN".into(), agent.display().to_string()));
    let status = crate::vm::run_in_vm(root, &script, &env)?;
    if status != 0 {
        bail!("the hook-tier tests failed in the kernel VM (exit status {status}; output above)");
    }
    Ok(())
}

/// The executable cargo built for `tests/tests/<name>.rs`.
fn test_binary(root: &Path, name: &str) -> anyhow::Result<std::path::PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "test",
            "-p",
            "integration-tests",
            "--test",
            name,
            "--no-run",
        ])
        .args(["--message-format", "json"])
        .current_dir(root)
        .output()
        .context("running cargo test --no-run")?;
    if !output.status.success() {
        bail!(
            "building the {name} tests failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(std::path::PathBuf::from))
        .with_context(|| format!("cargo named no executable for the {name} tests"))
}
