//! `oomwatch top`: every OOM domain's next victim, refreshed.

use crate::{model::printable, snapshot::Source};

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
pub fn top_view(
    interval: f64,
    top: usize,
    once: bool,
    source: Source,
    proc_root: &std::path::Path,
) -> anyhow::Result<()> {
    use crate::cli::predict::{ForecastJson, oom_in_cell, overtaken_line};
    use crate::model::knobs::OomAction;
    use std::io::{IsTerminal as _, Write as _};
    let tty = std::io::stdout().is_terminal() && !once;
    let mut snapper = crate::cli::predict::open_source(source, proc_root)?;
    // One forecaster over the refreshes: each domain's time to OOM from
    // their trend (with --once, one pass: none).
    let mut forecaster = crate::forecast::Forecaster::default();
    loop {
        let (snap, mut domains, check) =
            crate::daemon::pass::refresh_keeping(&mut snapper, proc_root, top)?;
        crate::daemon::pass::forecast(
            &mut forecaster,
            &mut domains,
            crate::daemon::oomstart::boot_ns(),
        );
        let comm = |tgid: i32| {
            snap.procs
                .processes
                .iter()
                .find(|e| e.process.tgid == tgid)
                .map(|e| e.process.comm.clone())
        };
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
            "{:<36} {:>11} {:>11}  {:<28} {:>9} {:>8}\n",
            "DOMAIN", "HEADROOM", "OOM IN", "NEXT VICTIM", "POINTS", "MARGIN"
        ));
        for d in &domains {
            let name = match &d.cgroup {
                Some(c) => format!("memcg {}", printable(c)),
                None => "host".to_owned(),
            };
            let scan_victim = d.victim.as_ref().map_or("-".to_owned(), |v| {
                format!("{} ({})", printable(&v.comm), v.tgid)
            });
            let victim = match &d.knobs.action {
                OomAction::KillVictim => scan_victim.clone(),
                OomAction::Panic { .. } => "PANIC".to_owned(),
                OomAction::KillAllocatingTask => "the allocating task".to_owned(),
            };
            out.push_str(&format!(
                "{:<36} {:>11} {:>11}  {:<28} {:>9} {:>8}\n",
                name,
                d.headroom_bytes.map_or("-".into(), human_bytes),
                oom_in_cell(d.forecast.as_ref().map(|f| &f.time_to_oom)),
                victim,
                d.victim
                    .as_ref()
                    .map_or("-".into(), |v| v.points.to_string()),
                d.margin.map_or("-".into(), |m| m.to_string()),
            ));
            let f = ForecastJson::new(d.forecast.as_ref(), d.victim.as_ref().map(|v| v.tgid), comm);
            if let Some(v) = f.victim_at_oom.as_ref().filter(|_| f.overtaken) {
                out.push_str(&format!(
                    "{:<36} {:>11} {:>11}  {}\n",
                    "",
                    "",
                    "",
                    overtaken_line(v)
                ));
            }
            match &d.knobs.action {
                OomAction::KillVictim => {}
                OomAction::Panic { .. } => out.push_str(&format!(
                    "{:<36} {:>11} {:>11}  vm.panic_on_oom={}: this OOM panics the machine; the scan would pick {scan_victim}\n",
                    "", "", "", d.knobs.panic_on_oom.value
                )),
                OomAction::KillAllocatingTask => out.push_str(&format!(
                    "{:<36} {:>11} {:>11}  vm.oom_kill_allocating_task=1: the allocating task dies without a scan; if it is not killable: {scan_victim}\n",
                    "", "", ""
                )),
            }
            for (i, c) in d.top.iter().enumerate().skip(1).filter(|(_, c)| c.eligible) {
                out.push_str(&format!(
                    "{:<36} {:>11} {:>11}  {:<28} {:>9}\n",
                    "",
                    "",
                    format!("#{}", i + 1),
                    format!("{} ({})", printable(&c.comm), c.tgid),
                    c.points.map_or("-".into(), |p| p.to_string()),
                ));
            }
        }
        if let Some(host) = domains.iter().find(|d| d.cgroup.is_none()) {
            out.push_str(&knobs_summary(&host.knobs));
        }
        for m in &check.mismatches {
            out.push_str(&format!("\nmodel ≠ kernel: {}", printable(m)));
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

/// The host's knobs in a few lines: the sysctls, the commit headroom, the
/// headroom to the min watermarks, then the warnings.
fn knobs_summary(k: &crate::model::knobs::Knobs) -> String {
    use crate::cli::predict::human_bytes as signed;
    let mut s = format!(
        "\nknobs: vm.panic_on_oom={} vm.oom_kill_allocating_task={} vm.overcommit_memory={} \
         vm.oom_dump_tasks={}",
        k.panic_on_oom.value,
        k.oom_kill_allocating_task.value,
        k.overcommit_memory.value,
        k.oom_dump_tasks.value
    );
    if let Some(c) = &k.commit {
        s.push_str(&format!(
            "; commit headroom {} ({})",
            signed(c.headroom_bytes),
            if c.enforced {
                "enforced"
            } else {
                "not enforced"
            }
        ));
    }
    if let Some(w) = &k.watermarks {
        s.push_str(&format!(
            "; min watermark headroom {}",
            human_bytes(w.headroom_bytes)
        ));
    }
    s.push('\n');
    for w in &k.warnings {
        s.push_str(&format!("warning: {w}\n"));
    }
    s
}
