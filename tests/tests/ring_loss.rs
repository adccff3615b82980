//! Ring-buffer losses are counted, not silent: with a one-page `EVENTS` ring
//! buffer and a consumer that does not read while a burst of real memcg OOM
//! kills happens, the kernel side must count every event it could not queue,
//! and what was queued plus what was dropped must be every kill.

use std::time::Duration;

use oomwatch::ebpf::{LoadOptions, Probes};
use oomwatch_tests::{Hog, MemcgGuard, killed_by_sigkill, require_root};

/// Kills in the burst. A one-page ring holds 39 victim records (96 bytes
/// each plus an 8-byte header), so 60 kills overflow it by about 21.
const KILLS: usize = 60;

#[test]
fn stalled_consumer_losses_are_counted() {
    require_root();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _enter = rt.enter();
    let mut probes = Probes::load_with(&LoadOptions {
        ring_bytes: Some(4096),
        ..LoadOptions::default()
    })
    .expect("load the probes with a one-page ring buffer");
    let mut stream = probes.victims().expect("open the ring buffer");

    // The burst: one hog at a time in an 8 MiB cgroup, each asking for
    // 16 MiB, so each is its cgroup's only task and its OOM victim.
    let memcg = MemcgGuard::create(8 << 20).expect("create an 8 MiB memory cgroup");
    let bin = env!("CARGO_BIN_EXE_oomwatch-hog");
    let mut ours = Vec::new();
    for _ in 0..KILLS {
        let mut hog = Hog::start(bin, &memcg, 16).unwrap();
        let status = hog
            .wait_exit(Duration::from_secs(20))
            .expect("a 16 MiB hog survived an 8 MiB limit");
        assert!(killed_by_sigkill(&status), "{status:?}");
        ours.push(hog.pid());
    }
    assert_eq!(memcg.oom_kills().unwrap(), KILLS as u64);

    // Only now read: whatever fitted is there, the rest was counted.
    let mut seen = 0;
    rt.block_on(async {
        while let Ok(Ok(batch)) =
            tokio::time::timeout(Duration::from_millis(500), stream.next_batch()).await
        {
            seen += batch
                .victims
                .iter()
                .filter(|v| ours.contains(&v.pid))
                .count();
        }
    });
    let dropped = stream.dropped();
    eprintln!("{KILLS} kills: {seen} queued, {dropped} dropped (one-page ring, stalled consumer)");
    assert!(
        dropped > 0,
        "a one-page ring took {KILLS} kills without loss"
    );
    assert!(seen > 0 && seen < KILLS, "{seen} of {KILLS} queued");
    // Other kills on the host in the meantime would only add drops.
    assert!(
        seen as u64 + dropped >= KILLS as u64,
        "{seen} queued + {dropped} dropped < {KILLS} kills: an event vanished uncounted"
    );
    drop(memcg);
}
