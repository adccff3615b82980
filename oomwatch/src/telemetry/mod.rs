//! What oomwatch exports: the metric catalogue ([`metrics`], every metric
//! registered there and nowhere else), the event log and `/events` stream
//! ([`events`]), the HTTP endpoints ([`http`]), and container identity from
//! a cgroup path for the per-domain labels ([`container`]).
//!
//! Takes plain values: the per-domain state ([`metrics::DomainState`]), one
//! episode's counts ([`metrics::EpisodeCounts`]), the probes' statistics
//! and hooks (`ebpf`'s plain records). May use: `model` and `ebpf`'s plain
//! records. Never `daemon` or `cli`: the loop calls in, nothing here calls
//! the loop.

pub mod container;
pub mod events;
pub mod http;
pub mod metrics;
