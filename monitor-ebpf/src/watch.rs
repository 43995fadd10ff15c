//! The kernel's watch filter: is a name, or a directory name, one the agent asked to see?
//!
//! The maps (`WATCH_*`, main.rs) hold single path components pushed by the agent. Opens test the
//! opened dentry's name and its parent's (open.rs); renames, links and symlinks test the
//! components of the name the process gave (new_name.rs). Names are read with
//! `bpf_probe_read_kernel` from a dentry or from map memory alike.

use aya_ebpf::{
    helpers::generated::bpf_probe_read_kernel,
    macros::map,
    maps::{lpm_trie::Key, PerCpuArray},
};
use monitor_common::{
    AffixKey, NameKey, MATCH_NAME, MATCH_NAME_PREFIX, MATCH_NAME_SUFFIX, MATCH_PARENT_DIR,
    NAME_KEY_LEN, PAIRS_NAMES, PAIRS_PARENTS, PAIRS_PREFIXES, PAIRS_SUFFIXES, PAIR_SECTION_WORDS,
    SUFFIX_KEY_LEN, WATCH_PROC_OTHER,
};

use crate::{
    kernel::read, WATCH_NAMES, WATCH_NAME_PREFIXES, WATCH_NAME_SUFFIXES, WATCH_PAIRS,
    WATCH_PARENT_DIRS,
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
#[inline(always)]
pub unsafe fn load_name(name: *const u8, len: u32, key: *mut NameKey) {
    let words = key.cast::<u64>();
    let mut i = 0;
    while i < NAME_KEY_LEN / 8 {
        *words.add(i) = 0;
        i += 1;
    }
    let n = if len < NAME_KEY_LEN as u32 - 1 {
        len
    } else {
        NAME_KEY_LEN as u32 - 1
    };
    bpf_probe_read_kernel(key.cast(), n & (NAME_KEY_LEN as u32 - 1), name.cast());
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

/// `MATCH_NAME | MATCH_NAME_PREFIX | MATCH_NAME_SUFFIX` bits of the file name at `name` (`len`
/// bytes) for `access`, and whether the name is listed for other processes' /proc files.
#[inline(always)]
pub unsafe fn match_name(name: *const u8, len: u32, access: u32) -> Result<(u32, bool), i64> {
    if len == 0 {
        return Ok((0, false));
    }
    let first = first_pair(name, len)?;
    let check_name = pair_listed(PAIRS_NAMES, first);
    let check_prefix = pair_listed(PAIRS_PREFIXES, first);
    let check_suffix = pair_listed(PAIRS_SUFFIXES, last_pair(name, len)?);
    let mut matched = 0u32;
    let mut proc_candidate = false;
    if !(check_name || check_prefix || check_suffix) {
        return Ok((matched, proc_candidate));
    }
    let scratch = scratch()?;
    let name_key = &raw mut (*scratch).name;
    load_name(name, len, &raw mut (*name_key).data);
    if check_name {
        if let Some(value) = WATCH_NAMES.get_ptr(&(*name_key).data) {
            let value = *value;
            if value & access != 0 {
                matched |= MATCH_NAME;
            }
            proc_candidate = value & WATCH_PROC_OTHER != 0;
        }
    }
    (*name_key).prefix_len = (NAME_KEY_LEN as u32) * 8;
    if check_prefix {
        if let Some(value) = WATCH_NAME_PREFIXES.get(&*name_key) {
            if *value & access != 0 {
                matched |= MATCH_NAME_PREFIX;
            }
        }
    }
    if !check_suffix {
        return Ok((matched, proc_candidate));
    }

    // Suffixes: the last (up to) SUFFIX_KEY_LEN bytes of the name, reversed.
    let tail_len = if len < SUFFIX_KEY_LEN as u32 {
        len
    } else {
        SUFFIX_KEY_LEN as u32
    };
    let tail = (*scratch).tail.as_mut_ptr();
    let suffix = &raw mut (*scratch).suffix;
    if bpf_probe_read_kernel(
        tail.cast(),
        tail_len & (SUFFIX_KEY_LEN as u32 * 2 - 1),
        name.add((len - tail_len) as usize).cast(),
    ) == 0
    {
        let out = (*suffix).data.bytes.as_mut_ptr();
        let mut i = 0u32;
        while i < SUFFIX_KEY_LEN as u32 {
            *out.add(i as usize) = if i < tail_len {
                *tail.add(((tail_len - 1 - i) as usize) & (SUFFIX_KEY_LEN - 1))
            } else {
                0
            };
            i += 1;
        }
        (*suffix).prefix_len = tail_len * 8;
        if let Some(value) = WATCH_NAME_SUFFIXES.get(&*suffix) {
            if *value & access != 0 {
                matched |= MATCH_NAME_SUFFIX;
            }
        }
    }
    Ok((matched, proc_candidate))
}

/// `MATCH_PARENT_DIR` when the directory name at `name` (`len` bytes) is listed for `access`.
#[inline(always)]
pub unsafe fn match_parent(name: *const u8, len: u32, access: u32) -> Result<u32, i64> {
    if len == 0 || !pair_listed(PAIRS_PARENTS, first_pair(name, len)?) {
        return Ok(0);
    }
    let scratch = scratch()?;
    let name_key = &raw mut (*scratch).name;
    load_name(name, len, &raw mut (*name_key).data);
    Ok(match WATCH_PARENT_DIRS.get_ptr(&(*name_key).data) {
        Some(value) if *value & access != 0 => MATCH_PARENT_DIR,
        _ => 0,
    })
}
