//! What the kernel does for jobs, userspace side: egress block mode (checks that the cgroup
//! socket-address programs, always attached by probes.rs, are in place) and kill responses
//! (loads the install-time code scanner, lists the system's process listers). Gives each job a
//! slot, with its policy (`JOB_POLICY`) and its allow maps filled from the profile, and tells
//! the kernel which processes are the job's (its anchor or step roots; their children inherit it
//! in the kernel) and which run install-time code. The engine decides *what* (see
//! `finding::Enforcement`); this only writes it to the maps.

use std::{collections::HashMap as StdHashMap, net::IpAddr, path::PathBuf};

use anyhow::Context as _;

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, ProgramArray},
    programs::{CgroupSkb, TracePoint},
    Ebpf,
};
use monitor_common::{
    reversed_name_hash, Allow4Data, Allow6Data, InodeKey, JobEntry, NameHashKey, PortSet,
    JOB_ANCHOR, JOB_INSTALL_CODE, JOB_MEMBER, JOB_SLOTS, MAX_ALLOWED_PORTS, POLICY_OPENS_REFUSED,
};

use crate::{
    finding::Enforcement,
    profile::{EgressRule, EgressTarget},
};

/// The cgroup v2 hierarchy's mount point, from /proc/self/mountinfo.
pub fn cgroup2_root() -> anyhow::Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .context("no cgroup v2 hierarchy is mounted (the egress hooks need one: mount -t cgroup2 none /sys/fs/cgroup)")
}

fn port_set(ports: &[u16]) -> PortSet {
    let mut set = PortSet::default();
    if ports.is_empty() || ports.len() > MAX_ALLOWED_PORTS {
        set.any = 1;
        return set;
    }
    for (i, p) in ports.iter().enumerate() {
        set.ports[i] = *p;
    }
    set.count = ports.len() as u16;
    set
}

fn merge(a: PortSet, b: PortSet) -> PortSet {
    if a.any != 0 || b.any != 0 {
        return port_set(&[]);
    }
    let mut ports: Vec<u16> = a.ports[..a.count as usize].to_vec();
    for p in &b.ports[..b.count as usize] {
        if !ports.contains(p) {
            ports.push(*p);
        }
    }
    port_set(&ports)
}

pub struct Enforcer {
    procs: HashMap<MapData, u32, JobEntry>,
    policies: Array<MapData, u32>,
    /// When each slot's job began (wall clock, ns): `JOB_STARTED`.
    started: Array<MapData, u64>,
    v4: LpmTrie<MapData, Allow4Data, PortSet>,
    v6: LpmTrie<MapData, Allow6Data, PortSet>,
    names: HashMap<MapData, NameHashKey, PortSet>,
    resolvers: Vec<IpAddr>,
    slots: StdHashMap<String, u32>,
    next_slot: u32,
    /// BPF-LSM refuses the opens kills are due for (`POLICY_OPENS_REFUSED` in every policy).
    opens_refused: bool,
}

/// What the profiles in force need from the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Some profile's egress mode is `block`.
    pub egress_block: bool,
    /// Some profile kills (or rehearses killing) on a rule.
    pub kills: bool,
    /// Some profile kills on environment reads or install-time code's credential reads: the
    /// exec scanner (which tells process listers and install-time code) is loaded.
    pub exec_scan: bool,
}

impl Needs {
    pub fn any(&self) -> bool {
        self.egress_block || self.kills
    }
}

/// The system's process listers (`ps aux` opens every process's environ to read it, without
/// printing it): spared the environ kill unless asked to print environments (the kernel reads
/// their arguments for that). By file identity, so a copy under the name is not spared.
const QUIET_LISTERS: &[&str] = &[
    "ps", "pgrep", "pkill", "pidof", "top", "htop", "pstree", "w", "pwait",
];
const LISTER_DIRS: &[&str] = &["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"];

impl Enforcer {
    /// Sets up what `needs` asks for: block mode's egress programs (attached with every probe;
    /// `egress_ready` says whether they are) and DNS-answer parser; kill responses' exec scanner
    /// and process listers. Their decisions come from the maps this fills.
    pub fn attach(
        ebpf: &mut Ebpf,
        needs: Needs,
        egress_ready: bool,
        opens_refused: bool,
        resolvers: &[IpAddr],
    ) -> anyhow::Result<Self> {
        if needs.egress_block {
            attach_block_mode(ebpf, egress_ready)?;
        }
        if needs.exec_scan {
            load_tail_call(
                ebpf,
                "exec_scan",
                "EXEC_SCANNERS",
                "killing on environment reads or install-time code's credential reads needs bpf_loop: Linux 5.17 or newer",
            )?;
        }
        if needs.kills {
            let mut listers: HashMap<_, InodeKey, u32> = HashMap::try_from(
                ebpf.map_mut("QUIET_LISTERS")
                    .context("QUIET_LISTERS map missing")?,
            )?;
            for identity in lister_identities() {
                listers.insert(identity, 1, 0)?;
            }
        }
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("{name} map missing"))
        };
        let policies: Array<MapData, u32> = Array::try_from(take(ebpf, "JOB_POLICY")?)?;
        // Slots a dead agent's jobs hold (its maps were taken over, enforcement_pins) stay
        // theirs: new jobs get the ones after.
        let next_slot = policies
            .iter()
            .enumerate()
            .filter(|(_, policy)| policy.as_ref().is_ok_and(|p| *p != 0))
            .map(|(slot, _)| slot as u32 + 1)
            .max()
            .filter(|next| *next < JOB_SLOTS)
            .unwrap_or(1);
        Ok(Self {
            started: Array::try_from(take(ebpf, "JOB_STARTED")?)?,
            procs: HashMap::try_from(take(ebpf, "JOB_PROCS")?)?,
            policies,
            v4: LpmTrie::try_from(take(ebpf, "ALLOW_V4")?)?,
            v6: LpmTrie::try_from(take(ebpf, "ALLOW_V6")?)?,
            names: HashMap::try_from(take(ebpf, "ALLOWED_NAMES")?)?,
            resolvers: resolvers.to_vec(),
            slots: StdHashMap::new(),
            next_slot,
            opens_refused,
        })
    }

    fn allow_net(
        &mut self,
        slot: u32,
        address: IpAddr,
        prefix: u8,
        ports: PortSet,
    ) -> anyhow::Result<()> {
        let s = slot.to_be_bytes();
        match address.to_canonical() {
            IpAddr::V4(a) => {
                let o = a.octets();
                let key = Key::new(
                    32 + prefix as u32,
                    [s[0], s[1], s[2], s[3], o[0], o[1], o[2], o[3]],
                );
                let value = match self.v4.get(&key, 0) {
                    Ok(old) => merge(old, ports),
                    Err(_) => ports,
                };
                self.v4.insert(&key, value, 0)?;
            }
            IpAddr::V6(a) => {
                let mut data = [0u8; 20];
                data[..4].copy_from_slice(&s);
                data[4..].copy_from_slice(&a.octets());
                let key = Key::new(32 + prefix as u32, data);
                let value = match self.v6.get(&key, 0) {
                    Ok(old) => merge(old, ports),
                    Err(_) => ports,
                };
                self.v6.insert(&key, value, 0)?;
            }
        }
        Ok(())
    }

    /// The job's slot, made with `rules` (and the resolvers) and `policy` the first time the
    /// job is seen. Slots go round `JOB_SLOTS`: the allow entries of a job 4095 jobs ago are
    /// not removed (the LPM tries are bounded by their own size).
    fn slot(&mut self, key: &str, rules: &[EgressRule], policy: u32) -> anyhow::Result<u32> {
        if let Some(slot) = self.slots.get(key) {
            return Ok(*slot);
        }
        let slot = self.next_slot;
        self.next_slot = if slot + 1 >= JOB_SLOTS { 1 } else { slot + 1 };
        self.slots.insert(key.to_string(), slot);
        let policy = if policy != 0 && self.opens_refused {
            policy | POLICY_OPENS_REFUSED
        } else {
            policy
        };
        self.policies.set(slot, policy, 0)?;
        // Slot 0 is no job's: it gathers every bit any job was given, so the kernel's hooks
        // skip the per-process lookup while no job ever asked for a bit (block.rs). Never
        // cleared: a process of an ended job may still be a member.
        let any = self.policies.get(&0, 0).unwrap_or(0);
        if any | policy != any {
            self.policies.set(0, any | policy, 0)?;
        }
        // A second early: what the runner wrote as the job was set up counts as the job's.
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .saturating_sub(1_000_000_000);
        self.started.set(slot, started, 0)?;
        for resolver in self.resolvers.clone() {
            let prefix = if resolver.to_canonical().is_ipv4() {
                32
            } else {
                128
            };
            self.allow_net(slot, resolver, prefix, port_set(&[53]))?;
        }
        for rule in rules {
            let ports = port_set(&rule.ports);
            match &rule.target {
                EgressTarget::Network(net) => {
                    self.allow_net(slot, net.addr(), net.prefix_len(), ports)?
                }
                EgressTarget::Domain(pattern) => {
                    let (wildcard, name) = match pattern.strip_prefix("*.") {
                        Some(parent) => (1, parent),
                        None => (0, pattern.as_str()),
                    };
                    let key = NameHashKey {
                        slot,
                        wildcard,
                        hash: reversed_name_hash(name.as_bytes()),
                    };
                    let value = match self.names.get(&key, 0) {
                        Ok(old) => merge(old, ports),
                        Err(_) => ports,
                    };
                    self.names.insert(key, value, 0)?;
                }
            }
        }
        Ok(slot)
    }

    /// Writes what the engine decided.
    pub fn apply(&mut self, action: &Enforcement) -> anyhow::Result<()> {
        match action {
            Enforcement::Process {
                job,
                pid,
                anchor_only,
                rules,
                policy,
            } => {
                let slot = self.slot(job, rules, *policy)?;
                let entry = JobEntry {
                    slot,
                    flags: if *anchor_only { JOB_ANCHOR } else { JOB_MEMBER },
                };
                self.procs.insert(*pid, entry, 0)?;
            }
            Enforcement::InstallCode { pid } => {
                // Only a member: the kernel may have marked it already, or it left the job.
                if let Ok(mut entry) = self.procs.get(pid, 0) {
                    if entry.flags & JOB_MEMBER != 0 && entry.flags & JOB_INSTALL_CODE == 0 {
                        entry.flags |= JOB_INSTALL_CODE;
                        self.procs.insert(*pid, entry, 0)?;
                    }
                }
            }
            Enforcement::JobEnded { key } => {
                // Its processes keep their entries (LRU) until they exit: what outlives the job
                // stays confined.
                self.slots.remove(key);
            }
        }
        Ok(())
    }
}

/// Block mode's kernel side: the egress programs and the DNS packet programs must be attached,
/// and the DNS-answer parser the answer program tail-calls (it allows an allowed name's
/// addresses before the process can read them) loaded.
fn attach_block_mode(ebpf: &mut Ebpf, egress_ready: bool) -> anyhow::Result<()> {
    if !egress_ready {
        anyhow::bail!(
            "the cgroup egress and DNS packet programs are not all attached (see `monitor doctor`): block mode needs a cgroup v2 hierarchy, cgroup socket-address programs and cgroup skb programs"
        );
    }
    load_tail_call_as::<CgroupSkb>(
        ebpf,
        "dns_block_answers",
        "BLOCK_PARSER",
        "block mode needs bpf_loop: Linux 5.17 or newer",
    )
}

/// Loads the tracepoint program `program` and puts it in slot 0 of the program array `array`.
pub(crate) fn load_tail_call(
    ebpf: &mut Ebpf,
    program: &str,
    array: &str,
    why: &str,
) -> anyhow::Result<()> {
    load_tail_call_as::<TracePoint>(ebpf, program, array, why)
}

/// A program that can be loaded as it is (no attach target to name) for a tail call.
pub(crate) trait TailCallable {
    fn load_for_tail_call(&mut self) -> Result<(), aya::programs::ProgramError>;
    fn program_fd(&self) -> Result<&aya::programs::ProgramFd, aya::programs::ProgramError>;
}

impl TailCallable for TracePoint {
    fn load_for_tail_call(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
    fn program_fd(&self) -> Result<&aya::programs::ProgramFd, aya::programs::ProgramError> {
        self.fd()
    }
}

impl TailCallable for CgroupSkb {
    fn load_for_tail_call(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
    fn program_fd(&self) -> Result<&aya::programs::ProgramFd, aya::programs::ProgramError> {
        self.fd()
    }
}

/// Loads `program` (of type `P`: a program array holds one type) and puts it in slot 0 of the
/// program array `array`.
fn load_tail_call_as<P>(
    ebpf: &mut Ebpf,
    program: &str,
    array: &str,
    why: &str,
) -> anyhow::Result<()>
where
    P: TailCallable,
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let fd = {
        let prog: &mut P = ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} missing"))?
            .try_into()?;
        prog.load_for_tail_call()
            .with_context(|| format!("loading {program} ({why})"))?;
        prog.program_fd()?.try_clone()?
    };
    let mut programs = ProgramArray::try_from(
        ebpf.map_mut(array)
            .with_context(|| format!("{array} map missing"))?,
    )?;
    programs.set(0, &fd, 0)?;
    Ok(())
}

/// The file identities of the system's process listers that exist.
fn lister_identities() -> Vec<InodeKey> {
    let mut found = Vec::new();
    for dir in LISTER_DIRS {
        for name in QUIET_LISTERS {
            let Ok(meta) = std::fs::metadata(format!("{dir}/{name}")) else {
                continue;
            };
            let key = crate::agent::inode_key(&meta);
            if meta.is_file() && !found.contains(&key) {
                found.push(key);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_sets_merge_and_overflow_to_any() {
        let a = port_set(&[443]);
        let b = port_set(&[80, 443]);
        let m = merge(a, b);
        assert_eq!((m.any, m.count), (0, 2));
        assert!(m.allows(80) && m.allows(443) && !m.allows(22));
        assert_eq!(merge(a, port_set(&[])).any, 1);
        let many: Vec<u16> = (1..=20).collect();
        assert_eq!(
            port_set(&many).any,
            1,
            "more ports than the kernel holds: any"
        );
    }

    #[test]
    fn name_hashes_match_the_kernels_suffix_walk() {
        // The kernel hashes each label, then folds com, example, www: `example.com`'s hash is a
        // step on the way to `www.example.com`'s.
        use monitor_common::{fnv_step, name_step, FNV_OFFSET};
        let label = |l: &[u8]| l.iter().fold(FNV_OFFSET, |h, b| fnv_step(h, *b));
        let example_com = name_step(name_step(FNV_OFFSET, label(b"com")), label(b"example"));
        assert_eq!(example_com, reversed_name_hash(b"Example.COM"));
        assert_eq!(
            name_step(example_com, label(b"www")),
            reversed_name_hash(b"www.example.com")
        );
        assert_eq!(
            reversed_name_hash(b"example.com."),
            reversed_name_hash(b"example.com")
        );
        assert_ne!(reversed_name_hash(b"a.bc"), reversed_name_hash(b"ab.c"));
    }
}
