//! The test cgroup guard itself: a failing test must not leave its cgroup.

use oomwatch_tests::{Hog, MemcgGuard, require_root};

/// A test that panics with a live workload inside its cgroup: the guard kills
/// the workload and removes the cgroup during unwinding.
#[test]
fn cgroup_is_removed_when_a_test_panics() {
    require_root();
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let memcg = MemcgGuard::create(32 << 20).unwrap();
        seen = Some(memcg.dir.clone());
        let mut hog = Hog::start(env!("CARGO_BIN_EXE_oomwatch-hog"), &memcg, 4).unwrap();
        assert!(hog.wait_ready(), "a 4 MiB hog fits in 32 MiB");
        // Leak the hog handle so only the cgroup guard can clean it up.
        std::mem::forget(hog);
        panic!("simulated test failure");
    }));
    assert!(result.is_err());
    let dir = seen.expect("the cgroup was created");
    assert!(
        !dir.exists(),
        "{} is still there after the panic",
        dir.display()
    );
}
