//! Any bytes as `/proc/zoneinfo`, then as `/proc/buddyinfo` joined into
//! the zones: `simulate`'s parsers. Neither may panic; every zone starts
//! at a `Node` line, and joining never adds or drops a zone.
#![no_main]

use oomwatch::snapshot::zoneinfo;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut zones = zoneinfo::parse(&text);
    let nodes = text
        .lines()
        .filter(|l| l.trim().starts_with("Node "))
        .count();
    assert_eq!(zones.len(), nodes);
    zoneinfo::join_buddyinfo(&mut zones, &text);
    assert_eq!(zones.len(), nodes);
    for z in &zones {
        let _ = z.size();
    }
});
