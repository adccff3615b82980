//! Test workload: `oomwatch-hog MIB` waits for a line on stdin (so the test can
//! move it into a memory cgroup first), then allocates and touches MIB MiB of
//! anonymous memory, prints `ready`, and sleeps until killed.
use std::io::{BufRead as _, Write as _};

fn main() {
    let mib: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(m)) => m,
        _ => {
            eprintln!("usage: oomwatch-hog MIB");
            std::process::exit(2);
        }
    };
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        std::process::exit(3);
    }
    let len = mib << 20;
    let mut buf = vec![0u8; len];
    // Touch every 4 KiB so each page is faulted in and charged.
    for i in (0..len).step_by(4096) {
        buf[i] = 1;
    }
    std::hint::black_box(&buf);
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
