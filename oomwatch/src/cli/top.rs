//! `oomwatch top`: every OOM domain's next victim, refreshed.

use crate::snapshot::Source;

/// Bytes as a short human string (KiB … TiB).
fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// `oomwatch top`.
pub fn top_view(interval: f64, top: usize, once: bool, source: Source) -> anyhow::Result<()> {
    use std::io::{IsTerminal as _, Write as _};
    let tty = std::io::stdout().is_terminal() && !once;
    let mut snapper = crate::snapshot::Snapshotter::open(source)?;
    loop {
        let (domains, check) =
            crate::daemon::pass::refresh(&mut snapper, std::path::Path::new("/proc"), top)?;
        let mut out = String::new();
        if tty {
            out.push_str("\x1b[2J\x1b[H");
        }
        out.push_str(&format!(
            "oomwatch top: {} OOM domain(s), model = kernel for {}/{} tasks' oom_score{}\n\n",
            domains.len(),
            check.exact + check.explained.len() as u64,
            check.compared,
            if once {
                String::new()
            } else {
                format!(", every {interval} s (Ctrl-C quits)")
            }
        ));
        out.push_str(&format!(
            "{:<36} {:>11}  {:<28} {:>9} {:>8}\n",
            "DOMAIN", "HEADROOM", "NEXT VICTIM", "POINTS", "MARGIN"
        ));
        for d in &domains {
            let name = match &d.cgroup {
                Some(c) => format!("memcg {c}"),
                None => "host".to_owned(),
            };
            let victim = d
                .victim
                .as_ref()
                .map_or("-".to_owned(), |v| format!("{} ({})", v.comm, v.tgid));
            out.push_str(&format!(
                "{:<36} {:>11}  {:<28} {:>9} {:>8}\n",
                name,
                d.headroom_bytes.map_or("-".into(), human_bytes),
                victim,
                d.victim
                    .as_ref()
                    .map_or("-".into(), |v| v.points.to_string()),
                d.margin.map_or("-".into(), |m| m.to_string()),
            ));
            for (i, c) in d.top.iter().enumerate().skip(1).filter(|(_, c)| c.eligible) {
                out.push_str(&format!(
                    "{:<36} {:>11}  {:<28} {:>9}\n",
                    "",
                    format!("#{}", i + 1),
                    format!("{} ({})", c.comm, c.tgid),
                    c.points.map_or("-".into(), |p| p.to_string()),
                ));
            }
        }
        for m in &check.mismatches {
            out.push_str(&format!("\nmodel ≠ kernel: {m}"));
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        if once {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs_f64(interval));
    }
}
