//! Time the kernel spends in BPF programs, from the kernel's own per-program statistics
//! (`kernel.bpf_stats_enabled`: each program's run time and run count). The bench reads it for
//! the monitor's programs around each workload: the probes' cost measured directly, without the
//! run-to-run noise of wall time on a shared machine.

use std::collections::BTreeMap;

const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `struct bpf_prog_info` up to `run_cnt` (Linux 5.1+): name at 64, run_time_ns at 192.
const INFO_LEN: usize = 208;

/// One program's statistics so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgramTime {
    pub name: String,
    pub run_time_ns: u64,
    pub run_count: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> libc::c_long {
    // SAFETY: bpf(2) with a zeroed 128-byte attribute block the kernel reads and writes within.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

/// Every BPF program loaded on the machine, by id.
pub fn programs() -> BTreeMap<u32, ProgramTime> {
    let mut all = BTreeMap::new();
    let mut id = 0u32;
    loop {
        let mut attr = [0u8; 128];
        attr[..4].copy_from_slice(&id.to_ne_bytes());
        if bpf(BPF_PROG_GET_NEXT_ID, &mut attr) < 0 {
            return all;
        }
        id = u32::from_ne_bytes(attr[4..8].try_into().expect("4 bytes"));
        let mut attr = [0u8; 128];
        attr[..4].copy_from_slice(&id.to_ne_bytes());
        let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr);
        if fd < 0 {
            continue; // unloaded since
        }
        let mut info = [0u8; INFO_LEN];
        let mut attr = [0u8; 128];
        attr[..4].copy_from_slice(&(fd as u32).to_ne_bytes());
        attr[4..8].copy_from_slice(&(INFO_LEN as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
        let ok = bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) >= 0;
        // SAFETY: the descriptor bpf(2) just gave us.
        unsafe { libc::close(fd as i32) };
        if !ok {
            continue;
        }
        let word = |at: usize| u64::from_ne_bytes(info[at..at + 8].try_into().expect("8 bytes"));
        let name = info[64..80].split(|b| *b == 0).next().unwrap_or(&[]);
        all.insert(
            id,
            ProgramTime {
                name: String::from_utf8_lossy(name).into_owned(),
                run_time_ns: word(192),
                run_count: word(200),
            },
        );
    }
}

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The kernel's statistics switched on while it lives (for every tool alike: each program run
/// pays a clock read or two), and back as they were when dropped.
pub struct StatsOn {
    was: String,
}

impl StatsOn {
    /// None, with the reason, where the kernel has no statistics (before 5.8) or refuses them.
    pub fn new() -> Result<Self, String> {
        let was = std::fs::read_to_string(STATS).map_err(|e| format!("{STATS}: {e}"))?;
        std::fs::write(STATS, "1").map_err(|e| format!("{STATS}: {e}"))?;
        Ok(Self {
            was: was.trim().to_string(),
        })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS, &self.was);
    }
}

/// Run time (ns) and runs of each program of `ids` that ran between two snapshots, keyed
/// `name#id` (the kernel keeps 15 characters of a name: `sched_process_exec` and
/// `sched_process_exit` are both `sched_process_e`).
pub fn spent(
    ids: &[u32],
    before: &BTreeMap<u32, ProgramTime>,
    after: &BTreeMap<u32, ProgramTime>,
) -> BTreeMap<String, (u64, u64)> {
    let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for id in ids {
        let (Some(b), Some(a)) = (before.get(id), after.get(id)) else {
            continue;
        };
        let runs = a.run_count.saturating_sub(b.run_count);
        if runs == 0 {
            continue;
        }
        let entry = by_name.entry(format!("{}#{id}", a.name)).or_default();
        entry.0 += a.run_time_ns.saturating_sub(b.run_time_ns);
        entry.1 += runs;
    }
    by_name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(name: &str, ns: u64, runs: u64) -> ProgramTime {
        ProgramTime {
            name: name.into(),
            run_time_ns: ns,
            run_count: runs,
        }
    }

    #[test]
    fn spent_counts_only_the_given_programs_that_ran() {
        let before = BTreeMap::from([
            (1, time("a", 100, 1)),
            (2, time("b", 5, 1)),
            (3, time("c", 0, 0)),
        ]);
        let after = BTreeMap::from([
            (1, time("a", 400, 4)),
            (2, time("b", 5, 1)),
            (3, time("c", 9, 9)),
        ]);
        let spent = spent(&[1, 2], &before, &after);
        assert_eq!(spent, BTreeMap::from([("a#1".to_string(), (300, 3))]));
    }
}
