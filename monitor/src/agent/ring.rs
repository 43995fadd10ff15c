//! The ring reader: drains the kernel's two ring buffers (everything else, and the security
//! records: connects, watched opens, tamper), decodes each record, puts what it drained in time
//! order and hands it on. A slow consumer never stalls the kernel side: other records are
//! dropped (and counted) when the queue is full, security records wait for room instead, so a
//! flood costs only what it is made of. Every record that cannot be decoded or queued is counted.

use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::Stats;
use crate::{
    decode::{decode, KernelEvent},
    metrics::Metrics,
};

/// How long the reader rests after emptying the rings before it waits for them again. The
/// kernel wakes a reader (an irq_work: a self-interrupt in the probe that wrote the record, an
/// exit to the hypervisor in a VM, most of a small record's cost) only for a record written when
/// the reader had read everything before it: a reader that keeps up with a storm is woken for
/// nearly every record, one that rests is woken once per rest. The kernel side is unchanged
/// (every record may wake); records wait at most this long more.
const REST: std::time::Duration = std::time::Duration::from_millis(5);

/// Most records taken from the rings before they are handed on (bounds the batch's memory; a
/// ring with more is drained again at once).
const BATCH: usize = 4096;

/// Memory the queued records may hold (`KernelEvent::memory_bytes`): the queue's count of
/// records alone would let an exec storm of long one-letter command lines queue gigabytes
/// behind a slow pipeline. Past it, records other than security ones are dropped and counted.
pub(super) const MAX_QUEUED_BYTES: i64 = 64 << 20;

pub(super) async fn read_ring(
    (main, security): (RingBuf<MapData>, RingBuf<MapData>),
    tx: mpsc::Sender<KernelEvent>,
    stats: Arc<Stats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut barriers: mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    // SAFETY: each RingBuf owns its map fd and keeps it open and unchanged for as long as the
    // AsyncFd (which owns the RingBuf) lives.
    let mut main = unsafe { AsyncFd::register(main) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    let mut security = unsafe { AsyncFd::register(security) }
        .map_err(|e| anyhow::anyhow!("polling the security ring buffer: {e}"))?;
    let mut batch: Vec<KernelEvent> = Vec::with_capacity(BATCH);
    // Records read since the last rest.
    let mut read = 0usize;
    loop {
        tokio::select! {
            guard = main.readable_mut() => {
                let mut guard = guard?;
                // Emptied before readiness is cleared: the kernel wakes a reader only when it
                // had caught up.
                read += fill(&mut batch, guard.get_inner_mut(), &tx, &stats).await;
                guard.clear_ready();
            }
            guard = security.readable_mut() => {
                let mut guard = guard?;
                read += fill(&mut batch, guard.get_inner_mut(), &tx, &stats).await;
                guard.clear_ready();
            }
            // A barrier: everything the kernel wrote before it is queued before the answer,
            // so a job's end is judged after the job's last events.
            Some(done) = barriers.recv() => {
                drain_all(&mut batch, &mut main, &mut security, &tx, &stats).await;
                let _ = done.send(());
                continue;
            }
            _ = stop.changed() => {
                drain_all(&mut batch, &mut main, &mut security, &tx, &stats).await;
                return Ok(());
            }
        }
        // What one ring had: the other's records of the same moment go with them, in order.
        read += drain_all(&mut batch, &mut main, &mut security, &tx, &stats).await;
        // A flood: no rest (half a batch in one go is 400,000 records a second at the least if
        // they came during a rest; the security ring holds about 8,000: a rest must not let it
        // fill). Such a reader was not keeping up, so it was not woken per record anyway.
        if std::mem::take(&mut read) >= BATCH / 2 {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(REST) => {}
            _ = stop.changed() => {
                drain_all(&mut batch, &mut main, &mut security, &tx, &stats).await;
                return Ok(());
            }
        }
    }
}

/// Empties `ring`, handing on each full batch; how many records it read.
async fn fill(
    batch: &mut Vec<KernelEvent>,
    ring: &mut RingBuf<MapData>,
    tx: &mpsc::Sender<KernelEvent>,
    stats: &Stats,
) -> usize {
    let mut read = 0;
    loop {
        read += drain(batch, ring, stats);
        if batch.len() < BATCH {
            return read;
        }
        hand_on(batch, tx, stats).await;
    }
}

/// Empties both rings completely and hands everything on; how many records it read.
async fn drain_all(
    batch: &mut Vec<KernelEvent>,
    main: &mut AsyncFd<RingBuf<MapData>>,
    security: &mut AsyncFd<RingBuf<MapData>>,
    tx: &mpsc::Sender<KernelEvent>,
    stats: &Stats,
) -> usize {
    let mut read = 0;
    loop {
        read += drain(batch, security.get_mut(), stats);
        read += drain(batch, main.get_mut(), stats);
        let more = batch.len() >= BATCH;
        hand_on(batch, tx, stats).await;
        if !more {
            return read;
        }
    }
}

/// Decodes up to `BATCH` records of `ring` into `batch`; how many records it read.
fn drain(batch: &mut Vec<KernelEvent>, ring: &mut RingBuf<MapData>, stats: &Stats) -> usize {
    let mut read = 0;
    while batch.len() < BATCH {
        let Some(item) = ring.next() else {
            return read;
        };
        read += 1;
        match decode(&item) {
            Ok(event) => batch.push(event),
            Err(e) => {
                stats.decode_errors.inc();
                log::debug!("undecodable record: {e}");
            }
        }
    }
    read
}

/// Queues the batch in time order (stable: a program's environment stays before its exec).
async fn hand_on(batch: &mut Vec<KernelEvent>, tx: &mpsc::Sender<KernelEvent>, stats: &Stats) {
    batch.sort_by_key(|e| e.header().ts_ns);
    for event in batch.drain(..) {
        let kind = event.header().kind;
        let bytes = event.memory_bytes() as i64;
        if !kind.is_security() && stats.queued_bytes.get() + bytes > MAX_QUEUED_BYTES {
            stats.queue_full[Metrics::slot(kind)].inc();
            continue;
        }
        stats.queued_bytes.add(bytes);
        match tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) if kind.is_security() => {
                // Waits for the consumer: meanwhile the kernel keeps filling its rings, where
                // any loss is counted per kind.
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            Err(_) => {
                stats.queued_bytes.sub(bytes);
                stats.queue_full[Metrics::slot(kind)].inc();
            }
        }
    }
}
