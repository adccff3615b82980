//! Any bytes as a memory cgroup's files (`memory.stat`, `memory.events`,
//! `memory.oom_control`, a limit or usage, `memory.pressure`) and as
//! `/proc/pressure/memory` and `/proc/vmstat`: oomwatch's parsers of each.
//! The same text goes to each; none may panic, and `key value` lines
//! parse back to what they were rendered from.
#![no_main]

use oomwatch::{
    host::{cgroup::CgroupVersion, psi},
    snapshot::memcg::{self, V1_EVENTS, V2_EVENTS},
};

const PAGE_SIZE: u64 = 4096;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let trimmed = text.trim();
    if let Some(pages) = memcg::parse_pages(trimmed, PAGE_SIZE)
        && let Ok(bytes) = trimmed.parse::<u64>()
    {
        assert!(pages == u64::MAX || pages == bytes / PAGE_SIZE);
    }
    for version in [CgroupVersion::V1, CgroupVersion::V2] {
        let _ = memcg::reclaimable_file_bytes(&text, version);
    }
    let _ = memcg::oom_kill_disabled(&text);
    for names in [
        &V2_EVENTS[..],
        &V1_EVENTS[..],
        &["under_oom"],
        &["oom_kill"],
    ] {
        let counters = memcg::keyed(&text, names);
        assert_eq!(counters.len(), names.len());
        // Render what was parsed and parse it again: the same values.
        let rendered: String = counters.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        assert_eq!(memcg::keyed(&rendered, names), counters);
    }
    if let Some((some, full)) = psi::parse_totals(&text) {
        assert_eq!(psi::parse_some_total(&text), Some(some));
        let rendered = match full {
            Some(f) => format!("some avg10=0.00 total={some}\nfull avg10=0.00 total={f}\n"),
            None => format!("some avg10=0.00 total={some}\n"),
        };
        assert_eq!(psi::parse_totals(&rendered), Some((some, full)));
    }
});
