//! Any bytes into `oomwatch replay`: finding the reports, parsing them,
//! replaying them with the model, the JSON and the text output. None of it
//! may panic, and each report found must keep its lines in order.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let reports = oomwatch::replay::replay_all(&text);
    let mut last = 0;
    for r in &reports {
        assert!(r.lines[0] <= r.lines[1], "{:?}", r.lines);
        assert!(r.lines[0] >= last, "reports out of order");
        last = r.lines[0];
        assert!(!r.reason.is_empty());
        serde_json::to_string(r).expect("a replay serializes");
    }
    let _ = oomwatch::replay::render(&reports, 10);
});
