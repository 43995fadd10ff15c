//! Which kernel hooks see file opens and new file names: the best tier this kernel allows,
//! chosen at load for each family.
//!
//! - `lsm`: BPF-LSM (`file_open`; `path_rename`, `path_link`, `path_symlink`, `path_unlink`). Every route
//!   (io_uring, 32-bit syscalls, `open_by_handle_at`, any syscall added later), and for opens a
//!   `kill` response also refuses the open with `EPERM`, so the process never holds the
//!   descriptor. Needs Linux 5.7+ with `CONFIG_BPF_LSM` and `bpf` in the active LSM list
//!   (`/sys/kernel/security/lsm`; Debian 12's stock kernel lists it; elsewhere boot with
//!   `lsm=...,bpf`); the name hooks also need `CONFIG_SECURITY_PATH` (AppArmor and TOMOYO need
//!   it, so Debian's and Ubuntu's kernels have it).
//! - `fentry`: fentry on the same `security_*` functions. Every route, no refusal. Linux 5.5+
//!   with BTF.
//! - `tracepoint`: the syscalls' tracepoints and io_uring's. Loads anywhere; blind to 32-bit
//!   syscalls and to routes nobody listed.
//!
//! A family's security-hook tier replaces its tracepoints (which are then not attached, so every
//! other process's syscalls stay off the probe's path). Whichever is in force, the same records
//! reach the agent; each says which hook saw it (`via`). Program starts, egress and signals have
//! one tier everywhere (`FIXED_FAMILIES`): their hooks already see every route.

use anyhow::{bail, Context as _};
use aya::{
    programs::{links::FdLink, FEntry, Lsm},
    Btf, Ebpf,
};

/// A family of events whose hooks are chosen by tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookFamily {
    /// File opens (open.rs).
    Opens,
    /// New names for files: rename, link, symlink; and names removed: unlink (new_name.rs).
    Names,
    /// The check of each file an exec is about to run (process.rs `lsm_bprm_check`): where it
    /// can refuse, a kill response due at an exec refuses it, and a `#!` script is judged by
    /// its own file. Every exec is recorded by `sched_process_exec` whatever the tier (a fixed
    /// family): this one adds the refusal, so it has no fentry tier (fentry cannot refuse and
    /// sees nothing the tracepoint does not).
    ExecChecks,
}

/// A security-hook program: its name in the object and the hook it attaches to.
struct SecurityProgram {
    program: &'static str,
    hook: &'static str,
}

impl HookFamily {
    pub const ALL: [HookFamily; 3] = [HookFamily::Opens, HookFamily::Names, HookFamily::ExecChecks];

    /// The security-hook programs of `tier` (empty for the tracepoints).
    fn programs(self, tier: HookTier) -> &'static [SecurityProgram] {
        match (self, tier) {
            (HookFamily::Opens, HookTier::Lsm) => &[SecurityProgram {
                program: "lsm_file_open",
                hook: "file_open",
            }],
            (HookFamily::Opens, HookTier::Fentry) => &[SecurityProgram {
                program: "fentry_file_open",
                hook: "security_file_open",
            }],
            (HookFamily::Names, HookTier::Lsm) => &[
                SecurityProgram {
                    program: "lsm_path_rename",
                    hook: "path_rename",
                },
                SecurityProgram {
                    program: "lsm_path_link",
                    hook: "path_link",
                },
                SecurityProgram {
                    program: "lsm_path_symlink",
                    hook: "path_symlink",
                },
                SecurityProgram {
                    program: "lsm_path_unlink",
                    hook: "path_unlink",
                },
            ],
            (HookFamily::Names, HookTier::Fentry) => &[
                SecurityProgram {
                    program: "fentry_path_rename",
                    hook: "security_path_rename",
                },
                SecurityProgram {
                    program: "fentry_path_link",
                    hook: "security_path_link",
                },
                SecurityProgram {
                    program: "fentry_path_symlink",
                    hook: "security_path_symlink",
                },
                SecurityProgram {
                    program: "fentry_path_unlink",
                    hook: "security_path_unlink",
                },
            ],
            (HookFamily::ExecChecks, HookTier::Lsm) => &[SecurityProgram {
                program: "lsm_bprm_check",
                hook: "bprm_check_security",
            }],
            (HookFamily::ExecChecks, HookTier::Fentry) | (_, HookTier::Tracepoint) => &[],
        }
    }

    /// The programs of the family's tracepoint tier (not attached when a security hook is).
    pub fn tracepoint_programs(self) -> &'static [&'static str] {
        match self {
            HookFamily::Opens => &["sys_exit_open", "io_uring_complete"],
            HookFamily::Names => &[
                "sys_enter_rename",
                "sys_enter_renameat",
                "sys_enter_link",
                "sys_enter_linkat",
                "sys_enter_symlink",
                "sys_enter_symlinkat",
                "sys_enter_unlink",
                "sys_enter_unlinkat",
                "sys_exit_new_name",
                "io_uring_submit_req",
            ],
            // `sched_process_exec` records every exec on every tier.
            HookFamily::ExecChecks => &[],
        }
    }

    fn what(self, tier: HookTier) -> &'static str {
        match (self, tier) {
            (HookFamily::Opens, HookTier::Lsm) => {
                "BPF-LSM file_open: every open route, kill responses refuse the open"
            }
            (HookFamily::Opens, HookTier::Fentry) => {
                "fentry on security_file_open: every open route, no refusal"
            }
            (HookFamily::Opens, HookTier::Tracepoint) => {
                "open syscall tracepoints and io_uring: 32-bit syscalls are not seen"
            }
            (HookFamily::Names, HookTier::Lsm) => {
                "BPF-LSM path_rename, path_link, path_symlink, path_unlink: every route"
            }
            (HookFamily::Names, HookTier::Fentry) => {
                "fentry on security_path_rename, _link, _symlink, _unlink: every route"
            }
            (HookFamily::Names, HookTier::Tracepoint) => {
                "rename, link, symlink and unlink syscall tracepoints and io_uring: 32-bit syscalls are not seen"
            }
            (HookFamily::ExecChecks, HookTier::Lsm) => {
                "BPF-LSM bprm_check_security: kill responses refuse the exec, a #! script is judged by its own file"
            }
            (HookFamily::ExecChecks, _) => {
                "sched_process_exec: kill responses land before the new program's first instruction, a #! script is judged by its interpreter"
            }
        }
    }

    /// How the family is named in the start-up log and by `monitor doctor`.
    pub fn title(self) -> &'static str {
        match self {
            HookFamily::Opens => "file opens",
            HookFamily::Names => "file names",
            HookFamily::ExecChecks => "exec checks",
        }
    }
}

/// The families whose hooks are the same on every kernel, with why that is enough.
pub const FIXED_FAMILIES: [&str; 3] = [
    "program starts: tracepoint sched_process_exec (every route: the kernel's own exec, whatever called it)",
    "egress: cgroup connect4/6, sendmsg4/6, sock_create and skb hooks (every route: io_uring, 32-bit syscalls and raw sockets alike; block mode refuses there)",
    "signals: raw tracepoint signal_generate (every route: every signal the kernel generates)",
];

/// A hook tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookTier {
    Lsm,
    Fentry,
    Tracepoint,
}

impl HookTier {
    pub fn as_str(self) -> &'static str {
        match self {
            HookTier::Lsm => "lsm",
            HookTier::Fentry => "fentry",
            HookTier::Tracepoint => "tracepoint",
        }
    }

    fn label(self, hook: &str) -> String {
        format!("{}/{hook}", self.as_str())
    }
}

/// What `--hook-tier` asks for: the best the kernel allows, or one tier for every family
/// (refusing to start without it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HookChoice {
    #[default]
    Best,
    Lsm,
    Fentry,
    Tracepoint,
}

impl HookChoice {
    /// The tier `--hook-tier` named; None for the best the kernel allows.
    fn forced(self) -> Option<HookTier> {
        match self {
            HookChoice::Best => None,
            HookChoice::Lsm => Some(HookTier::Lsm),
            HookChoice::Fentry => Some(HookTier::Fentry),
            HookChoice::Tracepoint => Some(HookTier::Tracepoint),
        }
    }
}

/// The tier in force for a family, and why each better one is not.
#[derive(Debug, Clone)]
pub struct TierChoice {
    pub family: HookFamily,
    pub tier: HookTier,
    pub refused: Vec<(HookTier, String)>,
}

impl TierChoice {
    /// One line for the start-up log and `monitor doctor`.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "{}: {} ({})",
            self.family.title(),
            self.tier.as_str(),
            self.family.what(self.tier)
        );
        for (tier, why) in &self.refused {
            line.push_str(&format!("; {} not used: {why}", tier.as_str()));
        }
        line
    }
}

/// A family's security hooks as attached: their labels and, with `keep`, their links.
pub struct Attached {
    pub choice: TierChoice,
    pub labels: Vec<String>,
    pub links: Vec<(String, FdLink)>,
}

/// Attaches the best hooks of `family` that `choice` allows. With `keep`, a security-hook
/// tier's links are handed back (to be pinned with the others when enforcement outlives the
/// agent); else the programs keep them, for the agent's life.
/// The kernel's BTF, read once for every family's security hooks (`attach_family`); None when
/// `choice` wants none, an error saying why when it cannot be read.
pub fn kernel_btf(choice: HookChoice) -> Option<Result<Btf, String>> {
    match choice {
        HookChoice::Tracepoint => None,
        _ => Some(Btf::from_sys_fs().map_err(|e| e.to_string())),
    }
}

pub fn attach_family(
    ebpf: &mut Ebpf,
    family: HookFamily,
    choice: HookChoice,
    btf: Option<&Result<Btf, String>>,
    keep: bool,
) -> anyhow::Result<Attached> {
    let asked: &[HookTier] = match choice {
        HookChoice::Best => &[HookTier::Lsm, HookTier::Fentry],
        HookChoice::Lsm => &[HookTier::Lsm],
        HookChoice::Fentry => &[HookTier::Fentry],
        HookChoice::Tracepoint => &[],
    };
    // A tier the family does not have (exec checks at fentry) is not asked of the kernel.
    let wanted: Vec<HookTier> = asked
        .iter()
        .copied()
        .filter(|tier| !family.programs(*tier).is_empty())
        .collect();
    // Better tiers left out by `--hook-tier` are said so, as those the kernel refuses are.
    let mut refused: Vec<(HookTier, String)> = [HookTier::Lsm, HookTier::Fentry]
        .into_iter()
        .filter(|tier| !asked.contains(tier) && !family.programs(*tier).is_empty())
        .filter(|tier| choice != HookChoice::Lsm || *tier != HookTier::Fentry)
        .filter_map(|tier| {
            let forced = choice.forced()?;
            Some((
                tier,
                format!("--hook-tier {} was asked for", forced.as_str()),
            ))
        })
        .collect();
    let forced_out = refused.len();
    let btf = match (wanted.is_empty(), btf) {
        (true, _) | (false, None) => None,
        (false, Some(Ok(btf))) => Some(btf),
        (false, Some(Err(e))) => {
            for tier in &wanted {
                refused.push((*tier, format!("no kernel BTF ({e})")));
            }
            None
        }
    };
    if let Some(btf) = btf {
        for &tier in &wanted {
            match attach_security_hooks(ebpf, family, tier, btf, keep) {
                Ok((labels, links)) => {
                    return Ok(Attached {
                        choice: TierChoice {
                            family,
                            tier,
                            refused,
                        },
                        labels,
                        links,
                    })
                }
                Err(e) => refused.push((tier, format!("{e:#}"))),
            }
        }
    }
    if choice != HookChoice::Best && refused.len() > forced_out {
        let (tier, why) = &refused[forced_out];
        bail!(
            "--hook-tier {} was asked for, but this kernel refuses it for {}: {why}",
            tier.as_str(),
            family.title()
        );
    }
    Ok(Attached {
        choice: TierChoice {
            family,
            tier: HookTier::Tracepoint,
            refused,
        },
        labels: Vec::new(),
        links: Vec::new(),
    })
}

/// Loads every program of the tier first, then attaches them: a kernel that refuses one (a
/// missing hook, the verifier) leaves none of the tier attached, and the family falls back whole.
fn attach_security_hooks(
    ebpf: &mut Ebpf,
    family: HookFamily,
    tier: HookTier,
    btf: &Btf,
    keep: bool,
) -> anyhow::Result<(Vec<String>, Vec<(String, FdLink)>)> {
    let programs = family.programs(tier);
    if programs.is_empty() {
        bail!("not a security hook");
    }
    // An LSM program attaches and loads on a kernel whose active list lacks `bpf`, and then
    // never runs: the list is the only word on it.
    if tier == HookTier::Lsm && !bpf_lsm_active()? {
        bail!("`bpf` is not in the kernel's active LSM list (/sys/kernel/security/lsm; boot with lsm=...,bpf)");
    }
    for p in programs {
        let program = ebpf
            .program_mut(p.program)
            .with_context(|| format!("program {} missing from the object", p.program))?;
        let loaded = match tier {
            HookTier::Lsm => <&mut Lsm>::try_from(program)?.load(p.hook, btf),
            _ => <&mut FEntry>::try_from(program)?.load(p.hook, btf),
        };
        loaded.with_context(|| format!("loading {}", tier.label(p.hook)))?;
    }
    let mut labels = Vec::new();
    let mut links = Vec::new();
    let attached = attach_loaded(ebpf, programs, tier, keep, &mut labels, &mut links);
    if let Err(e) = attached {
        // None of the tier stays: the links taken are closed, the programs unloaded (which
        // detaches the links they kept).
        drop(links);
        for p in programs {
            if let Some(program) = ebpf.program_mut(p.program) {
                let _ = match tier {
                    HookTier::Lsm => <&mut Lsm>::try_from(program).map(|p| p.unload()),
                    _ => <&mut FEntry>::try_from(program).map(|p| p.unload()),
                };
            }
        }
        return Err(e);
    }
    Ok((labels, links))
}

fn attach_loaded(
    ebpf: &mut Ebpf,
    programs: &[SecurityProgram],
    tier: HookTier,
    keep: bool,
    labels: &mut Vec<String>,
    links: &mut Vec<(String, FdLink)>,
) -> anyhow::Result<()> {
    for p in programs {
        let label = tier.label(p.hook);
        let program = ebpf.program_mut(p.program).expect("loaded above");
        let link: Option<FdLink> = match tier {
            HookTier::Lsm => {
                let program = <&mut Lsm>::try_from(program)?;
                let id = program
                    .attach()
                    .with_context(|| format!("attaching {label}"))?;
                match keep {
                    true => Some(program.take_link(id)?.into()),
                    false => None,
                }
            }
            _ => {
                let program = <&mut FEntry>::try_from(program)?;
                let id = program
                    .attach()
                    .with_context(|| format!("attaching {label}"))?;
                match keep {
                    true => Some(program.take_link(id)?.into()),
                    false => None,
                }
            }
        };
        if let Some(link) = link {
            links.push((label.clone(), link));
        }
        labels.push(label);
    }
    Ok(())
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
