//! The process table: who is who, and who started whom.
//!
//! Processes are keyed by (tgid, start time in clock ticks), never by a bare pid, so a reused pid
//! is a new process. Start times come from the kernel as CLOCK_BOOTTIME nanoseconds and from
//! /proc/<pid>/stat as clock ticks since boot; both reduce to the same tick count. Exited
//! processes stay while they have live descendants (their children's ancestry must still be
//! told) and for a grace period after exit, since records from several CPUs can arrive slightly
//! out of order. The table is bounded: past `max_entries` the oldest exited entries go first.

use std::collections::HashMap;

use monitor_common::MAX_ARGV_LEN;

use crate::{
    decode::Header,
    redact::{redact_argv, redact_path},
};

/// Identity of a process across pid reuse.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ProcessKey {
    pub tgid: u32,
    pub start_ticks: u64,
}

/// Kernel USER_HZ: /proc reports start times in these ticks.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub key: ProcessKey,
    pub parent: Option<ProcessKey>,
    pub ppid: u32,
    pub comm: String,
    pub exe: Option<String>,
    /// Shared with every event, finding and report record of the process: kept once.
    pub argv: crate::event::Argv,
    pub argv_truncated: bool,
    pub uid: u32,
    /// Boot-time ns of exec (or of the fork/first sight when no exec was seen).
    pub start_ns: u64,
    pub exit_status: Option<u32>,
    pub exited_at_ns: Option<u64>,
    /// Known only from /proc at start-up or from a later event, not from its fork.
    pub seeded: bool,
    /// The cgroup (v2 id) its program was executed in (a forked child runs its parent's
    /// program: the parent's); 0 when not seen. A program the container runtime starts in a
    /// container is executed by a process whose program (runc) was executed outside it. 0:
    /// running before the agent (from /proc); `EXEC_CGROUP_UNKNOWN`: met only as a parent.
    pub exec_cgroup_id: u64,
}

/// What the table needs to know of a /proc entry to seed it.
#[derive(Debug, Clone)]
pub struct SeedEntry {
    pub tgid: u32,
    pub ppid: u32,
    pub start_ticks: u64,
    pub comm: String,
    pub exe: Option<String>,
    pub argv: Vec<String>,
    /// `argv` is the first `MAX_ARGV_LEN` bytes of a longer command line.
    pub argv_truncated: bool,
    pub uid: u32,
}

pub struct ProcessTable {
    procs: HashMap<ProcessKey, Process>,
    /// The newest process with a given tgid.
    by_tgid: HashMap<u32, ProcessKey>,
    ns_per_tick: u64,
    max_entries: usize,
    /// How long an exited process without live descendants is kept.
    exit_grace_ns: u64,
    /// Entries dropped because the table was full.
    pub evicted: u64,
}

/// `Process::exec_cgroup_id` of a process met only as some record's parent: where its program
/// was executed is not known (0 is "before the agent", from /proc).
pub const EXEC_CGROUP_UNKNOWN: u64 = u64::MAX;

/// Bound on the ancestry walk (and on cycles a corrupt table could contain).
pub const MAX_ANCESTRY: usize = 64;

impl ProcessTable {
    pub fn new(ticks_per_second: u64, max_entries: usize) -> Self {
        Self {
            procs: HashMap::new(),
            by_tgid: HashMap::new(),
            ns_per_tick: 1_000_000_000 / ticks_per_second.max(1),
            max_entries,
            exit_grace_ns: 10_000_000_000,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn key_of(&self, tgid: u32, start_ns: u64) -> ProcessKey {
        ProcessKey {
            tgid,
            start_ticks: start_ns / self.ns_per_tick,
        }
    }

    pub fn get(&self, key: &ProcessKey) -> Option<&Process> {
        self.procs.get(key)
    }

    /// Every process the table knows.
    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.procs.values()
    }

    /// The live (or most recent) process with this tgid.
    pub fn by_tgid(&self, tgid: u32) -> Option<&Process> {
        self.by_tgid.get(&tgid).and_then(|k| self.procs.get(k))
    }

    pub fn seed(&mut self, entries: impl IntoIterator<Item = SeedEntry>) {
        let entries: Vec<SeedEntry> = entries.into_iter().collect();
        let starts: HashMap<u32, u64> = entries.iter().map(|e| (e.tgid, e.start_ticks)).collect();
        for e in entries {
            let key = ProcessKey {
                tgid: e.tgid,
                start_ticks: e.start_ticks,
            };
            let parent = starts.get(&e.ppid).map(|t| ProcessKey {
                tgid: e.ppid,
                start_ticks: *t,
            });
            self.insert(Process {
                key,
                parent,
                ppid: e.ppid,
                comm: e.comm,
                exe: e.exe.as_deref().map(|x| redact_path(x).into_owned()),
                argv: crate::decode::join_past_bound(redact_argv(&e.argv)).into(),
                argv_truncated: e.argv_truncated,
                uid: e.uid,
                start_ns: e.start_ticks * self.ns_per_tick,
                exit_status: None,
                exited_at_ns: None,
                seeded: true,
                exec_cgroup_id: 0,
            });
        }
    }

    fn insert(&mut self, process: Process) {
        let key = process.key;
        if let Some(previous) = self.by_tgid.insert(key.tgid, key) {
            if previous != key {
                // The pid was reused: the old process must have exited even if we missed it.
                if let Some(old) = self.procs.get_mut(&previous) {
                    if old.exited_at_ns.is_none() {
                        old.exited_at_ns = Some(process.start_ns);
                    }
                }
            }
        }
        self.procs.insert(key, process);
    }

    /// Makes sure the process an event is about is known, creating it from the header if needed.
    pub fn observe(&mut self, h: &Header) -> ProcessKey {
        let key = self.key_of(h.tgid, h.start_ns);
        if let Some(known) = self.procs.get(&key) {
            // Met first as some record's parent (its own fork record came later, from another
            // CPU's ring): its parent, unknown then, is this record's, when that one is known.
            // Only a fork record names the real parent; later ones the current one (init or a
            // subreaper, once the parent is gone).
            if known.parent.is_none()
                && h.ppid != 0
                && matches!(h.kind, monitor_common::EventKind::ProcessFork)
            {
                let parent = self.key_of(h.ppid, h.parent_start_ns);
                if parent != key && self.procs.contains_key(&parent) {
                    if let Some(p) = self.procs.get_mut(&key) {
                        p.parent = Some(parent);
                        p.ppid = h.ppid;
                    }
                }
            }
        } else {
            let parent = (h.ppid != 0).then(|| self.key_of(h.ppid, h.parent_start_ns));
            if let Some(parent) = parent {
                if !self.procs.contains_key(&parent) {
                    // An ancestor we never saw (started before us and already gone at seeding).
                    self.insert(Process {
                        key: parent,
                        parent: None,
                        ppid: 0,
                        comm: String::new(),
                        exe: None,
                        argv: Vec::new().into(),
                        argv_truncated: false,
                        uid: 0,
                        start_ns: h.parent_start_ns,
                        exit_status: None,
                        exited_at_ns: None,
                        seeded: true,
                        exec_cgroup_id: EXEC_CGROUP_UNKNOWN,
                    });
                }
            }
            // A child starts as a copy of its parent's image until it execs.
            let (exe, argv, argv_truncated, exec_cgroup_id) = parent
                .and_then(|p| self.procs.get(&p))
                .map(|p| {
                    (
                        p.exe.clone(),
                        p.argv.clone(),
                        p.argv_truncated,
                        p.exec_cgroup_id,
                    )
                })
                .unwrap_or_default();
            self.insert(Process {
                key,
                parent,
                ppid: h.ppid,
                comm: h.comm.clone(),
                exe,
                argv,
                argv_truncated,
                uid: h.uid,
                start_ns: h.start_ns,
                exit_status: None,
                exited_at_ns: None,
                seeded: !matches!(h.kind, monitor_common::EventKind::ProcessFork),
                exec_cgroup_id,
            });
        }
        key
    }

    pub fn on_fork(&mut self, h: &Header) -> ProcessKey {
        self.observe(h)
    }

    pub fn on_exec(
        &mut self,
        h: &Header,
        exe: &str,
        argv: &[String],
        argv_truncated: bool,
    ) -> ProcessKey {
        let key = self.observe(h);
        if let Some(p) = self.procs.get_mut(&key) {
            // Redacted once, here: every event names the process and its ancestors from this.
            p.exe = Some(redact_path(exe).into_owned());
            p.argv = crate::decode::join_past_bound(redact_argv(argv)).into();
            p.argv_truncated = argv_truncated;
            p.comm = h.comm.clone();
            p.uid = h.uid;
            p.exec_cgroup_id = h.cgroup_id;
        }
        key
    }

    /// Puts back the program a process ran (exe, arguments, name, user, cgroup) as `before`
    /// had it: an exec the kernel refused did not replace it.
    pub fn restore_image(&mut self, before: Process) {
        if let Some(p) = self.procs.get_mut(&before.key) {
            p.exe = before.exe;
            p.argv = before.argv;
            p.argv_truncated = before.argv_truncated;
            p.comm = before.comm;
            p.uid = before.uid;
            p.exec_cgroup_id = before.exec_cgroup_id;
        }
    }

    pub fn on_exit(&mut self, h: &Header, exit_status: u32) -> ProcessKey {
        let key = self.observe(h);
        if let Some(p) = self.procs.get_mut(&key) {
            p.exit_status = Some(exit_status);
            p.exited_at_ns = Some(h.ts_ns);
        }
        key
    }

    /// Parent, grandparent, ... (nearest first), bounded by MAX_ANCESTRY.
    pub fn ancestry(&self, key: &ProcessKey) -> Vec<&Process> {
        let mut out = Vec::new();
        let mut next = self.procs.get(key).and_then(|p| p.parent);
        while let Some(k) = next {
            if out.len() >= MAX_ANCESTRY || k == *key {
                break;
            }
            let Some(p) = self.procs.get(&k) else { break };
            out.push(p);
            next = p.parent;
        }
        out
    }

    /// Forgets exited processes whose grace period has passed and that have no live descendant;
    /// then, if still over the bound, the oldest exited ones.
    pub fn collect_garbage(&mut self, now_ns: u64) {
        let mut needed: std::collections::HashSet<ProcessKey> = std::collections::HashSet::new();
        for p in self.procs.values().filter(|p| p.exited_at_ns.is_none()) {
            let mut next = p.parent;
            let mut steps = 0;
            while let Some(k) = next {
                if !needed.insert(k) || steps >= MAX_ANCESTRY {
                    break;
                }
                steps += 1;
                next = self.procs.get(&k).and_then(|p| p.parent);
            }
        }
        let grace = self.exit_grace_ns;
        let expired: Vec<ProcessKey> = self
            .procs
            .values()
            .filter(|p| matches!(p.exited_at_ns, Some(t) if now_ns.saturating_sub(t) > grace))
            .filter(|p| !needed.contains(&p.key))
            .map(|p| p.key)
            .collect();
        for key in expired {
            self.remove(&key);
        }
        if self.procs.len() > self.max_entries {
            let mut exited: Vec<(u64, ProcessKey)> = self
                .procs
                .values()
                .filter_map(|p| p.exited_at_ns.map(|t| (t, p.key)))
                .collect();
            exited.sort();
            let excess = self.procs.len() - self.max_entries;
            for (_, key) in exited.into_iter().take(excess) {
                self.remove(&key);
                self.evicted += 1;
            }
        }
    }

    fn remove(&mut self, key: &ProcessKey) {
        self.procs.remove(key);
        if self.by_tgid.get(&key.tgid) == Some(key) {
            self.by_tgid.remove(&key.tgid);
        }
    }
}

/// Reads the processes running now from a procfs mount (normally /proc).
pub fn read_proc(proc_root: &std::path::Path) -> Vec<SeedEntry> {
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let tgid: u32 = entry.file_name().to_str()?.parse().ok()?;
        read_proc_entry(proc_root, tgid)
    })
    .collect()
}

pub fn read_proc_entry(proc_root: &std::path::Path, tgid: u32) -> Option<SeedEntry> {
    let dir = proc_root.join(tgid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let (comm, ppid, start_ticks) = parse_stat(&stat)?;
    let exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let (argv, argv_truncated) = read_cmdline(&dir.join("cmdline"));
    let uid = std::fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().and_then(|u| u.parse().ok()))
        })
        .unwrap_or(0);
    Some(SeedEntry {
        tgid,
        ppid,
        start_ticks,
        comm,
        exe,
        argv,
        argv_truncated,
        uid,
    })
}

/// A command line from /proc, bounded as the kernel's exec records are (`MAX_ARGV_LEN - 1`
/// bytes kept, `argv_truncated` past that: monitor-ebpf process.rs): a process whose exec
/// record was lost is read here, and its argument list, up to megabytes, would otherwise ride
/// in every event of every descendant (`ancestry`).
fn read_cmdline(path: &std::path::Path) -> (Vec<String>, bool) {
    use std::io::Read;
    const KEPT: usize = MAX_ARGV_LEN - 1;
    let mut bytes = Vec::new();
    let read =
        std::fs::File::open(path).and_then(|f| f.take(KEPT as u64 + 1).read_to_end(&mut bytes));
    if read.is_err() {
        return (Vec::new(), false);
    }
    let truncated = bytes.len() > KEPT;
    bytes.truncate(KEPT);
    (crate::decode::split_nul(&bytes), truncated)
}

/// (comm, ppid, starttime) from /proc/<pid>/stat; comm may contain spaces and parentheses.
pub fn parse_stat(stat: &str) -> Option<(String, u32, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After comm: state(0) ppid(1) ... starttime is field 22 of the line, index 19 here.
    let ppid = rest.get(1)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some((comm, ppid, start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_common::EventKind;

    const HZ: u64 = 100;
    const TICK: u64 = 10_000_000;

    fn header(
        kind: EventKind,
        tgid: u32,
        start_tick: u64,
        ppid: u32,
        parent_tick: u64,
        ts: u64,
    ) -> Header {
        Header {
            kind,
            flags: 0,
            ts_ns: ts,
            tgid,
            pid: tgid,
            ppid,
            uid: 0,
            gid: 0,
            start_ns: start_tick * TICK + 1234,
            parent_start_ns: parent_tick * TICK + 99,
            cgroup_id: 0,
            mnt_ns: 0,
            mnt_ns_id: 0,
            comm: format!("p{tgid}"),
        }
    }

    #[test]
    fn arguments_past_the_bound_are_joined_after_their_secrets_are_hidden() {
        let mut t = ProcessTable::new(HZ, 1000);
        let mut argv: Vec<String> = vec!["tool".into()];
        argv.extend((0..200).map(|i| format!("x{i}")));
        argv.extend(["--password".into(), "hunter2".into(), "last".into()]);
        let h = header(EventKind::ProcessExec, 10, 1, 1, 0, 1);
        let key = t.on_exec(&h, "/usr/bin/tool", &argv, false);
        let kept = &t.get(&key).unwrap().argv;
        assert_eq!(kept.len(), crate::decode::MAX_ARGS_APART);
        let joined = kept.last().unwrap();
        assert!(
            joined.contains("--password") && joined.ends_with("last"),
            "{joined}"
        );
        assert!(!joined.contains("hunter2"), "{joined}");
    }

    #[test]
    fn a_parent_met_before_its_own_fork_record_learns_its_parent_from_it() {
        // Records from two CPUs' rings: the grandchild's fork (30, child of 20) is read before
        // 20's own fork (child of 10).
        let mut t = ProcessTable::new(HZ, 1000);
        t.on_exec(
            &header(EventKind::ProcessExec, 10, 1, 1, 0, 1),
            "/usr/bin/runc",
            &["runc".into()],
            false,
        );
        let grandchild = t.on_fork(&header(EventKind::ProcessFork, 30, 3, 20, 2, 3));
        let middle = t.get(&grandchild).unwrap().parent.unwrap();
        assert_eq!(t.get(&middle).unwrap().parent, None);
        t.on_fork(&header(EventKind::ProcessFork, 20, 2, 10, 1, 2));
        let grandparent = t.get(&middle).unwrap().parent.expect("learnt");
        assert_eq!(grandparent.tgid, 10);
        assert_eq!(t.get(&grandparent).unwrap().argv[0], "runc");
    }

    #[test]
    fn a_command_line_from_proc_is_bounded_as_exec_records_are() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("long");
        let arg = "a".repeat(1000);
        std::fs::write(&long, format!("{arg}\0").repeat(10)).unwrap();
        let (argv, truncated) = read_cmdline(&long);
        assert!(truncated);
        assert!(argv.iter().map(|a| a.len() + 1).sum::<usize>() <= MAX_ARGV_LEN);
        assert_eq!(argv[0], arg);
        let short = dir.path().join("short");
        std::fs::write(&short, "npm\0install\0").unwrap();
        assert_eq!(
            read_cmdline(&short),
            (vec!["npm".to_string(), "install".to_string()], false)
        );
        assert_eq!(read_cmdline(&dir.path().join("gone")), (Vec::new(), false));
    }

    #[test]
    fn three_level_chain_has_ordered_ancestry() {
        let mut t = ProcessTable::new(HZ, 1000);
        t.seed([SeedEntry {
            tgid: 10,
            ppid: 1,
            start_ticks: 5,
            comm: "runner".into(),
            exe: Some("/runner".into()),
            argv: vec![],
            argv_truncated: false,
            uid: 0,
        }]);
        t.on_fork(&header(EventKind::ProcessFork, 20, 100, 10, 5, 1));
        t.on_exec(
            &header(EventKind::ProcessExec, 20, 100, 10, 5, 2),
            "/bin/bash",
            &["bash".into()],
            false,
        );
        t.on_fork(&header(EventKind::ProcessFork, 30, 200, 20, 100, 3));
        let key = t.on_exec(
            &header(EventKind::ProcessExec, 30, 200, 20, 100, 4),
            "/usr/bin/node",
            &["node".into()],
            false,
        );
        let chain: Vec<u32> = t.ancestry(&key).iter().map(|p| p.key.tgid).collect();
        assert_eq!(chain, vec![20, 10]);
        assert_eq!(t.ancestry(&key)[0].exe.as_deref(), Some("/bin/bash"));
    }

    #[test]
    fn pid_reuse_makes_a_new_process_and_retires_the_old_one() {
        let mut t = ProcessTable::new(HZ, 1000);
        let old = t.on_exec(
            &header(EventKind::ProcessExec, 50, 100, 1, 0, 1),
            "/bin/old",
            &[],
            false,
        );
        // Same pid, later start: exit of the old one was never seen.
        let new = t.on_exec(
            &header(EventKind::ProcessExec, 50, 900, 1, 0, 2),
            "/bin/new",
            &[],
            false,
        );
        assert_ne!(old, new);
        assert_eq!(t.by_tgid(50).unwrap().exe.as_deref(), Some("/bin/new"));
        assert!(t.get(&old).unwrap().exited_at_ns.is_some());
        assert_eq!(t.get(&old).unwrap().exe.as_deref(), Some("/bin/old"));
    }

    #[test]
    fn exit_before_exec_record_still_names_the_process() {
        // Records from two CPUs can arrive swapped: the exit first, then the exec.
        let mut t = ProcessTable::new(HZ, 1000);
        let k1 = t.on_exit(&header(EventKind::ProcessExit, 60, 300, 1, 0, 9), 7 << 8);
        let k2 = t.on_exec(
            &header(EventKind::ProcessExec, 60, 300, 1, 0, 8),
            "/bin/x",
            &["x".into()],
            false,
        );
        assert_eq!(k1, k2);
        let p = t.get(&k1).unwrap();
        assert_eq!(p.exit_status, Some(7 << 8));
        assert_eq!(p.exe.as_deref(), Some("/bin/x"));
    }

    #[test]
    fn exited_parent_is_kept_while_a_child_lives() {
        let mut t = ProcessTable::new(HZ, 1000);
        let parent = t.on_exec(
            &header(EventKind::ProcessExec, 70, 100, 1, 0, 1),
            "/bin/sh",
            &[],
            false,
        );
        let child = t.on_fork(&header(EventKind::ProcessFork, 71, 150, 70, 100, 2));
        t.on_exit(&header(EventKind::ProcessExit, 70, 100, 1, 0, 3), 0);
        t.collect_garbage(3 + 60_000_000_000);
        assert!(
            t.get(&parent).is_some(),
            "daemonized child still needs its ancestry"
        );
        t.on_exit(&header(EventKind::ProcessExit, 71, 150, 70, 100, 4), 0);
        t.collect_garbage(4 + 60_000_000_000);
        assert!(t.get(&parent).is_none() && t.get(&child).is_none());
    }

    #[test]
    fn table_is_bounded() {
        let mut t = ProcessTable::new(HZ, 10);
        for i in 0..50u32 {
            let h = header(
                EventKind::ProcessExec,
                1000 + i,
                100 + i as u64,
                1,
                0,
                i as u64,
            );
            t.on_exec(&h, "/bin/true", &[], false);
            t.on_exit(&h, 0);
        }
        t.collect_garbage(100); // inside the grace period: only the bound applies
        assert!(t.len() <= 10, "{}", t.len());
        assert!(t.evicted > 0);
    }

    #[test]
    fn parses_stat_with_odd_comm() {
        let stat = "123 (a (b) c) S 45 123 123 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1 2";
        assert_eq!(parse_stat(stat), Some(("a (b) c".into(), 45, 98765)));
    }

    #[test]
    fn seeding_from_real_proc_finds_this_process_with_the_kernel_start_time() {
        let entries = read_proc(std::path::Path::new("/proc"));
        let me = entries
            .iter()
            .find(|e| e.tgid == std::process::id())
            .expect("own /proc entry");
        assert!(me.start_ticks > 0);
        assert!(me.exe.is_some());
        let mut t = ProcessTable::new(clock_ticks_per_second(), 100_000);
        t.seed(entries);
        assert!(t.by_tgid(std::process::id()).is_some());
        assert!(!t
            .ancestry(&t.by_tgid(std::process::id()).unwrap().key)
            .is_empty());
    }
}
