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
}

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
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        name.into()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = open_private(&self.path).map_err(std::io::Error::other)?;
        self.written = 0;
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
