//! Watched files by identity: the credential and persistence files that exist on the machine,
//! by (device, inode), in the kernel's `WATCH_INODES` map.
//!
//! The open filter tests names; a bind mount (of the file or its directory), a hard link under
//! an innocent name, a detached mount tree (`open_tree`) or a chroot reach the same inode by a
//! name no rule knows. The kernel reports an open of a listed inode whatever its name
//! (`MATCH_INODE`), and the enricher names the watched file it is (`same_file_as`), so the rules
//! judge it as that file.
//!
//! Which files: those the credential and persistence rules classify, found in the usual places
//! of every home on the machine (`/root`, `/home/*`) and of every running job (its `HOME`), and
//! the system's (`/etc/shadow`, `/etc/ssh/*_key`, `/etc/profile`, ...). They are read again
//! every `REFRESH` and whenever a job with a new home appears, and a file whose watched name is
//! written is added at once (`written`). Bounded: `WATCH_INODE_SLOTS`
//! files, `MAX_PER_DIR` per directory, `MAX_HOMES` homes.
//!
//! A removed watched file's number may go to a new file: the open record carries the inode's
//! generation (new for every inode ext4, xfs, btrfs and tmpfs allocate), and each read here
//! takes the watched file's (`file_generation`), so the enricher tells the two apart for
//! certain; where either is missing it falls back to creation times (`still_that_file`).
//!
//! Not covered: a file created and aliased between two reads (its own name is still watched),
//! and file systems that give an open file another identity than `stat` does (overlayfs:
//! containers, issue 18).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap as StdHashMap},
    os::unix::fs::MetadataExt as _,
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, HashMap, MapData},
    Ebpf,
};
use monitor_common::{
    InodeKey, WATCH_CREDENTIAL, WATCH_INODE_SLOTS, WATCH_READ, WATCH_SUBTREE_SLOTS, WATCH_WRITE,
};

pub use crate::event::enrich::Watched;
use crate::rules::{credentials, persistence};

const REFRESH: Duration = Duration::from_secs(10);
/// How long a watched file whose name is gone stays watched by identity.
const GONE_KEEP: Duration = Duration::from_secs(24 * 3600);
/// Gone files kept at once (the oldest go first).
const MAX_GONE: usize = 1_024;
const MAX_PER_DIR: usize = 256;
const MAX_HOMES: usize = 64;

/// Directories of a home where credentials and persistence files live (walked 3 deep); the
/// home's own files are read too.
const HOME_DIRS: &[&str] = &[
    ".ssh",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".cargo",
    ".gem",
    ".terraform.d",
    ".gnupg",
    ".config/gh",
    ".config/gcloud",
    ".config/git",
    ".config/systemd/user",
    ".config/autostart",
];

/// The system's: directories read one deep, and single files.
const SYSTEM_DIRS: &[&str] = &[
    "/etc/ssh",
    "/etc/sudoers.d",
    "/etc/cron.d",
    "/etc/profile.d",
];
const SYSTEM_FILES: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/profile",
    "/etc/environment",
    "/etc/crontab",
    "/etc/ld.so.preload",
    "/etc/bash.bashrc",
    "/etc/gitconfig",
];

pub struct Identities {
    map: HashMap<MapData, InodeKey, u32>,
    /// `WATCH_INODE_BITS`: the low 16 bits of the watched inode numbers, and what was written.
    bits: Array<MapData, u32>,
    bits_written: Vec<u32>,
    /// Homes the configuration names (`watch_homes`).
    configured: BTreeSet<String>,
    pushed: BTreeMap<InodeKey, (String, u32)>,
    /// When each pushed identity was last read as its file's (the latest refresh, or when it
    /// was written).
    seen: BTreeMap<InodeKey, std::time::SystemTime>,
    /// Each watched identity's inode generation (`file_generation`; None: the file system did
    /// not say), with the change time it was read at: asked again only when that changed (a
    /// new inode given the number has another), so the agent does not open every credential
    /// on the machine every `REFRESH` (other monitors' audit rules would log each). Pushed and
    /// gone identities alike.
    generations: BTreeMap<InodeKey, (i64, i64, Option<u32>)>,
    /// Watched files whose name is gone, kept by identity for [`GONE_KEEP`] (at most
    /// [`MAX_GONE`]): a hard link elsewhere keeps the inode, and the key, alive.
    gone: BTreeMap<InodeKey, (String, u32, std::time::SystemTime)>,
    homes: BTreeSet<String>,
    last: Option<Instant>,
    /// `WATCH_SUBTREES`: directories watched for writes at any depth (the runners' actions and
    /// tool caches), by path as the jobs named them and the identity last pushed; and
    /// `WATCH_SUBTREES_ON`.
    subtree_map: HashMap<MapData, InodeKey, u32>,
    subtrees_on: Array<MapData, u32>,
    subtrees: BTreeMap<String, Option<InodeKey>>,
    subtrees_read: Option<Instant>,
    /// When each watched directory's identity was last read as its.
    subtree_seen: StdHashMap<InodeKey, std::time::SystemTime>,
    /// Identities taken out of `WATCH_SUBTREES` (the directory removed or made anew, or no job
    /// names it), with when each was last its directory's: a kernel match on one of them, read
    /// after the fact, may be a new directory given the old number.
    subtrees_removed: Vec<(InodeKey, std::time::SystemTime)>,
}

/// Removed subtree identities remembered (the newest), and for how long.
const MAX_SUBTREES_REMOVED: usize = 256;
const SUBTREES_REMOVED_KEEP: Duration = Duration::from_secs(3600);

impl Identities {
    pub fn open(ebpf: &mut Ebpf, configured: &[std::path::PathBuf]) -> anyhow::Result<Self> {
        let map = ebpf
            .take_map("WATCH_INODES")
            .ok_or_else(|| anyhow::anyhow!("WATCH_INODES map missing"))?;
        let bits = ebpf
            .take_map("WATCH_INODE_BITS")
            .ok_or_else(|| anyhow::anyhow!("WATCH_INODE_BITS map missing"))?;
        let subtree_map = ebpf
            .take_map("WATCH_SUBTREES")
            .ok_or_else(|| anyhow::anyhow!("WATCH_SUBTREES map missing"))?;
        let subtrees_on = ebpf
            .take_map("WATCH_SUBTREES_ON")
            .ok_or_else(|| anyhow::anyhow!("WATCH_SUBTREES_ON map missing"))?;
        Ok(Self {
            map: HashMap::try_from(map)?,
            bits: Array::try_from(bits)?,
            bits_written: vec![0; INODE_BIT_WORDS],
            configured: configured
                .iter()
                .map(|h| h.display().to_string().trim_end_matches('/').to_string())
                .filter(|h| h.starts_with('/') && h.len() > 1)
                .collect(),
            pushed: BTreeMap::new(),
            seen: BTreeMap::new(),
            generations: BTreeMap::new(),
            gone: BTreeMap::new(),
            homes: BTreeSet::new(),
            last: None,
            subtree_map: HashMap::try_from(subtree_map)?,
            subtrees_on: Array::try_from(subtrees_on)?,
            subtrees: BTreeMap::new(),
            subtrees_read: None,
            subtree_seen: StdHashMap::new(),
            subtrees_removed: Vec::new(),
        })
    }

    /// A watched name was written (created, replaced, linked) at `path`: when the rules watch
    /// that file, its identity is watched from now (a credential made during a job, as
    /// setup-node's `.npmrc`, is known under other names at once). Returns the identity added.
    pub fn written(&mut self, path: &str) -> Option<((u32, u64), Watched)> {
        let home = self
            .homes
            .iter()
            .filter(|h| crate::rules::path_within(path, h).is_some())
            .max_by_key(|h| h.len())?;
        let access = watched_for(&as_rules_see(home, path))?;
        let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        let key = inode_key(&meta);
        if self.pushed.len() >= WATCH_INODE_SLOTS as usize && !self.pushed.contains_key(&key) {
            return None;
        }
        // Its prefilter bit first, so the kernel looks it up as soon as it is in the map.
        self.add_bit(key.ino);
        self.map.insert(key, access, 0).ok()?;
        self.pushed.insert(key, (path.to_string(), access));
        self.seen.insert(key, std::time::SystemTime::now());
        self.gone.remove(&key);
        let generation = self.generation_of(path, key);
        Some((
            (key.dev, key.ino),
            Watched {
                path: path.to_string(),
                seen_at: std::time::SystemTime::now(),
                generation,
            },
        ))
    }

    /// Reads the files again when the last read is older than `REFRESH` or `job_homes` names
    /// a home not read yet; updates the kernel's map and returns the table the enricher names
    /// files by (`None`: nothing was read).
    pub fn refresh_if_due<'a>(
        &mut self,
        job_homes: impl Iterator<Item = &'a str>,
    ) -> Option<StdHashMap<(u32, u64), Watched>> {
        // Called on every tick: only a job's new home reads the disk before `REFRESH` is due.
        let job_homes: Vec<&str> = job_homes.collect();
        let new_home = job_homes.iter().any(|h| !self.homes.contains(*h));
        if !new_home && self.last.is_some_and(|t| t.elapsed() < REFRESH) {
            return None;
        }
        let mut homes = machine_homes();
        homes.extend(self.configured.iter().cloned());
        homes.extend(job_homes.into_iter().map(str::to_string));
        self.last = Some(Instant::now());
        self.homes = homes;
        let reading = std::time::SystemTime::now();
        let now = watched_files(&self.homes);
        // The prefilter lets the new identities through before they are in the map, and stops
        // the gone ones only once they are out of it.
        let both: Vec<u64> = self
            .pushed
            .keys()
            .chain(now.keys())
            .map(|k| k.ino)
            .chain(self.subtree_inos())
            .collect();
        self.write_bits(both.into_iter());
        // A watched file whose name is gone stays watched by identity a while: its inode may
        // live on under another name (`ln ~/.ssh/id_rsa x; rm ~/.ssh/id_rsa`, read later). The
        // enricher tells a file that still is it from a new one given its number by when each
        // was made (`still_that_file`).
        for key in self
            .pushed
            .keys()
            .filter(|k| !now.contains_key(k))
            .copied()
            .collect::<Vec<_>>()
        {
            if let Some((path, access)) = self.pushed.remove(&key) {
                let seen = self.seen.remove(&key).unwrap_or(reading);
                self.gone.insert(key, (path, access, seen));
            }
        }
        let expired: Vec<InodeKey> = self
            .gone
            .iter()
            .filter(|(k, (_, _, seen))| {
                now.contains_key(k)
                    || reading
                        .duration_since(*seen)
                        .is_ok_and(|age| age > GONE_KEEP)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.gone.remove(&key);
            if !now.contains_key(&key) {
                let _ = self.map.remove(&key);
            }
        }
        while self.gone.len() > MAX_GONE {
            let oldest = self
                .gone
                .iter()
                .min_by_key(|(_, (_, _, seen))| *seen)
                .map(|(k, _)| *k);
            if let Some(key) = oldest {
                self.gone.remove(&key);
                let _ = self.map.remove(&key);
            }
        }
        for (key, (path, access)) in now {
            self.seen.insert(key, reading);
            // A number given to a new file under the same name has a new generation.
            self.generation_of(&path, key);
            if self.pushed.get(&key).is_some_and(|(_, a)| *a == access) {
                continue;
            }
            if !self.pushed.contains_key(&key) && self.pushed.len() >= WATCH_INODE_SLOTS as usize {
                log::warn!(
                    "more than {WATCH_INODE_SLOTS} watched files: {path} is watched by name only"
                );
                continue;
            }
            match self.map.insert(key, access, 0) {
                Ok(()) => {
                    self.pushed.insert(key, (path, access));
                }
                Err(e) => log::warn!("watching {path} by identity: {e}"),
            }
        }
        self.seen.retain(|k, _| self.pushed.contains_key(k));
        self.generations
            .retain(|k, _| self.pushed.contains_key(k) || self.gone.contains_key(k));
        let kept: Vec<u64> = self
            .pushed
            .keys()
            .chain(self.gone.keys())
            .map(|k| k.ino)
            .chain(self.subtree_inos())
            .collect();
        self.write_bits(kept.into_iter());
        Some(
            self.gone
                .iter()
                .map(|(k, (path, _, seen))| {
                    (
                        (k.dev, k.ino),
                        Watched {
                            path: path.clone(),
                            seen_at: *seen,
                            generation: self.generations.get(k).and_then(|g| g.2),
                        },
                    )
                })
                .chain(self.pushed.iter().map(|(k, (path, _))| {
                    (
                        (k.dev, k.ino),
                        Watched {
                            path: path.clone(),
                            seen_at: reading,
                            generation: self.generations.get(k).and_then(|g| g.2),
                        },
                    )
                }))
                .collect(),
        )
    }
}

impl Identities {
    /// The generation of watched file `path` (identity `key`): as read before while its change
    /// time is the same, else asked of the file system.
    fn generation_of(&mut self, path: &str, key: InodeKey) -> Option<u32> {
        let meta = std::fs::metadata(path).ok()?;
        let changed = (meta.ctime(), meta.ctime_nsec());
        if let Some(&(sec, nsec, generation)) = self.generations.get(&key) {
            if (sec, nsec) == changed {
                return generation;
            }
        }
        let generation = file_generation(Path::new(path), key);
        self.generations
            .insert(key, (changed.0, changed.1, generation));
        generation
    }

    /// Watches `dirs` (the runners' actions and tool caches the jobs named) for writes at any
    /// depth: their identities go to `WATCH_SUBTREES`, their inode numbers' bits to the
    /// prefilter first. A directory not seen before is read at once; all are read again every
    /// `REFRESH` (one that did not exist yet, or was made anew, gets its present identity).
    pub fn watch_dirs<'a>(&mut self, dirs: impl Iterator<Item = &'a str>) {
        let named: BTreeSet<&str> = dirs.collect();
        // Directories no job names any more are not watched.
        let gone: Vec<String> = self
            .subtrees
            .keys()
            .filter(|d| !named.contains(d.as_str()))
            .cloned()
            .collect();
        for dir in gone {
            if let Some(Some(key)) = self.subtrees.remove(&dir) {
                let _ = self.subtree_map.remove(&key);
                self.subtree_removed(key);
            }
        }
        let mut new = false;
        for dir in named {
            if self.subtrees.contains_key(dir) {
                continue;
            }
            if self.subtrees.len() >= WATCH_SUBTREE_SLOTS as usize {
                log::warn!(
                    "more than {WATCH_SUBTREE_SLOTS} runner directories: writes under {dir} are not watched"
                );
                break;
            }
            self.subtrees.insert(dir.to_string(), None);
            new = true;
        }
        if !new && self.subtrees_read.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        self.reread_subtrees();
    }

    /// Reads every watched directory's identity again and brings the kernel's map up to date;
    /// whether any had changed (removed, or made anew).
    fn reread_subtrees(&mut self) -> bool {
        self.subtrees_read = Some(Instant::now());
        let reading = std::time::SystemTime::now();
        let mut changed = false;
        let paths: Vec<String> = self.subtrees.keys().cloned().collect();
        for path in paths {
            // The directory itself, never what a link there points at: a job owns `_work` and
            // could put `ln -s / _tool` in its place. Only a directory two levels down or more.
            let now = std::fs::symlink_metadata(&path)
                .ok()
                .filter(|m| m.is_dir() && path.matches('/').count() >= 2)
                .map(|m| inode_key(&m));
            let before = self.subtrees.get(&path).copied().flatten();
            if now == before {
                if let Some(key) = now {
                    self.subtree_seen.insert(key, reading);
                }
                continue;
            }
            changed = true;
            if let Some(old) = before {
                let _ = self.subtree_map.remove(&old);
                self.subtree_removed(old);
            }
            if let Some(key) = now {
                self.subtree_seen.insert(key, reading);
            }
            if let Some(key) = now {
                self.add_bit(key.ino);
                if let Err(e) = self.subtree_map.insert(key, WATCH_WRITE, 0) {
                    log::warn!("watching {path} for writes: {e}");
                    continue;
                }
                if self.subtrees_on.set(0, 1, 0).is_ok() {
                    log::info!("watching writes under {path} (any depth, by its identity)");
                }
            }
            self.subtrees.insert(path, now);
        }
        changed
    }

    fn subtree_removed(&mut self, key: InodeKey) {
        let seen = self
            .subtree_seen
            .remove(&key)
            .unwrap_or_else(std::time::SystemTime::now);
        let now = std::time::SystemTime::now();
        self.subtrees_removed.retain(|(k, at)| {
            *k != key
                && now
                    .duration_since(*at)
                    .map_or(true, |age| age < SUBTREES_REMOVED_KEEP)
        });
        if self.subtrees_removed.len() >= MAX_SUBTREES_REMOVED {
            self.subtrees_removed.remove(0);
        }
        self.subtrees_removed.push((key, seen));
    }

    /// Whether a write the kernel matched by a watched directory's identity is really under
    /// one. A directory removed (a finished job's runner, a test's lab) leaves its identity in
    /// the kernel's map until the agent reads the directories again, and the file system gives
    /// its inode number to the next directory made anywhere (ext4, at once): writes there
    /// match. The record may also be read after the agent took the identity out. So the
    /// directories are read again now, and the directories above `paths` are looked at: one
    /// with a watched identity confirms the match; one with a removed identity made after that
    /// identity was last its watched directory's is the number reused, and refutes it. With
    /// neither (a detached mount tree, a chroot: paths this namespace cannot follow), the
    /// kernel's word stands.
    pub fn confirm_subtree_match(&mut self, paths: &[&str]) -> bool {
        self.reread_subtrees();
        let present: std::collections::HashSet<InodeKey> =
            self.subtrees.values().flatten().copied().collect();
        let mut reused = false;
        for path in paths {
            for meta in std::path::Path::new(path)
                .ancestors()
                .skip(1)
                .take(monitor_common::SUBTREE_DEPTH as usize)
                .filter_map(|dir| std::fs::symlink_metadata(dir).ok())
            {
                let key = inode_key(&meta);
                if present.contains(&key) {
                    return true;
                }
                if let Some((_, seen)) = self.subtrees_removed.iter().find(|(k, _)| *k == key) {
                    match meta.created() {
                        Ok(born) if born > *seen => reused = true,
                        // Made before: the watched directory itself, moved or mounted elsewhere.
                        _ => return true,
                    }
                }
            }
        }
        !reused
    }

    fn subtree_inos(&self) -> Vec<u64> {
        self.subtrees.values().flatten().map(|k| k.ino).collect()
    }
}

/// Whether `opened`, whose identity `key` was the watched file `watched`'s when last read
/// (`seen_at`), is that file. Yes while `watched` still has that identity (a bind mount, a second
/// name); yes too when `watched` is gone but `opened` was made before that read (two
/// files cannot share an identity at once: it is the watched file's inode, kept alive by a hard
/// link, as a thief who links a key elsewhere and removes the original would have it); no when
/// `opened` was made after (the number of a removed file, given to a new one). When the file
/// system keeps no creation time, yes (a finding rather than a miss).
pub fn still_that_file(
    watched: &str,
    opened: &str,
    key: (u32, u64),
    seen_at: std::time::SystemTime,
) -> bool {
    let identity = |path: &str| {
        std::fs::symlink_metadata(path).ok().map(|m| {
            let k = inode_key(&m);
            (k.dev, k.ino)
        })
    };
    if identity(watched) == Some(key) {
        return true;
    }
    match std::fs::symlink_metadata(opened).and_then(|m| m.created()) {
        Ok(born) => born <= seen_at,
        Err(_) => true,
    }
}

const INODE_BIT_WORDS: usize = 2048;

/// An inode number's place in `WATCH_INODE_BITS`: its word, and the bit in it (`ino & 0xffff`).
fn inode_bit(ino: u64) -> (usize, u32) {
    let low = (ino & 0xffff) as usize;
    (low >> 5, 1 << (low & 31))
}

/// `WATCH_INODE_BITS`' words for these inode numbers.
fn inode_bits(inos: impl Iterator<Item = u64>) -> Vec<u32> {
    let mut words = vec![0u32; INODE_BIT_WORDS];
    for ino in inos {
        let (word, bit) = inode_bit(ino);
        words[word] |= bit;
    }
    words
}

impl Identities {
    /// Sets one inode number's prefilter bit (before its identity goes in a map).
    fn add_bit(&mut self, ino: u64) {
        let (word, bit) = inode_bit(ino);
        let want = self.bits_written[word] | bit;
        if want != self.bits_written[word] && self.bits.set(word as u32, want, 0).is_ok() {
            self.bits_written[word] = want;
        }
    }

    /// Writes the words of `WATCH_INODE_BITS` that change.
    fn write_bits(&mut self, inos: impl Iterator<Item = u64>) {
        let words = inode_bits(inos);
        for (index, (want, had)) in words.iter().zip(self.bits_written.iter_mut()).enumerate() {
            if want != had && self.bits.set(index as u32, *want, 0).is_ok() {
                *had = *want;
            }
        }
    }
}

/// `/root`, the directories under `/home`, and the homes of the accounts in `/etc/passwd` that
/// exist as directories (a runner's service user often lives in `/var/lib/...` or `/opt/...`).
fn machine_homes() -> BTreeSet<String> {
    let mut homes = BTreeSet::from(["/root".to_string()]);
    if let Ok(entries) = std::fs::read_dir("/home") {
        for entry in entries.flatten().take(MAX_HOMES) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                homes.insert(entry.path().display().to_string());
            }
        }
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for home in passwd_homes(&passwd) {
        if homes.len() >= MAX_HOMES {
            break;
        }
        if Path::new(home).is_dir() {
            homes.insert(home.to_string());
        }
    }
    homes
}

/// The home directories of `/etc/passwd`'s accounts, but the system's own places (`/`,
/// `/nonexistent`, `/bin`, `/var/run/...` and the like are not homes anyone keeps keys in).
fn passwd_homes(passwd: &str) -> impl Iterator<Item = &str> {
    passwd
        .lines()
        .filter_map(|line| line.split(':').nth(5))
        .filter(|home| {
            home.starts_with('/')
                && home.len() > 1
                && ![
                    "/bin",
                    "/sbin",
                    "/usr",
                    "/dev",
                    "/proc",
                    "/run",
                    "/var/run",
                    "/nonexistent",
                ]
                .iter()
                .any(|system| home == system || home.starts_with(&format!("{system}/")))
        })
}

/// The watched files that exist now, by identity, with the access the rules watch them for.
fn watched_files(homes: &BTreeSet<String>) -> BTreeMap<InodeKey, (String, u32)> {
    let mut found = BTreeMap::new();
    let mut add = |path: &Path, as_rules_see: &str| {
        let Some(access) = watched_for(as_rules_see) else {
            return;
        };
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        let key = inode_key(&meta);
        found
            .entry(key)
            .or_insert_with(|| (path.display().to_string(), access));
    };
    for home in homes.iter().take(MAX_HOMES) {
        let rules_path = |path: &Path| as_rules_see(home, &path.display().to_string());
        for file in files_in(Path::new(home), 1) {
            add(&file, &rules_path(&file));
        }
        for dir in HOME_DIRS {
            for file in files_in(&Path::new(home).join(dir), 3) {
                add(&file, &rules_path(&file));
            }
        }
    }
    for dir in SYSTEM_DIRS {
        for file in files_in(Path::new(dir), 1) {
            add(&file, &file.display().to_string());
        }
    }
    for file in SYSTEM_FILES {
        add(Path::new(file), file);
    }
    found
}

/// `path` (in `home`) as the rules spell it: homes are `/root` or `/home/*` to them, so a
/// runner's home elsewhere is judged as one.
fn as_rules_see(home: &str, path: &str) -> String {
    if home == "/root" || home.starts_with("/home/") {
        path.to_string()
    } else {
        format!("/root{}", &path[home.len().min(path.len())..])
    }
}

/// What a file is watched for: reads and writes of credentials (marked as credentials, for the
/// kill response to install-time code), writes of persistence places.
fn watched_for(path: &str) -> Option<u32> {
    if credentials::classify(path).is_some() {
        Some(WATCH_READ | WATCH_WRITE | WATCH_CREDENTIAL)
    } else if persistence::classify(path).is_some() {
        Some(WATCH_WRITE)
    } else {
        None
    }
}

/// Regular files (and symlinks to them) under `dir`, `depth` levels deep, at most `MAX_PER_DIR`
/// per directory.
fn files_in(dir: &Path, depth: u32) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten().take(MAX_PER_DIR) {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if depth > 1 {
                out.extend(files_in(&entry.path(), depth - 1));
            }
        } else {
            out.push(entry.path());
        }
    }
    out
}

/// The inode generation of the file at `path` (`FS_IOC_GETVERSION`: ext4, xfs, btrfs answer it),
/// when the file opened is still `key` and the answer is not 0 (a file system that keeps none).
/// Opened without following a link, without blocking (a FIFO put there), and without touching
/// its access time where the agent may.
pub(crate) fn file_generation(path: &Path, key: InodeKey) -> Option<u32> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    /// `_IOR('v', 1, long)`.
    const FS_IOC_GETVERSION: libc::c_ulong = 0x8008_7601;
    let open = |extra: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | extra)
            .open(path)
    };
    let file = open(libc::O_NOATIME).or_else(|_| open(0)).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || inode_key(&meta) != key {
        return None;
    }
    let mut generation: libc::c_long = 0;
    // SAFETY: the ioctl writes at most a `long` to the pointer given, which lives until it
    // returns; the descriptor is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_GETVERSION, &mut generation) };
    (rc == 0 && generation as u32 != 0).then_some(generation as u32)
}

/// A file's identity as the kernel's maps key it, from `stat`.
pub(crate) fn inode_key(meta: &std::fs::Metadata) -> InodeKey {
    InodeKey {
        ino: meta.ino(),
        dev: kernel_dev(meta.dev()),
        _pad0: 0,
    }
}

/// `stat`'s device number in the kernel's internal encoding (`sb->s_dev`: major << 20 | minor).
fn kernel_dev(dev: u64) -> u32 {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    ((major << 20) | (minor & 0xf_ffff)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_are_re_encoded_as_the_kernel_keeps_them() {
        // 8:1 (sda1) and 259:3 (nvme0n1p3) in glibc's encoding.
        assert_eq!(kernel_dev(0x801), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 3)), (259 << 20) | 3);
        assert_eq!(kernel_dev(libc::makedev(0, 300)), 300);
    }

    #[test]
    fn inode_bits_are_the_low_sixteen_bits() {
        let words = inode_bits([0x1_0021u64, 5].into_iter());
        assert_eq!(words[1], 1 << 1); // 0x21 = 33: word 1, bit 1
        assert_eq!(words[0], 1 << 5);
        assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 2);
    }

    #[test]
    fn accounts_homes_are_read_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                      runner:x:1001:1001::/var/lib/runner:/bin/bash\n";
        assert_eq!(
            passwd_homes(passwd).collect::<Vec<_>>(),
            vec!["/root", "/var/lib/runner"]
        );
    }

    #[test]
    fn credentials_and_persistence_places_are_watched() {
        assert_eq!(
            watched_for("/root/.ssh/id_ed25519"),
            Some(WATCH_READ | WATCH_WRITE | WATCH_CREDENTIAL)
        );
        assert_eq!(watched_for("/home/runner/.bashrc"), Some(WATCH_WRITE));
        assert_eq!(watched_for("/root/.ssh/id_ed25519.pub"), None);
        assert_eq!(watched_for("/home/runner/notes.txt"), None);
    }
}
