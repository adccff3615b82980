//! The reference model of the kernel's OOM killer, exact per kernel version.
//!
//! Pure: no I/O, no clock, no tokio, no aya. Inputs are plain data (processes
//! with their mm counters, limits, the kernel version and page size); outputs
//! are decisions that carry what decided them. Kernel behaviour lives in one
//! place, [`behavior`], as a table of changes with the versions that carry
//! them; everything else asks [`behavior::KernelBehavior`].
//!
//! The specification is `../shared/kernel-oom.md`; each function names the
//! kernel function it mirrors and each rule the section it comes from.
//!
//! May use: nothing else of the crate. Every other part may use it.
#![forbid(unsafe_code)]

pub mod badness;
pub mod behavior;
pub mod explain;
pub mod gfp;
pub mod knobs;
pub mod oom;
#[cfg(test)]
mod properties;
pub mod score;
pub mod select;
pub mod slowpath;
pub mod task;
pub mod totalpages;
pub mod version;
pub mod watermark;

pub use badness::{Badness, Ineligible, oom_badness};
pub use behavior::KernelBehavior;
pub use select::{Domain, Scan, Selection, select_bad_process};
pub use task::{MmCounters, Process, Thread, printable};
pub use version::KernelVersion;
