//! The kernel's watch filter: is a name, or a directory name, one the agent asked to see?
//!
//! The maps (`WATCH_*`, main.rs) hold single path components pushed by the agent. Opens test the
//! opened dentry's name and its parent's (open.rs); renames, links and symlinks test the
//! components of the name the process gave (new_name.rs). Names are read with
//! constant-size string reads from a dentry or from map memory alike.
//!
//! A match's bits are added to a word in map memory (`kernel::add_bits`), not returned: see
//! there why.

use aya_ebpf::{
    helpers::generated::bpf_probe_read_kernel_str,
    macros::map,
    maps::{lpm_trie::Key, PerCpuArray},
};
use monitor_common::{
    name_filter_key, AffixKey, NameKey, MATCH_NAME, MATCH_NAME_PREFIX, MATCH_NAME_SUFFIX,
    MATCH_PARENT_DIR, NAME_KEY_LEN, PAIRS_NAMES, PAIRS_PARENTS, PAIRS_PREFIXES, PAIRS_SUFFIXES,
    PAIR_SECTION_WORDS, SUFFIX_KEY_LEN, WATCH_PROC_OTHER,
};

use crate::{
    kernel::{add_bits, read},
    WATCH_NAMES, WATCH_NAME_PREFIXES, WATCH_NAME_SUFFIXES, WATCH_PAIRS, WATCH_PARENT_DIRS,
};

#[repr(C)]
pub struct FilterScratch {
    pub name: Key<NameKey>,
    suffix: Key<AffixKey>,
    tail: [u8; SUFFIX_KEY_LEN * 2],
}
#[map]
static FILTER_SCRATCH: PerCpuArray<FilterScratch> = PerCpuArray::with_max_entries(1, 0);

/// The filter's per-CPU scratch (the last loaded name stays in `name.data`).
#[inline(always)]
pub fn scratch() -> Result<*mut FilterScratch, i64> {
    FILTER_SCRATCH.get_ptr_mut(0).ok_or(-1i64)
}

/// Copies `len` bytes of `name` into `key`, zero padded and cut at NAME_KEY_LEN - 1.
///
/// The copy has a constant size and is then cut to `len`: a read of a variable size needs the
/// verifier to follow the clamp of `len`, which verifiers before Linux 6.8 or so do not once LLVM
/// has folded the mask away (6.1 refused every program that matches names). A string read stops
/// at a dentry name's NUL; a component inside a longer path is cut by the word masks below.
#[inline(always)]
pub unsafe fn load_name(name: *const u8, len: u32, key: *mut NameKey) {
    let n = if len < NAME_KEY_LEN as u32 - 1 {
        len as u64
    } else {
        NAME_KEY_LEN as u64 - 1
    };
    let words = key.cast::<u64>();
    if bpf_probe_read_kernel_str(key.cast(), NAME_KEY_LEN as u32, name.cast()) < 0 {
        let mut i = 0;
        while i < NAME_KEY_LEN / 8 {
            *words.add(i) = 0;
            i += 1;
        }
        return;
    }
    // Keep the first n bytes (little endian: a word's first bytes are its low ones).
    let mut i = 0;
    while i < NAME_KEY_LEN / 8 {
        let start = (i * 8) as u64;
        if start >= n {
            *words.add(i) = 0;
        } else if n - start < 8 {
            *words.add(i) &= (1u64 << ((n - start) * 8)) - 1;
        }
        i += 1;
    }
}

/// Whether the pair filter lets a name with `pair` through to section's list.
#[inline(always)]
fn pair_listed(section: u32, pair: u32) -> bool {
    let word = section * PAIR_SECTION_WORDS + ((pair & 0xffff) >> 5);
    match WATCH_PAIRS.get(word) {
        Some(bits) => (*bits >> (pair & 31)) & 1 != 0,
        None => true, // cannot tell: ask the list
    }
}

/// The first two bytes of a name (the second 0 for a one-byte name): `b0 | b1 << 8`.
#[inline(always)]
pub unsafe fn first_pair(name: *const u8, len: u32) -> Result<u32, i64> {
    let two = read::<u16>(name, 0)? as u32;
    Ok(if len < 2 { two & 0xff } else { two })
}

/// The last two bytes of a name, last first: `last | second_last << 8`.
#[inline(always)]
unsafe fn last_pair(name: *const u8, len: u32) -> Result<u32, i64> {
    if len < 2 {
        return Ok(read::<u8>(name, 0)? as u32);
    }
    let two = read::<u16>(name, (len as usize - 2) & 0xfff)? as u32;
    Ok((two >> 8) | ((two & 0xff) << 8))
}

/// Adds the `MATCH_NAME | MATCH_NAME_PREFIX | MATCH_NAME_SUFFIX` bits of the file name at `name`
/// (`len` bytes) for `access` to `*matched`, and, when the name is listed for other processes'
/// /proc files, its watch value (`WATCH_PROC_*` bits) to `*proc_kind`. Both in map memory.
#[inline(always)]
pub unsafe fn match_name(
    name: *const u8,
    len: u32,
    access: u32,
    matched: *mut u32,
    proc_kind: *mut u32,
) -> Result<(), i64> {
    match_name_with(name, len, None, access, matched, proc_kind)
}

/// As `match_name`, given the name's first and last pairs when the caller has them already
/// (open.rs reads a short name's bytes with its dentry).
#[inline(always)]
pub unsafe fn match_name_with(
    name: *const u8,
    len: u32,
    pairs: Option<(u32, u32)>,
    access: u32,
    matched: *mut u32,
    proc_kind: *mut u32,
) -> Result<(), i64> {
    if len == 0 {
        return Ok(());
    }
    let (first, last) = match pairs {
        Some(pairs) => pairs,
        None => (first_pair(name, len)?, last_pair(name, len)?),
    };
    let check_name = pair_listed(PAIRS_NAMES, name_filter_key(first, last, len));
    let check_prefix = pair_listed(PAIRS_PREFIXES, first);
    let check_suffix = pair_listed(PAIRS_SUFFIXES, last);
    if !(check_name || check_prefix || check_suffix) {
        return Ok(());
    }
    let scratch = scratch()?;
    let name_key = &raw mut (*scratch).name;
    load_name(name, len, &raw mut (*name_key).data);
    if check_name {
        if let Some(value) = WATCH_NAMES.get_ptr(&(*name_key).data) {
            let value = *value;
            if value & access != 0 {
                add_bits(matched, MATCH_NAME);
            }
            if value & WATCH_PROC_OTHER != 0 {
                add_bits(proc_kind, value);
            }
        }
    }
    (*name_key).prefix_len = (NAME_KEY_LEN as u32) * 8;
    if check_prefix {
        if let Some(value) = WATCH_NAME_PREFIXES.get(&*name_key) {
            if *value & access != 0 {
                add_bits(matched, MATCH_NAME_PREFIX);
            }
        }
    }
    if !check_suffix {
        return Ok(());
    }

    // Suffixes: the last (up to) SUFFIX_KEY_LEN bytes of the name, reversed.
    let tail_len = if len < SUFFIX_KEY_LEN as u32 {
        len
    } else {
        SUFFIX_KEY_LEN as u32
    };
    let tail = (*scratch).tail.as_mut_ptr();
    let suffix = &raw mut (*scratch).suffix;
    // A constant-size string read (see `load_name`): only the first `tail_len` bytes are used.
    if bpf_probe_read_kernel_str(
        tail.cast(),
        SUFFIX_KEY_LEN as u32 * 2,
        name.add((len - tail_len) as usize).cast(),
    ) >= 0
    {
        let out = (*suffix).data.bytes.as_mut_ptr();
        // The index's mask must reach the verifier: from a plain `tail_len` LLVM proves it
        // redundant and indexes by `tail + tail_len - i`, which 6.1's verifier cannot bound.
        let opaque_len = core::ptr::read_volatile(&tail_len);
        let mut i = 0u32;
        while i < SUFFIX_KEY_LEN as u32 {
            *out.add(i as usize) = if i < tail_len {
                *tail.add((opaque_len.wrapping_sub(1 + i) as usize) & (SUFFIX_KEY_LEN - 1))
            } else {
                0
            };
            i += 1;
        }
        (*suffix).prefix_len = tail_len * 8;
        if let Some(value) = WATCH_NAME_SUFFIXES.get(&*suffix) {
            if *value & access != 0 {
                add_bits(matched, MATCH_NAME_SUFFIX);
            }
        }
    }
    Ok(())
}

/// Adds `MATCH_PARENT_DIR` to `*matched` (map memory) when the directory name at `name` (`len`
/// bytes) is listed for `access`.
#[inline(always)]
pub unsafe fn match_parent(
    name: *const u8,
    len: u32,
    access: u32,
    matched: *mut u32,
) -> Result<(), i64> {
    match_parent_with(name, len, None, access, matched)
}

/// As `match_parent`, given the name's pairs when the caller has them already.
#[inline(always)]
pub unsafe fn match_parent_with(
    name: *const u8,
    len: u32,
    pairs: Option<(u32, u32)>,
    access: u32,
    matched: *mut u32,
) -> Result<(), i64> {
    if len == 0 {
        return Ok(());
    }
    let first = match pairs {
        Some((first, _)) => first,
        None => first_pair(name, len)?,
    };
    if !pair_listed(PAIRS_PARENTS, first) {
        return Ok(());
    }
    let scratch = scratch()?;
    let name_key = &raw mut (*scratch).name;
    load_name(name, len, &raw mut (*name_key).data);
    match WATCH_PARENT_DIRS.get_ptr(&(*name_key).data) {
        Some(value) if *value & access != 0 => add_bits(matched, MATCH_PARENT_DIR),
        _ => {}
    }
    Ok(())
}
