//! Any bytes as a task's `/proc/PID/stat`, `/proc/PID/status` and
//! `/proc/PID/cgroup`, and as `/proc/meminfo`: the parsers a snapshot
//! applies to them (oomwatch's over procfs's, then its counters and memcg
//! path).
//! The same bytes go to each; none may panic, and what they return must
//! be within bounds.
#![no_main]

use procfs::{FromRead, ProcessCGroups, process::Status};

const PAGE_SIZE: u64 = 4096;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = oomwatch::snapshot::proc::parse_stat(data);
    if let Ok(status) = Status::from_read(data) {
        let mm = oomwatch::snapshot::proc::mm_counters(&status, PAGE_SIZE);
        assert_eq!(mm.is_some(), status.vmrss.is_some());
        if let (Some(mm), Some(anon)) = (mm, status.rssanon) {
            assert!(mm.anon_pages <= anon.saturating_mul(1024) / PAGE_SIZE);
        }
    }
    if let Ok(cgroups) = ProcessCGroups::from_read(data)
        && let Some(path) = oomwatch::snapshot::proc::memcg_path(&cgroups.0)
    {
        assert!(cgroups.0.iter().any(|l| l.pathname == path));
    }
    let text = String::from_utf8_lossy(data);
    for key in [
        "MemTotal:",
        "MemAvailable:",
        "SwapTotal:",
        "CommitLimit:",
        "Committed_AS:",
    ] {
        // A value in kB is a whole number of kB.
        let line = text.lines().find_map(|l| l.strip_prefix(key)).unwrap_or("");
        if let Some(bytes) = oomwatch::snapshot::proc::meminfo_bytes(&text, key)
            && line.split_whitespace().nth(1) == Some("kB")
        {
            assert_eq!(bytes % 1024, 0, "{line:?}");
        }
    }
});
