//! `oomwatch run`: load the probes, log every OOM kill in one line and each
//! OOM episode (the kill joined with the kernel's report) in another, predict
//! every domain's victim periodically and when an OOM starts, serve
//! `/metrics`, and detach cleanly on SIGINT/SIGTERM.
//!
//! The loop is here; its parts: the prediction pass over a snapshot
//! ([`pass`]), episodes joining each kill with its report ([`episode`]),
//! OOM-start signals and the pairing of predictions with kills
//! ([`oomstart`]), the hot-probe gate ([`hot`]) and the kernel's own scans
//! assembled from the OOM-path events ([`kernel_scan`]).
//!
//! May use every part but `cli`. Nothing outside `cli` uses it.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use tokio::sync::mpsc::UnboundedReceiver;

pub mod episode;
pub mod hot;
pub mod kernel_scan;
pub mod on_forecast;
pub mod oomstart;
pub mod pass;

use crate::{
    daemon::{
        episode::{Episode, Joiner},
        hot::{Gate, HotProbes, Signals},
        kernel_scan::ScanAssembler,
        oomstart::{
            OomStart, OomStartWatch, PredictionOutcome, RecentPredictions, SeenKill,
            StartPrediction, StartTracker,
        },
    },
    ebpf::{Batch, KernelEvent, Probes, Victim},
    host::{cgroup, kernel_release},
    model::{KernelBehavior, KernelVersion, gfp::GfpTable, knobs::OomAction},
    replay::KmsgEvent,
    snapshot::{Snapshotter, Source, domain::limited_memcg},
    telemetry::{
        events::{EVENT_BACKLOG, EventLog},
        metrics::{DomainState, KnobsState, Metrics},
    },
};

/// Default address of `/metrics`. Prometheus' default-port allocation list
/// fills 9100-9999, so oomwatch sits outside it, on a port no well-known
/// exporter claims.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7707";

pub struct RunOptions {
    pub listen: SocketAddr,
    /// Prediction pass period.
    pub interval: Duration,
    /// Where each episode is also written as one JSON line (`-`: stdout).
    pub events: Option<std::path::PathBuf>,
    /// When that file is rotated.
    pub events_rotation: crate::telemetry::events::Rotation,
    /// Where prediction passes read the processes.
    pub source: crate::snapshot::Source,
    /// Turn on the kernel's run-time statistics for BPF programs (for the
    /// `oomwatch_program_run*` metrics).
    pub program_stats: bool,
    /// When the programs on the hot events run (`crate::daemon::hot`).
    pub hot_probes: crate::daemon::hot::HotProbes,
    /// How long they stay after the last sign of memory pressure.
    pub hot_hold: Duration,
    /// The command to run when a domain is forecast to OOM soon.
    pub on_forecast: Option<on_forecast::OnForecast>,
}

type AtStart = Arc<Mutex<StartTracker>>;

/// A second `oom:mark_victim` for a process within this long of its kill is
/// one of its threads entering the OOM killer while it dies: the kernel
/// kills only once per process (`__oom_kill_process` signals the whole
/// thread group and marks one thread), but `out_of_memory()` marks any
/// dying `current` (`task_will_free_mem(current)`) without a kill, a scan
/// or a count in `oom_kill`. Measured by `cargo xtask soak`: 85 and 100
/// such marks in 1 000 kills, all from the OOMs of a four-thread process.
/// A minute is far beyond any exit seen (the OOM reaper gives up on a
/// victim after about a second), and far below a pid's reuse.
const REMARK_WINDOW_NS: u64 = 60_000_000_000;
type Recent = Arc<Mutex<RecentPredictions>>;

/// Runs prediction passes every `interval`, at once when poked (after a
/// kill), and at once when a memcg's OOM starts, updating the per-domain
/// metrics and the self-check counters. After each pass the OOM-start
/// watcher is told which memcgs are domains now.
// Each argument is one of the daemon's shared parts; a struct around them
// would only rename them.
#[allow(clippy::too_many_arguments)]
fn spawn_predictor(
    metrics: Arc<Metrics>,
    interval: Duration,
    poke: Arc<tokio::sync::Notify>,
    watch: Option<OomStartWatch>,
    mut starts: UnboundedReceiver<OomStart>,
    at_start: AtStart,
    recent: Recent,
    snapper: crate::snapshot::Snapshotter,
    on_forecast: Option<on_forecast::OnForecast>,
) -> tokio::task::JoinHandle<()> {
    let snapper = Arc::new(std::sync::Mutex::new(snapper));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The rss counters the model scores with, once measurement decides
        // them (logged when that differs from the start's rules).
        let mut forecaster = crate::forecast::Forecaster::default();
        let mut hook = on_forecast.map(|cfg| on_forecast::Hook::new(cfg, Arc::clone(&metrics)));
        let mut rss_counters = crate::snapshot::proc::read_header(std::path::Path::new("/proc"))
            .ok()
            .map(|h| h.rules().rss_counters);
        loop {
            let mut started: Vec<OomStart> = tokio::select! {
                _ = tick.tick() => Vec::new(),
                _ = poke.notified() => Vec::new(),
                Some(s) = starts.recv() => vec![s],
            };
            // Signals that queued meanwhile share this pass: the first per
            // domain is the OOM's start.
            while let Ok(s) = starts.try_recv() {
                if !started.iter().any(|o| o.cgroup == s.cgroup) {
                    started.push(s);
                }
            }
            // An OOM's start: its own domain first, alone (the fastest pass,
            // the one that can come before the kill), then every domain.
            for s in std::mem::take(&mut started) {
                let snapper = Arc::clone(&snapper);
                let domain = s.cgroup.clone();
                let fast = tokio::task::spawn_blocking(move || {
                    let mut snapper = snapper.lock().unwrap_or_else(|e| e.into_inner());
                    crate::daemon::pass::refresh_one(
                        &mut snapper,
                        std::path::Path::new("/proc"),
                        3,
                        &domain,
                    )
                })
                .await;
                let snapshot_ns = crate::daemon::oomstart::boot_ns();
                match fast {
                    Ok(Ok(mut domains)) => {
                        crate::daemon::pass::forecast(&mut forecaster, &mut domains, snapshot_ns);
                        recent
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .record(&domain_victims(&domains), snapshot_ns);
                        metrics.oom_starts.inc();
                        log_start_prediction(&s, &domains, snapshot_ns, &at_start);
                    }
                    // The full pass below logs it instead.
                    Ok(Err(e)) => {
                        tracing::debug!(error = %format!("{e:#}"), "OOM-start pass of one domain failed");
                        started.push(s);
                    }
                    Err(_) => started.push(s),
                }
            }
            let snapper = Arc::clone(&snapper);
            let pass = tokio::task::spawn_blocking(move || {
                let mut snapper = snapper.lock().unwrap_or_else(|e| e.into_inner());
                crate::daemon::pass::refresh(&mut snapper, std::path::Path::new("/proc"), 3)
            })
            .await;
            // The snapshot is not atomic: it is only known to precede a kill
            // if the whole pass finished before it.
            let snapshot_ns = crate::daemon::oomstart::boot_ns();
            match pass {
                Ok(Ok((mut domains, check))) => {
                    crate::daemon::pass::forecast(&mut forecaster, &mut domains, snapshot_ns);
                    if let Some(h) = &mut hook {
                        h.consider(&domains);
                    }
                    recent
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(&domain_victims(&domains), snapshot_ns);
                    for s in &started {
                        metrics.oom_starts.inc();
                        log_start_prediction(s, &domains, snapshot_ns, &at_start);
                    }
                    if let Some(w) = &watch {
                        w.set_domains(domains.iter().filter_map(|d| d.cgroup.clone()).collect());
                    }
                    metrics.update_domains(&domain_states(&domains));
                    if let Some(host) = domains.iter().find(|d| d.cgroup.is_none()) {
                        metrics.update_knobs(&knobs_state(&host.knobs));
                    }
                    if let Some(now) = check.rss_counters.filter(|&r| Some(r) != rss_counters) {
                        tracing::info!(
                            "model rules: oom_badness reads rss as {now} ({})",
                            check.rss_counters_from
                        );
                        rss_counters = Some(now);
                    }
                    for t in &check.skipped {
                        metrics.count_skipped_task(t.reason.as_str());
                        tracing::debug!(tgid = t.tgid, reason = t.reason.as_str(), error = %t.error, "process left out of the pass");
                    }
                    metrics.badness_checks.inc_by(check.compared);
                    metrics
                        .badness_mismatches
                        .inc_by(check.mismatches.len() as u64);
                    for m in &check.mismatches {
                        tracing::warn!("model oom_score differs from the kernel's: {m}");
                    }
                    for e in &check.explained {
                        tracing::debug!("oom_score difference explained: {e}");
                    }
                }
                Ok(Err(e)) => {
                    metrics.prediction_errors.inc();
                    tracing::warn!(error = %format!("{e:#}"), "prediction pass failed");
                }
                Err(e) => {
                    metrics.prediction_errors.inc();
                    tracing::warn!(error = %e, "prediction pass panicked");
                }
            }
        }
    })
}

use crate::forecast::TimeToOom;

/// What a pass predicted per domain, as kills are judged against it.
fn domain_victims(
    domains: &[crate::daemon::pass::DomainSummary],
) -> Vec<crate::daemon::oomstart::DomainVictim> {
    domains
        .iter()
        .map(|d| crate::daemon::oomstart::DomainVictim {
            domain: d.cgroup.clone(),
            // A scan that stops at an OOM victim not yet gone kills nothing
            // now; the domain's next kill is the scan's choice once it has
            // gone: the first eligible task after it.
            victim: d
                .victim
                .as_ref()
                .map(|v| (v.tgid, v.comm.clone()))
                .or_else(|| {
                    let gone = d.waiting_for?;
                    d.top
                        .iter()
                        .find(|c| c.eligible && c.tgid != gone)
                        .map(|c| (c.tgid, c.comm.clone()))
                }),
            scanned: d.scanned.clone(),
            forecast: d.forecast.as_ref().and_then(|f| match f.time_to_oom {
                TimeToOom::In { seconds, .. } => Some((seconds, f.victim_at_oom.map(|v| v.0))),
                _ => None,
            }),
        })
        .collect()
}

/// The per-domain gauges' view of a pass.
fn domain_states(domains: &[crate::daemon::pass::DomainSummary]) -> Vec<DomainState> {
    domains
        .iter()
        .map(|d| DomainState {
            kind: d.kind,
            cgroup: d.cgroup.clone(),
            size_bytes: d.size_bytes,
            headroom_bytes: d.headroom_bytes,
            victim_points: d.victim.as_ref().map(|v| v.points),
            margin: d.margin,
            action: d.knobs.action.kind(),
            seconds_to_oom: d.forecast.as_ref().and_then(|f| match f.time_to_oom {
                TimeToOom::Unknown => None,
                TimeToOom::NotGrowing => Some((f64::INFINITY, None)),
                TimeToOom::In {
                    seconds,
                    error_seconds,
                } => Some((seconds, Some(error_seconds))),
            }),
            forecast_victim: d.forecast.as_ref().and_then(|f| {
                let (tgid, points) = f.victim_at_oom?;
                Some((points, d.victim.as_ref().is_some_and(|v| v.tgid == tgid)))
            }),
            events: d
                .events
                .as_ref()
                .map_or_else(Vec::new, |e| e.counters.clone()),
            under_oom: d.events.as_ref().and_then(|e| e.under_oom),
            pressure_us: d.events.as_ref().and_then(|e| e.pressure_us),
        })
        .collect()
}

/// The knob gauges' view of the host's knobs.
fn knobs_state(k: &crate::model::knobs::Knobs) -> KnobsState {
    let mut sysctls = vec![
        ("panic_on_oom", k.panic_on_oom.value),
        ("oom_kill_allocating_task", k.oom_kill_allocating_task.value),
        ("overcommit_memory", k.overcommit_memory.value),
        ("overcommit_ratio", k.overcommit_ratio.value),
        ("overcommit_kbytes", k.overcommit_kbytes.value),
        ("oom_dump_tasks", k.oom_dump_tasks.value),
    ];
    if let Some(w) = &k.watermarks {
        sysctls.push(("min_free_kbytes", w.min_free_kbytes));
        sysctls.push(("watermark_scale_factor", w.watermark_scale_factor));
    }
    KnobsState {
        sysctls,
        commit_limit_bytes: k.commit.as_ref().map(|c| c.commit_limit_bytes),
        commit_headroom_bytes: k.commit.as_ref().map(|c| c.headroom_bytes),
        zones: k
            .watermarks
            .iter()
            .flat_map(|w| &w.zones)
            .map(|z| (z.node, z.zone.clone(), z.headroom_bytes))
            .collect(),
    }
}

/// Logs what the pass after an OOM-start signal predicts for that domain,
/// and hands the prediction to the tracker that pairs it with the kill.
fn log_start_prediction(
    s: &OomStart,
    domains: &[crate::daemon::pass::DomainSummary],
    snapshot_ns: u64,
    at_start: &AtStart,
) {
    let d = domains.iter().find(|d| d.cgroup == s.cgroup);
    let name = crate::daemon::oomstart::domain_name(&s.cgroup);
    let victim = d.and_then(|d| d.victim.clone());
    let ms = crate::daemon::oomstart::boot_ns().saturating_sub(s.signal_ns) as f64 / 1e6;
    let action = d.map(|d| &d.knobs.action);
    let scan = match (&victim, d) {
        (Some(v), Some(d)) => format!(
            "pid={} comm={} points={}{}",
            v.tgid,
            v.comm,
            v.points,
            d.margin.map(|m| format!(" margin={m}")).unwrap_or_default()
        ),
        _ => "no eligible task".to_owned(),
    };
    match action {
        Some(OomAction::Panic { message }) => tracing::warn!(
            "oom start: {name}: vm.panic_on_oom={}: this OOM panics the machine (\"{message}\"); the scan would pick {scan} ({ms:.1} ms after the signal)",
            d.map_or(0, |d| d.knobs.panic_on_oom.value)
        ),
        Some(OomAction::KillAllocatingTask) => match &s.allocating {
            Some((tgid, comm)) => tracing::info!(
                "oom start: {name}: vm.oom_kill_allocating_task=1: the allocating task pid={tgid} comm={comm} is killed without a scan (if it is not killable: {scan}) ({ms:.1} ms after the signal)"
            ),
            None => tracing::info!(
                "oom start: {name}: vm.oom_kill_allocating_task=1: the allocating task is killed without a scan (if it is not killable: {scan}) ({ms:.1} ms after the signal)"
            ),
        },
        _ if victim.is_some() => tracing::info!(
            "oom start: {name}: predicted victim {scan} ({ms:.1} ms after the signal)"
        ),
        _ => match d.and_then(|d| d.waiting_for) {
            Some(pid) => tracing::info!(
                "oom start: {name}: no kill predicted: the scan stops at pid={pid}, an OOM victim not yet gone ({ms:.1} ms after the signal)"
            ),
            None => tracing::info!(
                "oom start: {name}: no eligible task predicted ({ms:.1} ms after the signal)"
            ),
        },
    }
    let paired = at_start
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .on_prediction(StartPrediction {
            domain: s.cgroup.clone(),
            signal_ns: s.signal_ns,
            snapshot_ns,
            held: d.is_some_and(|d| d.held),
            // Under vm.oom_kill_allocating_task the task that started the
            // OOM is the one expected to die.
            victim: match (action, &s.allocating) {
                (Some(OomAction::KillAllocatingTask), Some(a)) => Some(a.clone()),
                _ => victim.map(|v| (v.tgid, v.comm)),
            },
        });
    if let Some(line) = paired {
        tracing::info!("{line}");
    }
}

pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    // First of all: a SIGTERM that arrives while the probes load, or just
    // after /metrics answers, must stop the daemon cleanly, not kill it.
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut probes = load_probes(opts.program_stats)?;
    let kernel = kernel_release();
    let metrics = Arc::new(Metrics::new(&kernel).context("register metrics")?);
    let mut hot = HotSwitch::start(&mut probes, &metrics, &opts)?;
    // Before /metrics answers: loading the iterator takes a moment, and the
    // first scrape must already see every series.
    let snapper = open_snapshotter(opts.source, &metrics)?;
    let listener = bind(opts.listen).await?;
    let served = listener.local_addr().unwrap_or(opts.listen);
    let event_log = opts
        .events
        .as_deref()
        .map(|path| EventLog::open(path, opts.events_rotation, metrics.event_log_lost.clone()))
        .transpose()?;
    // /dev/kmsg is opened once, here: the last use of CAP_SYSLOG.
    let mut reports = follow_reports();
    // Before /metrics answers: from the first scrape on, the daemon holds
    // only what it still uses (every thread, the event log's writer too).
    drop_privileges(&probes, opts.hot_probes);
    // Before /metrics answers too: the kernel hooks' series and the
    // kernel-side counters (the reclaim histogram, program stats) exist
    // from the first scrape on, not from the first tick.
    log_kernel_hooks(&probes, &metrics);
    update_kernel_counters(&metrics, &probes, true, true);
    let (events_tx, _) = tokio::sync::broadcast::channel::<String>(EVENT_BACKLOG);
    let app = crate::telemetry::http::router(Arc::clone(&metrics), events_tx.clone());
    let server = tokio::spawn(crate::telemetry::http::serve(
        listener,
        app,
        Arc::clone(&metrics),
    ));

    let poke = Arc::new(tokio::sync::Notify::new());
    let (start_tx, start_rx) = tokio::sync::mpsc::unbounded_channel();
    let at_start: AtStart = Arc::default();
    let start_tx = crate::daemon::oomstart::StartSender {
        tx: start_tx,
        tracker: Arc::clone(&at_start),
    };
    let watch = watch_oom_starts(&start_tx);
    let recent: Recent = Arc::default();
    let predictor = spawn_predictor(
        Arc::clone(&metrics),
        opts.interval,
        Arc::clone(&poke),
        watch,
        start_rx,
        Arc::clone(&at_start),
        Arc::clone(&recent),
        snapper,
        opts.on_forecast.clone(),
    );
    let logger = probes.spawn_logger();
    let mut victims = probes.victims()?;
    // Kernel-side counters (program stats, reclaim histogram) are read this often.
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut dropped_seen = 0;
    tracing::info!(listen = %served, kernel = %kernel, "oomwatch running: watching oom:mark_victim, metrics at http://{served}/metrics");
    log_model_rules(std::path::Path::new("/proc"));
    let mut kills = Kills {
        gfp: running_gfp_table(&kernel),
        metrics: Arc::clone(&metrics),
        event_log,
        events_tx,
        recent,
        at_start,
        start_tx,
        joiner: Default::default(),
        scans: Default::default(),
        killed_at: Default::default(),
        killed_tgids: Default::default(),
        outcomes: Default::default(),
    };
    loop {
        tokio::select! {
            Some(ev) = reports.recv() => kills.on_kmsg(ev),
            batch = victims.next_batch() => {
                kills.on_batch(batch.context("read the eBPF ring buffer")?);
                poke.notify_one();
            }
            _ = tick.tick() => {}
            _ = sigterm.recv() => { tracing::info!("SIGTERM: detaching"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: detaching"); break; }
        }
        hot.look(&mut probes, &metrics, opts.program_stats);
        kills.expire();
        let dropped = victims.dropped();
        if dropped > dropped_seen {
            tracing::warn!(
                lost = dropped - dropped_seen,
                "OOM events lost: ring buffer full"
            );
            metrics.events_dropped.inc_by(dropped - dropped_seen);
            dropped_seen = dropped;
        }
    }
    // Reports already read are joined first; a kill still without one is
    // written as such, not lost with the process.
    while let Ok(ev) = reports.try_recv() {
        kills.on_kmsg(ev);
    }
    kills.finish();
    server.abort();
    predictor.abort();
    if let Some(l) = logger {
        l.abort();
    }
    drop(victims);
    drop(probes);
    Ok(())
}

/// Loads and attaches the probes; logs each optional part that is off.
fn load_probes(program_stats: bool) -> anyhow::Result<Probes> {
    let probes = Probes::load_with(&crate::ebpf::LoadOptions {
        no_run_stats: !program_stats,
        ..Default::default()
    })?;
    for d in &probes.degraded {
        tracing::warn!(part = d.part, reason = %d.reason, "running without an optional probe");
    }
    Ok(probes)
}

/// Drops every capability the daemon no longer uses now that everything
/// is loaded, attached and opened, from every thread, and says in one line
/// what it kept, dropped and could not drop. A failure is logged: the
/// daemon still works, with more than it needs.
fn drop_privileges(probes: &Probes, hot: HotProbes) {
    use crate::host::privilege::{AfterAttach, drop_after_attach};
    let late = hot == HotProbes::Pressure && probes.hot_use_tracepoints();
    let keep = AfterAttach::current(late).keep();
    let caps: Vec<_> = keep.iter().map(|k| k.cap).collect();
    let list = |c: &[caps::Capability]| {
        if c.is_empty() {
            "none".to_owned()
        } else {
            c.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    match drop_after_attach(&caps) {
        Ok(d) => tracing::info!(
            kept = %list(&d.kept),
            why = %if keep.is_empty() {
                "none is checked after attaching on this kernel".to_owned()
            } else {
                keep.iter().map(|k| format!("{}: {}", k.cap, k.why)).collect::<Vec<_>>().join("; ")
            },
            dropped = %list(&d.dropped),
            not_dropped_from_bounding = %list(&d.bounding_left),
            securebits = %match &d.securebits {
                Ok(()) => "noroot,no_cap_ambient_raise,keep_caps_locked (locked)".to_owned(),
                Err(why) => format!("unchanged ({why})"),
            },
            no_new_privs = true,
            threads = d.threads,
            "capabilities after attaching: kept only what the daemon still uses"
        ),
        Err(e) => tracing::warn!(
            error = %format!("{e:#}"),
            "capabilities after attaching: the drop failed, threads may hold more than the daemon uses"
        ),
    }
}

/// Opens the process snapshots' source and says which one it is.
fn open_snapshotter(source: Source, metrics: &Metrics) -> anyhow::Result<Snapshotter> {
    let snapper = Snapshotter::open(source)
        .map_err(|e| anyhow::anyhow!("--source bpf: {e}; use --source auto or proc"))?;
    match &snapper.in_use().fallback {
        Some(why) => tracing::warn!(
            "process snapshots from /proc: the BPF task iterator is unavailable: {why}"
        ),
        None => tracing::info!("process snapshots from {}", snapper.in_use()),
    }
    metrics.set_snapshot_source(snapper.in_use().source);
    Ok(snapper)
}

/// The listening socket for `/metrics` and `/events`.
async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("listen on {listen} for /metrics; pick a free address with --listen")
        })
}

/// Watches every memory cgroup for the start of its OOM (None where the
/// memory controller is absent or the watch cannot start).
fn watch_oom_starts(start_tx: &crate::daemon::oomstart::StartSender) -> Option<OomStartWatch> {
    let h = cgroup::memory_hierarchy()?;
    match OomStartWatch::spawn(h, start_tx.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "memcg OOMs will be seen at the kill only, not as they start");
            None
        }
    }
}

/// Logs and exports how each of the kernel's OOM functions is hooked.
fn log_kernel_hooks(probes: &Probes, metrics: &Metrics) {
    metrics.set_kernel_hooks(&probes.kernel_hooks);
    for h in &probes.kernel_hooks {
        match h.path {
            Some(path) => tracing::info!(
                "kernel hook: {} via {path}{}",
                h.function,
                h.reason
                    .as_deref()
                    .map_or_else(String::new, |r| format!(" ({r})"))
            ),
            None => tracing::info!(
                "kernel hook: {} off: {}",
                h.function,
                h.reason.as_deref().unwrap_or("?")
            ),
        }
    }
}

/// The kernel's own GFP flag list (tracefs) names the failures' masks; the
/// version only picks the fallback table.
fn running_gfp_table(kernel: &str) -> GfpTable {
    let version = kernel.parse().unwrap_or(KernelVersion {
        major: 6,
        minor: 18,
        sublevel: 0,
    });
    crate::host::gfp::live_gfp_table(&KernelBehavior::for_version(version))
}

/// The kernel's OOM reports, from `/dev/kmsg` on a thread of its own (none
/// when it cannot be read: episodes then lack the report).
fn follow_reports() -> UnboundedReceiver<KmsgEvent> {
    let (report_tx, reports) = tokio::sync::mpsc::unbounded_channel();
    if let Err(e) = crate::replay::follow_kmsg(report_tx) {
        tracing::warn!(error = %format!("{e:#}"), "OOM episodes will lack the kernel's report (trigger, constraint, task table)");
    }
    reports
}

/// When the hot programs run: the gate, and when the counters were last read.
struct HotSwitch {
    gate: Gate,
    since: Instant,
    programs_due: Instant,
}

impl HotSwitch {
    /// Detaches the hot programs unless the mode keeps them from the start,
    /// and says how they will run.
    fn start(probes: &mut Probes, metrics: &Metrics, opts: &RunOptions) -> anyhow::Result<Self> {
        let gate = Gate::new(opts.hot_probes, opts.hot_hold);
        let hot_programs = probes.hot_programs().join(", ");
        if !gate.attached() {
            probes
                .set_hot_attached(false)
                .context("detach the programs on the hot events")?;
        }
        match gate.mode() {
            HotProbes::Pressure => tracing::info!(
                "hot probes ({hot_programs}): attached while the host shows memory pressure, and for {} s after",
                opts.hot_hold.as_secs()
            ),
            mode => tracing::info!("hot probes ({hot_programs}): {mode}"),
        }
        metrics.set_hot_attached(gate.attached());
        let since = Instant::now();
        Ok(HotSwitch {
            gate,
            since,
            programs_due: since,
        })
    }

    /// After each wake-up: reads the kernel-side counters into the metrics
    /// and attaches or detaches the hot programs as the gate decides.
    fn look(&mut self, probes: &mut Probes, metrics: &Metrics, program_stats: bool) {
        let now = Instant::now();
        // Without --program-stats the kernel counts no runs (unless someone
        // turned the statistics on host-wide): a look every 30 s is enough.
        let programs = program_stats || now >= self.programs_due;
        if programs {
            self.programs_due = now + Duration::from_secs(30);
        }
        // The hot programs' counts only move while they are attached.
        let pressure_events =
            update_kernel_counters(metrics, probes, programs, self.gate.attached());
        if self.gate.attached() {
            metrics.add_hot_attached(now - self.since);
        }
        self.since = now;
        if let Some(switch) = self.gate.observe(now, Signals::read(pressure_events)) {
            match probes.set_hot_attached(switch.attach) {
                Ok(()) => tracing::info!(
                    "hot probes {}: {}",
                    if switch.attach {
                        "attached"
                    } else {
                        "detached"
                    },
                    switch.why
                ),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot switch the hot probes"),
            }
            metrics.set_hot_attached(self.gate.attached());
        }
    }
}

/// Kills as they travel from the ring buffer to their episode: the kernel's
/// scans, the reports waiting for their kill (and kills for their report),
/// each kill's prediction outcome, and where finished episodes go.
struct Kills {
    gfp: GfpTable,
    metrics: Arc<Metrics>,
    event_log: Option<EventLog>,
    events_tx: tokio::sync::broadcast::Sender<String>,
    recent: Recent,
    at_start: AtStart,
    start_tx: crate::daemon::oomstart::StartSender,
    joiner: Joiner,
    scans: ScanAssembler,
    /// Recent kills (pid -> boot ns), for the reaper's timings.
    killed_at: VecDeque<(u32, u64)>,
    /// Recent kills by process (tgid -> boot ns): a later mark of the same
    /// process is a dying thread, not a kill ([`REMARK_WINDOW_NS`]).
    killed_tgids: VecDeque<(u32, u64)>,
    /// Each kill's prediction outcome, until its episode is written.
    outcomes: HashMap<u32, PredictionOutcome>,
}

impl Kills {
    /// A report (or a `memory.oom.group` member) from `/dev/kmsg`.
    fn on_kmsg(&mut self, ev: KmsgEvent) {
        let ep = match ev {
            KmsgEvent::Report(r) => self.joiner.report(*r, &self.gfp),
            KmsgEvent::GroupMember { pid, victim } => self.joiner.group_member(pid, victim),
            KmsgEvent::Killed { pid } => {
                self.joiner.killed_line(pid);
                None
            }
            KmsgEvent::Lost(n) => {
                self.metrics.kmsg_lost.inc_by(n);
                tracing::warn!(
                    lost = n,
                    "kernel log records overwritten before oomwatch read them: an OOM report among them is lost"
                );
                None
            }
        };
        if let Some(ep) = ep {
            self.emit(ep);
        }
    }

    /// One batch off the ring buffer.
    fn on_batch(&mut self, batch: Batch) {
        for ev in &batch.kernel {
            self.on_kernel_event(ev);
        }
        for r in batch.reclaim_exhausted {
            tracing::info!(
                "reclaim exhausted: pid={} tgid={} comm={} order={}: the page allocator gave up reclaiming; a global OOM is imminent",
                r.pid,
                r.tgid,
                r.comm,
                r.order.map_or_else(|| "?".into(), |o| o.to_string())
            );
            self.start_tx.send(OomStart {
                cgroup: None,
                signal_ns: r.boot_ns,
                allocating: Some((r.tgid as i32, r.comm.clone())),
            });
        }
        for f in &batch.alloc_failures {
            // Counted exactly in oomwatch_page_alloc_failures_total;
            // these samples (at most 100/s per CPU) say who and how.
            tracing::debug!(
                "allocation failure: pid={} tgid={} comm={} order={} gfp={} migratetype={}",
                f.pid,
                f.tgid,
                f.comm,
                f.order,
                self.gfp.format(f.gfp_flags),
                f.migratetype
            );
        }
        for v in batch.victims {
            self.on_victim(v);
        }
    }

    /// An event of the kernel's own OOM functions or of the OOM reaper.
    fn on_kernel_event(&mut self, ev: &KernelEvent) {
        self.scans.push(ev);
        match ev {
            KernelEvent::Enter {
                pid,
                tgid,
                comm,
                order,
                gfp_mask,
                memcg,
                boot_ns,
                ..
            } => {
                tracing::debug!(
                    "oom entered: pid={pid} comm={comm} order={order} gfp={} {}",
                    self.gfp.format(u64::from(*gfp_mask)),
                    if *memcg { "memcg" } else { "host" }
                );
                if !*memcg {
                    self.start_tx.send(OomStart {
                        cgroup: None,
                        signal_ns: *boot_ns,
                        allocating: Some((*tgid as i32, comm.clone())),
                    });
                }
            }
            KernelEvent::Reaper {
                pid,
                stage,
                boot_ns,
            } => {
                self.metrics.reaper_events.with_label_values(&[stage]).inc();
                let after = self
                    .killed_at
                    .iter()
                    .rev()
                    .find(|(p, _)| p == pid)
                    .map_or_else(String::new, |(_, at)| {
                        format!(
                            " {:.1} ms after the kill",
                            boot_ns.saturating_sub(*at) as f64 / 1e6
                        )
                    });
                tracing::info!("oom reaper: pid={pid} {stage}{after}");
            }
            _ => {}
        }
    }

    /// A kill: judged against the predictions made before it, logged, and
    /// joined with its report when that is here. A mark of a process the
    /// kernel killed moments before is not a kill (see [`REMARK_WINDOW_NS`]).
    fn on_victim(&mut self, v: Victim) {
        let tgid = v.tgid.unwrap_or(v.pid);
        if let Some(&(_, at)) = self.killed_tgids.iter().rev().find(|(t, _)| *t == tgid)
            && v.boot_ns.saturating_sub(at) < REMARK_WINDOW_NS
        {
            self.metrics.oom_remarks.inc();
            tracing::debug!(
                "{}",
                crate::model::printable(&format!(
                    "oom mark without a kill: pid={} of tgid={tgid} ({}), {:.1} ms after that \
                     process's kill, entered the OOM killer dying (task_will_free_mem(current))",
                    v.pid,
                    v.comm.as_deref().unwrap_or("?"),
                    v.boot_ns.saturating_sub(at) as f64 / 1e6
                ))
            );
            return;
        }
        if self.killed_tgids.len() == 1024 {
            self.killed_tgids.pop_front();
        }
        self.killed_tgids.push_back((tgid, v.boot_ns));
        let seen = SeenKill {
            memcg: v.memcg.as_ref().map(|m| m.path.clone()),
            tgid: v.tgid.unwrap_or(v.pid) as i32,
            at_ns: v.boot_ns,
        };
        let limited = seen.memcg.as_deref().and_then(limited_memcg);
        let outcome = self.recent.lock().unwrap_or_else(|e| e.into_inner()).judge(
            &seen,
            limited.as_deref(),
            process_alive,
        );
        let verdict = self
            .at_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .on_kill(seen);
        self.metrics
            .predictions
            .with_label_values(&[outcome.outcome, outcome.miss])
            .inc();
        self.metrics
            .forecast_victims
            .with_label_values(&[outcome.forecast])
            .inc();
        if let Some(ms) = outcome
            .age_ms
            .filter(|_| outcome.outcome != "no_prediction")
        {
            self.metrics
                .prediction_lead
                .with_label_values(&[outcome.outcome])
                .observe(ms / 1e3);
        }
        // The victim's name is any 15 bytes: escaped, so that a name with a
        // newline or a terminal escape is no log line of its own.
        tracing::info!(
            "{}",
            crate::model::printable(&format!(
                "oom kill: {v}{verdict}; prediction {}: {}",
                outcome.outcome, outcome.reason
            ))
        );
        if self.outcomes.len() > 1024 {
            self.outcomes.clear();
        }
        self.outcomes.insert(v.pid, outcome);
        self.metrics.oom_kills.inc();
        if self.killed_at.len() == 256 {
            self.killed_at.pop_front();
        }
        self.killed_at.push_back((v.pid, v.boot_ns));
        if let Some(ep) = self.joiner.kill(v, &self.gfp) {
            self.emit(ep);
        }
    }

    /// At exit: every kill still waiting for its report gets its episode
    /// now (without the report), and the event log writes what it holds.
    fn finish(mut self) {
        for ep in self.joiner.drain(&self.gfp) {
            self.emit(ep);
        }
    }

    /// Kills whose report did not come in time, as episodes without one.
    fn expire(&mut self) {
        for ep in self.joiner.expired(&self.gfp) {
            self.emit(ep);
        }
    }

    /// Completes an episode (its prediction, the kernel's scan) and sends
    /// it to the log, the metrics, the event log and `/events`.
    fn emit(&mut self, mut ep: Episode) {
        ep.prediction = self.outcomes.remove(&ep.victim.pid);
        if ep.oom_group_of.is_none() {
            if let Some(scan) = self.scans.for_victim(ep.victim.pid, ep.victim.tgid) {
                ep.add_kernel_scan(&scan);
            }
        }
        if let Some(c) = ep.points_check.as_ref().filter(|c| !c.changed.is_empty()) {
            tracing::info!(
                "kernel points changed before the report for {} of {} tasks of the kill of pid={} (not the task in the OOM killer: it ran between the scan and the table): {:?}",
                c.changed.len(),
                c.compared,
                ep.victim.pid,
                c.changed
            );
        }
        if let Some(c) = ep.points_check.as_ref().filter(|c| !c.differ.is_empty()) {
            tracing::warn!(
                "kernel points differ from the model's for {} of {} tasks of the kill of pid={}: {:?}",
                c.differ.len(),
                c.compared,
                ep.victim.pid,
                c.differ
            );
        }
        self.metrics.record_episode(&ep.counts());
        match serde_json::to_string(&ep) {
            Ok(json) => {
                tracing::info!("oom episode: {json}");
                if let Some(log) = self.event_log.as_mut() {
                    log.write(&json);
                }
                // No watcher connected is not an error.
                let _ = self.events_tx.send(json);
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode an OOM episode"),
        }
    }
}

/// Whether process `tgid` is still there, and not only as a zombie.
fn process_alive(tgid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{tgid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| !matches!(state, 'Z' | 'X' | 'x'))
    })
}

/// One line naming the rules the model applies here and where the version
/// came from (a distribution's stable sublevel, or the release).
fn log_model_rules(proc_root: &std::path::Path) {
    match crate::snapshot::proc::read_header(proc_root) {
        Ok(h) => {
            let r = h.rules();
            tracing::info!(
                "model rules: Linux {} ({}); oom_badness reads rss as {} ({}); {} of {} known changes apply",
                r.version,
                r.version_from,
                r.rss_counters,
                r.rss_counters_from,
                r.changes.iter().filter(|c| c.applies).count(),
                r.changes.len()
            );
            if let Some(note) = r.note {
                tracing::warn!("{note}");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the kernel release: the model has no rules")
        }
    }
}

/// Reads the kernel-side counters (histograms, per-CPU counts; with
/// `programs` the program statistics, with `hot` the hot programs' counts)
/// into the metrics. Returns the reclaim stalls, compaction runs and retry
/// decisions counted so far (a sign of memory pressure), None when nothing
/// counts them.
fn update_kernel_counters(
    metrics: &Metrics,
    probes: &Probes,
    programs: bool,
    hot: bool,
) -> Option<u64> {
    if programs {
        metrics.update_programs(&probes.program_stats());
    }
    let reclaim = probes.reclaim_histogram();
    let retries = probes.retry_decisions();
    let stalls = reclaim.as_ref().map(|kinds| {
        kinds
            .iter()
            .map(|k| {
                k[..oomwatch_common::reclaim::BUCKETS as usize]
                    .iter()
                    .sum::<u64>()
            })
            .sum::<u64>()
    });
    let events = match (stalls, retries.as_ref()) {
        (None, None) => None,
        (s, r) => Some(s.unwrap_or(0) + r.map_or(0, |r| r.iter().sum())),
    };
    metrics.update_reclaim(reclaim);
    if hot {
        metrics.update_page_allocs(probes.page_alloc_counts());
    }
    metrics.update_faults(probes.fault_counts());
    metrics.update_retry_decisions(retries);
    events
}
