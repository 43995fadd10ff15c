//! The ring reader: drains the kernel's ring buffer, decodes each record and hands it on
//! without ever waiting, so a slow consumer never stalls the kernel side; every record that
//! cannot be decoded or queued is counted.

use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::Stats;
use crate::{
    decode::{decode, KernelEvent},
    metrics::Metrics,
};

pub(super) async fn read_ring(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<KernelEvent>,
    stats: Arc<Stats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut barriers: mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open and unchanged for as long as the
    // AsyncFd (which owns the RingBuf) lives.
    let mut fd = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    let drain = |ring: &mut RingBuf<MapData>| {
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(event) => {
                    let kind = event.header().kind;
                    if tx.try_send(event).is_err() {
                        stats.queue_full[Metrics::slot(kind)].inc();
                    }
                }
                Err(e) => {
                    stats.decode_errors.inc();
                    log::debug!("undecodable record: {e}");
                }
            }
        }
    };
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            // A barrier: everything the kernel wrote before it is queued before the answer,
            // so a job's end is judged after the job's last events.
            Some(done) = barriers.recv() => {
                drain(fd.get_mut());
                let _ = done.send(());
            }
            _ = stop.changed() => {
                drain(fd.get_mut());
                return Ok(());
            }
        }
    }
}
