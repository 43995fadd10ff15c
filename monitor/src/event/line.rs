//! Writes an [`Event`] as its JSON line, byte for byte what `serde_json::to_writer` writes, but
//! with each ancestor's JSON kept between events.
//!
//! Why: every event carries up to [`super::ANCESTRY_IN_EVENT`] ancestors with their whole argv,
//! and the same ancestors (the runner, its shell, the step's tool) ride in every event of a
//! job. Escaping them again for each event was the agent's largest cost in a connect storm
//! (serde_json's string escaping, a quarter of its CPU). An ancestor's JSON is reused only
//! while the ancestor is still equal (an exec, an exit or a pid reuse makes it differ), so the
//! output never changes: events are read back only as JSON (replay), and the tests compare the
//! bytes with serde_json's.

use std::collections::HashMap;

use serde::Serialize;

use super::{Ancestor, Detail, Event, ProcessInfo};

/// Ancestors whose JSON is kept; past it the cache starts again. A runner's live ancestors
/// are a few dozen; the bound is on memory: an argv is cut at 4095 bytes, which escapes to at
/// most 6 bytes each, so the cache holds at most about 12 MB of JSON.
const CACHED_ANCESTORS: usize = 512;

/// Every field of [`Event`] but `ancestry`, borrowed, in the same order and with the same
/// attributes, so it serializes to the event's JSON up to `ancestry` (the last field).
#[derive(Serialize)]
struct EventHead<'a> {
    schema: u32,
    seq: u64,
    time: &'a str,
    ts_ns: u64,
    #[serde(flatten)]
    detail: &'a Detail,
    process: &'a ProcessInfo,
}

/// The JSON of one ancestor, with the ancestor it was made from.
struct CachedAncestor {
    ancestor: Ancestor,
    json: Vec<u8>,
}

#[derive(Default)]
pub struct EventLineWriter {
    ancestors: HashMap<(u32, u64), CachedAncestor>,
}

impl EventLineWriter {
    /// Appends the event's JSON (no newline) to `out`.
    pub fn write(&mut self, out: &mut Vec<u8>, event: &Event) -> serde_json::Result<()> {
        // `Event`'s destructuring names every field: a field added to `Event` fails to compile
        // here until `EventHead` has it too.
        let Event {
            schema,
            seq,
            time,
            ts_ns,
            detail,
            process,
            ancestry,
        } = event;
        let head = EventHead {
            schema: *schema,
            seq: *seq,
            time,
            ts_ns: *ts_ns,
            detail,
            process,
        };
        serde_json::to_writer(&mut *out, &head)?;
        // The head ends with its object's `}`; `ancestry` goes before it.
        debug_assert_eq!(out.last(), Some(&b'}'));
        out.pop();
        out.extend_from_slice(b",\"ancestry\":[");
        for (i, ancestor) in ancestry.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            self.write_ancestor(out, ancestor)?;
        }
        out.extend_from_slice(b"]}");
        Ok(())
    }

    fn write_ancestor(&mut self, out: &mut Vec<u8>, ancestor: &Ancestor) -> serde_json::Result<()> {
        let key = (ancestor.pid, ancestor.start_ticks);
        // `Ancestor`'s equality compares argv by pointer first (`Arc<[String]>` of an `Eq`
        // type), so a hit costs a few comparisons of short strings.
        if let Some(cached) = self.ancestors.get(&key) {
            if cached.ancestor == *ancestor {
                out.extend_from_slice(&cached.json);
                return Ok(());
            }
        }
        let json = serde_json::to_vec(ancestor)?;
        out.extend_from_slice(&json);
        if self.ancestors.len() >= CACHED_ANCESTORS && !self.ancestors.contains_key(&key) {
            self.ancestors.clear();
        }
        self.ancestors.insert(
            key,
            CachedAncestor {
                ancestor: ancestor.clone(),
                json,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Argv, ConnectVia, Protocol};

    fn ancestor(pid: u32, comm: &str, argv: &[&str], exited: bool) -> Ancestor {
        Ancestor {
            pid,
            start_ticks: 100 + pid as u64,
            comm: comm.into(),
            exe: Some(format!("/usr/bin/{comm}")),
            argv: argv
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .into(),
            exited,
        }
    }

    fn event(seq: u64, ancestry: Vec<Ancestor>) -> Event {
        let argv: Argv = vec!["curl".to_string(), "http://x/\"q\"\n\u{1}é".to_string()].into();
        Event {
            schema: crate::event::JSON_SCHEMA_VERSION,
            seq,
            time: "2026-12-03T00:00:00.000000000Z".into(),
            ts_ns: 42,
            detail: Detail::Connect {
                protocol: Protocol::Tcp,
                family: "ipv4".into(),
                address: "127.0.0.1".parse().unwrap(),
                port: 8080,
                result: 0,
                fd: 3,
                via: ConnectVia::default(),
                blocked: false,
                repeats: 0,
            },
            process: ProcessInfo {
                pid: 7,
                tid: 7,
                ppid: 6,
                start_ticks: 9,
                uid: 0,
                gid: 0,
                comm: "curl".into(),
                exe: Some("/usr/bin/curl".into()),
                argv,
                argv_truncated: false,
                cgroup_id: 1,
                mnt_ns: 2,
                container: None,
                in_container_view: false,
            },
            ancestry,
        }
    }

    fn assert_same_bytes(writer: &mut EventLineWriter, event: &Event) {
        let mut ours = Vec::new();
        writer.write(&mut ours, event).unwrap();
        let serde = serde_json::to_vec(event).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(serde).unwrap()
        );
    }

    #[test]
    fn an_event_line_is_the_bytes_serde_json_writes() {
        let mut writer = EventLineWriter::default();
        assert_same_bytes(&mut writer, &event(1, vec![]));
        let shell = ancestor(6, "sh", &["sh", "-c", "npm install \"a b\"\t\\"], false);
        let runner = ancestor(
            5,
            "Runner.Worker",
            &["Runner.Worker", "spawnclient", "1"],
            false,
        );
        let first = event(2, vec![shell.clone(), runner.clone()]);
        assert_same_bytes(&mut writer, &first);
        // The same ancestors again: from the cache, same bytes.
        assert_same_bytes(&mut writer, &event(3, vec![shell.clone(), runner.clone()]));
        assert_eq!(writer.ancestors.len(), 2);
    }

    #[test]
    fn an_ancestor_that_changed_is_written_as_it_is_now() {
        let mut writer = EventLineWriter::default();
        let shell = ancestor(6, "sh", &["sh", "-c", "make"], false);
        assert_same_bytes(&mut writer, &event(1, vec![shell.clone()]));
        // It exited; then the same pid and start execs something else (same key, new argv).
        let mut exited = shell.clone();
        exited.exited = true;
        assert_same_bytes(&mut writer, &event(2, vec![exited.clone()]));
        let mut exec = shell.clone();
        exec.comm = "make".into();
        exec.exe = Some("/usr/bin/make".into());
        exec.argv = vec!["make".to_string(), "all".to_string()].into();
        let mut line = Vec::new();
        writer
            .write(&mut line, &event(3, vec![exec.clone()]))
            .unwrap();
        let text = String::from_utf8(line).unwrap();
        assert!(text.contains("\"argv\":[\"make\",\"all\"]"), "{text}");
        assert!(!text.contains("\"sh\""), "{text}");
        assert_eq!(
            text.into_bytes(),
            serde_json::to_vec(&event(3, vec![exec])).unwrap()
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut writer = EventLineWriter::default();
        for pid in 0..(CACHED_ANCESTORS as u32 + 10) {
            let a = ancestor(pid, "sh", &["sh"], false);
            assert_same_bytes(&mut writer, &event(pid as u64, vec![a]));
        }
        assert!(writer.ancestors.len() <= CACHED_ANCESTORS);
    }
}
