//! oomwatch: a live OOM observer for Linux.
//!
//! eBPF programs (`oomwatch-ebpf`) on the kernel's OOM path report each victim
//! through a ring buffer; this crate loads them ([`ebpf`]), reads the kernel
//! facts they need ([`btf`], [`tracefs`], [`cgroup`]), and runs the daemon
//! ([`daemon`]) that logs every kill and exports [`metrics`]. [`check`] tells
//! what the running kernel offers.

pub mod cli;
pub mod daemon;
pub mod ebpf;
pub mod host;
pub mod model;
pub mod replay;
pub mod snapshot;
pub mod telemetry;
