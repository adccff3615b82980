//! Zone watermarks and `lowmem_reserve` (`__setup_per_zone_wmarks()`,
//! `setup_per_zone_lowmem_reserve()`, `calculate_min_free_kbytes()` in
//! mm/page_alloc.c; kernel-oom.md §7.5). Reproduces `/proc/zoneinfo`'s
//! min/low/high/promo and "protection" exactly.

use serde::Serialize;

use super::behavior::{ChangeId, KernelBehavior};

/// What the watermark setup reads about one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneSize {
    /// `DMA`, `DMA32`, `Normal`, `HighMem`, `Movable`, `Device`.
    pub name: String,
    pub managed_pages: u64,
    /// `zone->watermark_boost` (5.0+).
    pub boost_pages: u64,
}

impl ZoneSize {
    /// `is_highmem(zone) || zone_idx(zone) == ZONE_MOVABLE`.
    fn highmem_or_movable(&self) -> bool {
        self.name == "HighMem" || self.name == "Movable"
    }
}

/// A zone's watermarks, in pages, as `/proc/zoneinfo` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Watermarks {
    pub min: u64,
    pub low: u64,
    pub high: u64,
    /// 6.1+.
    pub promo: Option<u64>,
}

/// Watermarks of every zone of one node, given `vm.min_free_kbytes` and
/// `vm.watermark_scale_factor`.
pub fn setup_per_zone_wmarks(
    zones: &[ZoneSize],
    min_free_kbytes: u64,
    watermark_scale_factor: u64,
    page_size: u64,
    kb: &KernelBehavior,
) -> Vec<Watermarks> {
    let pages_min = min_free_kbytes / (page_size / 1024).max(1);
    let lowmem_pages: u64 = zones
        .iter()
        .filter(|z| !z.highmem_or_movable())
        .map(|z| z.managed_pages)
        .sum();
    let boost_on = kb.has(ChangeId::WatermarkBoost);
    zones
        .iter()
        .map(|z| {
            // u64 arithmetic, truncated, as do_div does.
            let tmp = (pages_min * z.managed_pages)
                .checked_div(lowmem_pages)
                .unwrap_or(0);
            let min = if z.highmem_or_movable() {
                (z.managed_pages / 1024).clamp(32, 128)
            } else {
                tmp
            };
            let boost = if boost_on { z.boost_pages } else { 0 };
            let (low, high, promo) = if kb.has(ChangeId::WatermarkScaleFactor) {
                let d = (tmp / 4).max(z.managed_pages * watermark_scale_factor / 10_000);
                let promo = kb
                    .has(ChangeId::WatermarkPromo)
                    .then_some(min + 3 * d + boost);
                (min + d, min + 2 * d, promo)
            } else {
                (min + tmp / 4, min + tmp / 2, None)
            };
            Watermarks {
                min: min + boost,
                low: low + boost,
                high: high + boost,
                promo,
            }
        })
        .collect()
}

/// `lowmem_reserve[j]` of every zone i (the "protection" line): for j > i,
/// the managed pages of zones i+1 … j divided by `ratio[i]` (0 = none).
pub fn lowmem_reserve(zones: &[ZoneSize], ratios: &[u64], kb: &KernelBehavior) -> Vec<Vec<u64>> {
    let skip_empty = kb.has(ChangeId::LowmemReserveSkipsEmptyZone);
    (0..zones.len())
        .map(|i| {
            let ratio = ratios.get(i).copied().unwrap_or(0);
            let mut sum = 0;
            (0..zones.len())
                .map(|j| {
                    if j <= i {
                        return 0;
                    }
                    sum += zones[j].managed_pages;
                    if ratio == 0 || (skip_empty && zones[i].managed_pages == 0) {
                        0
                    } else {
                        sum / ratio
                    }
                })
                .collect()
        })
        .collect()
}

/// `calculate_min_free_kbytes()`: `int_sqrt(lowmem_kbytes * 16)`, clamped to
/// [128, 65536] (≤ 5.9) or [128, 262144] (5.10+). THP may raise the running
/// value above this (khugepaged's `set_recommended_min_free_kbytes`).
pub fn default_min_free_kbytes(lowmem_kbytes: u64, kb: &KernelBehavior) -> u64 {
    let cap = if kb.has(ChangeId::MinFreeKbytesCap262144) {
        262_144
    } else {
        65_536
    };
    (lowmem_kbytes * 16).isqrt().clamp(128, cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::version::v;

    fn zone(name: &str, managed: u64) -> ZoneSize {
        ZoneSize {
            name: name.into(),
            managed_pages: managed,
            boost_pages: 0,
        }
    }

    /// The lab machine of kernel-oom.md §10.2 (6.18.44, min_free_kbytes 67584,
    /// watermark_scale_factor 10).
    #[test]
    fn kernel_oom_md_lab_numbers() {
        let kb = KernelBehavior::for_version(v(6, 18, 44));
        let zones = [
            zone("DMA", 3_840),
            zone("DMA32", 772_808),
            zone("Normal", 1_933_312),
            zone("Movable", 0),
        ];
        let w = setup_per_zone_wmarks(&zones, 67_584, 10, 4096, &kb);
        let got: Vec<(u64, u64, u64, Option<u64>)> =
            w.iter().map(|w| (w.min, w.low, w.high, w.promo)).collect();
        assert_eq!(
            got,
            vec![
                (23, 28, 33, Some(38)),
                (4_818, 6_022, 7_226, Some(8_430)),
                (12_053, 15_066, 18_079, Some(21_092)),
                (32, 32, 32, Some(32)),
            ]
        );
        let r = lowmem_reserve(&zones, &[256, 256, 32, 0], &kb);
        assert_eq!(r[0], vec![0, 3_018, 10_570, 10_570]);
        assert_eq!(r[1][2], 7_552);
    }

    #[test]
    fn before_watermark_scale_factor() {
        let kb = KernelBehavior::for_version(v(4, 4, 155));
        let w = setup_per_zone_wmarks(&[zone("Normal", 1_000_000)], 4_000, 10, 4096, &kb);
        // pages_min 1000, tmp 1000: low = 1000 + 250, high = 1000 + 500.
        assert_eq!(
            (w[0].min, w[0].low, w[0].high, w[0].promo),
            (1_000, 1_250, 1_500, None)
        );
    }

    #[test]
    fn default_min_free_kbytes_caps() {
        // 64 GiB of lowmem: sqrt(2^26 kB × 16) = 32 768, under both caps.
        assert_eq!(
            default_min_free_kbytes(64 << 20, &KernelBehavior::for_version(v(5, 4, 0))),
            32_768
        );
        // 16 TiB: sqrt(2^34 × 16) = 524 288 → capped.
        let lowmem = 1 << 34;
        assert_eq!(
            default_min_free_kbytes(lowmem, &KernelBehavior::for_version(v(5, 4, 0))),
            65_536
        );
        assert_eq!(
            default_min_free_kbytes(lowmem, &KernelBehavior::for_version(v(5, 10, 0))),
            262_144
        );
        assert_eq!(
            default_min_free_kbytes(1_000, &KernelBehavior::for_version(v(6, 1, 0))),
            128
        );
    }
}
