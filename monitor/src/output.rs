//! The agent's own files: owner-only (0600) from the moment they exist, and logs that rotate
//! between whole lines.

use std::{io::Write, os::unix::fs::OpenOptionsExt as _, path::PathBuf};

use anyhow::Context as _;

/// An append-only log (created 0600) that rotates once it passes `max_bytes`: `log` becomes
/// `log.1`, `log.1` becomes `log.2`, ..., the oldest beyond `keep` is deleted. It rotates only
/// between writes, and the agent hands it whole lines, so no line is split across files.
/// (Small and exact on purpose: the crates that rotate by size cut at byte counts mid-line.)
pub struct RotatingLog {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    max_bytes: u64,
    keep: u32,
    carry: Option<Carry>,
}

/// Which lines of the oldest file outlive its deletion, and under which group (a job): they are
/// written again at the start of the new file (the findings log carries a running job's
/// findings, so another job's flood cannot rotate them away while it runs). Each group keeps
/// its first `CARRIED_PER_GROUP` lines, so one group cannot take the others' room.
pub type Carry = Box<dyn Fn(&[u8]) -> Option<String> + Send>;

/// Lines carried over per group at each rotation.
pub const CARRIED_PER_GROUP: usize = 100;

impl RotatingLog {
    pub fn open(path: &std::path::Path, max_bytes: u64, keep: u32) -> anyhow::Result<Self> {
        let file = open_private(path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path: path.to_path_buf(),
            file,
            written,
            max_bytes: max_bytes.max(4096),
            keep: keep.max(1),
            carry: None,
        })
    }

    /// Lines for which `carry` says so are carried over when their file would be deleted (at
    /// most half a file's worth; the rest go as before).
    pub fn carrying(mut self, carry: Carry) -> Self {
        self.carry = Some(carry);
        self
    }

    /// The lines of `path` that `carry` keeps, up to `limit` bytes.
    fn carried_lines(path: &std::path::Path, carry: &Carry, limit: u64) -> Vec<u8> {
        use std::io::BufRead as _;
        let mut out = Vec::new();
        let Ok(file) = std::fs::File::open(path) else {
            return out;
        };
        let mut reader = std::io::BufReader::new(file);
        let mut line = Vec::new();
        let mut per_group: std::collections::HashMap<String, usize> = Default::default();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            if line.ends_with(b"\n") && (out.len() + line.len()) as u64 <= limit {
                if let Some(group) = carry(&line) {
                    let n = per_group.entry(group).or_default();
                    if *n < CARRIED_PER_GROUP {
                        *n += 1;
                        out.extend_from_slice(&line);
                    }
                }
            }
            line.clear();
        }
        out
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        name.into()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let carried = match &self.carry {
            Some(carry) => Self::carried_lines(&self.rotated(self.keep), carry, self.max_bytes / 2),
            None => Vec::new(),
        };
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = open_private(&self.path).map_err(std::io::Error::other)?;
        self.file.write_all(&carried)?;
        self.written = carried.len() as u64;
        Ok(())
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Rotated files kept beside each log.
pub const LOG_KEEP: u32 = 3;

/// Opens an output file for the agent's logs: created owner-only (0600), appended to.
pub fn open_private(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn terminal_output_cannot_carry_escape_sequences() {
        let hostile = "job\u{1b}]0;owned\u{7}\u{1b}[2J\r\u{9b}31m\u{202e}gnp.exe\nnext";
        let line = terminal_line(hostile);
        assert!(!line.chars().any(|c| c.is_control()), "{line}");
        assert!(line.contains("\\u{1b}]0;owned") && line.contains("\\u{202e}"));
        let text = terminal_text("a: 1\nb:\t\u{1b}[31m\n");
        assert_eq!(text, "a: 1\nb:\t\\u{1b}[31m\n");
        assert!(matches!(
            terminal_line("plain/key-1"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn lines_a_log_carries_outlive_the_deletion_of_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("findings.jsonl");
        let mut log = RotatingLog::open(&path, 4096, 2)
            .unwrap()
            .carrying(Box::new(|line: &[u8]| {
                line.starts_with(b"running").then(|| "running".to_string())
            }));
        writeln!(log, "running job's first finding").unwrap();
        // A flood of others' lines: many times what the files hold.
        for n in 0..2_000 {
            writeln!(log, "flood {n:06} {}", "x".repeat(30)).unwrap();
        }
        let all: String = [path.clone(), log.rotated(1), log.rotated(2)]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect();
        assert!(
            !all.contains("flood 000000"),
            "the flood's first lines are gone"
        );
        assert!(all.contains("flood 001999"));
        assert_eq!(
            all.matches("running job's first finding").count(),
            1,
            "kept, once"
        );
    }

    #[test]
    fn one_running_job_cannot_take_the_others_carried_room() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("findings.jsonl");
        let mut log = RotatingLog::open(&path, 64 * 1024, 1)
            .unwrap()
            .carrying(Box::new(|line: &[u8]| {
                let text = String::from_utf8_lossy(line);
                text.split(' ')
                    .next()
                    .filter(|g| g.starts_with("job"))
                    .map(String::from)
            }));
        // The attacker's running job writes first and most; the victim's one finding after.
        for n in 0..400 {
            writeln!(log, "jobA finding {n:04}").unwrap();
        }
        writeln!(log, "jobB the victim's finding").unwrap();
        // Others' lines rotate the file away twice.
        for n in 0..20_000 {
            writeln!(log, "other {n:06} {}", "x".repeat(20)).unwrap();
        }
        let all: String = [path.clone(), log.rotated(1)]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect();
        assert!(
            all.contains("jobB the victim's finding"),
            "the victim's finding stays"
        );
        assert_eq!(all.matches("jobA finding").count(), CARRIED_PER_GROUP);
    }

    #[test]
    fn logs_rotate_between_whole_lines_keep_a_bounded_number_and_stay_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut log = RotatingLog::open(&path, 4096, 2).unwrap();
        let line = format!("{{\"n\":\"{}\"}}\n", "x".repeat(990));
        for _ in 0..20 {
            log.write_all(line.as_bytes()).unwrap();
        }
        log.flush().unwrap();
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]);
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(text.len() <= 4096, "{} is over the cap", f.display());
            assert!(
                text.lines().all(|l| l.len() == line.len() - 1),
                "a line was split in {}",
                f.display()
            );
            assert_eq!(
                std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}

/// Text for a person's terminal, on one line: control characters (escape sequences can move
/// the cursor, rewrite earlier lines or set the window title), C1 controls and bidirectional
/// overrides (which reorder what is shown) are written as `\u{..}`. Job keys, paths and
/// summaries come from jobs.
pub fn terminal_line(text: &str) -> std::borrow::Cow<'_, str> {
    terminal(text, false)
}

/// As [`terminal_line`], keeping line breaks and tabs (multi-line text such as YAML).
pub fn terminal_text(text: &str) -> std::borrow::Cow<'_, str> {
    terminal(text, true)
}

fn terminal(text: &str, keep_lines: bool) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && !(keep_lines && (c == '\n' || c == '\t')))
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}
