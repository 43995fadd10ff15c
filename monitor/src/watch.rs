//! What the kernel's open filter lets through: file names, name prefixes and suffixes, and
//! parent-directory names, each for reads, writes or both.
//!
//! The kernel cannot afford the full path of every open, so it tests the opened file's own name
//! and its directory's name, which cost two short reads. This is a coarse net: the rules in
//! userspace decide on the resolved absolute path. The defaults cover the credential and
//! persistence places of docs/threats (and `../shared/notes/threats.md`); a profile adds to them.

use monitor_common::{
    NAME_KEY_LEN, SUFFIX_KEY_LEN, WATCH_PROC_MEMORY, WATCH_PROC_OTHER, WATCH_READ, WATCH_WRITE,
};

const RW: u32 = WATCH_READ | WATCH_WRITE;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchList {
    pub names: Vec<(String, u32)>,
    pub name_prefixes: Vec<(String, u32)>,
    pub name_suffixes: Vec<(String, u32)>,
    pub parent_dirs: Vec<(String, u32)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchError {
    #[error("watched name {0:?} is empty or longer than {max} bytes", max = NAME_KEY_LEN - 1)]
    NameLength(String),
    #[error("watched suffix {0:?} is empty or longer than {max} bytes", max = SUFFIX_KEY_LEN)]
    SuffixLength(String),
    #[error("watched name {0:?} contains '/' or NUL: names are single path components")]
    NotAComponent(String),
}

impl WatchList {
    /// The built-in list: credentials and the places attackers persist through.
    pub fn defaults() -> Self {
        let names = [
            // Package registry and git credentials.
            (".npmrc", RW),
            (".yarnrc", RW),
            (".yarnrc.yml", RW),
            (".pypirc", RW),
            (".netrc", RW),
            (".git-credentials", RW),
            (".gitconfig", WATCH_WRITE),
            ("config", RW),
            ("hosts.yml", RW),
            ("credentials", RW),
            ("credentials.json", RW),
            ("credentials.db", RW),
            ("access_tokens.db", RW),
            ("application_default_credentials.json", RW),
            ("accessTokens.json", RW),
            ("azureProfile.json", RW),
            ("msal_token_cache.json", RW),
            ("msal_token_cache.bin", RW),
            ("kubeconfig", RW),
            ("token", RW),
            (".vault-token", RW),
            ("credentials.tfrc.json", RW),
            (".terraformrc", RW),
            ("config.json", RW),
            // System and runner secrets.
            ("shadow", RW),
            ("gshadow", RW),
            ("sudoers", WATCH_WRITE),
            (".credentials", RW),
            (".credentials_rsaparams", RW),
            (".runner", RW),
            (".env", RW),
            // Shell start-up files: reading them is normal, writing them is persistence.
            (".bashrc", WATCH_WRITE),
            (".bash_profile", WATCH_WRITE),
            (".profile", WATCH_WRITE),
            (".zshrc", WATCH_WRITE),
            (".zprofile", WATCH_WRITE),
            (".bash_logout", WATCH_WRITE),
            ("authorized_keys", WATCH_WRITE),
            ("authorized_keys2", WATCH_WRITE),
            ("crontab", WATCH_WRITE),
            (".bash_login", WATCH_WRITE),
            (".shrc", WATCH_WRITE),
            ("profile", WATCH_WRITE),
            ("environment", WATCH_WRITE),
            ("bash.bashrc", WATCH_WRITE),
            ("gitconfig", WATCH_WRITE),
            ("ld.so.preload", WATCH_WRITE),
            ("rc.local", WATCH_WRITE),
            ("sshrc", WATCH_WRITE),
            // Directories of persistence places: renaming a whole directory into place is a
            // rename of this name (directories are never opened for writing, so opens never
            // match these).
            ("workflows", WATCH_WRITE),
            (".ssh", WATCH_WRITE),
            ("hooks", WATCH_WRITE),
            ("autostart", WATCH_WRITE),
            ("cron.d", WATCH_WRITE),
            ("profile.d", WATCH_WRITE),
            ("sudoers.d", WATCH_WRITE),
            // The host's other defences (rules/defences.rs): hardening switches, logging and
            // audit configuration, module policy. Writes only.
            ("randomize_va_space", WATCH_WRITE),
            ("ptrace_scope", WATCH_WRITE),
            ("kptr_restrict", WATCH_WRITE),
            ("dmesg_restrict", WATCH_WRITE),
            ("modules_disabled", WATCH_WRITE),
            ("perf_event_paranoid", WATCH_WRITE),
            ("unprivileged_bpf_disabled", WATCH_WRITE),
            ("kexec_load_disabled", WATCH_WRITE),
            ("core_pattern", WATCH_WRITE),
            ("rsyslog.conf", WATCH_WRITE),
            ("journald.conf", WATCH_WRITE),
            ("modules", WATCH_WRITE),
            // Other processes' memory and environment (the runner-memory secret dump).
            ("mem", WATCH_PROC_OTHER | WATCH_PROC_MEMORY),
            ("environ", WATCH_PROC_OTHER),
            ("maps", WATCH_PROC_OTHER | WATCH_PROC_MEMORY),
        ];
        let name_prefixes = [
            ("id_", RW),
            (".env", RW),
            ("ssh_host_", RW),
            ("protected_", WATCH_WRITE),
        ];
        let name_suffixes = [
            (".pth", RW),
            (".pem", WATCH_READ),
            (".key", WATCH_READ),
            (".p12", WATCH_READ),
            (".pfx", WATCH_READ),
            (".jks", WATCH_READ),
            (".kdbx", WATCH_READ),
            (".map", WATCH_READ),
            (".tfstate", WATCH_READ),
            (".ovpn", WATCH_READ),
            (".service", WATCH_WRITE),
            (".timer", WATCH_WRITE),
        ];
        let parent_dirs = [
            (".ssh", RW),
            (".aws", RW),
            (".kube", RW),
            (".docker", RW),
            ("gcloud", RW),
            (".azure", RW),
            ("gh", RW),
            ("serviceaccount", RW),
            (".gnupg", RW),
            (".gem", RW),
            (".cargo", WATCH_WRITE),
            // Persistence: CI workflow files, systemd user units, editor/agent settings.
            ("workflows", WATCH_WRITE),
            ("user", WATCH_WRITE),
            (".claude", WATCH_WRITE),
            (".vscode", WATCH_WRITE),
            ("autostart", WATCH_WRITE),
            ("cron.d", WATCH_WRITE),
            ("cron.hourly", WATCH_WRITE),
            ("cron.daily", WATCH_WRITE),
            ("cron.weekly", WATCH_WRITE),
            ("cron.monthly", WATCH_WRITE),
            ("crontabs", WATCH_WRITE),
            ("hooks", WATCH_WRITE),
            ("profile.d", WATCH_WRITE),
            ("sudoers.d", WATCH_WRITE),
            ("init.d", WATCH_WRITE),
            ("git", WATCH_WRITE),
            ("zsh", WATCH_WRITE),
            // systemd units (`/etc/systemd/system/x.service` and its `*.wants/` links).
            ("system", WATCH_WRITE),
            // Defences: audit and logging configuration, the system logs, module policy.
            ("audit", WATCH_WRITE),
            ("rules.d", WATCH_WRITE),
            ("rsyslog.d", WATCH_WRITE),
            ("syslog-ng", WATCH_WRITE),
            ("journald.conf.d", WATCH_WRITE),
            ("log", WATCH_WRITE),
            ("modprobe.d", WATCH_WRITE),
            ("modules-load.d", WATCH_WRITE),
        ];
        let own = |list: &[(&str, u32)]| list.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        Self {
            names: own(&names),
            name_prefixes: own(&name_prefixes),
            name_suffixes: own(&name_suffixes),
            parent_dirs: own(&parent_dirs),
        }
    }

    pub fn validate(&self) -> Result<(), WatchError> {
        for (name, _) in self
            .names
            .iter()
            .chain(&self.name_prefixes)
            .chain(&self.parent_dirs)
        {
            check_component(name)?;
            if name.is_empty() || name.len() >= NAME_KEY_LEN {
                return Err(WatchError::NameLength(name.clone()));
            }
        }
        for (suffix, _) in &self.name_suffixes {
            check_component(suffix)?;
            if suffix.is_empty() || suffix.len() > SUFFIX_KEY_LEN {
                return Err(WatchError::SuffixLength(suffix.clone()));
            }
        }
        Ok(())
    }
}

fn check_component(name: &str) -> Result<(), WatchError> {
    if name.contains('/') || name.contains('\0') {
        return Err(WatchError::NotAComponent(name.to_string()));
    }
    Ok(())
}

impl WatchList {
    /// The kernel's pair filter (`monitor_common::PAIR_SECTION_WORDS`): for each list, the bit
    /// of every byte pair a name must have for the list to possibly match it.
    pub fn pair_bits(&self) -> Vec<u32> {
        use monitor_common::{
            PAIRS_NAMES, PAIRS_PARENTS, PAIRS_PREFIXES, PAIRS_SUFFIXES, PAIR_SECTION_WORDS,
            WATCH_PAIRS_WORDS,
        };
        let mut bits = vec![0u32; WATCH_PAIRS_WORDS as usize];
        let mut set = |section: u32, pair: u32| {
            let word = (section * PAIR_SECTION_WORDS + (pair >> 5)) as usize;
            bits[word] |= 1 << (pair & 31);
        };
        for (name, _) in &self.names {
            // As the kernel keys it (a name longer than the key is cut there too).
            let b = &name.as_bytes()[..name.len().min(NAME_KEY_LEN - 1)];
            set(PAIRS_NAMES, name_bit(b));
        }
        // `(first, Some(second))`, or every second byte when the entry has one byte only.
        let mut set_pairs = |section: u32, first: u8, second: Option<u8>| match second {
            Some(b) => set(section, first as u32 | (b as u32) << 8),
            None => (0..=255u32).for_each(|b| set(section, first as u32 | b << 8)),
        };
        for (name, _) in &self.parent_dirs {
            let b = name.as_bytes();
            set_pairs(PAIRS_PARENTS, b[0], Some(b.get(1).copied().unwrap_or(0)));
        }
        for (prefix, _) in &self.name_prefixes {
            let b = prefix.as_bytes();
            set_pairs(PAIRS_PREFIXES, b[0], b.get(1).copied());
        }
        for (suffix, _) in &self.name_suffixes {
            let b = suffix.as_bytes();
            let last = b[b.len() - 1];
            let before = (b.len() > 1).then(|| b[b.len() - 2]);
            // A one-byte suffix sets every pair ending in it, also a one-byte name's (its byte
            // before reads as 0).
            set_pairs(PAIRS_SUFFIXES, last, before);
        }
        bits
    }
}

/// A name's bit in the kernel's `PAIRS_NAMES` filter (`monitor_common::name_filter_key`, from
/// its first and last pairs as monitor-ebpf watch.rs reads them, and its length).
pub fn name_bit(b: &[u8]) -> u32 {
    let first = b[0] as u32 | (b.get(1).copied().unwrap_or(0) as u32) << 8;
    let last = match b.len() {
        1 => b[0] as u32,
        n => b[n - 1] as u32 | (b[n - 2] as u32) << 8,
    };
    monitor_common::name_filter_key(first, last, b.len() as u32)
}

/// The zero-padded key the kernel builds from a dentry name.
pub fn name_key(name: &str) -> monitor_common::NameKey {
    let mut bytes = [0u8; NAME_KEY_LEN];
    let n = name.len().min(NAME_KEY_LEN - 1);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    monitor_common::NameKey { bytes }
}

/// The suffix key: the suffix reversed, with its length in bits as the LPM prefix length.
pub fn suffix_key(suffix: &str) -> (u32, monitor_common::AffixKey) {
    let mut bytes = [0u8; SUFFIX_KEY_LEN];
    for (slot, b) in bytes.iter_mut().zip(suffix.bytes().rev()) {
        *slot = b;
    }
    (
        (suffix.len().min(SUFFIX_KEY_LEN) * 8) as u32,
        monitor_common::AffixKey { bytes },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_cover_the_threat_note() {
        let w = WatchList::defaults();
        w.validate().unwrap();
        let has = |list: &[(String, u32)], n: &str| list.iter().any(|(x, _)| x == n);
        for name in [
            ".npmrc",
            ".pypirc",
            ".git-credentials",
            "credentials",
            "shadow",
            "config",
            ".runner",
            "token",
        ] {
            assert!(has(&w.names, name), "{name}");
        }
        for dir in [
            ".ssh",
            ".aws",
            ".kube",
            ".docker",
            "gcloud",
            ".azure",
            "workflows",
        ] {
            assert!(has(&w.parent_dirs, dir), "{dir}");
        }
        assert!(has(&w.name_suffixes, ".pth"));
        assert!(has(&w.name_prefixes, "id_"));
    }

    #[test]
    fn bad_entries_are_refused_with_the_name() {
        let mut w = WatchList::default();
        w.names.push(("a/b".into(), RW));
        assert_eq!(w.validate(), Err(WatchError::NotAComponent("a/b".into())));
        let mut w = WatchList::default();
        w.name_suffixes
            .push((".averyveryverylongsuffix".into(), RW));
        assert!(matches!(w.validate(), Err(WatchError::SuffixLength(_))));
    }

    #[test]
    fn pair_bits_let_watched_names_through_and_stop_build_files() {
        use monitor_common::{
            PAIRS_NAMES, PAIRS_PARENTS, PAIRS_PREFIXES, PAIRS_SUFFIXES, PAIR_SECTION_WORDS,
        };
        let bits = WatchList::defaults().pair_bits();
        let has = |section: u32, pair: u32| {
            let word = (section * PAIR_SECTION_WORDS + (pair >> 5)) as usize;
            bits[word] >> (pair & 31) & 1 != 0
        };
        let first = |s: &str| s.as_bytes()[0] as u32 | (s.as_bytes()[1] as u32) << 8;
        let last = |s: &str| {
            let b = s.as_bytes();
            b[b.len() - 1] as u32 | (b[b.len() - 2] as u32) << 8
        };
        assert!(has(PAIRS_NAMES, name_bit(b".npmrc")));
        assert!(has(PAIRS_NAMES, name_bit(b"mem")));
        // Names that share a watched name's first bytes but not its length or ending do not
        // pass: they would pay a name read and a hash lookup on every open.
        for name in [
            "config.h",
            "configure",
            "constants.rs",
            "unwatched.txt",
            "tokens.rs",
        ] {
            assert!(!has(PAIRS_NAMES, name_bit(name.as_bytes())), "{name}");
        }
        assert!(has(PAIRS_PREFIXES, first("id_ed25519")));
        assert!(has(PAIRS_SUFFIXES, last("evil.pth")));
        assert!(has(PAIRS_PARENTS, first(".ssh")));
        // What builds open all day passes none of the lists.
        for name in ["lib.rs", "index.js", "util.h"] {
            assert!(!has(PAIRS_NAMES, name_bit(name.as_bytes())), "{name}");
            assert!(!has(PAIRS_PREFIXES, first(name)), "{name}");
            assert!(!has(PAIRS_SUFFIXES, last(name)), "{name}");
        }
        assert!(!has(PAIRS_PARENTS, first("target")));
    }

    #[test]
    fn suffix_keys_are_reversed() {
        let (bits, key) = suffix_key(".pth");
        assert_eq!(bits, 32);
        assert_eq!(&key.bytes[..4], b"htp.");
        assert!(key.bytes[4..].iter().all(|b| *b == 0));
    }
}
