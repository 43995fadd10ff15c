//! Loading and attaching the kernel programs, and reading what they produce. This is the only
//! module that talks to BPF; everything after the ring buffer is plain code.

use std::path::Path;

use anyhow::{bail, Context as _};
use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf},
    programs::{
        links::FdLink, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock,
        CgroupSockAddr, RawTracePoint, TracePoint,
    },
    Ebpf, EbpfLoader,
};
use monitor_common::{AffixKey, EventKind, NameKey, ProbeConfig, LOSS_SLOTS};

use crate::{
    enforcement_pins::{EnforcementPins, ENFORCEMENT_MAPS},
    hook_tier::{attach_family, HookChoice, HookFamily, HookTier, TierChoice},
    kernel_layout::KernelLayout,
    watch::{name_key, suffix_key, WatchList},
};

/// The compiled kernel programs, built by build.rs from `monitor-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

/// Every hook, as (program, kind, attach point). `optional` hooks may be missing on some kernels.
pub struct Hook {
    pub program: &'static str,
    pub category: Option<&'static str>,
    pub name: &'static str,
    pub optional: bool,
}

/// Whether the hook a report label (`tracepoint/sched/sched_process_exec`) names is optional.
/// Every cgroup program is: without them `connect(2)` is still seen (block mode requires the
/// egress hooks, `egress_hooks_attached`).
pub fn is_optional(label: &str) -> bool {
    CGROUP_PROGRAMS
        .iter()
        .any(|(_, at, _)| label == cgroup_label(at))
        || HOOKS
            .iter()
            .any(|h| h.optional && label.rsplit('/').next() == Some(h.name))
}

/// How a cgroup program is loaded and attached.
#[derive(Clone, Copy)]
enum CgroupProgram {
    SockAddr,
    Skb(CgroupSkbAttachType),
    Sock,
}

/// The cgroup programs, all attached at the cgroup v2 root, as (program, attach point, kind):
/// the socket-address hooks (monitor-ebpf egress.rs: every connect and addressed send,
/// whatever route made it), the packet-level DNS programs (dns_question.rs: questions on their
/// way out, answers on their way in) and raw sockets (sockets.rs).
const CGROUP_PROGRAMS: [(&str, &str, CgroupProgram); 7] = [
    ("egress_connect4", "connect4", CgroupProgram::SockAddr),
    ("egress_connect6", "connect6", CgroupProgram::SockAddr),
    ("egress_sendmsg4", "sendmsg4", CgroupProgram::SockAddr),
    ("egress_sendmsg6", "sendmsg6", CgroupProgram::SockAddr),
    (
        "dns_questions",
        DNS_QUESTIONS_AT,
        CgroupProgram::Skb(CgroupSkbAttachType::Egress),
    ),
    (
        "dns_answers_in",
        DNS_ANSWERS_AT,
        CgroupProgram::Skb(CgroupSkbAttachType::Ingress),
    ),
    ("raw_sockets", "sock_create", CgroupProgram::Sock),
];
const DNS_QUESTIONS_AT: &str = "skb_egress";
const DNS_ANSWERS_AT: &str = "skb_ingress";

/// Whether DNS is seen at all, questions and answers alike (both packet programs attached;
/// dns_question.rs, dns_answer.rs): an answer without the kernel's `DNS_FROM_ASKED` mark is
/// then forged.
pub fn dns_answers_checked(report: &AttachReport) -> bool {
    [DNS_QUESTIONS_AT, DNS_ANSWERS_AT]
        .iter()
        .all(|at| report.attached.contains(&cgroup_label(at)))
}

fn cgroup_label(attach: &str) -> String {
    format!("cgroup/{attach}")
}

/// Whether every socket-address hook is attached (block mode refuses to start without them).
pub fn egress_hooks_attached(report: &AttachReport) -> bool {
    CGROUP_PROGRAMS
        .iter()
        .filter(|(_, _, kind)| matches!(kind, CgroupProgram::SockAddr))
        .all(|(_, at, _)| report.attached.contains(&cgroup_label(at)))
}

pub const HOOKS: &[Hook] = &[
    Hook {
        program: "sched_process_exec",
        category: Some("sched"),
        name: "sched_process_exec",
        optional: false,
    },
    Hook {
        program: "sched_process_fork",
        category: None,
        name: "sched_process_fork",
        optional: false,
    },
    Hook {
        program: "sched_process_exit",
        category: Some("sched"),
        name: "sched_process_exit",
        optional: false,
    },
    Hook {
        program: "sys_enter_socket",
        category: Some("syscalls"),
        name: "sys_enter_socket",
        optional: true,
    },
    Hook {
        program: "sys_enter_connect",
        category: Some("syscalls"),
        name: "sys_enter_connect",
        optional: false,
    },
    Hook {
        program: "sys_exit_connect",
        category: Some("syscalls"),
        name: "sys_exit_connect",
        optional: false,
    },
    Hook {
        program: "sys_exit_open",
        category: Some("syscalls"),
        name: "sys_exit_openat",
        optional: false,
    },
    Hook {
        program: "sys_exit_open",
        category: Some("syscalls"),
        name: "sys_exit_open",
        optional: true,
    },
    Hook {
        program: "sys_exit_open",
        category: Some("syscalls"),
        name: "sys_exit_creat",
        optional: true,
    },
    Hook {
        program: "sys_exit_open",
        category: Some("syscalls"),
        name: "sys_exit_openat2",
        optional: true,
    },
    Hook {
        program: "sys_exit_open",
        category: Some("syscalls"),
        name: "sys_exit_open_by_handle_at",
        optional: true,
    },
    Hook {
        program: "sys_enter_rename",
        category: Some("syscalls"),
        name: "sys_enter_rename",
        optional: true,
    },
    Hook {
        program: "sys_enter_renameat",
        category: Some("syscalls"),
        name: "sys_enter_renameat",
        optional: true,
    },
    Hook {
        program: "sys_enter_renameat",
        category: Some("syscalls"),
        name: "sys_enter_renameat2",
        optional: false,
    },
    Hook {
        program: "sys_enter_link",
        category: Some("syscalls"),
        name: "sys_enter_link",
        optional: true,
    },
    Hook {
        program: "sys_enter_linkat",
        category: Some("syscalls"),
        name: "sys_enter_linkat",
        optional: false,
    },
    Hook {
        program: "sys_enter_symlink",
        category: Some("syscalls"),
        name: "sys_enter_symlink",
        optional: true,
    },
    Hook {
        program: "sys_enter_symlinkat",
        category: Some("syscalls"),
        name: "sys_enter_symlinkat",
        optional: false,
    },
    Hook {
        program: "sys_enter_unlink",
        category: Some("syscalls"),
        name: "sys_enter_unlink",
        optional: true,
    },
    Hook {
        program: "sys_enter_unlinkat",
        category: Some("syscalls"),
        name: "sys_enter_unlinkat",
        optional: false,
    },
    Hook {
        program: "sys_exit_new_name",
        category: Some("syscalls"),
        name: "sys_exit_unlink",
        optional: true,
    },
    Hook {
        program: "sys_exit_new_name",
        category: Some("syscalls"),
        name: "sys_exit_unlinkat",
        optional: false,
    },
    Hook {
        program: "sys_exit_new_name",
        category: Some("syscalls"),
        name: "sys_exit_rename",
        optional: true,
    },
    Hook {
        program: "sys_exit_new_name",
        category: Some("syscalls"),
        name: "sys_exit_renameat",
        optional: true,
    },
    Hook {
        program: "sys_exit_new_name",
        category: Some("syscalls"),
        name: "sys_exit_renameat2",
        optional: false,
    },
    Hook {
        program: "sys_exit_new_name",
        category: Some("syscalls"),
        name: "sys_exit_link",
        optional: true,
    },
    Hook {
        program: "sys_exit_new_name",
        category: Some("syscalls"),
        name: "sys_exit_linkat",
        optional: false,
    },
    Hook {
        program: "sys_exit_new_name",
        category: Some("syscalls"),
        name: "sys_exit_symlink",
        optional: true,
    },
    Hook {
        program: "sys_exit_new_name",
        category: Some("syscalls"),
        name: "sys_exit_symlinkat",
        optional: false,
    },
    Hook {
        program: "io_uring_submit_req",
        category: None,
        name: "io_uring_submit_req",
        optional: true,
    },
    Hook {
        program: "io_uring_complete",
        category: None,
        name: "io_uring_complete",
        optional: true,
    },
    Hook {
        program: "sys_enter_kill",
        category: Some("syscalls"),
        name: "sys_enter_kill",
        optional: false,
    },
    Hook {
        program: "sys_enter_tkill",
        category: Some("syscalls"),
        name: "sys_enter_tkill",
        optional: false,
    },
    Hook {
        program: "sys_enter_tgkill",
        category: Some("syscalls"),
        name: "sys_enter_tgkill",
        optional: false,
    },
    Hook {
        program: "sys_enter_ptrace",
        category: Some("syscalls"),
        name: "sys_enter_ptrace",
        optional: false,
    },
    Hook {
        program: "sys_enter_bpf",
        category: Some("syscalls"),
        name: "sys_enter_bpf",
        optional: false,
    },
    // Absent on kernels without module support (nothing can be loaded there).
    Hook {
        program: "sys_enter_init_module",
        category: Some("syscalls"),
        name: "sys_enter_init_module",
        optional: true,
    },
    Hook {
        program: "sys_enter_finit_module",
        category: Some("syscalls"),
        name: "sys_enter_finit_module",
        optional: true,
    },
    Hook {
        program: "sys_enter_process_vm_readv",
        category: Some("syscalls"),
        name: "sys_enter_process_vm_readv",
        optional: true,
    },
    Hook {
        program: "sys_enter_process_vm_writev",
        category: Some("syscalls"),
        name: "sys_enter_process_vm_writev",
        optional: true,
    },
    // 5.6+.
    Hook {
        program: "sys_enter_pidfd_getfd",
        category: Some("syscalls"),
        name: "sys_enter_pidfd_getfd",
        optional: true,
    },
    Hook {
        program: "signal_generate",
        category: None,
        name: "signal_generate",
        optional: false,
    },
];

#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub ring_bytes: u32,
    pub open_all: bool,
    /// Send each executed program's environment (CI job/step identity, package-manager context).
    pub capture_env: bool,
    /// Where in bpffs the tamper log is pinned (`None`: not pinned; it dies with the agent).
    pub pin_dir: Option<std::path::PathBuf>,
    /// Where this agent pins its links and enforcement maps so that enforcement outlives it
    /// (`None`: everything ends with the agent).
    pub enforcement: Option<EnforcementPins>,
    /// Which hooks see file opens and names (`hook_tier`): the best the kernel allows by default.
    pub hook_tier: HookChoice,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            hook_tier: HookChoice::Best,
            ring_bytes: 8 * 1024 * 1024,
            open_all: false,
            capture_env: true,
            pin_dir: None,
            enforcement: None,
        }
    }
}

/// The security ring's size for a main ring of `ring_bytes` (a power of two): a quarter of it,
/// at least 64 KiB (security records are small and few; their ring only has to outlast floods
/// of the others).
pub fn security_ring_bytes(ring_bytes: u32) -> u32 {
    (ring_bytes / 4).max(64 * 1024)
}

/// Which hooks attached; reported by doctor and, later, as metrics.
#[derive(Debug, Clone)]
pub struct AttachReport {
    pub attached: Vec<String>,
    pub skipped: Vec<(String, String)>,
    /// The hook tier in force for each family (`HookFamily::ALL`'s order), and why better ones
    /// are not.
    pub tiers: Vec<TierChoice>,
    /// Instructions the kernel's verifier walked for each loaded program, heaviest first
    /// (kernels since 5.16 report it). The verifier gives up at 1 000 000: a program near that
    /// here may be refused by an older or stricter kernel's verifier.
    pub verifier_cost: Vec<(String, u32)>,
}

impl AttachReport {
    /// The tier in force for `family`.
    pub fn tier(&self, family: HookFamily) -> HookTier {
        self.tiers
            .iter()
            .find(|t| t.family == family)
            .map_or(HookTier::Tracepoint, |t| t.tier)
    }
}

/// The verifier's limit on instructions walked per program (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const VERIFIER_BUDGET: u32 = 1_000_000;

pub struct Probes {
    pub ebpf: Ebpf,
    pub report: AttachReport,
    /// Where the tamper log is pinned, when it is.
    pub tamper_log_pin: Option<std::path::PathBuf>,
    /// The links pinned so enforcement outlives the agent (closing these keeps the pins).
    pub pinned_links: Vec<FdLink>,
    /// The enforcement pins, held to be pinned again if removed (`PinGuard`).
    pub pin_guard: Option<crate::enforcement_pins::PinGuard>,
}

/// Where tracefs is, mounting it if it is not (aya needs it to attach tracepoints).
pub fn ensure_tracefs() -> anyhow::Result<&'static str> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(dir);
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: constant NUL-terminated strings.
    let ret = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 || !Path::new("/sys/kernel/tracing/events").is_dir() {
        bail!(
            "tracefs is not mounted and mounting it failed ({}): run `mount -t tracefs nodev /sys/kernel/tracing` as root",
            std::io::Error::last_os_error()
        );
    }
    Ok("/sys/kernel/tracing")
}

impl Probes {
    /// Loads the programs with this kernel's layout, pushes the watch list, attaches every hook.
    pub fn load(
        layout: &KernelLayout,
        watch: &WatchList,
        options: &ProbeOptions,
    ) -> anyhow::Result<Self> {
        watch.validate()?;
        let tracefs = ensure_tracefs()?;
        // Tracepoint records are read at compiled-in offsets: refuse a kernel that moved them.
        let problems = crate::tracefs_layout::check(std::path::Path::new(tracefs), HOOKS);
        if !problems.is_empty() {
            anyhow::bail!(
                "this kernel's tracepoint records differ from what the probes read (they would read the wrong bytes):\n  {}",
                problems.join("\n  ")
            );
        }
        let config = ProbeConfig {
            agent_tgid: std::process::id(),
            open_all: options.open_all as u32,
            io_uring_layout: layout.io_uring_layout,
            io_uring_names: layout.io_uring_names as u32,
            capture_env: options.capture_env as u32,
            events_ring_bytes: options.ring_bytes,
            security_ring_bytes: security_ring_bytes(options.ring_bytes),
            sock_addr_task_btf: (layout.offsets.task_btf_loads != 0
                && crate::helper_probe::sock_addr_may_call(
                    crate::helper_probe::BPF_FUNC_GET_CURRENT_TASK_BTF,
                )) as u32,
        };
        log::debug!(
            "socket-address programs read the current task {}",
            if config.sock_addr_task_btf != 0 {
                "through BTF"
            } else {
                "with helper reads (bpf_get_current_task_btf is not theirs on this kernel)"
            }
        );
        let pins = options
            .pin_dir
            .as_deref()
            .and_then(crate::agent::tamper_log::pin_paths);
        let load = |pins: Option<&crate::agent::tamper_log::PinPaths>| {
            let mut loader = EbpfLoader::new();
            loader
                .override_global("KERNEL_OFFSETS", &layout.offsets, true)
                .override_global("PROBE_CONFIG", &config, true)
                .map_max_entries("EVENTS", options.ring_bytes)
                .map_max_entries("SECURITY_EVENTS", security_ring_bytes(options.ring_bytes));
            if let Some(p) = pins {
                loader
                    .map_pin_path("TAMPER_LOG", p.log.as_path())
                    .map_pin_path("TAMPER_LOG_NEXT", p.next.as_path());
            }
            if let Some(e) = &options.enforcement {
                for name in ENFORCEMENT_MAPS {
                    loader.map_pin_path(name, e.map_path(name));
                }
            }
            loader.load(EBPF_OBJECT)
        };
        let mut ebpf = match load(pins.as_ref()) {
            Ok(ebpf) => ebpf,
            // A pin left by an agent of another layout: replaced (what it held is lost, and said).
            Err(e) if pins.is_some() || options.enforcement.is_some() => {
                log::warn!("pinned maps (tamper log, enforcement) could not be reused ({e}); making new ones");
                if let Some(p) = &pins {
                    p.remove();
                }
                if let Some(e) = &options.enforcement {
                    e.discard_maps();
                }
                load(pins.as_ref())
                    .context("loading the eBPF object (maps and globals) with new pinned maps")?
            }
            Err(e) => return Err(e).context("loading the eBPF object (maps and globals)"),
        };
        if let Err(e) = aya_log::EbpfLogger::init(&mut ebpf) {
            log::debug!("no eBPF log map: {e}");
        }
        push_watch_list(&mut ebpf, watch)?;
        let keep = options.enforcement.is_some();
        let (report, links) = attach_all(&mut ebpf, keep, options.hook_tier, layout)?;
        let mut pinned_links = Vec::new();
        if let Some(enforcement) = &options.enforcement {
            let (kept, pinned, errors) = enforcement.pin_links(links);
            for e in &errors {
                log::warn!("link not pinned (it ends with the agent): {e:#}");
            }
            log::info!(
                "enforcement outlives the agent: {pinned} links pinned{}",
                enforcement
                    .adopted_from
                    .map(|pid| format!(", taken over from the agent that was pid {pid}"))
                    .unwrap_or_default()
            );
            pinned_links = kept;
        }
        let pin_guard = options
            .enforcement
            .as_ref()
            .map(crate::enforcement_pins::PinGuard::hold);
        Ok(Self {
            ebpf,
            report,
            tamper_log_pin: pins.map(|p| p.log),
            pinned_links,
            pin_guard,
        })
    }

    /// The two rings and the reader's flag that asks the kernel for wakeups.
    pub fn take_rings(&mut self) -> anyhow::Result<Rings> {
        let mut take = |name: &str| -> anyhow::Result<aya::maps::Map> {
            self.ebpf
                .take_map(name)
                .with_context(|| format!("{name} map missing"))
        };
        Ok(Rings {
            main: RingBuf::try_from(take("EVENTS")?)?,
            security: RingBuf::try_from(take("SECURITY_EVENTS")?)?,
            waiting: Array::try_from(take("READER_WAITING")?)?,
        })
    }

    /// The kernel programs' count of records they could not build, per kind.
    pub fn probe_error_reader(&mut self) -> anyhow::Result<LossReader> {
        let map = self
            .ebpf
            .take_map("PROBE_ERRORS")
            .context("PROBE_ERRORS map missing")?;
        Ok(LossReader {
            map: PerCpuArray::try_from(map)?,
        })
    }

    /// The kernel's per-process loss counts (`LOSSES_BY_PROCESS`).
    pub fn process_loss_reader(&mut self) -> anyhow::Result<ProcessLossReader> {
        let map = self
            .ebpf
            .take_map("LOSSES_BY_PROCESS")
            .context("LOSSES_BY_PROCESS map missing")?;
        Ok(ProcessLossReader {
            map: aya::maps::PerCpuHashMap::try_from(map)?,
        })
    }

    /// The kernel's count of records refused to flooding control groups, per kind (`SHED`).
    pub fn shed_reader(&mut self) -> anyhow::Result<LossReader> {
        let map = self.ebpf.take_map("SHED").context("SHED map missing")?;
        Ok(LossReader {
            map: PerCpuArray::try_from(map)?,
        })
    }

    pub fn loss_reader(&mut self) -> anyhow::Result<LossReader> {
        let map = self.ebpf.take_map("LOSSES").context("LOSSES map missing")?;
        Ok(LossReader {
            map: PerCpuArray::try_from(map)?,
        })
    }
}

fn push_watch_list(ebpf: &mut Ebpf, watch: &WatchList) -> anyhow::Result<()> {
    {
        let mut pairs: aya::maps::Array<_, u32> =
            aya::maps::Array::try_from(ebpf.map_mut("WATCH_PAIRS").context("WATCH_PAIRS")?)?;
        for (index, bits) in watch.pair_bits().into_iter().enumerate() {
            if bits != 0 {
                pairs
                    .set(index as u32, bits, 0)
                    .context("watch pair filter")?;
            }
        }
    }
    {
        let mut names: HashMap<_, NameKey, u32> =
            HashMap::try_from(ebpf.map_mut("WATCH_NAMES").context("WATCH_NAMES")?)?;
        for (name, value) in &watch.names {
            names
                .insert(name_key(name), value, 0)
                .with_context(|| format!("watch name {name}"))?;
        }
    }
    {
        let mut dirs: HashMap<_, NameKey, u32> = HashMap::try_from(
            ebpf.map_mut("WATCH_PARENT_DIRS")
                .context("WATCH_PARENT_DIRS")?,
        )?;
        for (name, value) in &watch.parent_dirs {
            dirs.insert(name_key(name), value, 0)
                .with_context(|| format!("watch dir {name}"))?;
        }
    }
    {
        let mut prefixes: LpmTrie<_, NameKey, u32> = LpmTrie::try_from(
            ebpf.map_mut("WATCH_NAME_PREFIXES")
                .context("WATCH_NAME_PREFIXES")?,
        )?;
        for (prefix, value) in &watch.name_prefixes {
            let key = Key::new((prefix.len() * 8) as u32, name_key(prefix));
            prefixes
                .insert(&key, value, 0)
                .with_context(|| format!("watch prefix {prefix}"))?;
        }
    }
    {
        let mut suffixes: LpmTrie<_, AffixKey, u32> = LpmTrie::try_from(
            ebpf.map_mut("WATCH_NAME_SUFFIXES")
                .context("WATCH_NAME_SUFFIXES")?,
        )?;
        for (suffix, value) in &watch.name_suffixes {
            let (bits, data) = suffix_key(suffix);
            suffixes
                .insert(&Key::new(bits, data), value, 0)
                .with_context(|| format!("watch suffix {suffix}"))?;
        }
    }
    Ok(())
}

/// Attaches every hook; with `keep`, also hands back their links (to be pinned), labelled.
fn attach_all(
    ebpf: &mut Ebpf,
    keep: bool,
    hook_tier: HookChoice,
    layout: &KernelLayout,
) -> anyhow::Result<(AttachReport, Vec<(String, FdLink)>)> {
    let mut links = Vec::new();
    let mut report = AttachReport {
        attached: Vec::new(),
        skipped: Vec::new(),
        tiers: Vec::new(),
        verifier_cost: Vec::new(),
    };
    // Programs a security-hook tier replaced: not attached.
    let mut replaced: Vec<&str> = Vec::new();
    // Parsed once for every family (tens of milliseconds natively, more under emulation).
    let btf = crate::hook_tier::kernel_btf(hook_tier);
    for family in HookFamily::ALL {
        let attached = attach_family(ebpf, family, hook_tier, btf.as_ref(), keep)?;
        if attached.choice.tier != HookTier::Tracepoint {
            replaced.extend(family.tracepoint_programs());
        }
        report.attached.extend(attached.labels);
        links.extend(attached.links);
        report.tiers.push(attached.choice);
    }
    let mut loaded: Vec<&str> = Vec::new();
    for hook in HOOKS {
        if replaced.contains(&hook.program) {
            continue;
        }
        let label = match hook.category {
            Some(c) => format!("tracepoint/{c}/{}", hook.name),
            None => format!("raw_tracepoint/{}", hook.name),
        };
        let program = ebpf
            .program_mut(hook.program)
            .with_context(|| format!("program {} missing from the object", hook.program))?;
        let result: anyhow::Result<()> = (|| {
            match hook.category {
                Some(category) => {
                    let tp: &mut TracePoint = program.try_into()?;
                    if !loaded.contains(&hook.program) {
                        tp.load().map_err(verifier_context(hook.program))?;
                        loaded.push(hook.program);
                    }
                    let id = tp.attach(category, hook.name)?;
                    if keep {
                        // A kernel without perf links (before 5.15) cannot pin this one: it is
                        // attached again, to end with the agent.
                        match tp.take_link(id).map(FdLink::try_from) {
                            Ok(Ok(link)) => links.push((label.clone(), link)),
                            _ => {
                                tp.attach(category, hook.name)?;
                                log::warn!("{label} cannot be pinned: it ends with the agent");
                            }
                        }
                    }
                }
                None => {
                    let tp: &mut RawTracePoint = program.try_into()?;
                    if !loaded.contains(&hook.program) {
                        tp.load().map_err(verifier_context(hook.program))?;
                        loaded.push(hook.program);
                    }
                    // The same tracepoint under an older kernel's name (the label keeps ours).
                    let name = match hook.name {
                        "io_uring_submit_req" => layout.io_uring_submit.unwrap_or(hook.name),
                        name => name,
                    };
                    let id = tp.attach(name)?;
                    if keep {
                        match tp.take_link(id).map(FdLink::try_from) {
                            Ok(Ok(link)) => links.push((label.clone(), link)),
                            _ => {
                                tp.attach(name)?;
                                log::warn!("{label} cannot be pinned: it ends with the agent");
                            }
                        }
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => report.attached.push(label),
            Err(e) if hook.optional => report.skipped.push((label, format!("{e:#}"))),
            Err(e) => return Err(e.context(format!("attaching {label}"))),
        }
    }
    attach_egress(ebpf, &mut report, keep.then_some(&mut links));
    if egress_hooks_attached(&report) {
        // connect(2) is reported from the hooks from now on (monitor-ebpf connect.rs).
        let mut on: aya::maps::Array<_, u32> = aya::maps::Array::try_from(
            ebpf.map_mut("EGRESS_HOOKS_ON")
                .context("EGRESS_HOOKS_ON map missing")?,
        )?;
        on.set(0, 1, 0).context("EGRESS_HOOKS_ON")?;
    }
    report.verifier_cost = verifier_cost(ebpf);
    Ok((report, links))
}

/// What the verifier walked for each loaded program, heaviest first (empty before 5.16).
fn verifier_cost(ebpf: &Ebpf) -> Vec<(String, u32)> {
    let mut cost: Vec<(String, u32)> = ebpf
        .programs()
        .filter_map(|(name, program)| {
            let walked = program.info().ok()?.verified_instruction_count()?;
            Some((name.to_string(), walked))
        })
        .collect();
    cost.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    cost
}

/// Attaches the egress programs at the cgroup v2 root, as links, so programs attached below it
/// (systemd's, a container runtime's) run too. A kernel or machine without them is reported
/// (doctor, the `probe_attached` metric): `connect(2)` is still seen through its tracepoints.
fn attach_egress(
    ebpf: &mut Ebpf,
    report: &mut AttachReport,
    mut keep: Option<&mut Vec<(String, FdLink)>>,
) {
    let root = crate::enforce::cgroup2_root().and_then(|root| {
        let dir = std::fs::File::open(&root)
            .with_context(|| format!("opening the cgroup v2 root {}", root.display()))?;
        Ok((root, dir))
    });
    for (program, at, kind) in CGROUP_PROGRAMS {
        let label = cgroup_label(at);
        let result: anyhow::Result<()> = (|| {
            let (root, dir) = root.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let found = ebpf
                .program_mut(program)
                .with_context(|| format!("program {program} missing from the object"))?;
            // As bpf_links (kernels since 5.7), which live beside other programs on the same
            // cgroup as BPF_F_ALLOW_MULTI would (link_create refuses the flag itself).
            let mode = CgroupAttachMode::default();
            let context = || format!("attaching {program} to {}", root.display());
            let link: FdLink = match kind {
                CgroupProgram::SockAddr => {
                    let prog: &mut CgroupSockAddr = found.try_into()?;
                    prog.load().map_err(verifier_context(program))?;
                    let id = prog.attach(dir, mode).with_context(context)?;
                    if keep.is_none() {
                        return Ok(());
                    }
                    FdLink::try_from(prog.take_link(id)?)?
                }
                CgroupProgram::Skb(direction) => {
                    let prog: &mut CgroupSkb = found.try_into()?;
                    prog.load().map_err(verifier_context(program))?;
                    let id = prog.attach(dir, direction, mode).with_context(context)?;
                    if keep.is_none() {
                        return Ok(());
                    }
                    FdLink::try_from(prog.take_link(id)?)?
                }
                CgroupProgram::Sock => {
                    let prog: &mut CgroupSock = found.try_into()?;
                    prog.load().map_err(verifier_context(program))?;
                    let id = prog.attach(dir, mode).with_context(context)?;
                    if keep.is_none() {
                        return Ok(());
                    }
                    FdLink::try_from(prog.take_link(id)?)?
                }
            };
            if let Some(links) = keep.as_deref_mut() {
                links.push((label.clone(), link));
            }
            Ok(())
        })();
        match result {
            Ok(()) => report.attached.push(label),
            Err(e) => report.skipped.push((label, format!("{e:#}"))),
        }
    }
}

/// Keeps the verifier log of a refused program in the error (it says why).
fn verifier_context(
    program: &'static str,
) -> impl Fn(aya::programs::ProgramError) -> anyhow::Error {
    move |e| anyhow::Error::new(e).context(format!("the kernel refused to load program {program}"))
}

/// Sums the kernel's per-CPU loss counters.
pub struct LossReader {
    map: PerCpuArray<MapData, u64>,
}

impl LossReader {
    /// Total records lost per event kind since load.
    pub fn read(&self) -> Vec<(EventKind, u64)> {
        EventKind::ALL
            .into_iter()
            .map(|kind| {
                let total = self
                    .map
                    .get(&kind.loss_slot(), 0)
                    .map(|values| values.iter().sum())
                    .unwrap_or(0);
                (kind, total)
            })
            .collect()
    }
}

const _: () = assert!(LOSS_SLOTS as usize >= EventKind::ALL.len());

/// Reads and clears the kernel's per-process loss counts.
pub struct ProcessLossReader {
    map: aya::maps::PerCpuHashMap<MapData, u32, monitor_common::ProcessLosses>,
}

impl ProcessLossReader {
    /// Every process with losses since the last call, its counts per kind (summed over CPUs);
    /// the entries are removed.
    pub fn drain(&mut self) -> Vec<(u32, Vec<(EventKind, u64)>)> {
        let tgids: Vec<u32> = self.map.keys().filter_map(Result::ok).collect();
        let mut drained = Vec::new();
        for tgid in tgids {
            let Ok(per_cpu) = self.map.get(&tgid, 0) else {
                continue;
            };
            let _ = self.map.remove(&tgid);
            let counts: Vec<(EventKind, u64)> = EventKind::ALL
                .into_iter()
                .map(|kind| {
                    let slot = kind.loss_slot() as usize;
                    (kind, per_cpu.iter().map(|l| l.counts[slot]).sum())
                })
                .filter(|(_, n)| *n > 0)
                .collect();
            if !counts.is_empty() {
                drained.push((tgid, counts));
            }
        }
        drained
    }
}

/// What the ring reader owns: the ring of everything else, the security records' ring, and
/// `READER_WAITING` (whether records should wake it; agent/ring.rs).
pub struct Rings {
    pub main: RingBuf<MapData>,
    pub security: RingBuf<MapData>,
    pub waiting: Array<MapData, u32>,
}
