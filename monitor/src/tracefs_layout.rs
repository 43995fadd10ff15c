//! The tracepoint records the kernel programs read at fixed offsets, checked against the running
//! kernel's own description of them (tracefs `events/<category>/<name>/format`). Kernel
//! structures are found through BTF (`kernel_layout`); tracepoint records are not in BTF, so
//! their offsets are compiled into the programs and a kernel that laid a record out differently
//! would make them read the wrong bytes. The agent refuses to start then, naming the field, and
//! `monitor doctor` says the same.
//!
//! What the programs read (`monitor-ebpf`): of `syscalls/sys_enter_*`, argument *i* at offset
//! 16 + 8*i, 8 bytes; of `syscalls/sys_exit_*`, `ret` at 16, 8 bytes; of
//! `sched/sched_process_exec`, the `__data_loc` of `filename` at 8, 4 bytes.

use std::path::Path;

/// One field as a format file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// The fields of a format file, common ones (`common_*`) left out.
pub fn parse_format(text: &str) -> Vec<Field> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let decl = line.strip_prefix("field:")?.split(';').next()?;
            let name = decl
                .split_whitespace()
                .last()?
                .split('[')
                .next()?
                .to_string();
            let number = |key: &str| {
                line.split(';')
                    .find_map(|part| part.trim().strip_prefix(key))
                    .and_then(|v| v.trim().parse().ok())
            };
            Some(Field {
                name,
                offset: number("offset:")?,
                size: number("size:")?,
            })
        })
        .filter(|f| !f.name.starts_with("common_"))
        .collect()
}

/// What the programs read of `category/name`'s record, as (what, offset, size); the fields are
/// given in the record's order.
fn expectations(category: &str, name: &str, fields: &[Field]) -> Vec<(String, u32, u32)> {
    match (category, name) {
        ("syscalls", n) if n.starts_with("sys_enter_") => fields
            .iter()
            .filter(|f| f.name != "__syscall_nr")
            .enumerate()
            .map(|(i, f)| (f.name.clone(), 16 + 8 * i as u32, 8))
            .collect(),
        ("syscalls", n) if n.starts_with("sys_exit_") => vec![("ret".into(), 16, 8)],
        ("sched", "sched_process_exec") => vec![("filename".into(), 8, 4)],
        _ => Vec::new(),
    }
}

/// Differences between what the programs read of `category/name` and its `format` text, each
/// naming the field.
pub fn mismatches(category: &str, name: &str, format: &str) -> Vec<String> {
    let fields = parse_format(format);
    expectations(category, name, &fields)
        .into_iter()
        .filter_map(|(field, offset, size)| {
            match fields.iter().find(|f| f.name == field) {
                Some(f) if f.offset == offset && f.size == size => None,
                Some(f) => Some(format!(
                    "tracepoint {category}/{name}: field `{field}` is at offset {} ({} bytes) in this kernel; the probe reads offset {offset} ({size} bytes)",
                    f.offset, f.size
                )),
                None => Some(format!(
                    "tracepoint {category}/{name}: this kernel's record has no field `{field}`, which the probe reads"
                )),
            }
        })
        .collect()
}

/// Checks every tracepoint hook against tracefs mounted at `tracefs`. A hook whose format file
/// is missing is left to the attach step (optional ones may be absent).
pub fn check(tracefs: &Path, hooks: &[crate::probes::Hook]) -> Vec<String> {
    hooks
        .iter()
        .filter_map(|h| Some((h.category?, h.name)))
        .filter_map(|(category, name)| {
            let path = tracefs
                .join("events")
                .join(category)
                .join(name)
                .join("format");
            let text = std::fs::read_to_string(path).ok()?;
            Some(mismatches(category, name, &text))
        })
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TGKILL: &str = "name: sys_enter_tgkill\nID: 247\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:pid_t tgid;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:pid_t pid;\toffset:24;\tsize:8;\tsigned:0;\n\tfield:int sig;\toffset:32;\tsize:8;\tsigned:0;\n\nprint fmt: \"...\"\n";

    #[test]
    fn formats_are_parsed_and_compared_field_by_field() {
        let fields = parse_format(TGKILL);
        assert_eq!(fields.len(), 4);
        assert_eq!(
            fields[3],
            Field {
                name: "sig".into(),
                offset: 32,
                size: 8
            }
        );
        assert!(mismatches("syscalls", "sys_enter_tgkill", TGKILL).is_empty());
        let moved = TGKILL.replace("offset:32;\tsize:8", "offset:36;\tsize:4");
        let problems = mismatches("syscalls", "sys_enter_tgkill", &moved);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("`sig` is at offset 36 (4 bytes)"),
            "{problems:?}"
        );
        let exec = "\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n";
        assert!(mismatches("sched", "sched_process_exec", exec).is_empty());
        assert!(!mismatches(
            "sched",
            "sched_process_exec",
            "\tfield:int pid;\toffset:8;\tsize:4;\n"
        )
        .is_empty());
    }

    /// The running kernel (CI's) agrees with the compiled offsets for every hook.
    #[test]
    fn the_running_kernels_records_match_the_probes() {
        let Ok(tracefs) = crate::probes::ensure_tracefs() else {
            panic!("tracefs is needed for this test (run as root)");
        };
        let problems = check(Path::new(tracefs), crate::probes::HOOKS);
        assert!(problems.is_empty(), "{problems:#?}");
        // And it really looked: the exec record's format is there.
        assert!(Path::new(tracefs)
            .join("events/sched/sched_process_exec/format")
            .exists());
    }
}
