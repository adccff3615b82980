//! The `EVENTS` ring buffer: each record decoded by its leading kind into
//! the event types of [`super::victim`], [`super::oompath`],
//! [`super::alloc`] and [`super::reclaim`], in batches, with tokio.

use std::{io, time::Duration};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use oomwatch_common::{AllocFailEvent, EventKind, ReclaimExhaustedEvent, VictimEvent, VictimTask};
use tokio::io::unix::AsyncFd;

use super::{AllocFailure, KernelEvent, LoadError, Probes, ReclaimExhausted, Victim};
use crate::host::cgroup::{self, Hierarchy};

/// A record off the ring buffer, by its leading kind.
enum Record {
    Victim(VictimEvent),
    Exhausted(ReclaimExhaustedEvent),
    AllocFail(AllocFailEvent),
    Kernel(KernelEvent),
}

fn read_record(item: &[u8]) -> Option<Record> {
    /// Ring buffer records are only 8-byte aligned: read unaligned.
    fn pod<T: aya::Pod>(item: &[u8]) -> Option<T> {
        // SAFETY: T is Pod and the item is long enough.
        (item.len() >= std::mem::size_of::<T>())
            .then(|| unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<T>()) })
    }
    let kind: u32 = pod(item)?;
    match kind {
        k if k == EventKind::MarkVictim as u32 => pod(item).map(Record::Victim),
        k if k == EventKind::ReclaimExhausted as u32 => pod(item).map(Record::Exhausted),
        k if k == EventKind::AllocFail as u32 => pod(item).map(Record::AllocFail),
        k if k == EventKind::OomEnter as u32 => {
            pod(item).map(|e| Record::Kernel(KernelEvent::enter(&e)))
        }
        k if k == EventKind::Badness as u32 => {
            pod(item).map(|e| Record::Kernel(KernelEvent::badness(&e)))
        }
        k if k == EventKind::OomChosen as u32 => {
            pod(item).map(|e| Record::Kernel(KernelEvent::chosen(&e)))
        }
        k if k == EventKind::OomExit as u32 => {
            pod(item).map(|e| Record::Kernel(KernelEvent::exit(&e)))
        }
        k if k == EventKind::Reaper as u32 => {
            pod(item).map(|e| Record::Kernel(KernelEvent::reaper(&e)))
        }
        _ => None,
    }
}

/// What one read of the ring buffer brought.
#[derive(Debug, Default)]
pub struct Batch {
    pub victims: Vec<Victim>,
    pub reclaim_exhausted: Vec<ReclaimExhausted>,
    pub alloc_failures: Vec<AllocFailure>,
    /// The kernel OOM-path and reaper events, in ring order.
    pub kernel: Vec<KernelEvent>,
}

/// Events read from the `EVENTS` ring buffer with tokio.
pub struct VictimStream {
    ring: AsyncFd<RingBuf<MapData>>,
    tasks: Option<BpfHashMap<MapData, u32, VictimTask>>,
    dropped: Option<PerCpuArray<MapData, u64>>,
    hierarchy: Option<Hierarchy>,
}

impl VictimStream {
    /// Waits for the next batch of events (never empty).
    pub async fn next_batch(&mut self) -> io::Result<Batch> {
        loop {
            let mut events = Vec::new();
            let mut stalls = Vec::new();
            let mut fails = Vec::new();
            let mut kernel = Vec::new();
            {
                let mut guard = self.ring.readable_mut().await?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    match read_record(&item) {
                        Some(Record::Victim(ev)) => events.push(ev),
                        Some(Record::Exhausted(ev)) => stalls.push(ReclaimExhausted::from(&ev)),
                        Some(Record::AllocFail(ev)) => fails.push(AllocFailure::from(&ev)),
                        Some(Record::Kernel(ev)) => kernel.push(ev),
                        None => {
                            tracing::warn!(len = item.len(), "unknown event on the ring buffer")
                        }
                    }
                }
                guard.clear_ready();
            }
            if events.is_empty() && stalls.is_empty() && fails.is_empty() && kernel.is_empty() {
                continue;
            }
            let mut out = Vec::with_capacity(events.len());
            for ev in &events {
                let mut v = Victim::from_event(ev);
                if v.memcg_id.is_none() {
                    self.join_task(&mut v).await;
                }
                if let (Some(id), Some(h)) = (v.memcg_id, &self.hierarchy) {
                    v.memcg = cgroup::resolve(h, id);
                }
                out.push(v);
            }
            return Ok(Batch {
                victims: out,
                reclaim_exhausted: stalls,
                alloc_failures: fails,
                kernel,
            });
        }
    }

    /// When the tracepoint program ran before the task program, the task's
    /// record is still in `VICTIM_TASKS`: join it here. The two run in the same
    /// `trace_mark_victim()` call, so the record is there or about to be.
    async fn join_task(&mut self, v: &mut Victim) {
        let Some(tasks) = self.tasks.as_mut() else {
            return;
        };
        for _ in 0..20 {
            if let Ok(t) = tasks.get(&v.pid, 0) {
                v.tgid = Some(t.tgid);
                v.memcg_id = Some(t.memcg_id);
                let _ = tasks.remove(&v.pid);
                tracing::debug!(pid = v.pid, "task record joined in user space");
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Events the kernel side could not queue because the ring buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
            .as_ref()
            .and_then(|m| m.get(&0, 0).ok())
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

impl Probes {
    /// The stream of victims. Call once.
    pub fn victims(&mut self) -> Result<VictimStream, LoadError> {
        let ring = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(LoadError::MissingMap("EVENTS"))?;
        let ring = RingBuf::try_from(ring).map_err(|source| LoadError::Map {
            name: "EVENTS",
            source,
        })?;
        let tasks = if self.task_program {
            let map = self
                .ebpf
                .take_map("VICTIM_TASKS")
                .ok_or(LoadError::MissingMap("VICTIM_TASKS"))?;
            Some(
                BpfHashMap::<_, u32, VictimTask>::try_from(map).map_err(|source| {
                    LoadError::Map {
                        name: "VICTIM_TASKS",
                        source,
                    }
                })?,
            )
        } else {
            None
        };
        let dropped = self
            .ebpf
            .take_map("DROPPED")
            .and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok());
        // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns
        // the RingBuf, and always returns that same fd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(VictimStream {
            ring,
            tasks,
            dropped,
            hierarchy: cgroup::memory_hierarchy(),
        })
    }
}
