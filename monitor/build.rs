//! Builds the kernel programs (`monitor-ebpf`) for the BPF target with aya-build and leaves the
//! object in OUT_DIR for `include_bytes_aligned!`.
//!
//! The BPF target has no prebuilt `core`, so it is built from source (`-Z build-std=core`) with a
//! compiler whose library sources match it exactly: Debian's Rust, linked into rustup as the
//! `monitor-bpf` toolchain by `cargo xtask setup` (see docs/toolchain.md).
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

/// Name of the rustup toolchain that `cargo xtask setup` links (kept in sync with xtask).
const BPF_TOOLCHAIN: &str = "monitor-bpf";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=MONITOR_TOOLCHAIN_DIR");
    let toolchain_dir = std::env::var("MONITOR_TOOLCHAIN_DIR")
        .unwrap_or_else(|_| "/opt/monitor-toolchain".to_string());
    // bpf-linker is installed beside the toolchain; put it first on PATH for the nested cargo.
    let path = std::env::var("PATH").unwrap_or_default();
    // SAFETY: build scripts are single-threaded at this point.
    std::env::set_var("PATH", format!("{toolchain_dir}/bin:{path}"));

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("monitor has no parent directory"))?
        .join("monitor-ebpf");
    let root = root.to_str().context("non-UTF-8 workspace path")?;
    // The kernel programs are built from monitor-common too (the record layouts, which ring a
    // kind goes to): a change there must rebuild them, not only the agent.
    println!("cargo:rerun-if-changed=../monitor-common/src");
    // The fuzz targets (`--cfg fuzzing`, cargo-fuzz's build) never load the programs: an empty
    // object spares them a fourth build of the kernel programs (about 2 minutes of CI).
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out = std::env::var("OUT_DIR").context("OUT_DIR")?;
        std::fs::write(std::path::Path::new(&out).join("monitor"), [])
            .context("writing the empty object")?;
        return Ok(());
    }
    aya_build::build_ebpf(
        [Package {
            name: "monitor-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::Custom(BPF_TOOLCHAIN),
    )
    .context("building the eBPF programs failed; run `cargo xtask setup` first")
}
