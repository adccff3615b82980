//! Reading the running system into the model's inputs: every read of `/proc`
//! and cgroupfs a prediction needs. [`Snapshotter::read_system`] returns one
//! [`SystemSnapshot`] per pass (processes from `/proc` or the BPF task
//! iterator, the OOM domains with their limits and usage, meminfo, zones,
//! the sysctls the model needs, page size, release); the model then runs on
//! it with no further I/O. Every reader takes the root it reads from, so
//! tests can point it at a captured tree.
//!
//! May use: `host`, `model`, and `ebpf` (to load the task iterator). Never
//! `daemon`, `cli`, `telemetry` or `replay`: a reader never calls a loop.

pub mod bpf;
pub mod domain;
pub mod memcg;
pub mod proc;
mod system;
pub mod zoneinfo;

pub use system::{Domains, SysctlError, Sysctls, SystemSnapshot, Want, knob_inputs, read_knobs};

use std::path::Path;

use serde::Serialize;

/// Where process snapshots come from (`--source`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The BPF task iterator where the kernel accepts it, `/proc` otherwise.
    #[default]
    Auto,
    /// The BPF task iterator only (an error where it cannot load).
    Bpf,
    /// `/proc` only.
    Proc,
}

/// Which source a [`Snapshotter`] reads, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceInUse {
    /// "bpf" or "proc".
    pub source: &'static str,
    /// Why `auto` fell back to `/proc` (None when it did not).
    pub fallback: Option<String>,
    /// With the task iterator: how it reads the rss counters (as this
    /// kernel's `oom_badness()` does) and why.
    pub rss_rule: Option<crate::ebpf::RssRuleChoice>,
}

impl std::fmt::Display for SourceInUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.source, &self.fallback) {
            ("bpf", _) => {
                write!(
                    f,
                    "BPF task iterator (the kernel's own counters, read as oom_badness reads them"
                )?;
                match &self.rss_rule {
                    Some(r) => write!(f, "; {r})"),
                    None => write!(f, ")"),
                }
            }
            (_, Some(why)) => write!(f, "/proc (the BPF task iterator is unavailable: {why})"),
            _ => write!(f, "/proc"),
        }
    }
}

/// Below this much MemAvailable, `auto` does not load the task iterator:
/// loading it parses the kernel's BTF, about 40 MiB at its peak, which on a
/// host this close to an OOM could be the allocation that triggers it.
pub const AUTO_MIN_AVAILABLE_BYTES: u64 = 128 << 20;

/// Why `auto` should not load the iterator now (None: it may).
fn low_memory() -> Option<String> {
    use procfs::FromRead as _;
    let avail = procfs::Meminfo::from_file("/proc/meminfo")
        .ok()?
        .mem_available?;
    (avail < AUTO_MIN_AVAILABLE_BYTES).then(|| {
        format!(
            "only {} MiB of memory is available, and loading the iterator takes about 40 MiB \
             for a moment (below {} MiB, auto reads /proc; --source bpf loads it anyway)",
            avail >> 20,
            AUTO_MIN_AVAILABLE_BYTES >> 20
        )
    })
}

/// Takes process snapshots from the chosen source; keeps the iterator
/// loaded between snapshots.
pub struct Snapshotter {
    iter: Option<bpf::TaskIter>,
    in_use: SourceInUse,
}

impl Snapshotter {
    /// `Bpf` fails with the reason the iterator cannot load; `Auto` falls
    /// back to `/proc` and keeps the reason.
    pub fn open(source: Source) -> Result<Self, bpf::Unavailable> {
        let (iter, fallback) = match source {
            Source::Proc => (None, None),
            Source::Bpf => (Some(bpf::TaskIter::load()?), None),
            Source::Auto => match low_memory() {
                Some(why) => (None, Some(why)),
                None => match bpf::TaskIter::load() {
                    Ok(it) => (Some(it), None),
                    Err(e) => (None, Some(e.0)),
                },
            },
        };
        let source = if iter.is_some() { "bpf" } else { "proc" };
        let rss_rule = iter.as_ref().map(|it| it.rss_rule.clone());
        Ok(Snapshotter {
            iter,
            in_use: SourceInUse {
                source,
                fallback,
                rss_rule,
            },
        })
    }

    pub fn in_use(&self) -> &SourceInUse {
        &self.in_use
    }

    /// One snapshot. The iterator sees the live kernel, so a `proc_root`
    /// other than `/proc` (a captured tree) is always read as files.
    pub fn read(&mut self, proc_root: &Path) -> Result<proc::ProcSnapshot, proc::SnapshotError> {
        match &mut self.iter {
            Some(it) if proc_root == Path::new("/proc") => it.read(proc_root),
            _ => proc::read(proc_root),
        }
    }
}
