//! Runs of identical connects, written once: a process connecting to one place in a loop (a
//! client polling, retrying, a pool opening connections one after another) is one record for
//! the run's first connect and one, counting the rest, at most every engine tick; not one
//! record, enrichment, judgement and event line per connect.
//!
//! Only *consecutive* records fold: a connect identical to the connect record just before it
//! in the kernel's stream (the same process, destination, protocol, route and outcome; only
//! the time, the thread and the descriptor number may differ). Any other record ends the run
//! first, so the events keep the kernel's order and nothing judged between two connects (a DNS
//! answer, a TLS hello, an exec, a job's end) can see a folded connect out of its place. What
//! folds changes no judgement: every connect of the run would be judged as its first was.
//!
//! The count rides on the run's last record (`Detail::Connect::repeats`), which the pipeline
//! enriches, judges and writes as any other: the connects it stands for are accounted for, in
//! the events log, the job's report and the bench's check that each connect was seen.

use crate::decode::KernelEvent;

/// What to do with a record offered to the run.
// Returned once per record and taken apart at once: boxing the records would allocate for each.
#[allow(clippy::large_enum_variant)]
pub(super) enum Offer {
    /// It continues the run: nothing to handle now.
    Folded,
    /// Handle `ended` first (the run's last record, with its `repeats`), then `event`.
    Pass {
        ended: Option<(KernelEvent, u32)>,
        event: KernelEvent,
    },
}

/// The current run: the last connect record handled and the records folded since.
#[derive(Default)]
pub(super) struct Repeats {
    /// The connect record handled last, when the record handled last was a connect.
    last: Option<KernelEvent>,
    /// The newest folded record and how many were folded before it since the record handled
    /// last (its `repeats`: it stands for one more connect than that).
    folded: Option<(KernelEvent, u32)>,
}

impl Repeats {
    /// Takes the kernel's next record.
    pub(super) fn offer(&mut self, event: KernelEvent) -> Offer {
        if !matches!(event, KernelEvent::Connect { .. }) {
            self.last = None;
            return Offer::Pass {
                ended: self.folded.take(),
                event,
            };
        }
        if self
            .last
            .as_ref()
            .is_some_and(|last| same_connect(last, &event))
        {
            // The newest folded record stands for itself and the folded ones before it.
            let before = self.folded.as_ref().map(|(_, n)| *n);
            if before.is_none_or(|n| n < u32::MAX) {
                self.folded = Some((event, before.map_or(0, |n| n + 1)));
                return Offer::Folded;
            }
        }
        let ended = self.folded.take();
        self.last = Some(event.clone());
        Offer::Pass { ended, event }
    }

    /// Hands out the run's folded records with their count: what the agent writes at each tick.
    /// With [`RunEnd::Tick`] the next identical connect still folds (the record before it in
    /// the kernel's stream is still a connect like it) and starts a new count; with
    /// [`RunEnd::Boundary`] (a control request, a reload, container news, the agent's stop:
    /// something written or decided between two connects) it is written, so that no folded
    /// connect is counted on the far side of the boundary from where it was made.
    pub(super) fn end(&mut self, how: RunEnd) -> Option<(KernelEvent, u32)> {
        if how == RunEnd::Boundary {
            self.last = None;
        }
        self.folded.take()
    }
}

/// Why a run of identical connects is ended before its next different record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunEnd {
    /// The engine's tick: the count so far is written; the run goes on.
    Tick,
    /// Something outside the kernel's stream comes between two connects: the run ends.
    Boundary,
}

/// Whether `b` is the same connect as `a`, as the events log and the judge would see it.
fn same_connect(a: &KernelEvent, b: &KernelEvent) -> bool {
    let (
        KernelEvent::Connect {
            header: ha,
            fd: _,
            result: ra,
            sock_type: sa,
            address: aa,
            port: pa,
            via: va,
            family: fa,
            blocked: ba,
        },
        KernelEvent::Connect {
            header: hb,
            fd: _,
            result: rb,
            sock_type: sb,
            address: ab,
            port: pb,
            via: vb,
            family: fb,
            blocked: bb,
        },
    ) = (a, b)
    else {
        return false;
    };
    // The header field by field, but the time and the thread (destructured so that a field
    // added to the header must be placed here).
    let crate::decode::Header {
        kind,
        flags,
        ts_ns: _,
        tgid,
        pid: _,
        ppid,
        uid,
        gid,
        start_ns,
        parent_start_ns,
        cgroup_id,
        mnt_ns,
        mnt_ns_id,
        comm,
    } = ha;
    (ra, sa, aa, pa, va, fa, ba) == (rb, sb, ab, pb, vb, fb, bb)
        && *kind == hb.kind
        && *flags == hb.flags
        && *tgid == hb.tgid
        && *ppid == hb.ppid
        && *uid == hb.uid
        && *gid == hb.gid
        && *start_ns == hb.start_ns
        && *parent_start_ns == hb.parent_start_ns
        && *cgroup_id == hb.cgroup_id
        && *mnt_ns == hb.mnt_ns
        && *mnt_ns_id == hb.mnt_ns_id
        && *comm == hb.comm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Header;
    use monitor_common::EventKind;

    fn connect(ts_ns: u64, tgid: u32, port: u16) -> KernelEvent {
        KernelEvent::Connect {
            header: Header {
                kind: EventKind::NetConnect,
                flags: 0,
                ts_ns,
                tgid,
                pid: tgid + (ts_ns as u32 % 3),
                ppid: 1,
                uid: 0,
                gid: 0,
                start_ns: 7,
                parent_start_ns: 1,
                cgroup_id: 9,
                mnt_ns: 4,
                mnt_ns_id: 5,
                comm: "curl".into(),
            },
            fd: 3 + ts_ns as i32,
            result: 0,
            sock_type: 1,
            address: "127.0.0.1".parse().unwrap(),
            port,
            via: 0,
            family: 2,
            blocked: false,
        }
    }

    fn ts(e: &KernelEvent) -> u64 {
        e.header().ts_ns
    }

    #[test]
    fn a_run_of_identical_connects_is_its_first_and_one_counting_the_rest() {
        let mut r = Repeats::default();
        assert!(matches!(
            r.offer(connect(1, 10, 80)),
            Offer::Pass { ended: None, .. }
        ));
        for t in 2..=5 {
            assert!(matches!(r.offer(connect(t, 10, 80)), Offer::Folded));
        }
        // Another destination ends the run: the last folded record, standing for the three
        // before it too.
        let Offer::Pass {
            ended: Some((last, 3)),
            event,
        } = r.offer(connect(6, 10, 443))
        else {
            panic!("the run did not end with its count");
        };
        assert_eq!((ts(&last), ts(&event)), (5, 6));
    }

    #[test]
    fn only_consecutive_connects_of_the_same_process_fold() {
        let mut r = Repeats::default();
        assert!(matches!(r.offer(connect(1, 10, 80)), Offer::Pass { .. }));
        // Another process, then the first again: nothing folds.
        assert!(matches!(
            r.offer(connect(2, 11, 80)),
            Offer::Pass { ended: None, .. }
        ));
        assert!(matches!(
            r.offer(connect(3, 10, 80)),
            Offer::Pass { ended: None, .. }
        ));
        // A record of another kind between two identical connects: nothing folds either.
        let mut header = connect(4, 10, 80).header().clone();
        header.kind = EventKind::ProcessExit;
        let exit = KernelEvent::Exit {
            header,
            exit_status: 0,
        };
        assert!(matches!(r.offer(exit), Offer::Pass { ended: None, .. }));
        assert!(matches!(
            r.offer(connect(5, 10, 80)),
            Offer::Pass { ended: None, .. }
        ));
        assert!(matches!(r.offer(connect(6, 10, 80)), Offer::Folded));
        // A refused connect is not the same as an allowed one.
        let mut refused = connect(7, 10, 80);
        if let KernelEvent::Connect { blocked, .. } = &mut refused {
            *blocked = true;
        }
        let Offer::Pass {
            ended: Some((_, 0)),
            ..
        } = r.offer(refused)
        else {
            panic!("the refusal folded into the allowed connects");
        };
    }

    #[test]
    fn a_tick_hands_out_the_count_and_the_run_goes_on_counting_afresh() {
        let mut r = Repeats::default();
        let _ = r.offer(connect(1, 10, 80));
        let _ = r.offer(connect(2, 10, 80));
        let _ = r.offer(connect(3, 10, 80));
        let (last, n) = r.end(RunEnd::Tick).expect("two folded");
        assert_eq!((ts(&last), n), (3, 1));
        assert!(r.end(RunEnd::Tick).is_none());
        assert!(matches!(r.offer(connect(4, 10, 80)), Offer::Folded));
        assert_eq!(r.end(RunEnd::Tick).map(|(_, n)| n), Some(0));
    }

    #[test]
    fn after_a_boundary_the_next_identical_connect_is_written_not_folded() {
        let mut r = Repeats::default();
        let _ = r.offer(connect(1, 10, 80));
        let _ = r.offer(connect(2, 10, 80));
        let (last, n) = r.end(RunEnd::Boundary).expect("one folded");
        assert_eq!((ts(&last), n), (2, 0));
        // A control request was answered here: the connect after it is its own record.
        let Offer::Pass { ended: None, event } = r.offer(connect(3, 10, 80)) else {
            panic!("the connect after the boundary folded");
        };
        assert_eq!(ts(&event), 3);
        assert!(matches!(r.offer(connect(4, 10, 80)), Offer::Folded));
        // With nothing folded, a boundary hands out nothing and still ends the run.
        assert_eq!(r.end(RunEnd::Boundary).map(|(_, n)| n), Some(0));
        assert!(r.end(RunEnd::Boundary).is_none());
        assert!(matches!(
            r.offer(connect(5, 10, 80)),
            Offer::Pass { ended: None, .. }
        ));
    }
}
