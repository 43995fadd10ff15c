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
    probes::Rings,
};

/// How long the reader rests after reading records before it looks again. While records keep
/// coming it looks on its own and asks the kernel for no wakeup (`READER_WAITING` is 0): a
/// wakeup is an irq_work raised in the probe that wrote the record (a self-interrupt: in a VM
/// an exit to the hypervisor) and the reader's wakeup on another CPU. Records wait at most this
/// long more.
const REST: std::time::Duration = std::time::Duration::from_millis(5);

/// How long a reader that asked to be woken waits at the most before it looks anyway: a record
/// whose probe read `READER_WAITING` just before the reader set it asked for no wakeup (the
/// window is a few instructions; the job-end barrier drains the rings in any case).
const IDLE_LOOK: std::time::Duration = std::time::Duration::from_secs(1);

/// Most records taken from the rings before they are handed on (bounds the batch's memory; a
/// ring with more is drained again at once).
const BATCH: usize = 4096;

/// Memory the queued records may hold (`KernelEvent::memory_bytes`): the queue's count of
/// records alone would let an exec storm of long one-letter command lines queue gigabytes
/// behind a slow pipeline. Past it, records other than security ones are dropped and counted.
pub(super) const MAX_QUEUED_BYTES: i64 = 64 << 20;

/// What ended the reader's rest or wait.
enum Woken {
    /// Time to look at the rings.
    Look,
    /// A barrier: everything the kernel wrote before it is queued before the answer, so a
    /// job's end is judged after the job's last events.
    Barrier(tokio::sync::oneshot::Sender<()>),
    Stop,
}

pub(super) async fn read_ring(
    rings: Rings,
    tx: mpsc::Sender<KernelEvent>,
    stats: Arc<Stats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut barriers: mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let Rings {
        main,
        security,
        mut waiting,
    } = rings;
    // SAFETY: each RingBuf owns its map fd and keeps it open and unchanged for as long as the
    // AsyncFd (which owns the RingBuf) lives.
    let mut main = unsafe { AsyncFd::register(main) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    let mut security = unsafe { AsyncFd::register(security) }
        .map_err(|e| anyhow::anyhow!("polling the security ring buffer: {e}"))?;
    let mut batch: Vec<KernelEvent> = Vec::with_capacity(BATCH);
    let mut ask_wakeups = |on: bool| {
        if let Err(e) = waiting.set(0, u32::from(on), 0) {
            // Without the flag records wake nobody: the reader then looks every IDLE_LOOK.
            log::warn!("the ring reader's wakeup flag could not be set: {e}");
        }
    };
    loop {
        // What one ring had: the other's records of the same moment go with them, in order.
        let read = drain_all(&mut batch, &mut main, &mut security, &tx, &stats).await;
        let woken = if read >= BATCH / 2 {
            // A flood: no rest (half a batch in one go is 400,000 records a second at the
            // least if they came during a rest; the security ring holds about 8,000: a rest
            // must not let it fill). A barrier or a stop still gets its turn.
            if let Ok(done) = barriers.try_recv() {
                Woken::Barrier(done)
            } else if stop.has_changed().unwrap_or(true) {
                Woken::Stop
            } else {
                Woken::Look
            }
        } else if read > 0 {
            tokio::select! {
                _ = tokio::time::sleep(REST) => Woken::Look,
                Some(done) = barriers.recv() => Woken::Barrier(done),
                _ = stop.changed() => Woken::Stop,
            }
        } else {
            // Nothing came during the rest: ask to be woken, then look once more (a record
            // written before the ask asked for no wakeup). Readiness is cleared before the
            // rings are read, so a wakeup after that read is not lost.
            ask_wakeups(true);
            let woken = if drain_all(&mut batch, &mut main, &mut security, &tx, &stats).await > 0 {
                Woken::Look
            } else {
                tokio::select! {
                    guard = main.readable_mut() => {
                        guard?.clear_ready();
                        Woken::Look
                    }
                    guard = security.readable_mut() => {
                        guard?.clear_ready();
                        Woken::Look
                    }
                    _ = tokio::time::sleep(IDLE_LOOK) => Woken::Look,
                    Some(done) = barriers.recv() => Woken::Barrier(done),
                    _ = stop.changed() => Woken::Stop,
                }
            };
            ask_wakeups(false);
            woken
        };
        match woken {
            Woken::Look => {}
            Woken::Barrier(done) => {
                drain_all(&mut batch, &mut main, &mut security, &tx, &stats).await;
                let _ = done.send(());
            }
            Woken::Stop => {
                drain_all(&mut batch, &mut main, &mut security, &tx, &stats).await;
                return Ok(());
            }
        }
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
