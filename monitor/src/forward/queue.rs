//! An output's records waiting for their destination: one owner-only file each in the
//! output's directory, named by a growing sequence number, so they survive an agent restart
//! and go out oldest first. Bounded in count: past the bound the oldest is dropped (and the
//! caller counts it).

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

pub struct DiskQueue {
    dir: PathBuf,
    /// The waiting records' sequence numbers, oldest first.
    waiting: VecDeque<u64>,
    next: u64,
    max: usize,
}

/// Largest record read back.
const MAX_RECORD_BYTES: u64 = 4 << 20;

impl DiskQueue {
    /// Opens (or makes, owner-only) the queue in `dir`, taking up what an earlier agent left.
    pub fn open(dir: &Path, max: usize) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut waiting: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                name.strip_suffix(".rec")?.parse().ok()
            })
            .collect();
        waiting.sort_unstable();
        let next = waiting.last().map_or(0, |n| n + 1);
        Ok(DiskQueue {
            dir: dir.to_path_buf(),
            waiting: waiting.into(),
            next,
            max: max.max(1),
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.rec"))
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Keeps a record; returns how many of the oldest were dropped to make room.
    pub fn push(&mut self, bytes: &[u8]) -> anyhow::Result<u64> {
        let mut dropped = 0;
        while self.waiting.len() >= self.max {
            if let Some(old) = self.waiting.pop_front() {
                let _ = std::fs::remove_file(self.path(old));
                dropped += 1;
            }
        }
        use std::os::unix::fs::OpenOptionsExt as _;
        let seq = self.next;
        let path = self.path(seq);
        let temporary = self.dir.join(format!(".{seq:020}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("writing {}", temporary.display()))?;
        std::io::Write::write_all(&mut file, bytes)?;
        // Renamed whole: a crash leaves a temporary file, never half a record.
        std::fs::rename(&temporary, &path)?;
        self.next += 1;
        self.waiting.push_back(seq);
        Ok(dropped)
    }

    /// The oldest `n` records (fewer when fewer wait); unreadable ones are dropped and counted
    /// in the second value.
    pub fn oldest(&mut self, n: usize) -> (Vec<(u64, Vec<u8>)>, u64) {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for &seq in self.waiting.iter().take(n) {
            use std::io::Read as _;
            let mut bytes = Vec::new();
            match std::fs::File::open(self.path(seq))
                .and_then(|f| f.take(MAX_RECORD_BYTES).read_to_end(&mut bytes))
            {
                Ok(_) => out.push((seq, bytes)),
                Err(_) => bad.push(seq),
            }
        }
        for seq in &bad {
            self.remove(*seq);
        }
        (out, bad.len() as u64)
    }

    /// Forgets a record its destination took.
    pub fn remove(&mut self, seq: u64) {
        let _ = std::fs::remove_file(self.path(seq));
        self.waiting.retain(|s| *s != seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_wait_in_order_survive_a_reopen_and_the_oldest_go_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = DiskQueue::open(&dir.path().join("q"), 3).unwrap();
        for i in 0..3 {
            assert_eq!(q.push(format!("r{i}").as_bytes()).unwrap(), 0);
        }
        assert_eq!(q.push(b"r3").unwrap(), 1);
        let (first, bad) = q.oldest(2);
        assert_eq!(bad, 0);
        assert_eq!(
            first.iter().map(|(_, b)| b.as_slice()).collect::<Vec<_>>(),
            [b"r1".as_slice(), b"r2"]
        );
        q.remove(first[0].0);
        drop(q);
        let mut q = DiskQueue::open(&dir.path().join("q"), 3).unwrap();
        assert_eq!(q.len(), 2);
        q.push(b"r4").unwrap();
        let all: Vec<Vec<u8>> = q.oldest(10).0.into_iter().map(|(_, b)| b).collect();
        assert_eq!(all, [b"r2".to_vec(), b"r3".to_vec(), b"r4".to_vec()]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("q"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
