//! Egress block mode, userspace side: checks that the cgroup socket-address programs (always
//! attached, probes.rs) are in place, gives each job a slot in the kernel's allow maps filled from the profile, and tells the kernel which
//! processes are judged (a job's anchor or step roots; their children inherit it in the kernel).
//! The engine decides *what* (see `finding::Enforcement`); this only writes it to the maps.

use std::{collections::HashMap as StdHashMap, net::IpAddr, path::PathBuf};

use anyhow::Context as _;
use aya::{
    maps::{lpm_trie::Key, HashMap, LpmTrie, MapData, ProgramArray},
    programs::TracePoint,
    Ebpf,
};
use monitor_common::{
    reversed_name_hash, Allow4Data, Allow6Data, BlockEntry, NameHashKey, PortSet, BLOCK_ANCHOR,
    BLOCK_ENFORCED, MAX_ALLOWED_PORTS,
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
    procs: HashMap<MapData, u32, BlockEntry>,
    v4: LpmTrie<MapData, Allow4Data, PortSet>,
    v6: LpmTrie<MapData, Allow6Data, PortSet>,
    names: HashMap<MapData, NameHashKey, PortSet>,
    resolvers: Vec<IpAddr>,
    slots: StdHashMap<String, u32>,
    next_slot: u32,
}

impl Enforcer {
    /// Sets up block mode: the egress programs (attached with every probe; `egress_ready` says
    /// whether they are) take their decisions from the maps this fills.
    pub fn attach(
        ebpf: &mut Ebpf,
        egress_ready: bool,
        resolvers: &[IpAddr],
    ) -> anyhow::Result<Self> {
        if !egress_ready {
            anyhow::bail!(
                "the cgroup egress programs are not attached (see `monitor doctor`): block mode needs a cgroup v2 hierarchy and cgroup socket-address programs"
            );
        }
        // The DNS-answer parser the read exit tail-calls: it allows an allowed name's addresses
        // before the process can connect to them.
        let parser_fd = {
            let parser: &mut TracePoint = ebpf
                .program_mut("dns_block_answers")
                .context("program dns_block_answers missing")?
                .try_into()?;
            parser.load().context(
                "loading dns_block_answers (block mode needs bpf_loop: Linux 5.17 or newer)",
            )?;
            parser.fd()?.try_clone()?
        };
        let mut parsers = ProgramArray::try_from(
            ebpf.map_mut("BLOCK_PARSER")
                .context("BLOCK_PARSER map missing")?,
        )?;
        parsers.set(0, &parser_fd, 0)?;
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("{name} map missing"))
        };
        Ok(Self {
            procs: HashMap::try_from(take(ebpf, "BLOCK_PROCS")?)?,
            v4: LpmTrie::try_from(take(ebpf, "ALLOW_V4")?)?,
            v6: LpmTrie::try_from(take(ebpf, "ALLOW_V6")?)?,
            names: HashMap::try_from(take(ebpf, "ALLOWED_NAMES")?)?,
            resolvers: resolvers.to_vec(),
            slots: StdHashMap::new(),
            next_slot: 1,
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

    /// The job's slot, made with `rules` (and the resolvers) the first time the job is seen.
    fn slot(&mut self, key: &str, rules: &[EgressRule]) -> anyhow::Result<u32> {
        if let Some(slot) = self.slots.get(key) {
            return Ok(*slot);
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        self.slots.insert(key.to_string(), slot);
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
            } => {
                let slot = self.slot(job, rules)?;
                let entry = BlockEntry {
                    slot,
                    flags: if *anchor_only {
                        BLOCK_ANCHOR
                    } else {
                        BLOCK_ENFORCED
                    },
                };
                self.procs.insert(*pid, entry, 0)?;
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
