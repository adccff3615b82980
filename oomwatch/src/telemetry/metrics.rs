//! The Prometheus metrics oomwatch exports. Every metric is registered here and
//! nowhere else, so the catalogue below is complete; label sets are bounded (no
//! pid, comm or cgroup path labels on long-lived series).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use prometheus::{
    CounterVec, Encoder as _, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Metric names, the single list the daemon, the docs and the tests share.
pub mod names {
    pub const OOM_KILLS: &str = "oomwatch_oom_kills_total";
    pub const OOM_REMARKS: &str = "oomwatch_oom_marks_without_kill_total";
    pub const EVENTS_DROPPED: &str = "oomwatch_events_dropped_total";
    pub const EVENT_LOG_LOST: &str = "oomwatch_event_log_lines_lost_total";
    pub const KMSG_LOST: &str = "oomwatch_kmsg_records_lost_total";
    pub const BUILD_INFO: &str = "oomwatch_build_info";
    pub const DOMAIN_HEADROOM: &str = "oomwatch_domain_headroom_bytes";
    pub const DOMAIN_SIZE: &str = "oomwatch_domain_size_bytes";
    pub const DOMAIN_VICTIM_POINTS: &str = "oomwatch_domain_victim_points";
    pub const DOMAIN_VICTIM_MARGIN: &str = "oomwatch_domain_victim_margin_points";
    pub const BADNESS_CHECKS: &str = "oomwatch_badness_checks_total";
    pub const BADNESS_MISMATCHES: &str = "oomwatch_badness_mismatches_total";
    pub const PREDICTION_ERRORS: &str = "oomwatch_prediction_errors_total";
    pub const SNAPSHOT_TASKS_SKIPPED: &str = "oomwatch_snapshot_tasks_skipped_total";
    pub const OOM_STARTS: &str = "oomwatch_oom_starts_total";
    pub const RECLAIM_STALL: &str = "oomwatch_reclaim_stall_seconds";
    pub const KILLS_BY_CONSTRAINT: &str = "oomwatch_oom_kills_by_constraint_total";
    pub const REPORT_REPLAYS: &str = "oomwatch_report_replays_total";
    pub const PAGE_ALLOCS: &str = "oomwatch_page_allocs_total";
    pub const PAGE_ALLOC_FAILURES: &str = "oomwatch_page_alloc_failures_total";
    pub const PROGRAM_RUNS: &str = "oomwatch_program_runs_total";
    pub const PROGRAM_RUN_SECONDS: &str = "oomwatch_program_run_seconds_total";
    pub const PROGRAM_INSTRUCTIONS: &str = "oomwatch_program_verified_instructions";
    pub const KERNEL_POINTS_CHECKS: &str = "oomwatch_kernel_points_checks_total";
    pub const USER_PAGE_FAULTS: &str = "oomwatch_user_page_faults_total";
    pub const PAGE_FAULT_OOMS: &str = "oomwatch_page_fault_ooms_total";
    pub const RETRY_DECISIONS: &str = "oomwatch_slowpath_retry_decisions_total";
    pub const REAPER_EVENTS: &str = "oomwatch_oom_reaper_events_total";
    pub const KERNEL_HOOKS: &str = "oomwatch_kernel_hook_info";
    pub const SNAPSHOT_SOURCE: &str = "oomwatch_snapshot_source_info";
    pub const PREDICTIONS: &str = "oomwatch_predictions_total";
    pub const PREDICTION_LEAD: &str = "oomwatch_prediction_lead_seconds";
    pub const DOMAIN_CONTAINER: &str = "oomwatch_domain_container_info";
    pub const HOT_PROBES_ATTACHED: &str = "oomwatch_hot_probes_attached";
    pub const HOT_PROBES_ATTACHED_SECONDS: &str = "oomwatch_hot_probes_attached_seconds_total";
    pub const VM_SYSCTL: &str = "oomwatch_vm_sysctl";
    pub const DOMAIN_OOM_ACTION: &str = "oomwatch_domain_oom_action_info";
    pub const COMMIT_LIMIT: &str = "oomwatch_commit_limit_bytes";
    pub const COMMIT_HEADROOM: &str = "oomwatch_commit_headroom_bytes";
    pub const ZONE_MIN_WATERMARK_HEADROOM: &str = "oomwatch_zone_min_watermark_headroom_bytes";
    pub const DOMAIN_MEMORY_EVENTS: &str = "oomwatch_domain_memory_events_total";
    pub const DOMAIN_SECONDS_TO_OOM: &str = "oomwatch_domain_seconds_to_oom";
    pub const ON_FORECAST_RUNS: &str = "oomwatch_on_forecast_runs_total";
    pub const FORECAST_VICTIMS: &str = "oomwatch_forecast_victims_total";
    pub const DOMAIN_SECONDS_TO_OOM_ERROR: &str = "oomwatch_domain_seconds_to_oom_error";
    pub const DOMAIN_FORECAST_VICTIM_POINTS: &str = "oomwatch_domain_forecast_victim_points";
    pub const DOMAIN_FORECAST_VICTIM_IS_VICTIM_NOW: &str =
        "oomwatch_domain_forecast_victim_is_victim_now";
    pub const DOMAIN_UNDER_OOM: &str = "oomwatch_domain_under_oom";
    pub const DOMAIN_MEMORY_PRESSURE: &str = "oomwatch_domain_memory_pressure_seconds_total";
    pub const HTTP_CONNECTIONS: &str = "oomwatch_http_connections";
    pub const HTTP_EVENT_READERS: &str = "oomwatch_http_event_readers";
    pub const HTTP_REFUSALS: &str = "oomwatch_http_refusals_total";
    /// Every name above.
    pub const ALL: &[&str] = &[
        OOM_KILLS,
        OOM_REMARKS,
        EVENTS_DROPPED,
        EVENT_LOG_LOST,
        KMSG_LOST,
        BUILD_INFO,
        DOMAIN_HEADROOM,
        DOMAIN_SIZE,
        DOMAIN_VICTIM_POINTS,
        DOMAIN_VICTIM_MARGIN,
        BADNESS_CHECKS,
        BADNESS_MISMATCHES,
        PREDICTION_ERRORS,
        SNAPSHOT_TASKS_SKIPPED,
        OOM_STARTS,
        RECLAIM_STALL,
        KILLS_BY_CONSTRAINT,
        REPORT_REPLAYS,
        PAGE_ALLOCS,
        PAGE_ALLOC_FAILURES,
        PROGRAM_RUNS,
        PROGRAM_RUN_SECONDS,
        PROGRAM_INSTRUCTIONS,
        KERNEL_POINTS_CHECKS,
        USER_PAGE_FAULTS,
        PAGE_FAULT_OOMS,
        RETRY_DECISIONS,
        REAPER_EVENTS,
        KERNEL_HOOKS,
        SNAPSHOT_SOURCE,
        PREDICTIONS,
        PREDICTION_LEAD,
        DOMAIN_CONTAINER,
        HOT_PROBES_ATTACHED,
        HOT_PROBES_ATTACHED_SECONDS,
        VM_SYSCTL,
        DOMAIN_OOM_ACTION,
        COMMIT_LIMIT,
        COMMIT_HEADROOM,
        ZONE_MIN_WATERMARK_HEADROOM,
        DOMAIN_MEMORY_EVENTS,
        DOMAIN_SECONDS_TO_OOM,
        ON_FORECAST_RUNS,
        FORECAST_VICTIMS,
        DOMAIN_SECONDS_TO_OOM_ERROR,
        DOMAIN_FORECAST_VICTIM_POINTS,
        DOMAIN_FORECAST_VICTIM_IS_VICTIM_NOW,
        DOMAIN_UNDER_OOM,
        DOMAIN_MEMORY_PRESSURE,
        HTTP_CONNECTIONS,
        HTTP_EVENT_READERS,
        HTTP_REFUSALS,
    ];
}

/// Why the HTTP server refused a connection or a request, or cut one off:
/// the `reason` label of `oomwatch_http_refusals_total`, a bounded set (the
/// limits themselves are in `telemetry/http.rs`).
pub mod http_refusal {
    /// A new connection closed at once: every connection slot was serving
    /// a request.
    pub const CONNECTION_CAP: &str = "connection_cap";
    /// An open connection with no request in flight closed to make room
    /// for a new one, the oldest first.
    pub const EVICTED: &str = "evicted";
    /// A request head not complete within the header-read timeout.
    pub const HEADER_TIMEOUT: &str = "header_timeout";
    /// A kept-alive connection that sent nothing more within the timeout.
    pub const IDLE_TIMEOUT: &str = "idle_timeout";
    /// A request head over the size limit (answered 431).
    pub const TOO_LARGE: &str = "too_large";
    /// A request with a body (answered 413): the endpoints take GET only.
    pub const BODY: &str = "body";
    /// A `/events` request while every reader slot was taken (answered 503).
    pub const EVENTS_CAP: &str = "events_cap";
    /// An `/events` reader that fell a whole backlog behind: sent its
    /// `{"lost":N}` line, then its stream ended.
    pub const SLOW_READER: &str = "slow_reader";
    /// A connection whose socket took no bytes for the write timeout.
    pub const WRITE_TIMEOUT: &str = "write_timeout";
    /// A request (other than `/events`) not answered within its deadline.
    pub const DEADLINE: &str = "deadline";
    /// Every reason the counter takes.
    pub const ALL: [&str; 10] = [
        CONNECTION_CAP,
        EVICTED,
        HEADER_TIMEOUT,
        IDLE_TIMEOUT,
        TOO_LARGE,
        BODY,
        EVENTS_CAP,
        SLOW_READER,
        WRITE_TIMEOUT,
        DEADLINE,
    ];
}

/// Why a live prediction met its kill as it did: the `why` label of
/// `oomwatch_predictions_total`, a bounded set.
pub mod prediction_why {
    /// `match`: the pass named the task the kernel killed.
    pub const NAMED: &str = "named";
    /// `mismatch`: the task the pass named was gone at the kill (it
    /// exited, or an earlier kill took it).
    pub const PREDICTED_LEFT: &str = "predicted_left";
    /// `mismatch`: the task killed was not in the domain at the pass (it
    /// started, or moved in, after it).
    pub const VICTIM_NEW: &str = "victim_new";
    /// `mismatch`: the task killed was there with fewer points, or not
    /// eligible, and grew past the named one after the pass.
    pub const OVERTAKEN: &str = "overtaken";
    /// `no_prediction`: no pass over the domain finished before the kill.
    pub const NO_PASS: &str = "no_pass";
    /// `no_prediction`: a memcg with a limit that no pass had seen yet.
    pub const NEW_DOMAIN: &str = "new_domain";
    /// `no_prediction`: the last pass found no eligible task there.
    pub const NOTHING_ELIGIBLE: &str = "nothing_eligible";
    /// Every (outcome, reason) pair the counter takes.
    pub const ALL: [(&str, &str); 7] = [
        ("match", NAMED),
        ("mismatch", PREDICTED_LEFT),
        ("mismatch", VICTIM_NEW),
        ("mismatch", OVERTAKEN),
        ("no_prediction", NO_PASS),
        ("no_prediction", NEW_DOMAIN),
        ("no_prediction", NOTHING_ELIGIBLE),
    ];
}

/// One OOM domain after a prediction pass, as the per-domain gauges take it.
#[derive(Debug, Clone)]
pub struct DomainState {
    pub kind: crate::model::select::Domain,
    pub cgroup: Option<String>,
    /// totalpages in bytes.
    pub size_bytes: u64,
    /// Bytes left before the domain's OOM.
    pub headroom_bytes: Option<u64>,
    /// The predicted victim's points.
    pub victim_points: Option<i64>,
    /// Its lead over the next task.
    pub margin: Option<i64>,
    /// What an OOM here does: one of [`OOM_ACTIONS`].
    pub action: &'static str,
    /// Seconds until the domain's OOM on the trend of its headroom, and the
    /// error (two standard errors of the trend): (+Inf, None) when the
    /// headroom is not falling; None before enough passes.
    pub seconds_to_oom: Option<(f64, Option<f64>)>,
    /// The victim when that OOM comes: its projected points, and whether it
    /// is the victim now.
    pub forecast_victim: Option<(i64, bool)>,
    /// The kernel's memory event counters for the domain, each name of its
    /// set (v2 `memory.events`, v1 failcnt and `oom_kill`, the host's
    /// `oom_kill`) with its count; empty when they could not be read.
    pub events: Vec<(&'static str, u64)>,
    /// v1 `under_oom`.
    pub under_oom: Option<bool>,
    /// Memory pressure stall totals in µs: `some`, and `full` where kept.
    pub pressure_us: Option<(u64, Option<u64>)>,
}

/// A counter that mirrors one the kernel keeps: each update adds what the
/// kernel's count grew by since the last (a count that went down, as for a
/// cgroup made again under the same path, starts the series again).
struct Mirrored<C: prometheus::core::Atomic> {
    vec: prometheus::core::GenericCounterVec<C>,
    /// The kernel's count at the last update, per label set.
    last: Mutex<std::collections::HashMap<Vec<String>, u64>>,
    /// Kernel units → the metric's.
    to_metric: fn(u64) -> C::T,
}

impl<C: prometheus::core::Atomic> Mirrored<C> {
    fn set(&self, labels: &[&str], kernel: u64) {
        let key: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let grew = match last.get(&key) {
            Some(&before) if kernel >= before => kernel - before,
            Some(_) => {
                let _ = self.vec.remove_label_values(labels);
                kernel
            }
            None => kernel,
        };
        self.vec
            .with_label_values(labels)
            .inc_by((self.to_metric)(grew));
        last.insert(key, kernel);
    }

    /// Drops every series whose labels start with `prefix`.
    fn remove(&self, prefix: &[&str]) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.retain(|k, _| {
            let gone = k.iter().zip(prefix).all(|(a, b)| a == b);
            if gone {
                let labels: Vec<&str> = k.iter().map(String::as_str).collect();
                let _ = self.vec.remove_label_values(&labels);
            }
            !gone
        });
    }
}

/// The per-domain gauges and counters of the kernel's own memory events.
struct DomainKernelCounts {
    seconds_to_oom: prometheus::GaugeVec,
    seconds_to_oom_error: prometheus::GaugeVec,
    forecast_victim_points: IntGaugeVec,
    forecast_victim_is_now: IntGaugeVec,
    events: Mirrored<prometheus::core::AtomicU64>,
    under_oom: IntGaugeVec,
    pressure: Mirrored<prometheus::core::AtomicF64>,
}

/// The values of `oomwatch_domain_oom_action_info`'s `action` label.
pub const OOM_ACTIONS: [&str; 3] = ["kill_victim", "panic", "kill_allocating_task"];

/// The host's OOM knobs after a prediction pass, as the gauges take them.
#[derive(Debug, Clone, Default)]
pub struct KnobsState {
    /// Each `vm` sysctl's name (without `vm.`) and value.
    pub sysctls: Vec<(&'static str, u64)>,
    /// meminfo `CommitLimit`, and `CommitLimit − Committed_AS` (negative
    /// when past it).
    pub commit_limit_bytes: Option<u64>,
    pub commit_headroom_bytes: Option<i64>,
    /// (node, zone, bytes above min + lowmem_reserve for a user page).
    pub zones: Vec<(u32, String, i64)>,
}

/// The gauges of [`KnobsState`].
struct KnobGauges {
    sysctl: IntGaugeVec,
    commit_limit: prometheus::IntGauge,
    commit_headroom: prometheus::IntGauge,
    zone_headroom: IntGaugeVec,
    /// Zone label sets exported, to drop those that vanish.
    zones: Mutex<HashSet<(String, String)>>,
}

/// One OOM episode, as the counters take it.
#[derive(Debug, Clone)]
pub struct EpisodeCounts<'a> {
    /// The `oom-kill:` line's constraint (`unknown` without one).
    pub constraint: &'a str,
    /// The replay's outcome: `agree`, `disagree`, `unreplayable`,
    /// `no_report`, `exiting` or `oom_group`.
    pub replay: &'static str,
    /// The kernel's points against the model's: (equal, differ, changed).
    pub points: Option<(u64, u64, u64)>,
    /// The report's call trace runs through `handle_mm_fault`.
    pub in_page_fault: bool,
}

pub struct Metrics {
    registry: Registry,
    /// Victims the kernel marked (`oom:mark_victim`), one per killed task.
    pub oom_kills: IntCounter,
    /// Marks of a process already killed: its dying threads.
    pub oom_remarks: IntCounter,
    /// Events the eBPF side could not queue (ring buffer full).
    pub events_dropped: IntCounter,
    /// Episode lines the event log (`--events`) could not write.
    pub event_log_lost: IntCounter,
    /// Kernel log records overwritten before the `/dev/kmsg` reader got them.
    pub kmsg_lost: IntCounter,
    /// Open HTTP connections (`telemetry/http.rs` keeps them bounded).
    pub http_connections: prometheus::IntGauge,
    /// `/events` readers connected.
    pub http_event_readers: prometheus::IntGauge,
    /// Connections and requests the HTTP server refused or cut off, by
    /// [`http_refusal`] reason.
    pub http_refusals: IntCounterVec,
    pub domain_headroom: IntGaugeVec,
    pub domain_size: IntGaugeVec,
    pub domain_victim_points: IntGaugeVec,
    pub domain_victim_margin: IntGaugeVec,
    /// Tasks whose `/proc/PID/oom_score` the model recomputed.
    pub badness_checks: IntCounter,
    /// Of those, differences nothing explains.
    pub badness_mismatches: IntCounter,
    pub prediction_errors: IntCounter,
    /// Processes left out of a prediction pass other than by exiting, by
    /// reason ([`SKIP_REASONS`]).
    snapshot_tasks_skipped: IntCounterVec,
    /// Memcg OOMs seen starting (before the kill), each answered by a pass.
    pub oom_starts: IntCounter,
    /// The kernel's reclaim stall histogram, as last read.
    reclaim: Arc<ReclaimStalls>,
    pub page_allocs: IntCounterVec,
    pub page_alloc_failures: IntCounterVec,
    pub kills_by_constraint: IntCounterVec,
    pub report_replays: IntCounterVec,
    /// Last cumulative kernel page-allocation counts (allocs, failures).
    page_alloc_seen: Mutex<(Vec<u64>, Vec<u64>)>,
    /// Kernel-side counters of each eBPF program (BPF_ENABLE_STATS),
    /// advanced by the growth of the kernel's own cumulative values.
    pub program_runs: IntCounterVec,
    pub program_run_seconds: CounterVec,
    pub program_instructions: IntGaugeVec,
    /// Last cumulative (runs, nanoseconds) seen per program.
    program_seen: Mutex<std::collections::HashMap<String, (u64, u128)>>,
    /// Label sets currently exported, to drop those of vanished domains.
    domains: Mutex<HashSet<(String, String)>>,
    /// Tasks whose points the kernel's `oom_badness()` reported, compared
    /// with the model's from the OOM report: outcome equal or differ.
    pub kernel_points_checks: IntCounterVec,
    user_page_faults: SlotCounter,
    page_fault_ooms: SlotCounter,
    retry_decisions: SlotCounter,
    pub reaper_events: IntCounterVec,
    pub kernel_hooks: IntGaugeVec,
    /// Where the prediction passes read the processes.
    pub snapshot_source: IntGaugeVec,
    /// Kills against the prediction made just before them.
    pub predictions: IntCounterVec,
    /// How long before each judged kill its prediction's pass finished.
    pub prediction_lead: HistogramVec,
    /// `run --on-forecast` runs by how they ended.
    pub on_forecast_runs: IntCounterVec,
    /// Kills against the growth-aware victim forecast just before them.
    pub forecast_victims: IntCounterVec,
    /// Kubernetes identity of memcg domains that are pods or containers.
    pub domain_container: IntGaugeVec,
    /// Each domain's memory events and pressure, as the kernel counts them.
    domain_kernel: DomainKernelCounts,
    /// Whether the programs on the hot events are attached (`--hot-probes`).
    hot_attached: prometheus::IntGauge,
    hot_attached_seconds: prometheus::Counter,
    /// What an OOM in each domain does (`vm.panic_on_oom`,
    /// `vm.oom_kill_allocating_task`).
    domain_oom_action: IntGaugeVec,
    knobs: KnobGauges,
}

/// A counter vector that follows per-slot cumulative kernel counts: each
/// update adds the growth since the last one. Slots without labels are not
/// exported.
struct SlotCounter {
    vec: IntCounterVec,
    /// Label values of each kernel slot, from slot `first`.
    labels: Vec<Vec<&'static str>>,
    first: usize,
    seen: Mutex<Vec<u64>>,
}

impl SlotCounter {
    fn new(
        registry: &Registry,
        (name, help): (&str, &str),
        label_names: &[&str],
        first: usize,
        labels: Vec<Vec<&'static str>>,
    ) -> prometheus::Result<Self> {
        let vec = IntCounterVec::new(Opts::new(name, help), label_names)?;
        for l in &labels {
            vec.with_label_values(l).inc_by(0);
        }
        registry.register(Box::new(vec.clone()))?;
        Ok(Self {
            vec,
            labels,
            first,
            seen: Mutex::new(Vec::new()),
        })
    }

    fn update(&self, counts: Option<&[u64]>) {
        let Some(counts) = counts else {
            return;
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (i, l) in self.labels.iter().enumerate() {
            let slot = self.first + i;
            let (Some(&n), before) = (counts.get(slot), seen.get(slot).copied().unwrap_or(0))
            else {
                continue;
            };
            if n > before {
                self.vec.with_label_values(l).inc_by(n - before);
            }
        }
        *seen = counts.to_vec();
    }
}

/// The values of `oomwatch_snapshot_tasks_skipped_total`'s `reason`
/// (`snapshot::proc::SkipReason`).
pub const SKIP_REASONS: [&str; 3] = ["permission", "io", "malformed"];

impl Metrics {
    /// One process left out of a pass, for `reason` (one of
    /// [`SKIP_REASONS`]; another is counted as `malformed`, keeping the
    /// label set bounded).
    pub fn count_skipped_task(&self, reason: &str) {
        let reason = if SKIP_REASONS.contains(&reason) {
            reason
        } else {
            "malformed"
        };
        self.snapshot_tasks_skipped
            .with_label_values(&[reason])
            .inc();
    }

    pub fn new(kernel: &str) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let (program_runs, program_run_seconds, program_instructions) =
            Self::register_program_stats(&registry)?;
        let (oom_kills, events_dropped, event_log_lost, oom_remarks) =
            Self::register_kills(&registry)?;
        let kmsg_lost = IntCounter::with_opts(Opts::new(
            names::KMSG_LOST,
            "Kernel log records overwritten before oomwatch's /dev/kmsg reader got them (gaps in their sequence numbers): an OOM report among them is lost.",
        ))?;
        registry.register(Box::new(kmsg_lost.clone()))?;
        Self::register_build_info(&registry, kernel)?;
        let [
            domain_headroom,
            domain_size,
            domain_victim_points,
            domain_victim_margin,
        ] = Self::register_domain_gauges(&registry)?;
        let (badness_checks, badness_mismatches) = Self::register_self_check(&registry)?;
        let (prediction_errors, oom_starts) = Self::register_prediction_passes(&registry)?;
        let snapshot_tasks_skipped = IntCounterVec::new(
            Opts::new(
                names::SNAPSHOT_TASKS_SKIPPED,
                "Processes left out of a prediction pass because they could not be read, other than by exiting while read (which is no skip), counted once per pass that left them out: permission (EACCES, EPERM), io (another I/O error), malformed (a /proc file that does not parse). The pass goes on without them.",
            ),
            &["reason"],
        )?;
        for r in SKIP_REASONS {
            snapshot_tasks_skipped.with_label_values(&[r]).inc_by(0);
        }
        registry.register(Box::new(snapshot_tasks_skipped.clone()))?;
        let (kills_by_constraint, report_replays) = Self::register_episodes(&registry)?;
        let (page_allocs, page_alloc_failures) = Self::register_page_allocs(&registry)?;
        let reclaim = Self::register_reclaim(&registry)?;
        let kernel_points_checks = Self::register_kernel_points_checks(&registry)?;
        let (user_page_faults, page_fault_ooms) = Self::register_faults(&registry)?;
        let retry_decisions = Self::register_retry_decisions(&registry)?;
        let reaper_events = Self::register_reaper_events(&registry)?;
        let kernel_hooks = Self::register_kernel_hooks(&registry)?;
        let (snapshot_source, predictions, prediction_lead) =
            Self::register_predictions(&registry)?;
        let on_forecast_runs = IntCounterVec::new(
            Opts::new(
                names::ON_FORECAST_RUNS,
                "Runs of the run --on-forecast command, by how they ended: ok (exit 0), failed (another exit, or a signal), timeout (killed at --on-forecast-timeout), spawn_error (could not start), busy (a domain was forecast to OOM, but --on-forecast-max-running runs were still going).",
            ),
            &["result"],
        )?;
        for r in ["ok", "failed", "timeout", "spawn_error", "busy"] {
            on_forecast_runs.with_label_values(&[r]).inc_by(0);
        }
        registry.register(Box::new(on_forecast_runs.clone()))?;
        let forecast_victims = IntCounterVec::new(
            Opts::new(
                names::FORECAST_VICTIMS,
                "OOM kills against the growth-aware victim (oomwatch_domain_forecast_victim_points) of the last pass before the kill, in the kill's domain: match, mismatch, or none (that pass had no finite forecast).",
            ),
            &["outcome"],
        )?;
        for o in ["match", "mismatch", "none"] {
            forecast_victims.with_label_values(&[o]).inc_by(0);
        }
        registry.register(Box::new(forecast_victims.clone()))?;
        let domain_container = Self::register_domain_container(&registry)?;
        let domain_kernel = Self::register_domain_kernel_counts(&registry)?;
        let (hot_attached, hot_attached_seconds) = Self::register_hot_probes(&registry)?;
        let (domain_oom_action, knobs) = Self::register_knobs(&registry)?;
        let (http_connections, http_event_readers, http_refusals) = Self::register_http(&registry)?;
        Ok(Self {
            registry,
            oom_kills,
            oom_remarks,
            events_dropped,
            event_log_lost,
            kmsg_lost,
            http_connections,
            http_event_readers,
            http_refusals,
            domain_headroom,
            domain_size,
            domain_victim_points,
            domain_victim_margin,
            badness_checks,
            badness_mismatches,
            prediction_errors,
            snapshot_tasks_skipped,
            oom_starts,
            reclaim,
            page_allocs,
            page_alloc_failures,
            kills_by_constraint,
            report_replays,
            page_alloc_seen: Mutex::new((Vec::new(), Vec::new())),
            program_runs,
            program_run_seconds,
            program_instructions,
            program_seen: Mutex::new(std::collections::HashMap::new()),
            domains: Mutex::new(HashSet::new()),
            kernel_points_checks,
            user_page_faults,
            page_fault_ooms,
            retry_decisions,
            reaper_events,
            kernel_hooks,
            snapshot_source,
            predictions,
            prediction_lead,
            on_forecast_runs,
            forecast_victims,
            domain_container,
            domain_kernel,
            hot_attached,
            hot_attached_seconds,
            domain_oom_action,
            knobs,
        })
    }

    /// The HTTP server's own bounds: connections open, `/events` readers,
    /// and what it refused or cut off, every reason at 0 from the start.
    fn register_http(
        registry: &Registry,
    ) -> prometheus::Result<(prometheus::IntGauge, prometheus::IntGauge, IntCounterVec)> {
        use super::http::{MAX_CONNECTIONS, MAX_EVENT_READERS};
        let connections = prometheus::IntGauge::with_opts(Opts::new(
            names::HTTP_CONNECTIONS,
            format!(
                "HTTP connections open to /metrics, /events and / (at most {MAX_CONNECTIONS})."
            ),
        ))?;
        let readers = prometheus::IntGauge::with_opts(Opts::new(
            names::HTTP_EVENT_READERS,
            format!("Clients reading /events now (at most {MAX_EVENT_READERS})."),
        ))?;
        let refusals = IntCounterVec::new(
            Opts::new(
                names::HTTP_REFUSALS,
                "HTTP connections and requests refused or cut off, by reason: connection_cap (every slot busy serving), evicted (an idle connection closed for a new one), header_timeout, idle_timeout, too_large (request head, 431), body (a request body, 413), events_cap (too many /events readers, 503), slow_reader (an /events reader a whole backlog behind), write_timeout (the client stopped reading), deadline (a response not done in time).",
            ),
            &["reason"],
        )?;
        for r in http_refusal::ALL {
            refusals.with_label_values(&[r]).inc_by(0);
        }
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(readers.clone()))?;
        registry.register(Box::new(refusals.clone()))?;
        Ok((connections, readers, refusals))
    }

    /// Counts one refusal for `reason`, one of [`http_refusal::ALL`].
    pub fn http_refused(&self, reason: &str) {
        debug_assert!(http_refusal::ALL.contains(&reason), "{reason}");
        self.http_refusals.with_label_values(&[reason]).inc();
    }

    /// The OOM knobs: each sysctl, each domain's OOM action, the commit
    /// limit and headroom, each zone's headroom to its min watermark.
    fn register_knobs(registry: &Registry) -> prometheus::Result<(IntGaugeVec, KnobGauges)> {
        let sysctl = IntGaugeVec::new(
            Opts::new(
                names::VM_SYSCTL,
                "The value of each vm sysctl that decides what an OOM does or when it comes: panic_on_oom, oom_kill_allocating_task, overcommit_memory, overcommit_ratio, overcommit_kbytes, oom_dump_tasks, min_free_kbytes, watermark_scale_factor.",
            ),
            &["sysctl"],
        )?;
        let domain_oom_action = IntGaugeVec::new(
            Opts::new(
                names::DOMAIN_OOM_ACTION,
                "Always 1: what an OOM in the domain does now: kill_victim (the predicted victim dies), panic (vm.panic_on_oom: the machine panics, nobody is killed), kill_allocating_task (vm.oom_kill_allocating_task: the task whose allocation failed dies, unless it is not killable).",
            ),
            &["domain", "cgroup", "action"],
        )?;
        let commit_limit = prometheus::IntGauge::with_opts(Opts::new(
            names::COMMIT_LIMIT,
            "/proc/meminfo CommitLimit: what vm.overcommit_memory=2 lets be committed (overcommit_ratio % of RAM, or overcommit_kbytes, plus swap).",
        ))?;
        let commit_headroom = prometheus::IntGauge::with_opts(Opts::new(
            names::COMMIT_HEADROOM,
            "CommitLimit minus Committed_AS: how much more can be committed before vm.overcommit_memory=2 fails allocations with ENOMEM (negative when past it; enforced only in mode 2, see oomwatch_vm_sysctl{sysctl=\"overcommit_memory\"}).",
        ))?;
        let zone_headroom = IntGaugeVec::new(
            Opts::new(
                names::ZONE_MIN_WATERMARK_HEADROOM,
                "Per zone, free memory above its min watermark plus lowmem_reserve for a user page (from min_free_kbytes, watermark_scale_factor, lowmem_reserve_ratio); negative when below. Below it in every zone, allocations reclaim directly, then OOM.",
            ),
            &["node", "zone"],
        )?;
        registry.register(Box::new(sysctl.clone()))?;
        registry.register(Box::new(domain_oom_action.clone()))?;
        registry.register(Box::new(commit_limit.clone()))?;
        registry.register(Box::new(commit_headroom.clone()))?;
        registry.register(Box::new(zone_headroom.clone()))?;
        Ok((
            domain_oom_action,
            KnobGauges {
                sysctl,
                commit_limit,
                commit_headroom,
                zone_headroom,
                zones: Mutex::new(HashSet::new()),
            },
        ))
    }

    /// Sets the knob gauges from a prediction pass (the host's knobs).
    pub fn update_knobs(&self, k: &KnobsState) {
        let g = &self.knobs;
        for (name, v) in &k.sysctls {
            g.sysctl
                .with_label_values(&[name])
                .set(i64::try_from(*v).unwrap_or(i64::MAX));
        }
        if let Some(l) = k.commit_limit_bytes {
            g.commit_limit.set(i64::try_from(l).unwrap_or(i64::MAX));
        }
        if let Some(h) = k.commit_headroom_bytes {
            g.commit_headroom.set(h);
        }
        let mut now = HashSet::new();
        for (node, zone, bytes) in &k.zones {
            let node = node.to_string();
            g.zone_headroom
                .with_label_values(&[node.as_str(), zone.as_str()])
                .set(*bytes);
            now.insert((node, zone.clone()));
        }
        let mut old = g.zones.lock().unwrap_or_else(|e| e.into_inner());
        for (node, zone) in old.difference(&now) {
            let _ = g
                .zone_headroom
                .remove_label_values(&[node.as_str(), zone.as_str()]);
        }
        *old = now;
    }

    /// Program statistics: runs, run time and verified instructions per eBPF program.
    fn register_program_stats(
        registry: &Registry,
    ) -> prometheus::Result<(IntCounterVec, CounterVec, IntGaugeVec)> {
        let program_runs = IntCounterVec::new(
            Opts::new(
                names::PROGRAM_RUNS,
                "Times each eBPF program ran (kernel bpf_stats; monotonic while oomwatch runs).",
            ),
            &["program"],
        )?;
        let program_run_seconds = CounterVec::new(
            Opts::new(
                names::PROGRAM_RUN_SECONDS,
                "CPU time spent in each eBPF program (kernel bpf_stats; monotonic while oomwatch runs).",
            ),
            &["program"],
        )?;
        let program_instructions = IntGaugeVec::new(
            Opts::new(
                names::PROGRAM_INSTRUCTIONS,
                "Instructions the verifier processed for each eBPF program.",
            ),
            &["program"],
        )?;
        registry.register(Box::new(program_runs.clone()))?;
        registry.register(Box::new(program_run_seconds.clone()))?;
        registry.register(Box::new(program_instructions.clone()))?;
        Ok((program_runs, program_run_seconds, program_instructions))
    }

    /// Kills: victims the kernel marked, and events lost to a full ring buffer.
    fn register_kills(
        registry: &Registry,
    ) -> prometheus::Result<(IntCounter, IntCounter, IntCounter, IntCounter)> {
        let oom_kills = IntCounter::with_opts(Opts::new(
            names::OOM_KILLS,
            "OOM kills seen by oomwatch (the oom:mark_victim tracepoint, once per process killed), host and memory cgroups together.",
        ))?;
        let oom_remarks = IntCounter::with_opts(Opts::new(
            names::OOM_REMARKS,
            "oom:mark_victim marks of a process killed within the last minute: its threads entering the OOM killer while it dies, which the kernel marks without a kill (not in oomwatch_oom_kills_total).",
        ))?;
        registry.register(Box::new(oom_remarks.clone()))?;
        let events_dropped = IntCounter::with_opts(Opts::new(
            names::EVENTS_DROPPED,
            "Events lost in the kernel because oomwatch's ring buffer was full.",
        ))?;
        let event_log_lost = IntCounter::with_opts(Opts::new(
            names::EVENT_LOG_LOST,
            "Episode lines the event log (--events) could not write: its writer was 1024 lines behind, or the write failed (the log says why).",
        ))?;
        registry.register(Box::new(oom_kills.clone()))?;
        registry.register(Box::new(events_dropped.clone()))?;
        registry.register(Box::new(event_log_lost.clone()))?;
        Ok((oom_kills, events_dropped, event_log_lost, oom_remarks))
    }

    /// Build info: the constant series labelled with oomwatch's version and the kernel.
    fn register_build_info(registry: &Registry, kernel: &str) -> prometheus::Result<()> {
        let build_info = IntGaugeVec::new(
            Opts::new(
                names::BUILD_INFO,
                "Always 1; labels give oomwatch's version and the running kernel.",
            ),
            &["version", "kernel"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), kernel])
            .set(1);
        registry.register(Box::new(build_info))
    }

    /// Domains: headroom, size, victim points and margin, per OOM domain.
    fn register_domain_gauges(registry: &Registry) -> prometheus::Result<[IntGaugeVec; 4]> {
        let per_domain =
            |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["domain", "cgroup"]);
        let gauges = [
            per_domain(
                names::DOMAIN_HEADROOM,
                "Bytes left before the OOM domain runs out: memcg limit minus usage, or the host's MemAvailable.",
            )?,
            per_domain(
                names::DOMAIN_SIZE,
                "The domain's size as the OOM killer counts it (totalpages, in bytes): a memcg's limit (plus swap where it counts), or the host's RAM plus swap.",
            )?,
            per_domain(
                names::DOMAIN_VICTIM_POINTS,
                "oom_badness() points of the task the model predicts the kernel would kill in this domain now.",
            )?,
            per_domain(
                names::DOMAIN_VICTIM_MARGIN,
                "Points by which the predicted victim leads the next process (absent with one candidate).",
            )?,
        ];
        for gauge in &gauges {
            registry.register(Box::new(gauge.clone()))?;
        }
        Ok(gauges)
    }

    /// The self-check: oom_score recomputations and unexplained mismatches.
    fn register_self_check(registry: &Registry) -> prometheus::Result<(IntCounter, IntCounter)> {
        let badness_checks = IntCounter::with_opts(Opts::new(
            names::BADNESS_CHECKS,
            "Tasks whose /proc/PID/oom_score the model recomputed and compared with the kernel's.",
        ))?;
        let badness_mismatches = IntCounter::with_opts(Opts::new(
            names::BADNESS_MISMATCHES,
            "Compared tasks where the model's oom_score differed from the kernel's with no explanation.",
        ))?;
        registry.register(Box::new(badness_checks.clone()))?;
        registry.register(Box::new(badness_mismatches.clone()))?;
        Ok((badness_checks, badness_mismatches))
    }

    /// Prediction passes: failed passes, and the OOM starts that trigger a pass.
    fn register_prediction_passes(
        registry: &Registry,
    ) -> prometheus::Result<(IntCounter, IntCounter)> {
        let prediction_errors = IntCounter::with_opts(Opts::new(
            names::PREDICTION_ERRORS,
            "Prediction passes that failed (e.g. /proc unreadable).",
        ))?;
        let oom_starts = IntCounter::with_opts(Opts::new(
            names::OOM_STARTS,
            "OOMs seen as they started, each answered by a prediction pass: memory cgroups (v1 memory.oom_control eventfd, v2 memory.events) and the host (oom:reclaim_retry_zone: reclaim retries exhausted).",
        ))?;
        registry.register(Box::new(prediction_errors.clone()))?;
        registry.register(Box::new(oom_starts.clone()))?;
        Ok((prediction_errors, oom_starts))
    }

    /// Episodes: kills by constraint and report replay outcomes, every value at 0.
    fn register_episodes(
        registry: &Registry,
    ) -> prometheus::Result<(IntCounterVec, IntCounterVec)> {
        let kills_by_constraint = IntCounterVec::new(
            Opts::new(
                names::KILLS_BY_CONSTRAINT,
                "OOM kills by the constraint of the kernel's report (CONSTRAINT_NONE, _CPUSET, _MEMORY_POLICY, _MEMCG; unknown without a report).",
            ),
            &["constraint"],
        )?;
        let report_replays = IntCounterVec::new(
            Opts::new(
                names::REPORT_REPLAYS,
                "Kills whose kernel OOM report the model replayed: agree (the model picks the kernel's victim from the report's own table), disagree, unreplayable, no_report; exiting for a victim that was the task in the OOM killer, already dying, which the kernel marks without a report; oom_group for the tasks killed along with a victim because of memory.oom.group.",
            ),
            &["outcome"],
        )?;
        for c in [
            "CONSTRAINT_NONE",
            "CONSTRAINT_CPUSET",
            "CONSTRAINT_MEMORY_POLICY",
            "CONSTRAINT_MEMCG",
        ] {
            kills_by_constraint.with_label_values(&[c]).inc_by(0);
        }
        for o in [
            "agree",
            "disagree",
            "unreplayable",
            "no_report",
            "exiting",
            "oom_group",
        ] {
            report_replays.with_label_values(&[o]).inc_by(0);
        }
        registry.register(Box::new(kills_by_constraint.clone()))?;
        registry.register(Box::new(report_replays.clone()))?;
        Ok((kills_by_constraint, report_replays))
    }

    /// Kernel-side page allocations and allocation failures.
    fn register_page_allocs(
        registry: &Registry,
    ) -> prometheus::Result<(IntCounterVec, IntCounterVec)> {
        let page_allocs = IntCounterVec::new(
            Opts::new(
                names::PAGE_ALLOCS,
                "Pages allocations seen by kmem:mm_page_alloc, counted in the kernel: gfp_class atomic (no direct reclaim), user (__GFP_HARDWALL) or kernel; the kernel's migratetype number; the order.",
            ),
            &["gfp_class", "migratetype", "order"],
        )?;
        let page_alloc_failures = IntCounterVec::new(
            Opts::new(
                names::PAGE_ALLOC_FAILURES,
                "Page allocations that returned no page (kmem:mm_page_alloc without a pfn), by order.",
            ),
            &["order"],
        )?;
        registry.register(Box::new(page_allocs.clone()))?;
        registry.register(Box::new(page_alloc_failures.clone()))?;
        Ok((page_allocs, page_alloc_failures))
    }

    /// Kernel-side reclaim stalls: the histogram the kernel fills, collected as last read.
    fn register_reclaim(registry: &Registry) -> prometheus::Result<Arc<ReclaimStalls>> {
        let reclaim = Arc::new(ReclaimStalls::new()?);
        registry.register(Box::new(SharedCollector(Arc::clone(&reclaim))))?;
        Ok(reclaim)
    }

    /// The kernel's oom_badness() points against the model's, both outcomes at 0.
    fn register_kernel_points_checks(registry: &Registry) -> prometheus::Result<IntCounterVec> {
        let kernel_points_checks = IntCounterVec::new(
            Opts::new(
                names::KERNEL_POINTS_CHECKS,
                "Tasks the kernel scored during an OOM (oom_badness, through fexit or kprobe) whose points were compared with the model's over the same task's OOM report row: equal, differ, or changed (a task other than the one running the OOM killer, whose row printed after the scan shows other numbers: it ran in between).",
            ),
            &["outcome"],
        )?;
        for o in ["equal", "differ", "changed"] {
            kernel_points_checks.with_label_values(&[o]).inc_by(0);
        }
        registry.register(Box::new(kernel_points_checks.clone()))?;
        Ok(kernel_points_checks)
    }

    /// Kernel-side faults: user page faults by access, and page-fault OOMs by source.
    fn register_faults(registry: &Registry) -> prometheus::Result<(SlotCounter, SlotCounter)> {
        use oomwatch_common::fault;
        let user_page_faults = SlotCounter::new(
            registry,
            (
                names::USER_PAGE_FAULTS,
                "User page faults (exceptions:page_fault_user, x86), counted in the kernel by access: read, write, instruction.",
            ),
            &["access"],
            fault::READ as usize,
            vec![vec!["read"], vec!["write"], vec!["instruction"]],
        )?;
        let page_fault_ooms = SlotCounter::new(
            registry,
            (
                names::PAGE_FAULT_OOMS,
                "Page-fault OOMs: source report (an OOM kill whose report's call trace runs through handle_mm_fault), vm_fault_oom (handle_mm_fault returned VM_FAULT_OOM; hooked where exceptions:page_fault_user is missing) or pagefault_out_of_memory (the kernel entered it); the hooks by fexit/fentry or kprobe where the kernel allows.",
            ),
            &["source"],
            fault::VM_FAULT_OOM as usize,
            vec![vec!["vm_fault_oom"], vec!["pagefault_out_of_memory"]],
        )?;
        page_fault_ooms.vec.with_label_values(&["report"]).inc_by(0);
        Ok((user_page_faults, page_fault_ooms))
    }

    /// Kernel-side retries: the allocator slowpath's retry decisions.
    fn register_retry_decisions(registry: &Registry) -> prometheus::Result<SlotCounter> {
        use oomwatch_common::retry;
        SlotCounter::new(
            registry,
            (
                names::RETRY_DECISIONS,
                "The allocator slowpath's retry decisions: check reclaim_zone (oom:reclaim_retry_zone, one per zone checked) or compaction (oom:compact_retry); decision retry or give_up.",
            ),
            &["check", "decision"],
            retry::RECLAIM_GIVE_UP as usize,
            vec![
                vec!["reclaim_zone", "give_up"],
                vec!["reclaim_zone", "retry"],
                vec!["compaction", "give_up"],
                vec!["compaction", "retry"],
            ],
        )
    }

    /// Kernel-side OOM reaper tracepoint hits, every stage at 0.
    fn register_reaper_events(registry: &Registry) -> prometheus::Result<IntCounterVec> {
        let reaper_events = IntCounterVec::new(
            Opts::new(
                names::REAPER_EVENTS,
                "OOM reaper tracepoints hit, by stage: wake_reaper, start_task_reaping, finish_task_reaping, skip_task_reaping.",
            ),
            &["stage"],
        )?;
        for st in [
            "wake_reaper",
            "start_task_reaping",
            "finish_task_reaping",
            "skip_task_reaping",
        ] {
            reaper_events.with_label_values(&[st]).inc_by(0);
        }
        registry.register(Box::new(reaper_events.clone()))?;
        Ok(reaper_events)
    }

    /// Hooks: how each kernel OOM function is hooked on this kernel.
    fn register_kernel_hooks(registry: &Registry) -> prometheus::Result<IntGaugeVec> {
        let kernel_hooks = IntGaugeVec::new(
            Opts::new(
                names::KERNEL_HOOKS,
                "Always 1: how each kernel OOM function is hooked on this kernel (path fentry, fexit, kprobe, kretprobe, kprobe+kretprobe, or off).",
            ),
            &["function", "path"],
        )?;
        registry.register(Box::new(kernel_hooks.clone()))?;
        Ok(kernel_hooks)
    }

    /// Predictions: the passes' snapshot source, and kills against the prediction.
    fn register_predictions(
        registry: &Registry,
    ) -> prometheus::Result<(IntGaugeVec, IntCounterVec, HistogramVec)> {
        let snapshot_source = IntGaugeVec::new(
            Opts::new(
                names::SNAPSHOT_SOURCE,
                "Always 1: where the prediction passes read every task (source bpf, the BPF task iterator with the kernel's own counters; or proc, /proc files).",
            ),
            &["source"],
        )?;
        registry.register(Box::new(snapshot_source.clone()))?;
        let predictions = IntCounterVec::new(
            Opts::new(
                names::PREDICTIONS,
                "OOM kills against the victim the last prediction pass before the kill named for the kill's domain (the deepest memcg with a limit holding the victim, else the host): outcome match, mismatch or no_prediction, and why: named (match); predicted_left (the named task was gone at the kill), victim_new (the task killed was not in the domain at the pass), overtaken (it was, and grew past the named one after the pass) for a mismatch; no_pass, new_domain, nothing_eligible for no_prediction (a pass whose scan stopped at an OOM victim not yet gone predicts the first eligible task after it). A mismatch is a late prediction, not a model error: those are oomwatch_report_replays_total{outcome=\"disagree\"} and oomwatch_kernel_points_checks_total{outcome=\"differ\"}.",
            ),
            &["outcome", "why"],
        )?;
        for (o, why) in prediction_why::ALL {
            predictions.with_label_values(&[o, why]).inc_by(0);
        }
        registry.register(Box::new(predictions.clone()))?;
        let prediction_lead = HistogramVec::new(
            prometheus::HistogramOpts::new(
                names::PREDICTION_LEAD,
                "For each kill judged against a prediction (outcome match or mismatch), how long before the kill that prediction's pass finished.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["outcome"],
        )?;
        for o in ["match", "mismatch"] {
            let _ = prediction_lead.with_label_values(&[o]);
        }
        registry.register(Box::new(prediction_lead.clone()))?;
        Ok((snapshot_source, predictions, prediction_lead))
    }

    /// Domains: the kernel's memory events and pressure for each.
    fn register_domain_kernel_counts(
        registry: &Registry,
    ) -> prometheus::Result<DomainKernelCounts> {
        let events = prometheus::IntCounterVec::new(
            Opts::new(
                names::DOMAIN_MEMORY_EVENTS,
                "The kernel's memory event counters for each OOM domain, mirrored: a v2 memory cgroup's memory.events (low, high, max, oom, oom_kill, oom_group_kill), a v1 one's memory.failcnt (failcnt) and memory.oom_control oom_kill, the host's /proc/vmstat oom_kill. Every event of the domain's set is there, at 0 until the kernel counts one.",
            ),
            &["domain", "cgroup", "event"],
        )?;
        let under_oom = IntGaugeVec::new(
            Opts::new(
                names::DOMAIN_UNDER_OOM,
                "1 while a v1 memory cgroup is under OOM (memory.oom_control under_oom: its OOM killer is disabled, or a victim is still dying), else 0. v1 only.",
            ),
            &["domain", "cgroup"],
        )?;
        let pressure = prometheus::CounterVec::new(
            Opts::new(
                names::DOMAIN_MEMORY_PRESSURE,
                "Memory pressure stall time of each OOM domain (PSI total, in seconds): some (at least one task stalled on memory) and full (all non-idle tasks stalled), from the cgroup's memory.pressure (v2) or /proc/pressure/memory (host). rate() is the share of time stalled.",
            ),
            &["domain", "cgroup", "kind"],
        )?;
        let seconds_to_oom = prometheus::GaugeVec::new(
            Opts::new(
                names::DOMAIN_SECONDS_TO_OOM,
                "Seconds until the OOM domain runs out of memory reclaim cannot free, on the trend (Theil–Sen, robust to outliers, over the last minute of prediction passes) of its headroom: a memory cgroup's limit minus its usage less its file LRU pages (anon, shmem and kernel memory stay), the host's MemAvailable. +Inf when that headroom is not falling by more than its noise, or its passes do not fall in order beyond chance (Mann–Kendall); absent until three passes over two seconds.",
            ),
            &["domain", "cgroup"],
        )?;
        let seconds_to_oom_error = prometheus::GaugeVec::new(
            Opts::new(
                names::DOMAIN_SECONDS_TO_OOM_ERROR,
                "The error of oomwatch_domain_seconds_to_oom, in seconds either way: half the range the forecast spans with the trend's slope two standard errors steeper or flatter (+Inf when the flatter one does not fall). Present with a finite forecast only.",
            ),
            &["domain", "cgroup"],
        )?;
        let forecast_victim_points = IntGaugeVec::new(
            Opts::new(
                names::DOMAIN_FORECAST_VICTIM_POINTS,
                "The points of the task the kernel's scan would choose when the forecast OOM comes, each eligible task's points carried forward on its own trend over the same passes. Present with a finite forecast only.",
            ),
            &["domain", "cgroup"],
        )?;
        let forecast_victim_is_now = IntGaugeVec::new(
            Opts::new(
                names::DOMAIN_FORECAST_VICTIM_IS_VICTIM_NOW,
                "1 when the victim at the forecast OOM is the task the scan would choose now, 0 when a faster grower will overtake it. Present with a finite forecast only.",
            ),
            &["domain", "cgroup"],
        )?;
        registry.register(Box::new(seconds_to_oom.clone()))?;
        registry.register(Box::new(seconds_to_oom_error.clone()))?;
        registry.register(Box::new(forecast_victim_points.clone()))?;
        registry.register(Box::new(forecast_victim_is_now.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(under_oom.clone()))?;
        registry.register(Box::new(pressure.clone()))?;
        Ok(DomainKernelCounts {
            seconds_to_oom,
            seconds_to_oom_error,
            forecast_victim_points,
            forecast_victim_is_now,
            events: Mirrored {
                vec: events,
                last: Mutex::default(),
                to_metric: |n| n,
            },
            under_oom,
            pressure: Mirrored {
                vec: pressure,
                last: Mutex::default(),
                to_metric: |us| us as f64 / 1e6,
            },
        })
    }

    /// Domains: the Kubernetes identity of memcg domains that are pods or containers.
    fn register_domain_container(registry: &Registry) -> prometheus::Result<IntGaugeVec> {
        let domain_container = IntGaugeVec::new(
            Opts::new(
                names::DOMAIN_CONTAINER,
                "Always 1, for each memcg domain whose cgroup path is a Kubernetes pod's or container's (cgroupfs and systemd drivers): its qos class, pod_uid and container_id. Join on cgroup; kube_pod_info gives the pod's name and namespace by uid.",
            ),
            &["domain", "cgroup", "qos", "pod_uid", "container_id"],
        )?;
        registry.register(Box::new(domain_container.clone()))?;
        Ok(domain_container)
    }

    /// Hot probes: whether they are attached, and for how long they have been.
    fn register_hot_probes(
        registry: &Registry,
    ) -> prometheus::Result<(prometheus::IntGauge, prometheus::Counter)> {
        let hot_attached = prometheus::IntGauge::with_opts(Opts::new(
            names::HOT_PROBES_ATTACHED,
            "1 while the programs on the hot events (kmem:mm_page_alloc, exceptions:page_fault_user) are attached, else 0. With --hot-probes pressure (the default) they are attached only while the host shows memory pressure, and for the hold time after; oomwatch_page_allocs_total, oomwatch_page_alloc_failures_total and oomwatch_user_page_faults_total count only while this is 1.",
        ))?;
        registry.register(Box::new(hot_attached.clone()))?;
        let hot_attached_seconds = prometheus::Counter::with_opts(Opts::new(
            names::HOT_PROBES_ATTACHED_SECONDS,
            "Seconds the programs on the hot events have been attached: the window the allocation and fault counters cover.",
        ))?;
        registry.register(Box::new(hot_attached_seconds.clone()))?;
        Ok((hot_attached, hot_attached_seconds))
    }

    /// Kernel fault counts (`Probes::fault_counts`).
    pub fn update_faults(&self, counts: Option<Vec<u64>>) {
        self.user_page_faults.update(counts.as_deref());
        self.page_fault_ooms.update(counts.as_deref());
    }

    /// Kernel retry decision counts (`Probes::retry_decisions`).
    pub fn update_retry_decisions(&self, counts: Option<Vec<u64>>) {
        self.retry_decisions.update(counts.as_deref());
    }

    /// Whether the hot programs are attached.
    pub fn set_hot_attached(&self, attached: bool) {
        self.hot_attached.set(i64::from(attached));
    }

    /// Adds time the hot programs were attached.
    pub fn add_hot_attached(&self, d: std::time::Duration) {
        self.hot_attached_seconds.inc_by(d.as_secs_f64());
    }

    /// The snapshot source series ("bpf" or "proc").
    pub fn set_snapshot_source(&self, source: &str) {
        self.snapshot_source.with_label_values(&[source]).set(1);
    }

    /// One series per hooked kernel function.
    pub fn set_kernel_hooks(&self, hooks: &[crate::ebpf::KernelHook]) {
        for h in hooks {
            self.kernel_hooks
                .with_label_values(&[h.function, h.path.unwrap_or("off")])
                .set(1);
        }
    }

    /// Sets the per-program series from the kernel's statistics.
    pub fn update_programs(&self, stats: &[crate::ebpf::ProgramStats]) {
        let mut seen = self.program_seen.lock().unwrap_or_else(|e| e.into_inner());
        for p in stats {
            let l = [p.name.as_str()];
            let (runs, ns) = seen.get(&p.name).copied().unwrap_or((0, 0));
            let now_ns = p.run_time.as_nanos();
            // The kernel's values only grow while the program stays loaded.
            self.program_runs
                .with_label_values(&l)
                .inc_by(p.run_count.saturating_sub(runs));
            self.program_run_seconds
                .with_label_values(&l)
                .inc_by(now_ns.saturating_sub(ns) as f64 / 1e9);
            seen.insert(p.name.clone(), (p.run_count.max(runs), now_ns.max(ns)));
            if let Some(n) = p.verified_instructions {
                self.program_instructions
                    .with_label_values(&l)
                    .set(i64::from(n));
            }
        }
    }

    /// Advances the page-allocation counters by the growth of the kernel's
    /// cumulative counts (`Probes::page_alloc_counts`). The order-0 failure
    /// series exists from the first call, at 0.
    pub fn update_page_allocs(&self, counts: Option<(Vec<u64>, Vec<u64>)>) {
        use oomwatch_common::page_alloc as pa;
        let Some((allocs, fails)) = counts else {
            return;
        };
        let mut seen = self
            .page_alloc_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let classes = ["atomic", "user", "kernel"];
        for (i, &n) in allocs.iter().enumerate() {
            let before = seen.0.get(i).copied().unwrap_or(0);
            if n <= before {
                continue;
            }
            let i = i as u32;
            let order = i % pa::ORDERS;
            let mt = (i / pa::ORDERS) % pa::MIGRATETYPES;
            let class = classes[(i / pa::ORDERS / pa::MIGRATETYPES) as usize % classes.len()];
            self.page_allocs
                .with_label_values(&[class, &mt.to_string(), &order.to_string()])
                .inc_by(n - before);
        }
        self.page_alloc_failures.with_label_values(&["0"]).inc_by(0);
        for (order, &n) in fails.iter().enumerate() {
            let before = seen.1.get(order).copied().unwrap_or(0);
            if n > before {
                self.page_alloc_failures
                    .with_label_values(&[&order.to_string()])
                    .inc_by(n - before);
            }
        }
        *seen = (allocs, fails);
    }

    /// Counts one assembled episode.
    pub fn record_episode(&self, ep: &EpisodeCounts<'_>) {
        self.kills_by_constraint
            .with_label_values(&[ep.constraint])
            .inc();
        self.report_replays.with_label_values(&[ep.replay]).inc();
        if let Some((equal, differ, changed)) = ep.points {
            self.kernel_points_checks
                .with_label_values(&["equal"])
                .inc_by(equal);
            self.kernel_points_checks
                .with_label_values(&["differ"])
                .inc_by(differ);
            self.kernel_points_checks
                .with_label_values(&["changed"])
                .inc_by(changed);
        }
        if ep.in_page_fault {
            self.page_fault_ooms
                .vec
                .with_label_values(&["report"])
                .inc();
        }
    }

    /// The kernel's cumulative reclaim histogram (`Probes::reclaim_histogram`).
    pub fn update_reclaim(&self, hist: Option<Vec<Vec<u64>>>) {
        *self
            .reclaim
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = hist;
    }

    /// Sets the per-domain gauges from a prediction pass and drops the series
    /// of domains that are gone.
    pub fn update_domains(&self, domains: &[DomainState]) {
        let mut now = HashSet::new();
        for d in domains {
            let kind = match d.kind {
                crate::model::select::Domain::Global => "global",
                crate::model::select::Domain::Memcg => "memcg",
            };
            let cg = d.cgroup.clone().unwrap_or_default();
            let labels = [kind, cg.as_str()];
            match d.headroom_bytes {
                Some(h) => self
                    .domain_headroom
                    .with_label_values(&labels)
                    .set(i64::try_from(h).unwrap_or(i64::MAX)),
                None => {
                    let _ = self.domain_headroom.remove_label_values(&labels);
                }
            }
            self.domain_size
                .with_label_values(&labels)
                .set(i64::try_from(d.size_bytes).unwrap_or(i64::MAX));
            match d.victim_points {
                Some(points) => self
                    .domain_victim_points
                    .with_label_values(&labels)
                    .set(points),
                None => {
                    let _ = self.domain_victim_points.remove_label_values(&labels);
                }
            }
            match d.margin {
                Some(m) => self.domain_victim_margin.with_label_values(&labels).set(m),
                None => {
                    let _ = self.domain_victim_margin.remove_label_values(&labels);
                }
            }
            for a in OOM_ACTIONS.iter().filter(|a| **a != d.action) {
                let _ = self
                    .domain_oom_action
                    .remove_label_values(&[kind, cg.as_str(), a]);
            }
            self.domain_oom_action
                .with_label_values(&[kind, cg.as_str(), d.action])
                .set(1);
            if let Some(c) = super::container::from_cgroup_path(&cg) {
                self.domain_container
                    .with_label_values(&[
                        kind,
                        cg.as_str(),
                        &c.qos,
                        &c.pod_uid,
                        c.container_id.as_deref().unwrap_or(""),
                    ])
                    .set(1);
            }
            let k = &self.domain_kernel;
            match d.seconds_to_oom {
                Some((secs, err)) => {
                    k.seconds_to_oom.with_label_values(&labels).set(secs);
                    match err {
                        Some(e) => k.seconds_to_oom_error.with_label_values(&labels).set(e),
                        None => {
                            let _ = k.seconds_to_oom_error.remove_label_values(&labels);
                        }
                    }
                }
                None => {
                    let _ = k.seconds_to_oom.remove_label_values(&labels);
                    let _ = k.seconds_to_oom_error.remove_label_values(&labels);
                }
            }
            match d.forecast_victim {
                Some((points, is_now)) => {
                    k.forecast_victim_points
                        .with_label_values(&labels)
                        .set(points);
                    k.forecast_victim_is_now
                        .with_label_values(&labels)
                        .set(i64::from(is_now));
                }
                None => {
                    let _ = k.forecast_victim_points.remove_label_values(&labels);
                    let _ = k.forecast_victim_is_now.remove_label_values(&labels);
                }
            }
            for (event, n) in &d.events {
                k.events.set(&[kind, cg.as_str(), event], *n);
            }
            if let Some(u) = d.under_oom {
                k.under_oom.with_label_values(&labels).set(i64::from(u));
            }
            if let Some((some, full)) = d.pressure_us {
                k.pressure.set(&[kind, cg.as_str(), "some"], some);
                if let Some(full) = full {
                    k.pressure.set(&[kind, cg.as_str(), "full"], full);
                }
            }
            now.insert((kind.to_owned(), cg));
        }
        let mut old = self.domains.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, cg) in old.difference(&now) {
            let labels = [kind.as_str(), cg.as_str()];
            let _ = self.domain_headroom.remove_label_values(&labels);
            let _ = self.domain_size.remove_label_values(&labels);
            let _ = self.domain_victim_points.remove_label_values(&labels);
            let _ = self.domain_victim_margin.remove_label_values(&labels);
            let k = &self.domain_kernel;
            let _ = k.seconds_to_oom.remove_label_values(&labels);
            let _ = k.seconds_to_oom_error.remove_label_values(&labels);
            let _ = k.forecast_victim_points.remove_label_values(&labels);
            let _ = k.forecast_victim_is_now.remove_label_values(&labels);
            k.events.remove(&labels);
            k.pressure.remove(&labels);
            let _ = k.under_oom.remove_label_values(&labels);
            for a in OOM_ACTIONS {
                let _ =
                    self.domain_oom_action
                        .remove_label_values(&[kind.as_str(), cg.as_str(), a]);
            }
            if let Some(c) = super::container::from_cgroup_path(cg) {
                let _ = self.domain_container.remove_label_values(&[
                    kind.as_str(),
                    cg.as_str(),
                    &c.qos,
                    &c.pod_uid,
                    c.container_id.as_deref().unwrap_or(""),
                ]);
            }
        }
        *old = now;
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on metric families that violate the
        // format, which the registry already refused at registration.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/metrics.md lists every metric, and only those.
    #[test]
    fn catalogue_documents_every_metric() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"));
        let documented: Vec<&str> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `oomwatch_"))
            .filter_map(|rest| rest.split(['`', '{']).next())
            .collect();
        let mut want: Vec<String> = names::ALL
            .iter()
            .map(|n| n.trim_start_matches("oomwatch_").to_owned())
            .collect();
        want.sort();
        let mut got: Vec<String> = documented.iter().map(|s| s.to_string()).collect();
        got.sort();
        assert_eq!(got, want, "docs/metrics.md's table vs metrics::names::ALL");
    }

    /// The Grafana dashboard and the alert rules use only metrics that
    /// exist (histograms through their `_bucket` series).
    #[test]
    fn dashboard_and_rules_use_only_exported_metrics() {
        for (file, text) in [
            (
                "grafana",
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../deploy/grafana/oomwatch.json"
                )),
            ),
            (
                "rules",
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../deploy/prometheus/oomwatch.rules.yml"
                )),
            ),
        ] {
            let mut used = 0;
            for (i, _) in text.match_indices("oomwatch_") {
                let name: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name == "oomwatch_" || name.starts_with("oomwatch_rules") {
                    continue;
                }
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|b| names::ALL.contains(b))
                    .unwrap_or(&name);
                assert!(
                    names::ALL.contains(&base),
                    "{file} uses {name}, which is not exported"
                );
                used += 1;
            }
            assert!(used >= 3, "{file}");
        }
    }

    /// The Prometheus naming guide, checked on the exposition: the prefix,
    /// `_total` on counters only, base units only.
    #[test]
    fn exposition_follows_the_naming_guide() {
        let m = Metrics::new("6.18.44").unwrap();
        let text = m.render();
        let mut types = 0;
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, kind) = line.split_once(' ').unwrap();
            types += 1;
            assert!(name.starts_with("oomwatch_"), "{name}");
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name} is a {kind}"
            );
            for word in name.split('_') {
                assert!(
                    !["kb", "mb", "pages", "ms", "us", "ns", "milliseconds"].contains(&word),
                    "{name}: not a base unit"
                );
            }
            if kind == "histogram" {
                assert!(
                    name.ends_with("_seconds") || name.ends_with("_bytes"),
                    "{name}"
                );
            }
        }
        assert!(types >= 15, "{types} families:\n{text}");
    }

    /// Every reason is there at 0 from the start; a skip counts under its
    /// reason, and a reason outside the set under `malformed`.
    #[test]
    fn skipped_tasks_count_by_bounded_reason() {
        let m = Metrics::new("6.18.44").unwrap();
        let count = |text: &str, r: &str| {
            let key = format!("oomwatch_snapshot_tasks_skipped_total{{reason=\"{r}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&key)?.parse::<f64>().ok())
        };
        let text = m.render();
        for r in SKIP_REASONS {
            assert_eq!(count(&text, r), Some(0.0), "{r}:\n{text}");
        }
        m.count_skipped_task("io");
        m.count_skipped_task("no such reason");
        let text = m.render();
        assert_eq!(count(&text, "io"), Some(1.0));
        assert_eq!(count(&text, "malformed"), Some(1.0));
        assert_eq!(count(&text, "no such reason"), None);
    }

    #[test]
    fn exposition_has_the_catalogue() {
        let m = Metrics::new("6.18.44").unwrap();
        m.oom_kills.inc();
        let dom = |cg: &str, points: i64| DomainState {
            kind: crate::model::select::Domain::Memcg,
            cgroup: Some(cg.to_owned()),
            size_bytes: 16_384 * 4096,
            headroom_bytes: Some(4096),
            victim_points: Some(points),
            margin: Some(10),
            action: if points == 600 {
                "panic"
            } else {
                "kill_victim"
            },
            seconds_to_oom: Some((points as f64 / 10.0, Some(1.5))),
            forecast_victim: Some((points + 50, points != 600)),
            // The kernel's counts grow with the points here.
            events: vec![("failcnt", points as u64), ("oom_kill", 0)],
            under_oom: Some(points == 600),
            pressure_us: Some((points as u64 * 1000, Some(250_000))),
        };
        m.update_domains(&[
            dom("/a", 500),
            dom("/b", 600),
            dom("/kubepods/burstable/podu-1/c9", 700),
        ]);
        let prog = |runs, us| crate::ebpf::ProgramStats {
            name: "oom_mark_victim".into(),
            run_count: runs,
            run_time: std::time::Duration::from_micros(us),
            verified_instructions: Some(700),
        };
        m.update_programs(&[prog(3, 12)]);
        m.update_programs(&[prog(5, 20)]);
        let n = oomwatch_common::reclaim::BUCKETS as usize + 1;
        m.update_reclaim(Some(vec![vec![0; n]; 2]));
        let slots = oomwatch_common::page_alloc::SLOTS as usize;
        let mut allocs = vec![0; slots];
        // kernel class (2), migratetype 1, order 0; then 5 more of them.
        let slot = (2 * oomwatch_common::page_alloc::MIGRATETYPES as usize + 1)
            * oomwatch_common::page_alloc::ORDERS as usize;
        allocs[slot] = 10;
        m.update_page_allocs(Some((allocs.clone(), vec![0; 16])));
        allocs[slot] = 15;
        let mut fails = vec![0; 16];
        fails[3] = 2;
        m.update_page_allocs(Some((allocs, fails)));
        m.set_kernel_hooks(&[crate::ebpf::KernelHook {
            what: "x",
            function: "oom_badness",
            path: None,
            reason: Some("no".into()),
        }]);
        // read 4, write 2, instruction 0, VM_FAULT_OOM 0, pagefault_out_of_memory 1.
        m.update_faults(Some(vec![4, 2, 0, 0, 1]));
        m.update_faults(Some(vec![5, 2, 0, 0, 1]));
        m.update_retry_decisions(Some(vec![0, 3, 1, 0]));
        m.set_snapshot_source("bpf");
        m.update_knobs(&KnobsState {
            sysctls: vec![("panic_on_oom", 2), ("overcommit_memory", 0)],
            commit_limit_bytes: Some(12 << 30),
            commit_headroom_bytes: Some(-4096),
            zones: vec![(0, "DMA".into(), -38_653_952), (0, "Normal".into(), 4096)],
        });
        let text = m.render();
        for want in [
            "oomwatch_kernel_hook_info{function=\"oom_badness\",path=\"off\"} 1\n",
            "oomwatch_snapshot_source_info{source=\"bpf\"} 1\n",
            "oomwatch_user_page_faults_total{access=\"read\"} 5\n",
            "oomwatch_user_page_faults_total{access=\"instruction\"} 0\n",
            "oomwatch_page_fault_ooms_total{source=\"pagefault_out_of_memory\"} 1\n",
            "oomwatch_page_fault_ooms_total{source=\"report\"} 0\n",
            "oomwatch_slowpath_retry_decisions_total{check=\"reclaim_zone\",decision=\"retry\"} 3\n",
            "oomwatch_slowpath_retry_decisions_total{check=\"compaction\",decision=\"give_up\"} 1\n",
            "oomwatch_kernel_points_checks_total{outcome=\"differ\"} 0\n",
            "oomwatch_oom_reaper_events_total{stage=\"wake_reaper\"} 0\n",
            "oomwatch_vm_sysctl{sysctl=\"panic_on_oom\"} 2\n",
            "oomwatch_commit_headroom_bytes -4096\n",
            "oomwatch_commit_limit_bytes 12884901888\n",
            "oomwatch_zone_min_watermark_headroom_bytes{node=\"0\",zone=\"DMA\"} -38653952\n",
            "oomwatch_domain_oom_action_info{action=\"panic\",cgroup=\"/b\",domain=\"memcg\"} 1\n",
            "oomwatch_domain_oom_action_info{action=\"kill_victim\",cgroup=\"/a\",domain=\"memcg\"} 1\n",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        assert!(
            text.contains("oomwatch_page_allocs_total{gfp_class=\"kernel\",migratetype=\"1\",order=\"0\"} 15\n"),
            "{text}"
        );
        assert!(
            text.contains("oomwatch_page_alloc_failures_total{order=\"0\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("oomwatch_page_alloc_failures_total{order=\"3\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("oomwatch_domain_victim_points{cgroup=\"/b\",domain=\"memcg\"} 600"),
            "{text}"
        );
        for want in [
            "oomwatch_domain_memory_events_total{cgroup=\"/a\",domain=\"memcg\",event=\"failcnt\"} 500\n",
            "oomwatch_domain_memory_events_total{cgroup=\"/a\",domain=\"memcg\",event=\"oom_kill\"} 0\n",
            "oomwatch_domain_under_oom{cgroup=\"/b\",domain=\"memcg\"} 1\n",
            "oomwatch_domain_seconds_to_oom{cgroup=\"/a\",domain=\"memcg\"} 50\n",
            "oomwatch_domain_seconds_to_oom_error{cgroup=\"/a\",domain=\"memcg\"} 1.5\n",
            "oomwatch_domain_forecast_victim_points{cgroup=\"/b\",domain=\"memcg\"} 650\n",
            "oomwatch_domain_forecast_victim_is_victim_now{cgroup=\"/b\",domain=\"memcg\"} 0\n",
            "oomwatch_domain_memory_pressure_seconds_total{cgroup=\"/a\",domain=\"memcg\",kind=\"some\"} 0.5\n",
            "oomwatch_domain_memory_pressure_seconds_total{cgroup=\"/a\",domain=\"memcg\",kind=\"full\"} 0.25\n",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        // The mirrored counters follow the kernel's: up by what it grew,
        // started again where its count went down (a cgroup made anew).
        m.update_domains(&[dom("/a", 510), dom("/b", 600)]);
        m.update_domains(&[dom("/a", 7), dom("/b", 600)]);
        let mirrored = m.render();
        assert!(
            mirrored.contains("oomwatch_domain_memory_events_total{cgroup=\"/a\",domain=\"memcg\",event=\"failcnt\"} 7\n"),
            "{mirrored}"
        );
        m.update_domains(&[dom("/a", 9), dom("/b", 600)]);
        assert!(
            m.render().contains("oomwatch_domain_memory_events_total{cgroup=\"/a\",domain=\"memcg\",event=\"failcnt\"} 9\n")
        );
        // A vanished domain loses its series; a domain's action changes
        // its one series; a vanished zone loses its series.
        m.update_domains(&[dom("/b", 601)]);
        m.update_knobs(&KnobsState {
            zones: vec![(0, "Normal".into(), 8192)],
            ..KnobsState::default()
        });
        let after = m.render();
        assert!(
            after.contains("oomwatch_domain_oom_action_info{action=\"kill_victim\",cgroup=\"/b\",domain=\"memcg\"} 1\n"),
            "{after}"
        );
        assert!(!after.contains("action=\"panic\""), "{after}");
        assert!(!after.contains("zone=\"DMA\""), "{after}");
        assert!(!after.contains("cgroup=\"/a\""), "{after}");
        assert!(
            text.contains("oomwatch_domain_container_info{cgroup=\"/kubepods/burstable/podu-1/c9\",container_id=\"c9\",domain=\"memcg\",pod_uid=\"u-1\",qos=\"burstable\"} 1\n"),
            "{text}"
        );
        assert!(
            !after.contains("oomwatch_domain_container_info{"),
            "{after}"
        );
        assert!(after.contains("domain=\"memcg\"} 601"), "{after}");
        assert!(text.contains("oomwatch_oom_kills_total 1\n"), "{text}");
        for name in names::ALL {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} in {text}"
            );
        }
        assert!(text.contains("oomwatch_events_dropped_total 0\n"), "{text}");
        assert!(
            text.contains(&format!(
                "oomwatch_build_info{{kernel=\"6.18.44\",version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }
}

/// `oomwatch_reclaim_stall_seconds{kind}`: a histogram whose buckets the
/// kernel fills (log2 microseconds), exported as Prometheus buckets with the
/// same bounds: `le` = 2, 4, 8 … µs, in seconds.
struct ReclaimStalls {
    desc: prometheus::core::Desc,
    /// Per kind: bucket counts, then the nanosecond sum. None: not attached.
    latest: Mutex<Option<Vec<Vec<u64>>>>,
}

impl ReclaimStalls {
    fn new() -> prometheus::Result<Self> {
        Ok(Self {
            desc: prometheus::core::Desc::new(
                names::RECLAIM_STALL.into(),
                "Time tasks stalled in reclaim before their allocation could go on: direct (page allocator) \
                 and memcg (charge over a limit), from vmscan tracepoints; compaction: each compact_zone() run \
                 (direct, kcompactd, proactive), from compaction tracepoints; bucketed in the kernel."
                    .into(),
                vec!["kind".into()],
                Default::default(),
            )?,
            latest: Mutex::new(None),
        })
    }
}

/// The upper bound (seconds) of kernel bucket `b`: 2^(b+1) µs.
fn reclaim_bucket_bound(b: usize) -> f64 {
    (1u64 << (b + 1)) as f64 * 1e-6
}

/// The Prometheus histogram of one kind from its kernel row (bucket counts
/// then the nanosecond sum). The last kernel bucket is open-ended: it is
/// only in `+Inf`.
fn reclaim_histogram_metric(kind: &str, row: &[u64]) -> prometheus::proto::Metric {
    use prometheus::proto;
    let buckets = oomwatch_common::reclaim::BUCKETS as usize;
    let mut h = proto::Histogram::default();
    let mut cumulative = 0;
    let mut out = Vec::new();
    for (b, n) in row.iter().take(buckets - 1).enumerate() {
        cumulative += n;
        let mut bucket = proto::Bucket::default();
        bucket.set_cumulative_count(cumulative);
        bucket.set_upper_bound(reclaim_bucket_bound(b));
        out.push(bucket);
    }
    h.set_bucket(out);
    h.set_sample_count(row.iter().take(buckets).sum());
    h.set_sample_sum(row.get(buckets).copied().unwrap_or(0) as f64 / 1e9);
    let mut label = proto::LabelPair::default();
    label.set_name("kind".into());
    label.set_value(kind.into());
    let mut m = proto::Metric::from_label(vec![label]);
    m.set_histogram(h);
    m
}

struct SharedCollector(Arc<ReclaimStalls>);

#[cfg(test)]
mod reclaim_tests {
    use super::*;

    #[test]
    fn kernel_buckets_become_cumulative_prometheus_buckets() {
        let m = Metrics::new("6.18.44").unwrap();
        assert!(
            !m.render().contains(names::RECLAIM_STALL),
            "not attached: no series"
        );
        let n = oomwatch_common::reclaim::BUCKETS as usize;
        let mut memcg = vec![0u64; n + 1];
        memcg[0] = 3; // under 2 µs
        memcg[10] = 2; // [1024, 2048) µs
        memcg[n - 1] = 1; // open-ended: only in +Inf
        memcg[n] = 5_000_000_000; // 5 s in total
        m.update_reclaim(Some(vec![vec![0; n + 1], memcg]));
        let text = m.render();
        let line = |s: &str| text.lines().any(|l| l == s);
        assert!(
            line(r#"oomwatch_reclaim_stall_seconds_bucket{kind="memcg",le="0.000002"} 3"#),
            "{text}"
        );
        assert!(
            line(r#"oomwatch_reclaim_stall_seconds_bucket{kind="memcg",le="0.001024"} 3"#),
            "{text}"
        );
        assert!(
            line(r#"oomwatch_reclaim_stall_seconds_bucket{kind="memcg",le="0.002048"} 5"#),
            "{text}"
        );
        assert!(
            line(r#"oomwatch_reclaim_stall_seconds_bucket{kind="memcg",le="+Inf"} 6"#),
            "{text}"
        );
        assert!(
            line(r#"oomwatch_reclaim_stall_seconds_count{kind="memcg"} 6"#),
            "{text}"
        );
        assert!(
            line(r#"oomwatch_reclaim_stall_seconds_sum{kind="memcg"} 5"#),
            "{text}"
        );
        assert!(
            line(r#"oomwatch_reclaim_stall_seconds_count{kind="direct"} 0"#),
            "{text}"
        );
    }
}

impl prometheus::core::Collector for SharedCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let latest = self.0.latest.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rows) = latest.as_ref() else {
            return Vec::new();
        };
        let mut mf = prometheus::proto::MetricFamily::default();
        mf.set_name(names::RECLAIM_STALL.into());
        mf.set_help(self.0.desc.help.clone());
        mf.set_field_type(prometheus::proto::MetricType::HISTOGRAM);
        let kinds = ["direct", "memcg", "compaction"];
        *mf.mut_metric() = rows
            .iter()
            .zip(kinds)
            .map(|(row, kind)| reclaim_histogram_metric(kind, row))
            .collect();
        vec![mf]
    }
}
