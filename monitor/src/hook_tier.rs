//! Which kernel hooks see file opens: the best tier this kernel allows, chosen at load.
//!
//! - `lsm`: BPF-LSM `file_open`. Every open whatever its route (io_uring, 32-bit syscalls,
//!   `open_by_handle_at`, any syscall added later), and a `kill` response also refuses the open
//!   with `EPERM`, so the process never holds the descriptor. Needs Linux 5.7+ with
//!   `CONFIG_BPF_LSM` and `bpf` in the active LSM list (`/sys/kernel/security/lsm`; Debian 12's
//!   stock kernel lists it; elsewhere boot with `lsm=...,bpf`).
//! - `fentry`: fentry on `security_file_open`. Every route, no refusal. Linux 5.5+ with BTF.
//! - `tracepoint`: the open syscalls' exit tracepoints and `io_uring_complete`. Loads anywhere;
//!   blind to 32-bit syscalls and to routes nobody listed.
//!
//! The security-hook tiers replace the tracepoints (which are then not attached, so every
//! other process's syscalls stay off the probe's path). Whichever is in force, the same
//! records reach the agent; each says which hook saw it (`via`).

use anyhow::{bail, Context as _};
use aya::{
    programs::{links::FdLink, FEntry, Lsm},
    Btf, Ebpf,
};

/// A hook tier for file opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenTier {
    Lsm,
    Fentry,
    Tracepoint,
}

impl OpenTier {
    pub fn as_str(self) -> &'static str {
        match self {
            OpenTier::Lsm => "lsm",
            OpenTier::Fentry => "fentry",
            OpenTier::Tracepoint => "tracepoint",
        }
    }

    /// The attach label of the tier's program (`None`: the tracepoints, labelled each).
    pub fn label(self) -> Option<&'static str> {
        match self {
            OpenTier::Lsm => Some("lsm/file_open"),
            OpenTier::Fentry => Some("fentry/security_file_open"),
            OpenTier::Tracepoint => None,
        }
    }
}

/// What `--open-hook` asks for: the best the kernel allows, or one tier (refusing to start
/// without it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OpenHookChoice {
    #[default]
    Best,
    Lsm,
    Fentry,
    Tracepoint,
}

/// The programs of the open tracepoint tier (not attached when a security hook is).
pub const TRACEPOINT_TIER_PROGRAMS: [&str; 2] = ["sys_exit_open", "io_uring_complete"];

/// The tier in force for opens, and why each better one is not.
#[derive(Debug, Clone)]
pub struct OpenTierChoice {
    pub tier: OpenTier,
    pub refused: Vec<(OpenTier, String)>,
}

impl OpenTierChoice {
    /// One line for the start-up log and `monitor doctor`.
    pub fn describe(&self) -> String {
        let what = match self.tier {
            OpenTier::Lsm => "BPF-LSM file_open: every open route, kill responses refuse the open",
            OpenTier::Fentry => "fentry on security_file_open: every open route, no refusal",
            OpenTier::Tracepoint => {
                "open syscall tracepoints and io_uring: 32-bit syscalls are not seen"
            }
        };
        let mut line = format!("file opens: {} ({what})", self.tier.as_str());
        for (tier, why) in &self.refused {
            line.push_str(&format!("; {} not used: {why}", tier.as_str()));
        }
        line
    }
}

/// Attaches the best open hook `choice` allows. With `keep`, a security-hook tier's link is
/// handed back (to be pinned with the others when enforcement outlives the agent); else the
/// program keeps it, for the agent's life.
pub fn attach_open_hook(
    ebpf: &mut Ebpf,
    choice: OpenHookChoice,
    keep: bool,
) -> anyhow::Result<(OpenTierChoice, Option<FdLink>)> {
    let wanted: &[OpenTier] = match choice {
        OpenHookChoice::Best => &[OpenTier::Lsm, OpenTier::Fentry],
        OpenHookChoice::Lsm => &[OpenTier::Lsm],
        OpenHookChoice::Fentry => &[OpenTier::Fentry],
        OpenHookChoice::Tracepoint => &[],
    };
    let mut refused = Vec::new();
    let btf = match wanted.is_empty() {
        true => None,
        false => match Btf::from_sys_fs() {
            Ok(btf) => Some(btf),
            Err(e) => {
                for tier in wanted {
                    refused.push((*tier, format!("no kernel BTF ({e})")));
                }
                None
            }
        },
    };
    if let Some(btf) = &btf {
        for &tier in wanted {
            match attach_security_hook(ebpf, tier, btf, keep) {
                Ok(link) => return Ok((OpenTierChoice { tier, refused }, link)),
                Err(e) => refused.push((tier, format!("{e:#}"))),
            }
        }
    }
    if choice != OpenHookChoice::Best && choice != OpenHookChoice::Tracepoint {
        let (tier, why) = &refused[0];
        bail!(
            "--open-hook {} was asked for, but this kernel refuses it: {why}",
            tier.as_str()
        );
    }
    Ok((
        OpenTierChoice {
            tier: OpenTier::Tracepoint,
            refused,
        },
        None,
    ))
}

fn attach_security_hook(
    ebpf: &mut Ebpf,
    tier: OpenTier,
    btf: &Btf,
    keep: bool,
) -> anyhow::Result<Option<FdLink>> {
    match tier {
        OpenTier::Lsm => {
            // An LSM program attaches and loads on a kernel whose active list lacks `bpf`, and
            // then never runs: the list is the only word on it.
            if !bpf_lsm_active()? {
                bail!("`bpf` is not in the kernel's active LSM list (/sys/kernel/security/lsm; boot with lsm=...,bpf)");
            }
            let program: &mut Lsm = ebpf
                .program_mut("lsm_file_open")
                .context("program lsm_file_open missing from the object")?
                .try_into()?;
            program.load("file_open", btf).context("loading")?;
            let id = program.attach().context("attaching")?;
            Ok(match keep {
                true => Some(program.take_link(id)?.into()),
                false => None,
            })
        }
        OpenTier::Fentry => {
            let program: &mut FEntry = ebpf
                .program_mut("fentry_file_open")
                .context("program fentry_file_open missing from the object")?
                .try_into()?;
            program.load("security_file_open", btf).context("loading")?;
            let id = program.attach().context("attaching")?;
            Ok(match keep {
                true => Some(program.take_link(id)?.into()),
                false => None,
            })
        }
        OpenTier::Tracepoint => bail!("not a security hook"),
    }
}

/// Whether `bpf` is in the active LSM list, mounting securityfs when it is not.
fn bpf_lsm_active() -> anyhow::Result<bool> {
    let list = std::path::Path::new("/sys/kernel/security/lsm");
    if !list.exists() {
        // SAFETY: constant NUL-terminated strings.
        unsafe {
            libc::mount(
                c"securityfs".as_ptr(),
                c"/sys/kernel/security".as_ptr(),
                c"securityfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
    }
    let text = std::fs::read_to_string(list)
        .with_context(|| format!("reading {} (securityfs)", list.display()))?;
    Ok(text.trim().split(',').any(|m| m == "bpf"))
}
