//! The model's GFP table for this kernel version against the kernel's own
//! (the `__print_flags` list of `kmem:mm_page_alloc`).

use oomwatch::{
    host::tracefs,
    model::{KernelBehavior, KernelVersion, gfp::GfpTable},
};
use oomwatch_tests::require_root;

#[test]
fn builtin_gfp_table_matches_the_running_kernel() {
    require_root();
    let root = tracefs::find_or_mount().expect("tracefs");
    let fmt = std::fs::read_to_string(root.join("events/kmem/mm_page_alloc/format"))
        .expect("read the mm_page_alloc format");
    let live = GfpTable::from_trace_format(&fmt).expect("parse the kernel's GFP flag list");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let ver: KernelVersion = release.trim().parse().unwrap();
    let ours = GfpTable::builtin(&KernelBehavior::for_version(ver));
    assert!(!ours.partial);
    for (name, mask) in &ours.entries {
        let theirs = live.entries.iter().find(|(n, _)| n == name);
        assert_eq!(
            theirs.map(|(_, m)| *m),
            Some(*mask),
            "{name}: model {mask:#x}, kernel {theirs:?}"
        );
    }
    // Same rendering for every composite, and for masks made of the bits
    // both tables know (0 – 22), in a deterministic pseudo-random sample.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut masks: Vec<u64> = ours.entries.iter().map(|(_, m)| *m).collect();
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        masks.push(x & 0x7f_ffff);
    }
    for m in masks {
        assert_eq!(ours.format(m), live.format(m), "{m:#x}");
        assert_eq!(live.parse(&live.format(m)).unwrap(), m, "{m:#x} round trip");
    }
    eprintln!(
        "{} entries checked against the kernel's {}",
        ours.entries.len(),
        live.entries.len()
    );
}
