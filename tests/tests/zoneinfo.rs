//! The model's watermarks and lowmem_reserve against this kernel's own
//! `/proc/zoneinfo`, zone by zone, number by number.

use std::path::Path;

use oomwatch::{
    model::{
        KernelBehavior, KernelVersion,
        watermark::{ZoneSize, lowmem_reserve, setup_per_zone_wmarks},
    },
    snapshot::zoneinfo,
};

#[test]
fn model_reproduces_the_live_zoneinfo() {
    let (zones, sysctls) = zoneinfo::read(Path::new("/proc")).expect("read /proc/zoneinfo");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let kb = KernelBehavior::for_version(release.trim().parse::<KernelVersion>().unwrap());
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .unwrap()
        .unwrap() as u64;
    let mut nodes: Vec<u32> = zones.iter().map(|z| z.node).collect();
    nodes.dedup();
    let mut checked = 0;
    for node in nodes {
        let zs: Vec<_> = zones.iter().filter(|z| z.node == node).collect();
        let sizes: Vec<ZoneSize> = zs.iter().map(|z| z.size()).collect();
        let w = setup_per_zone_wmarks(
            &sizes,
            sysctls.min_free_kbytes,
            sysctls.watermark_scale_factor,
            page_size,
            &kb,
        );
        let r = lowmem_reserve(&sizes, &sysctls.lowmem_reserve_ratio, &kb);
        for ((z, w), r) in zs.iter().zip(&w).zip(&r) {
            assert_eq!(
                (w.min, w.low, w.high, w.promo),
                (z.min, z.low, z.high, z.promo),
                "node {node} zone {} watermarks (min_free_kbytes {}, wsf {})",
                z.name,
                sysctls.min_free_kbytes,
                sysctls.watermark_scale_factor
            );
            assert_eq!(&z.protection, r, "node {node} zone {} protection", z.name);
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} zones in /proc/zoneinfo");
    eprintln!("{checked} zones reproduced exactly");
}
