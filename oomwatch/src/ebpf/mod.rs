//! Loading oomwatch's eBPF programs into the running kernel and reading what
//! they report. aya glue only: what the events mean lives elsewhere.
//!
//! One file per kind of kernel object, mirroring the program families of
//! `oomwatch-ebpf` and the records of `oomwatch-common`.
//!
//! May use: `host` (BTF, tracefs, cgroup mount table, privileges) and
//! `model`. Nothing here decides what an event means for a prediction.

mod alloc;
mod counters;
mod layout;
mod load;
mod oompath;
mod reaper;
mod reclaim;
mod ring;
mod tasks;
mod victim;

pub use alloc::AllocFailure;
pub use counters::ProgramStats;
pub use layout::{
    RssRule, RssRuleChoice, apply_rss_rule, choose_rss_rule, task_iter_layout, task_layout,
};
pub use load::{Degraded, KernelHook, LoadOptions, Probes, try_load_fentry_fexit};
pub use oompath::KernelEvent;
pub use reclaim::ReclaimExhausted;
pub use ring::{Batch, VictimStream};
pub use tasks::load_task_iterator;
pub use victim::Victim;
pub(crate) use victim::comm_string;

use std::io;

use aya::Ebpf;

use crate::host::tracefs::TracefsError;

/// The object built from `oomwatch-ebpf` by `build.rs` (empty when bpf-linker
/// was missing at build time).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oomwatch"));

/// Whether this binary carries its eBPF programs.
pub fn object_embedded() -> bool {
    !EBPF_OBJECT.is_empty()
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "this oomwatch binary was built without its eBPF programs (bpf-linker was not on PATH at \
         build time): run `cargo xtask setup`, then rebuild"
    )]
    NoObject,
    #[error("{0}")]
    Privilege(String),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("load the eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("register the ring buffer with tokio: {0}")]
    Io(#[from] io::Error),
}

/// Program `name` of the object as its own type, or which one is missing.
pub(crate) fn typed_program<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Program {
            what: format!("program {name}"),
            source,
        })
}
