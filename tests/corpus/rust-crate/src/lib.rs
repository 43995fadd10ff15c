//! A manifest of files with their SHA-256 digests, sizes and modes, as JSON.

use std::{
    ffi::CStr,
    fs,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use ring::digest::{Context as Digest, SHA256};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub mode: u32,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub host: String,
    pub entries: Vec<Entry>,
}

/// Lower-case hex SHA-256 of everything `reader` yields.
pub fn sha256_hex(mut reader: impl Read) -> Result<String> {
    let mut ctx = Digest::new(&SHA256);
    let mut buf = [0u8; 8192];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The machine's node name, from uname(2).
pub fn hostname() -> Result<String> {
    // SAFETY: utsname is plain old data; uname fills it in.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        bail!("uname: {}", std::io::Error::last_os_error());
    }
    // SAFETY: uname NUL-terminates nodename.
    let name = unsafe { CStr::from_ptr(uts.nodename.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut children: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let path = child.path();
        if child.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root)?.to_path_buf());
        }
    }
    Ok(())
}

/// A manifest of every regular file under `root`, sorted by path.
pub fn build(root: &Path) -> Result<Manifest> {
    let mut files = Vec::new();
    walk(root, root, &mut files)?;
    let entries = files
        .into_iter()
        .map(|rel| {
            let full = root.join(&rel);
            let meta = fs::metadata(&full).with_context(|| format!("stat {}", full.display()))?;
            let file = fs::File::open(&full).with_context(|| format!("open {}", full.display()))?;
            Ok(Entry {
                path: rel.to_string_lossy().into_owned(),
                size: meta.len(),
                mode: meta.permissions().mode() & 0o7777,
                sha256: sha256_hex(file)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Manifest {
        host: hostname()?,
        entries,
    })
}

/// Checks `root` against `manifest`; the paths whose digest changed or that are missing.
pub fn verify(root: &Path, manifest: &Manifest) -> Result<Vec<String>> {
    let mut bad = Vec::new();
    for e in &manifest.entries {
        let same = match fs::File::open(root.join(&e.path)) {
            Ok(f) => sha256_hex(f)? == e.sha256,
            Err(_) => false,
        };
        if !same {
            bad.push(e.path.clone());
        }
    }
    Ok(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_hex(&b"abc"[..]).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hostname_is_not_empty() {
        assert!(!hostname().unwrap().is_empty());
    }
}
