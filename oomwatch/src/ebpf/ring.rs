//! The `EVENTS` ring buffer: each record decoded by its leading kind into
//! the event types of [`super::victim`], [`super::oompath`],
//! [`super::alloc`] and [`super::reclaim`], in batches, with tokio.

use std::{
    collections::{HashMap, VecDeque},
    io,
    time::{Duration, Instant},
};

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
    /// Victims the classic program reported lately.
    recent: VecDeque<u32>,
    /// `VICTIM_TASKS` records no classic event has claimed, since when.
    unclaimed: HashMap<u32, Instant>,
}

/// How long a `VICTIM_TASKS` record may wait for its classic event: both
/// programs run in the same `trace_mark_victim()` call, and the ring is read
/// in order, so an event still to come would have come long before.
const UNCLAIMED_GRACE: Duration = Duration::from_millis(500);

/// Which `VICTIM_TASKS` records are kills whose classic `oom:mark_victim`
/// program did not run, returned as (to recover, to drop).
///
/// The kernel runs a classic (perf) tracepoint's BPF program only when no
/// other kprobe or tracepoint program is running on that CPU
/// (`bpf_prog_active`, kernel/trace/bpf_trace.c); the BTF tracepoint program
/// has a recursion guard of its own. So a victim can be marked with only the
/// task program's record (seen in the 7.3 x86_64 guests, whose tracepoint
/// programs run preemptibly). A record whose pid the classic program
/// reported is stale (it came after the event); one unclaimed past
/// [`UNCLAIMED_GRACE`] is a kill to recover.
fn unclaimed_records(
    keys: &[u32],
    recent: &VecDeque<u32>,
    unclaimed: &mut HashMap<u32, Instant>,
    now: Instant,
) -> (Vec<u32>, Vec<u32>) {
    unclaimed.retain(|pid, _| keys.contains(pid));
    let (mut recover, mut stale) = (Vec::new(), Vec::new());
    for &pid in keys {
        if recent.contains(&pid) {
            stale.push(pid);
            unclaimed.remove(&pid);
            continue;
        }
        let since = *unclaimed.entry(pid).or_insert(now);
        if now.duration_since(since) >= UNCLAIMED_GRACE {
            recover.push(pid);
            unclaimed.remove(&pid);
        }
    }
    (recover, stale)
}

impl VictimStream {
    /// Waits for the next batch of events (never empty).
    pub async fn next_batch(&mut self) -> io::Result<Batch> {
        loop {
            let mut events = Vec::new();
            let mut stalls = Vec::new();
            let mut fails = Vec::new();
            let mut kernel = Vec::new();
            // At most a second without a look at the unclaimed records.
            if let Ok(guard) =
                tokio::time::timeout(Duration::from_secs(1), self.ring.readable_mut()).await
            {
                let mut guard = guard?;
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
            let mut out = Vec::with_capacity(events.len());
            for ev in &events {
                let mut v = Victim::from_event(ev);
                if v.memcg_id.is_none() {
                    self.join_task(&mut v).await;
                }
                self.recent.push_back(v.pid);
                if self.recent.len() > 256 {
                    self.recent.pop_front();
                }
                out.push(v);
            }
            out.extend(self.recover_unclaimed());
            for v in &mut out {
                if let (Some(id), Some(h)) = (v.memcg_id, &self.hierarchy) {
                    v.memcg = cgroup::resolve(h, id);
                }
            }
            if out.is_empty() && stalls.is_empty() && fails.is_empty() && kernel.is_empty() {
                continue;
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

    /// Kills known only from their `VICTIM_TASKS` record (see
    /// [`unclaimed_records`]), each logged once.
    fn recover_unclaimed(&mut self) -> Vec<Victim> {
        let Some(tasks) = self.tasks.as_mut() else {
            return Vec::new();
        };
        let keys: Vec<u32> = tasks.keys().filter_map(Result::ok).collect();
        if keys.is_empty() && self.unclaimed.is_empty() {
            return Vec::new();
        }
        let (recover, stale) =
            unclaimed_records(&keys, &self.recent, &mut self.unclaimed, Instant::now());
        for pid in stale {
            let _ = tasks.remove(&pid);
        }
        let mut out = Vec::new();
        for pid in recover {
            if let Ok(t) = tasks.get(&pid, 0) {
                tracing::warn!(
                    pid,
                    "oom:mark_victim: the kernel did not run the tracepoint program for this victim \
                     (another BPF program was running on its CPU); the kill is known from the BTF \
                     tracepoint's record, without the kernel's numbers"
                );
                out.push(Victim::from_task_record(pid, &t));
                self.recent.push_back(pid);
            }
            let _ = tasks.remove(&pid);
        }
        out
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
            recent: VecDeque::new(),
            unclaimed: HashMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record the classic program reported is dropped at once; an
    /// unclaimed one is recovered once it has waited the grace period, and
    /// forgotten when it is gone from the map.
    #[test]
    fn unclaimed_records_are_recovered_after_the_grace() {
        let t0 = Instant::now();
        let recent: VecDeque<u32> = [7].into();
        let mut unclaimed = HashMap::new();
        let (recover, stale) = unclaimed_records(&[7, 9], &recent, &mut unclaimed, t0);
        assert_eq!((recover, stale), (vec![], vec![7]));
        let (recover, _) =
            unclaimed_records(&[9], &recent, &mut unclaimed, t0 + UNCLAIMED_GRACE / 2);
        assert!(recover.is_empty(), "still within the grace");
        let (recover, _) = unclaimed_records(&[9], &recent, &mut unclaimed, t0 + UNCLAIMED_GRACE);
        assert_eq!(recover, vec![9]);
        assert!(unclaimed.is_empty());
        // A record that went away (its classic event joined it) is forgotten.
        let _ = unclaimed_records(&[11], &recent, &mut unclaimed, t0);
        let _ = unclaimed_records(&[], &recent, &mut unclaimed, t0);
        assert!(unclaimed.is_empty());
    }
}
