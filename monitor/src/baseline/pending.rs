//! Runs waiting for the store: one owner-only JSON file each in a directory of the agent's, sent
//! oldest first when the store answers again. Bounded: past [`MAX_PENDING`] the oldest is
//! dropped and counted (a runner cut off from its database for weeks must not fill its disk).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::behaviour::RunRecord;

pub const MAX_PENDING: usize = 1_000;
/// Largest pending file read back (a run record is bounded well below it).
const MAX_FILE_BYTES: u64 = 16 << 20;

pub struct Pending {
    dir: PathBuf,
}

impl Pending {
    pub fn new(dir: PathBuf) -> Self {
        Pending { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps a run; returns how many older ones were dropped to make room.
    pub fn keep(&self, run: &RunRecord) -> anyhow::Result<u64> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut dropped = 0;
        let mut files = self.files()?;
        while files.len() >= MAX_PENDING {
            let oldest = files.remove(0);
            if std::fs::remove_file(&oldest).is_ok() {
                dropped += 1;
            }
        }
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(format!("{}\0{}", run.job, run.run).as_bytes());
        let name = format!(
            "{:020}-{}.json",
            (crate::metrics::unix_now() * 1e9) as u128,
            digest[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let temporary = self.dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("creating {}", temporary.display()))?;
        serde_json::to_writer(&mut file, run)?;
        file.sync_all()?;
        // Renamed whole: a crash leaves a temporary file, never half a record.
        std::fs::rename(&temporary, self.dir.join(name))?;
        Ok(dropped)
    }

    /// The waiting runs' files, oldest first.
    pub fn files(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".json") && !name.starts_with('.') {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    pub fn count(&self) -> usize {
        self.files().map(|f| f.len()).unwrap_or(0)
    }

    /// Reads one back; a file that is not a run record is an error naming it (it stays, for a
    /// person to look at, and is not sent).
    pub fn read(path: &Path) -> anyhow::Result<RunRecord> {
        use std::io::Read as _;
        let mut text = String::new();
        std::fs::File::open(path)?
            .take(MAX_FILE_BYTES)
            .read_to_string(&mut text)?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a run record", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn runs_wait_in_order_owner_only_and_bounded() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let pending = Pending::new(dir.path().join("pending"));
        assert_eq!(pending.count(), 0);
        let run = |n: u32| RunRecord {
            job: "j".into(),
            run: format!("r{n}"),
            run_id: None,
            ended: "t".into(),
            steps: BTreeMap::new(),
            truncated: BTreeSet::new(),
        };
        for n in 0..3 {
            assert_eq!(pending.keep(&run(n)).unwrap(), 0);
        }
        let files = pending.files().unwrap();
        assert_eq!(files.len(), 3);
        let read: Vec<String> = files
            .iter()
            .map(|f| Pending::read(f).unwrap().run)
            .collect();
        assert_eq!(read, ["r0", "r1", "r2"]);
        let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(pending.dir())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::write(pending.dir().join("junk.json"), "{").unwrap();
        assert!(Pending::read(&pending.dir().join("junk.json")).is_err());
    }
}
