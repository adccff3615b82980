//! oomwatch: a live OOM observer for Linux.
//!
//! One folder per part (ARCHITECTURE.md at the workspace root is the map):
//! the reference model of the kernel's OOM killer ([`model`], pure); what the
//! running kernel offers ([`host`]); the eBPF programs loaded and their
//! events decoded ([`ebpf`]); every read of `/proc` and cgroupfs a prediction
//! needs, as one snapshot ([`snapshot`]); kernel OOM reports parsed and
//! replayed ([`replay`]); the daemon's loop ([`daemon`]); what it exports
//! ([`telemetry`]); and the command line ([`cli`]).

pub mod cli;
pub mod daemon;
pub mod ebpf;
pub mod forecast;
pub mod host;
pub mod model;
pub mod replay;
pub mod snapshot;
pub mod telemetry;
