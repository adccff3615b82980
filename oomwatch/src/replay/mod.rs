//! Kernel OOM reports, replayed: found in any text and parsed ([`parse`],
//! pure, over `&str`), re-run with the model of the report's own kernel
//! version and judged ([`analysis`]), rendered for people ([`render`]), read
//! from files, standard input or `/dev/kmsg` ([`input`]) and followed live on
//! `/dev/kmsg` for the daemon ([`kmsg`]).
//!
//! May use: `model`, and `host` for nothing but reading. Never `snapshot`,
//! `daemon`, `telemetry` or `cli`: a replay knows only the report.
//! Inside: `parse` uses nothing of the others; `analysis` uses `parse`.

pub mod analysis;
pub mod input;
pub mod kmsg;
pub mod parse;
pub mod render;

pub use analysis::{
    Disagreement, Given, Replay, ReplayError, ReplayReport, analyze, points_at, replay, replay_all,
    replay_all_given, summarize,
};
pub use input::{EXIT_DISAGREE, EXIT_NO_REPORT};
pub use kmsg::{KernelReport, KmsgEvent, follow_kmsg};
pub use parse::{Report, kmsg_messages, parse_all};
pub use render::render;
