//! Events of a container's processes wait, briefly, for the runtime's word on their container.
//!
//! A container's first processes run at once, while the runtime's news of it (what it is, who
//! asked for it) comes over its API a little later, and later still when the agent is asking the
//! machine who the client was. Judged before that word, those events would name no image and
//! link the container by timing alone. So an event of a process in a container the runtime has
//! not described waits here until it has (or for `HOLD_NS` at most, or until the API is found
//! down), then goes to the engine in its order; the log shows it where it was judged. Bounded:
//! past `MAX_HELD` the oldest go on at once.

use std::collections::{HashSet, VecDeque};

use crate::event::Event;

/// How long an event waits for its container's description.
pub const HOLD_NS: u64 = 1_500_000_000;
/// Events held at once.
pub const MAX_HELD: usize = 16_384;
/// Containers remembered as described.
const MAX_DESCRIBED: usize = 16_384;

#[derive(Default)]
pub struct ContainerHold {
    described: HashSet<String>,
    /// (when it was held, the event), oldest first.
    held: VecDeque<(u64, Event)>,
}

impl ContainerHold {
    /// Whether the event must wait: its process is in a container not described yet, which the
    /// runtime's API would describe (an id of its shape), and the API answers (when it does
    /// not, nothing would come to wait for).
    pub fn must_wait(&self, event: &Event, runtime_up: bool) -> bool {
        runtime_up
            && event.process.container.as_ref().is_some_and(|id| {
                crate::containers::is_docker_shaped(id) && !self.described.contains(id)
            })
    }

    /// Whether the runtime described `id` (or it was waited for in vain already).
    pub fn is_described(&self, id: &str) -> bool {
        self.described.contains(id)
    }

    /// Holds it; returns the oldest held event when the bound is reached (it goes on now).
    pub fn hold(&mut self, event: Event, now_ns: u64) -> Option<Event> {
        self.held.push_back((now_ns, event));
        if self.held.len() > MAX_HELD {
            return self.held.pop_front().map(|(_, e)| e);
        }
        None
    }

    /// The runtime described `id`: its held events, in order.
    pub fn described(&mut self, id: &str) -> Vec<Event> {
        if self.described.len() >= MAX_DESCRIBED {
            self.described.clear();
        }
        self.described.insert(id.to_string());
        self.release(|e| e.process.container.as_deref() == Some(id))
    }

    /// The runtime removed `id`: whatever of it is still held goes on, and it is forgotten.
    pub fn removed(&mut self, id: &str) -> Vec<Event> {
        self.described.remove(id);
        self.release(|e| e.process.container.as_deref() == Some(id))
    }

    /// Events held since before `now_ns - HOLD_NS`, and every event held before them (order
    /// kept).
    pub fn expired(&mut self, now_ns: u64) -> Vec<Event> {
        let Some(last) = self
            .held
            .iter()
            .rposition(|(at, _)| now_ns >= at.saturating_add(HOLD_NS))
        else {
            return Vec::new();
        };
        let released: Vec<Event> = self.held.drain(..=last).map(|(_, e)| e).collect();
        // A container the runtime did not describe in time (another runtime's, or one it
        // removed at once) is not waited for again.
        for id in released.iter().filter_map(|e| e.process.container.as_ref()) {
            if self.described.len() < MAX_DESCRIBED {
                self.described.insert(id.clone());
            }
        }
        released
    }

    /// Everything held (the API went down, or the agent stops).
    pub fn all(&mut self) -> Vec<Event> {
        self.held.drain(..).map(|(_, e)| e).collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    fn release(&mut self, of: impl Fn(&Event) -> bool) -> Vec<Event> {
        let (go, stay): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(_, e)| of(e));
        self.held = stay;
        go.into_iter().map(|(_, e)| e).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, container: Option<&str>) -> Event {
        let line = format!(
            r#"{{"schema":8,"seq":{seq},"time":"t","ts_ns":{seq},"kind":"fork","process":{{"pid":1,"tid":1,"ppid":0,"start_ticks":0,"uid":0,"gid":0,"comm":"x","exe":null,"argv":[],"argv_truncated":false,"cgroup_id":1{}}},"ancestry":[]}}"#,
            container
                .map(|c| format!(r#","container":"{c}""#))
                .unwrap_or_default()
        );
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn a_containers_events_wait_for_its_description_in_order() {
        const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        let mut hold = ContainerHold::default();
        assert!(!hold.must_wait(&event(1, None), true));
        assert!(hold.must_wait(&event(1, Some(A)), true));
        assert!(
            !hold.must_wait(&event(1, Some(A)), false),
            "API down: nothing to wait for"
        );
        assert!(
            !hold.must_wait(&event(1, Some("x1")), true),
            "a name the API never describes (ctr's, runc's): nothing to wait for"
        );
        for (seq, c) in [(1, A), (2, B), (3, A)] {
            assert!(hold.hold(event(seq, Some(c)), seq).is_none());
        }
        let a: Vec<u64> = hold.described(A).iter().map(|e| e.seq).collect();
        assert_eq!(a, vec![1, 3]);
        assert!(!hold.must_wait(&event(4, Some(A)), true));
        assert_eq!(hold.len(), 1);
        // b's waits out its time.
        assert!(hold.expired(2 + HOLD_NS - 1).is_empty());
        assert_eq!(hold.expired(2 + HOLD_NS).len(), 1);
        assert!(hold.is_empty());
        assert!(
            !hold.must_wait(&event(6, Some(B)), true),
            "not waited for twice"
        );
        hold.removed(A);
        assert!(hold.must_wait(&event(5, Some(A)), true));
    }
}
