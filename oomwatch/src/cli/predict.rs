//! `oomwatch predict`: the model run on a live snapshot, for one OOM domain,
//! and the JSON contract of its `--json` output.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    daemon::pass::{constraint_of, select_in},
    forecast::{DomainForecast, TimeToOom},
    model::{
        KernelBehavior, Selection,
        behavior::Rules,
        explain::{CandidateJson, VictimJson, candidates, victim},
        knobs::{Knobs, OomAction, assess},
        printable,
        select::Domain,
    },
    snapshot::{
        Domains, Snapshotter, Source, SourceInUse, SystemSnapshot, Want, domain::OomDomain,
        proc::ProcSnapshot,
    },
};

/// A snapshot, one of its domains, and the model's selection in it.
pub struct Prediction {
    pub snap: ProcSnapshot,
    pub domain: OomDomain,
    pub kb: KernelBehavior,
    pub selection: Selection,
    /// Where the snapshot came from.
    pub source: SourceInUse,
    /// The OOM sysctls and what they mean for this domain's OOM.
    pub knobs: Knobs,
}

/// The snapshotter for `source` reading `proc_root`: a tree other than
/// `/proc` (a captured one) is read as files, so `auto` means `proc` there.
pub fn open_source(source: Source, proc_root: &Path) -> anyhow::Result<Snapshotter> {
    if proc_root == Path::new("/proc") {
        return Snapshotter::open(source).context("--source bpf");
    }
    if source == Source::Bpf {
        anyhow::bail!(
            "--source bpf reads the running kernel, not the tree at --proc-root {}",
            proc_root.display()
        );
    }
    Snapshotter::open(Source::Proc).context("--source proc")
}

/// Takes a snapshot of `proc_root` from `source` with the domain asked for
/// (the host, or memcg `cgroup`) and runs the victim scan.
pub fn prepare(
    cgroup: Option<&str>,
    source: Source,
    proc_root: &Path,
) -> anyhow::Result<Prediction> {
    let mut snapper = open_source(source, proc_root)?;
    let domains = match cgroup {
        Some(path) => Domains::Memcg(path.to_owned()),
        None => Domains::Host,
    };
    let snap = snapper.read_system(proc_root, &Want::domains(domains))?;
    predict_first(snap, snapper.in_use().clone()).context("the snapshot built no domain")
}

/// The prediction in the snapshot's first domain, with the knobs as they
/// bear on an OOM there; None when it has no domain.
pub fn predict_first(snap: SystemSnapshot, source: SourceInUse) -> Option<Prediction> {
    let knob_inputs = snap.knob_inputs();
    let SystemSnapshot {
        procs, mut domains, ..
    } = snap;
    if domains.is_empty() {
        return None;
    }
    let domain = domains.remove(0);
    let kb = procs.behavior();
    let knobs = assess(&knob_inputs, constraint_of(domain.kind), &kb);
    Some(predict_in(procs, domain, source, knobs))
}

/// Runs the model's scan over an already built domain.
pub fn predict_in(
    snap: ProcSnapshot,
    domain: OomDomain,
    source: SourceInUse,
    knobs: Knobs,
) -> Prediction {
    let kb = snap.behavior();
    let selection = select_in(&snap, &domain, &kb);
    Prediction {
        snap,
        domain,
        kb,
        selection,
        source,
        knobs,
    }
}

/// `domain` of the JSON contract.
#[derive(Debug, Clone, Serialize)]
pub struct DomainJson {
    pub kind: Domain,
    pub cgroup: Option<String>,
    pub totalpages: u64,
}

/// The `oomwatch predict --json` object. Field names and meanings are a
/// contract: add fields, never rename or remove them.
#[derive(Debug, Clone, Serialize)]
pub struct PredictReport {
    pub kernel: String,
    /// Where the processes were read: "bpf" (the task iterator) or "proc".
    pub source: &'static str,
    pub domain: DomainJson,
    /// The task the scan chooses: the one killed when `action.kind` is
    /// `kill_victim`; with `panic` nobody is killed, with
    /// `kill_allocating_task` only when the allocating task is not killable.
    pub victim: Option<VictimJson>,
    pub candidates: Vec<CandidateJson>,
    /// The rules the model applied to this kernel, and why.
    pub rules: Option<Rules>,
    /// What an OOM in this domain does: `kill_victim`, `panic` (with the
    /// kernel's `message`) or `kill_allocating_task`.
    pub action: OomAction,
    /// Each OOM sysctl's value and what it means here, the commit headroom,
    /// the host's zones' headroom to their min watermarks, and warnings.
    pub knobs: Knobs,
    /// With `--forecast` only (absent otherwise): when the domain runs out
    /// of the memory reclaim cannot free, and who dies then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ForecastJson>,
}

/// `forecast` of the JSON contract (`predict --forecast`): the trend of the
/// passes says when the domain's headroom above what reclaim cannot free
/// reaches 0, and each eligible task's points carried forward on its own
/// trend say whom the kernel would kill then.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastJson {
    /// `in` (an OOM ahead), `not_growing` (the headroom does not fall by
    /// more than its noise) or `unknown` (too few passes).
    pub state: &'static str,
    /// Seconds from the last pass to the OOM; null unless `in`.
    pub seconds_to_oom: Option<f64>,
    /// Give or take (two standard errors of the trend); null unless `in`,
    /// or when unbounded.
    pub error_seconds: Option<f64>,
    /// The task the scan would choose at the OOM; null unless `in`.
    pub victim_at_oom: Option<ForecastVictimJson>,
    /// The scan's victim at the last pass (`victim.tgid`).
    pub victim_now_tgid: Option<i32>,
    /// A faster grower overtakes today's victim before the OOM.
    pub overtaken: bool,
}

/// `forecast.victim_at_oom` of the JSON contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastVictimJson {
    pub tgid: i32,
    /// null when the task is no longer known.
    pub comm: Option<String>,
    /// Its points at the OOM, on its own trend.
    pub points: i64,
}

impl ForecastJson {
    /// The view of `forecast` (None: no pass had the domain) against the
    /// scan's victim now; `comm` names a task by its tgid.
    pub fn new(
        forecast: Option<&DomainForecast>,
        victim_now_tgid: Option<i32>,
        comm: impl Fn(i32) -> Option<String>,
    ) -> Self {
        let time = forecast.map_or(TimeToOom::Unknown, |f| f.time_to_oom);
        let (state, seconds_to_oom, error_seconds) = match time {
            TimeToOom::Unknown => ("unknown", None, None),
            TimeToOom::NotGrowing => ("not_growing", None, None),
            TimeToOom::In {
                seconds,
                error_seconds,
            } => (
                "in",
                Some(seconds),
                Some(error_seconds).filter(|e| e.is_finite()),
            ),
        };
        let victim_at_oom = forecast
            .and_then(|f| f.victim_at_oom)
            .filter(|_| state == "in")
            .map(|(tgid, points)| ForecastVictimJson {
                tgid,
                comm: comm(tgid),
                points,
            });
        let overtaken = match (&victim_at_oom, victim_now_tgid) {
            (Some(v), Some(now)) => v.tgid != now,
            _ => false,
        };
        ForecastJson {
            state,
            seconds_to_oom,
            error_seconds,
            victim_at_oom,
            victim_now_tgid,
            overtaken,
        }
    }
}

/// A time to OOM in words: `OOM in 12.3 s ± 1.0 s`, `not growing`, `too
/// few passes`.
pub fn time_to_oom_text(t: &TimeToOom) -> String {
    match *t {
        TimeToOom::Unknown => "too few passes".to_owned(),
        TimeToOom::NotGrowing => "not growing".to_owned(),
        TimeToOom::In {
            seconds,
            error_seconds,
        } if error_seconds.is_finite() => format!("OOM in {seconds:.1} s ± {error_seconds:.1} s"),
        TimeToOom::In { seconds, .. } => format!("OOM in {seconds:.1} s (error unbounded)"),
    }
}

/// A time to OOM in a table cell: `12 s ±1` (`4.2 s ±0.3` under 10 s,
/// minutes and hours beyond), `—` not growing, `…` too few passes.
pub fn oom_in_cell(t: Option<&TimeToOom>) -> String {
    match t {
        None | Some(TimeToOom::Unknown) => "…".to_owned(),
        Some(TimeToOom::NotGrowing) => "—".to_owned(),
        Some(&TimeToOom::In {
            seconds,
            error_seconds,
        }) => {
            let (unit, div) = match seconds {
                s if s < 100.0 => ("s", 1.0),
                s if s < 6000.0 => ("min", 60.0),
                _ => ("h", 3600.0),
            };
            let (v, e) = (seconds / div, error_seconds / div);
            let prec = usize::from(v < 10.0);
            if e.is_finite() {
                format!("{v:.prec$} {unit} ±{e:.prec$}")
            } else {
                format!("{v:.prec$} {unit} ±∞")
            }
        }
    }
}

/// The line naming who overtakes today's victim before the OOM: `then: pid
/// 123 (hog) overtakes, 812 points at the OOM`.
pub fn overtaken_line(v: &ForecastVictimJson) -> String {
    let who = match &v.comm {
        Some(c) => format!("pid {} ({})", v.tgid, printable(c)),
        None => format!("pid {}", v.tgid),
    };
    format!("then: {who} overtakes, {} points at the OOM", v.points)
}

/// `predict --forecast`'s block: the time to OOM, the victim now (`now`,
/// the report's) and the victim then.
pub fn forecast_lines(f: &Forecast, now: Option<&VictimJson>) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "forecast ({} passes over {:.1} s): {}\n",
        f.passes,
        f.span_s,
        time_to_oom_text(&f.time_to_oom)
    );
    let _ = match now {
        Some(v) => writeln!(
            s,
            "  victim now:        {} ({}) with {} points",
            printable(&v.comm),
            v.tgid,
            v.points
        ),
        None => writeln!(s, "  victim now:        none"),
    };
    if let Some(v) = &f.json.victim_at_oom {
        let who = match &v.comm {
            Some(c) => format!("{} ({})", printable(c), v.tgid),
            None => format!("pid {} (exited since)", v.tgid),
        };
        let _ = writeln!(
            s,
            "  victim at the OOM: {who} with {} points projected: {}",
            v.points,
            if f.json.overtaken {
                "a faster grower overtakes"
            } else {
                "the same task"
            }
        );
    }
    s
}

impl Prediction {
    /// The report, with at most `top` candidates.
    pub fn report(&self, top: Option<usize>) -> PredictReport {
        let mut r = report(
            &self.snap.kernel,
            &self.domain,
            &self.selection,
            top,
            &self.knobs,
        );
        r.source = self.source.source;
        r.rules = Some(self.snap.rules());
        r
    }
}

/// The `predict` report of `sel` in `domain`, with at most `top` candidates
/// (eligible ones by rank, then the ineligible ones).
pub fn report(
    kernel: &str,
    domain: &OomDomain,
    sel: &Selection,
    top: Option<usize>,
    knobs: &Knobs,
) -> PredictReport {
    {
        let candidates = candidates(sel, top);
        PredictReport {
            kernel: kernel.to_owned(),
            source: "proc",
            domain: DomainJson {
                kind: domain.kind,
                cgroup: domain.cgroup.clone(),
                totalpages: domain.totalpages,
            },
            victim: victim(sel),
            candidates,
            rules: None,
            action: knobs.action.clone(),
            knobs: knobs.clone(),
            forecast: None,
        }
    }
}

/// The passes of `predict --forecast`, one a second.
pub const FORECAST_PASS_NS: u64 = 1_000_000_000;

/// `--over`: seconds of passes for `predict --forecast`, 4 to 3600.
pub fn parse_over(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds, e.g. 10"))?;
    if !(4.0..=3600.0).contains(&v) {
        return Err(format!(
            "{v} s is out of range: use 4 to 3600 (a forecast needs five passes, one a \
             second, falling in order)"
        ));
    }
    Ok(v)
}

/// The forecast of the domain `predict --forecast` was asked about.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub json: ForecastJson,
    pub time_to_oom: TimeToOom,
    /// How many passes it was drawn through, over how many seconds.
    pub passes: usize,
    pub span_s: f64,
}

/// Runs a pass over every domain once a second for `over` seconds,
/// forecasting as the daemon does (progress on stderr), then builds the
/// prediction of the domain asked for (the host, or memcg `cgroup`) from
/// the last pass, and its forecast.
pub fn sample_forecast(
    cgroup: Option<&str>,
    source: Source,
    proc_root: &Path,
    over: f64,
) -> anyhow::Result<(Prediction, Forecast)> {
    use crate::daemon::{oomstart::boot_ns, pass};
    let mut snapper = open_source(source, proc_root)?;
    let mut forecaster = crate::forecast::Forecaster::default();
    let over_ns = (over * 1e9) as u64;
    let mut first_ns = None;
    let mut passes = 0usize;
    let (mut snap, domains, last_ns) = loop {
        let (snap, mut domains, _) = pass::refresh_keeping(&mut snapper, proc_root, 1)?;
        let at = boot_ns();
        pass::forecast(&mut forecaster, &mut domains, at);
        let first = *first_ns.get_or_insert(at);
        if passes == 0 {
            // A --cgroup that names no domain fails now, not after the wait.
            asked_domain(&snap, cgroup)?;
        }
        passes += 1;
        let elapsed = at - first;
        eprintln!(
            "sampling {}/{over} s…",
            (elapsed / 1_000_000_000).min(over as u64)
        );
        if elapsed >= over_ns {
            break (snap, domains, at);
        }
        // On a schedule from the first pass, so n passes span n − 1 s at
        // least however long each takes.
        let next = first + passes as u64 * FORECAST_PASS_NS;
        let wait = next.min(first + over_ns).saturating_sub(boot_ns());
        std::thread::sleep(std::time::Duration::from_nanos(wait));
    };
    let domain = asked_domain(&snap, cgroup)?;
    let forecast = domains
        .iter()
        .find(|d| d.cgroup == domain.cgroup)
        .and_then(|d| d.forecast.clone());
    snap.domains = vec![domain];
    let prediction =
        predict_first(snap, snapper.in_use().clone()).context("the snapshot built no domain")?;
    let victim_now = victim(&prediction.selection).map(|v| v.tgid);
    let json = ForecastJson::new(forecast.as_ref(), victim_now, |tgid| {
        prediction
            .snap
            .processes
            .iter()
            .find(|e| e.process.tgid == tgid)
            .map(|e| e.process.comm.clone())
    });
    let forecast = Forecast {
        json,
        time_to_oom: forecast.map_or(TimeToOom::Unknown, |f| f.time_to_oom),
        passes,
        span_s: (last_ns - first_ns.unwrap_or(last_ns)) as f64 / 1e9,
    };
    Ok((prediction, forecast))
}

/// The domain `predict` is asked about in a snapshot of every domain: the
/// host, or the memcg `cgroup` is charged against (it, or its nearest
/// ancestor with a limit).
fn asked_domain(snap: &SystemSnapshot, cgroup: Option<&str>) -> anyhow::Result<OomDomain> {
    match cgroup {
        Some(path) => {
            let asked = crate::snapshot::domain::memcg(&snap.procs, path, snap.sysctls.swappiness)?;
            // The pass's own domain carries its charge and events, read
            // with it; a memcg without a limit of its own is not one of
            // the pass's domains.
            Ok(snap
                .domains
                .iter()
                .find(|d| d.cgroup == asked.cgroup)
                .cloned()
                .unwrap_or_else(|| {
                    let mut asked = asked;
                    if let Some(h) = crate::host::cgroup::memory_hierarchy() {
                        asked.read_charge(&h, snap.procs.page_size);
                    }
                    asked
                }))
        }
        None => snap
            .domains
            .iter()
            .find(|d| d.cgroup.is_none())
            .cloned()
            .context("the snapshot has no host domain"),
    }
}

/// `oomwatch predict`; with `forecast` (`--over` seconds), after passes
/// over that time, with the forecast.
pub fn predict(
    cgroup: Option<&str>,
    top: Option<usize>,
    json: bool,
    source: Source,
    proc_root: &Path,
    forecast: Option<f64>,
) -> anyhow::Result<()> {
    let (p, f) = match forecast {
        Some(over) => {
            let (p, f) = sample_forecast(cgroup, source, proc_root, over)?;
            (p, Some(f))
        }
        None => (prepare(cgroup, source, proc_root)?, None),
    };
    let mut r = p.report(top);
    r.forecast = f.as_ref().map(|f| f.json.clone());
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let where_ = match &r.domain.cgroup {
        Some(c) => format!("memory cgroup {}", printable(c)),
        None => "the host (global OOM)".into(),
    };
    println!(
        "domain: {where_}, totalpages {}, Linux {}",
        r.domain.totalpages, r.kernel
    );
    if let Some(rules) = &r.rules {
        println!(
            "rules: Linux {} ({}); oom_badness reads rss as {}",
            rules.version, rules.version_from, rules.rss_counters
        );
        if let Some(note) = &rules.note {
            println!("note: {note}");
        }
    }
    println!("action: {}", action_line(&p.knobs));
    let label = victim_label(&p.knobs.action);
    match (&r.victim, p.selection.margin()) {
        (Some(v), Some(m)) => println!(
            "{label}: {} ({}) with {} points, {m} ahead of the next",
            printable(&v.comm),
            v.tgid,
            v.points
        ),
        (Some(v), None) => println!(
            "{label}: {} ({}) with {} points, the only eligible task",
            printable(&v.comm),
            v.tgid,
            v.points
        ),
        (None, _) => println!("{label}: none ({:?})", p.selection.outcome),
    }
    println!(
        "{:>8} {:>8} {:<16} {:>10} {:>6}  reason",
        "pid", "tgid", "comm", "points", "adj"
    );
    for c in &r.candidates {
        println!(
            "{:>8} {:>8} {:<16} {:>10} {:>6}  {}",
            c.pid,
            c.tgid,
            printable(&c.comm),
            c.points.map_or("-".into(), |p| p.to_string()),
            c.oom_score_adj,
            printable(&c.reason)
        );
    }
    print!("{}", knob_lines(&p.knobs));
    if let Some(f) = &f {
        print!("{}", forecast_lines(f, r.victim.as_ref()));
    }
    Ok(())
}

/// The `action:` line: what an OOM in the domain does.
pub fn action_line(k: &Knobs) -> String {
    match &k.action {
        OomAction::KillVictim => "the OOM killer kills the victim below (vm.panic_on_oom and \
             vm.oom_kill_allocating_task do not apply)"
            .to_owned(),
        OomAction::Panic { message } => format!(
            "PANIC: this OOM panics the machine (vm.panic_on_oom={}: \"{message}\"); no task \
             is killed",
            k.panic_on_oom.value
        ),
        OomAction::KillAllocatingTask => "the allocating task is killed without a scan \
             (vm.oom_kill_allocating_task=1): which task that is is known only when the OOM \
             starts; the victim below dies only if it is not killable (no mm, init, a kernel \
             thread, oom_score_adj -1000)"
            .to_owned(),
    }
}

/// How the scan's choice is named under `action`.
pub fn victim_label(action: &OomAction) -> &'static str {
    match action {
        OomAction::KillVictim => "victim",
        OomAction::Panic { .. } => "victim (were there no panic)",
        OomAction::KillAllocatingTask => "victim (if the allocating task is not killable)",
    }
}

/// The `knobs:` block: each sysctl with its meaning, the commit headroom,
/// the zones' headroom to their min watermarks, then the warnings.
pub fn knob_lines(k: &Knobs) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("knobs:\n");
    for (name, knob) in [
        ("panic_on_oom", &k.panic_on_oom),
        ("oom_kill_allocating_task", &k.oom_kill_allocating_task),
        ("overcommit_memory", &k.overcommit_memory),
        ("overcommit_ratio", &k.overcommit_ratio),
        ("overcommit_kbytes", &k.overcommit_kbytes),
        ("oom_dump_tasks", &k.oom_dump_tasks),
    ] {
        let _ = writeln!(
            s,
            "  {:<30} {}",
            format!("vm.{name}={}", knob.value),
            knob.effect
        );
    }
    if let Some(c) = &k.commit {
        let _ = writeln!(
            s,
            "  {:<30} CommitLimit {} − Committed_AS {} = {} ({})",
            "commit headroom",
            human_bytes(c.commit_limit_bytes as i64),
            human_bytes(c.committed_as_bytes as i64),
            human_bytes(c.headroom_bytes),
            if c.enforced {
                "enforced: vm.overcommit_memory=2"
            } else {
                "not enforced: vm.overcommit_memory is not 2"
            }
        );
    }
    if let Some(w) = &k.watermarks {
        let _ = writeln!(
            s,
            "  {:<30} {} (min_free_kbytes {}, watermark_scale_factor {}, lowmem_reserve_ratio {:?})",
            "min watermark headroom",
            human_bytes(w.headroom_bytes as i64),
            w.min_free_kbytes,
            w.watermark_scale_factor,
            w.lowmem_reserve_ratio
        );
        for z in &w.zones {
            let _ = writeln!(
                s,
                "    node {} {:<8} free {} − (min {} + lowmem_reserve {}) = {} pages ({})",
                z.node,
                z.zone,
                z.free_pages,
                z.min_pages,
                z.lowmem_reserve_pages,
                z.headroom_pages,
                human_bytes(z.headroom_bytes)
            );
        }
    }
    for w in &k.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

/// Bytes as a short human string (KiB … TiB), signed.
pub fn human_bytes(b: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b.unsigned_abs() as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    let sign = if b < 0 { "-" } else { "" };
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{sign}{v:.1} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_(seconds: f64, error_seconds: f64) -> TimeToOom {
        TimeToOom::In {
            seconds,
            error_seconds,
        }
    }

    #[test]
    fn time_to_oom_in_words_and_in_a_cell() {
        assert_eq!(time_to_oom_text(&in_(12.34, 1.0)), "OOM in 12.3 s ± 1.0 s");
        assert_eq!(time_to_oom_text(&TimeToOom::NotGrowing), "not growing");
        assert_eq!(time_to_oom_text(&TimeToOom::Unknown), "too few passes");
        assert_eq!(
            time_to_oom_text(&in_(3.0, f64::INFINITY)),
            "OOM in 3.0 s (error unbounded)"
        );
        assert_eq!(oom_in_cell(Some(&in_(12.3, 1.2))), "12 s ±1");
        assert_eq!(oom_in_cell(Some(&in_(4.24, 0.31))), "4.2 s ±0.3");
        assert_eq!(oom_in_cell(Some(&in_(750.0, 90.0))), "12 min ±2");
        assert_eq!(oom_in_cell(Some(&in_(36_000.0, 3_600.0))), "10 h ±1");
        assert_eq!(oom_in_cell(Some(&in_(20.0, f64::INFINITY))), "20 s ±∞");
        assert_eq!(oom_in_cell(Some(&TimeToOom::NotGrowing)), "—");
        assert_eq!(oom_in_cell(Some(&TimeToOom::Unknown)), "…");
        assert_eq!(oom_in_cell(None), "…");
    }

    fn forecast(time_to_oom: TimeToOom, victim_at_oom: Option<(i32, i64)>) -> DomainForecast {
        DomainForecast {
            time_to_oom,
            victim_at_oom,
        }
    }

    fn comm(tgid: i32) -> Option<String> {
        (tgid == 123).then(|| "hog".to_owned())
    }

    #[test]
    fn a_faster_grower_overtakes() {
        let f = ForecastJson::new(
            Some(&forecast(in_(12.0, 1.0), Some((123, 812)))),
            Some(77),
            comm,
        );
        assert_eq!(f.state, "in");
        assert_eq!((f.seconds_to_oom, f.error_seconds), (Some(12.0), Some(1.0)));
        assert!(f.overtaken);
        let v = f.victim_at_oom.as_ref().unwrap();
        assert_eq!(
            overtaken_line(v),
            "then: pid 123 (hog) overtakes, 812 points at the OOM"
        );
        let now = VictimJson {
            pid: 77,
            tgid: 77,
            comm: "big".into(),
            points: 900,
        };
        let sampled = |json: &ForecastJson, time_to_oom| Forecast {
            json: json.clone(),
            time_to_oom,
            passes: 11,
            span_s: 10.0,
        };
        assert_eq!(
            forecast_lines(&sampled(&f, in_(12.0, 1.0)), Some(&now)),
            "forecast (11 passes over 10.0 s): OOM in 12.0 s ± 1.0 s\n\
             \x20 victim now:        big (77) with 900 points\n\
             \x20 victim at the OOM: hog (123) with 812 points projected: a faster grower overtakes\n"
        );
        // A task no longer known is named by its pid alone.
        let gone = ForecastJson::new(
            Some(&forecast(in_(12.0, 1.0), Some((5, 40)))),
            Some(77),
            comm,
        );
        let v = gone.victim_at_oom.as_ref().unwrap();
        assert_eq!(v.comm, None);
        assert_eq!(
            overtaken_line(v),
            "then: pid 5 overtakes, 40 points at the OOM"
        );
    }

    #[test]
    fn the_same_victim_no_forecast_and_the_json() {
        let same = ForecastJson::new(
            Some(&forecast(in_(30.0, f64::INFINITY), Some((123, 500)))),
            Some(123),
            comm,
        );
        assert!(!same.overtaken);
        assert_eq!(same.error_seconds, None, "unbounded: null");
        assert_eq!(
            serde_json::to_value(&same).unwrap(),
            serde_json::json!({"state": "in", "seconds_to_oom": 30.0, "error_seconds": null,
                "victim_at_oom": {"tgid": 123, "comm": "hog", "points": 500},
                "victim_now_tgid": 123, "overtaken": false})
        );
        let flat = ForecastJson::new(
            Some(&forecast(TimeToOom::NotGrowing, None)),
            Some(123),
            comm,
        );
        assert_eq!(
            serde_json::to_value(&flat).unwrap(),
            serde_json::json!({"state": "not_growing", "seconds_to_oom": null,
                "error_seconds": null, "victim_at_oom": null, "victim_now_tgid": 123,
                "overtaken": false})
        );
        let none = ForecastJson::new(None, None, comm);
        assert_eq!((none.state, none.overtaken), ("unknown", false));
        let sampled = Forecast {
            json: flat,
            time_to_oom: TimeToOom::NotGrowing,
            passes: 3,
            span_s: 2.0,
        };
        assert_eq!(
            forecast_lines(&sampled, None),
            "forecast (3 passes over 2.0 s): not growing\n  victim now:        none\n"
        );
    }
}
