//! Any bytes as a tracefs event `format` file: the field parser and the
//! record layouts the eBPF programs are given (`oom:mark_victim`,
//! `oom:reclaim_retry_zone`, `kmem:mm_page_alloc` with its GFP table).
//! None may panic, and a layout names only offsets the file gave.
#![no_main]

use std::path::Path;

use oomwatch::host::tracefs;

/// oomwatch_common::FIELD_ABSENT.
const ABSENT: u32 = u32::MAX;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let fields = tracefs::parse_format(&text);
    let given = |offset: u32| offset == ABSENT || fields.iter().any(|f| f.offset == offset);
    for f in &fields {
        assert!(!f.name.contains(' ') && !f.name.contains('['), "{f:?}");
    }
    if let Ok(l) = tracefs::mark_victim_layout(&text, Path::new("format")) {
        for offset in [
            l.pid,
            l.comm,
            l.total_vm,
            l.anon_rss,
            l.uid,
            l.oom_score_adj,
        ] {
            assert!(given(offset), "{offset}");
        }
    }
    let l = tracefs::reclaim_retry_layout(&text);
    assert!(given(l.order) && given(l.no_progress_loops) && given(l.wmark_check));
    if let Some(l) = tracefs::page_alloc_layout(&text) {
        assert!(given(l.order) && given(l.gfp_flags) && given(l.pfn));
    }
});
