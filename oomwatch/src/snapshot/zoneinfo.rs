//! `/proc/zoneinfo`: each zone's size and the watermarks the kernel set, and
//! the `vm` sysctls they derive from.

use std::path::Path;

use serde::Serialize;

/// One zone as `/proc/zoneinfo` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneInfo {
    pub node: u32,
    pub name: String,
    pub free_pages: u64,
    pub boost: u64,
    pub min: u64,
    pub low: u64,
    pub high: u64,
    /// 6.1+.
    pub promo: Option<u64>,
    pub spanned: u64,
    pub present: u64,
    pub managed: u64,
    /// `lowmem_reserve[]`, the "protection:" line.
    pub protection: Vec<u64>,
    /// nr_zone_inactive_file + nr_zone_active_file.
    pub file_lru: u64,
    /// nr_zone_inactive_anon + nr_zone_active_anon.
    pub anon_lru: u64,
    pub free_cma: u64,
    /// Free blocks per order, from `/proc/buddyinfo` (empty until joined).
    pub free_blocks: Vec<u64>,
}

impl ZoneInfo {
    /// What the watermark setup reads about this zone.
    pub fn size(&self) -> crate::model::watermark::ZoneSize {
        crate::model::watermark::ZoneSize {
            name: self.name.clone(),
            managed_pages: self.managed,
            boost_pages: self.boost,
        }
    }
}

/// Parses `/proc/zoneinfo` text. Lines it does not use are ignored.
pub fn parse(text: &str) -> Vec<ZoneInfo> {
    let mut zones: Vec<ZoneInfo> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Node ") {
            // "Node 0, zone      DMA"
            let mut parts = rest.split(',');
            let node = parts
                .next()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            let name = parts
                .next()
                .and_then(|z| z.trim().strip_prefix("zone"))
                .map(|z| z.trim().to_owned())
                .unwrap_or_default();
            zones.push(ZoneInfo {
                node,
                name,
                free_pages: 0,
                boost: 0,
                min: 0,
                low: 0,
                high: 0,
                promo: None,
                spanned: 0,
                present: 0,
                managed: 0,
                protection: Vec::new(),
                file_lru: 0,
                anon_lru: 0,
                free_cma: 0,
                free_blocks: Vec::new(),
            });
            continue;
        }
        let Some(z) = zones.last_mut() else { continue };
        if let Some(list) = t.strip_prefix("protection:") {
            z.protection = list
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .filter_map(|v| v.trim().parse().ok())
                .collect();
            continue;
        }
        let mut words = t.split_whitespace();
        let (key, value) = match (words.next(), words.next(), words.next()) {
            (Some("pages"), Some("free"), Some(v)) => ("free", v),
            (Some(k), Some(v), None) => (k, v),
            _ => continue,
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "free" => z.free_pages = value,
            "boost" => z.boost = value,
            "min" => z.min = value,
            "low" => z.low = value,
            "high" => z.high = value,
            "promo" => z.promo = Some(value),
            "spanned" => z.spanned = value,
            "present" => z.present = value,
            "managed" => z.managed = value,
            // Saturating: two counters no kernel could hold must not panic.
            "nr_zone_inactive_file" | "nr_zone_active_file" => {
                z.file_lru = z.file_lru.saturating_add(value);
            }
            "nr_zone_inactive_anon" | "nr_zone_active_anon" => {
                z.anon_lru = z.anon_lru.saturating_add(value);
            }
            "nr_free_cma" => z.free_cma = value,
            _ => {}
        }
    }
    zones
}

/// Joins `/proc/buddyinfo` ("Node 0, zone   Normal  21758 8281 …") into
/// the zones' `free_blocks`.
pub fn join_buddyinfo(zones: &mut [ZoneInfo], text: &str) {
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("Node ") else {
            continue;
        };
        let mut parts = rest.split(',');
        let node: u32 = parts
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let Some(tail) = parts.next().and_then(|t| t.trim().strip_prefix("zone")) else {
            continue;
        };
        let mut words = tail.split_whitespace();
        let Some(name) = words.next() else { continue };
        let counts: Vec<u64> = words.filter_map(|w| w.parse().ok()).collect();
        if let Some(z) = zones.iter_mut().find(|z| z.node == node && z.name == name) {
            z.free_blocks = counts;
        }
    }
}

/// The sysctls the watermarks derive from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatermarkSysctls {
    pub min_free_kbytes: u64,
    pub watermark_scale_factor: u64,
    pub lowmem_reserve_ratio: Vec<u64>,
}

/// The zones of `/proc/zoneinfo` under `proc_root`, with `/proc/buddyinfo`
/// joined; empty when the file cannot be read (the knobs then say so).
pub fn read_zones(proc_root: &Path) -> Vec<ZoneInfo> {
    let Ok(text) = std::fs::read_to_string(proc_root.join("zoneinfo")) else {
        return Vec::new();
    };
    let mut zones = parse(&text);
    if let Ok(buddy) = std::fs::read_to_string(proc_root.join("buddyinfo")) {
        join_buddyinfo(&mut zones, &buddy);
    }
    zones
}

/// Reads `/proc/zoneinfo` and the watermark sysctls under `proc_root`.
pub fn read(proc_root: &Path) -> std::io::Result<(Vec<ZoneInfo>, WatermarkSysctls)> {
    let text = std::fs::read_to_string(proc_root.join("zoneinfo"))?;
    let num = |name: &str| -> std::io::Result<u64> {
        let path = proc_root.join("sys/vm").join(name);
        let s = std::fs::read_to_string(&path)?;
        s.trim().parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not a number: {s:?}", path.display()),
            )
        })
    };
    let ratios = std::fs::read_to_string(proc_root.join("sys/vm/lowmem_reserve_ratio"))?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let mut zones = parse(&text);
    if let Ok(buddy) = std::fs::read_to_string(proc_root.join("buddyinfo")) {
        join_buddyinfo(&mut zones, &buddy);
    }
    Ok((
        zones,
        WatermarkSysctls {
            min_free_kbytes: num("min_free_kbytes")?,
            watermark_scale_factor: num("watermark_scale_factor")?,
            lowmem_reserve_ratio: ratios,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        KernelBehavior,
        version::v,
        watermark::{ZoneSize, lowmem_reserve, setup_per_zone_wmarks},
    };

    /// The zones of the lab's 6.18.44 x86_64 guest (2026-11-25), trimmed to
    /// the lines the parser reads plus a few it must skip.
    const LAB_6_18: &str = "Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 1234
      pgpromote_success 0
  pages free     3840
        boost    0
        min      30
        low      37
        high     44
        promo    51
        spanned  4095
        present  3998
        managed  3840
        cma      0
        protection: (0, 3018, 8266, 8266, 8266)
      nr_free_pages 3840
      nr_zone_inactive_anon 7
      nr_zone_inactive_file 5
      nr_zone_active_file 6
Node 0, zone    DMA32
  pages free     772808
        boost    0
        min      6158
        low      7697
        high     9236
        promo    10775
        spanned  1044480
        present  782336
        managed  772808
        protection: (0, 0, 5248, 5248, 5248)
Node 0, zone   Normal
  pages free     628419
        boost    0
        min      10706
        low      13382
        high     16058
        promo    18734
        spanned  5505024
        present  5505024
        managed  1343488
        protection: (0, 0, 0, 0, 0)
Node 0, zone  Movable
  pages free     0
        boost    0
        min      32
        low      32
        high     32
        promo    32
        spanned  0
        present  0
        managed  0
        protection: (0, 0, 0, 0, 0)
Node 0, zone   Device
  pages free     0
        boost    0
        min      0
        low      0
        high     0
        promo    0
        spanned  0
        present  0
        managed  0
        protection: (0, 0, 0, 0, 0)
";

    /// Two LRU counters whose sum no kernel could hold saturate instead
    /// of panicking on the overflow.
    #[test]
    fn lru_sums_saturate() {
        let text = format!(
            "Node 0, zone   Normal\n  nr_zone_inactive_file {0}\n  nr_zone_active_file {0}\n\
             nr_zone_inactive_anon 1\n  nr_zone_active_anon 2\n",
            u64::MAX
        );
        let zones = parse(&text);
        assert_eq!(zones.len(), 1);
        assert_eq!((zones[0].file_lru, zones[0].anon_lru), (u64::MAX, 3));
    }

    #[test]
    fn buddyinfo_and_lru_counters() {
        let mut zones = parse(LAB_6_18);
        // The node's nr_inactive_anon 1234 is not the zone's.
        assert_eq!((zones[0].anon_lru, zones[0].file_lru), (7, 11));
        join_buddyinfo(
            &mut zones,
            "Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3\nNode 0, zone   Normal  21758   8281   3120   1281    655    400    203    167    249    216    370\n",
        );
        assert_eq!(zones[0].free_blocks[10], 3);
        assert_eq!(zones[2].free_blocks[0], 21_758);
        assert!(zones[1].free_blocks.is_empty());
    }

    #[test]
    fn parses_and_the_model_reproduces_it() {
        let zones = parse(LAB_6_18);
        assert_eq!(zones.len(), 5);
        assert_eq!(zones[1].name, "DMA32");
        assert_eq!(zones[2].managed, 1_343_488);
        assert_eq!(zones[0].protection, vec![0, 3018, 8266, 8266, 8266]);
        let kb = KernelBehavior::for_version(v(6, 18, 44));
        let sizes: Vec<ZoneSize> = zones.iter().map(ZoneInfo::size).collect();
        let w = setup_per_zone_wmarks(&sizes, 67_584, 10, 4096, &kb);
        for (z, w) in zones.iter().zip(&w) {
            assert_eq!(
                (w.min, w.low, w.high, w.promo),
                (z.min, z.low, z.high, z.promo),
                "{}",
                z.name
            );
        }
        let r = lowmem_reserve(&sizes, &[256, 256, 32, 0, 0], &kb);
        for (z, r) in zones.iter().zip(&r) {
            assert_eq!(&z.protection, r, "{}", z.name);
        }
    }
}
