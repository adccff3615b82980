//! `oomwatch simulate`: one allocation through the model of the page
//! allocator's slowpath (or a memcg charge), and the OOM killer's decision
//! when it ends in one.

use anyhow::{Context as _, bail};

use crate::{
    model::{
        KernelBehavior, Scan,
        gfp::GfpTable,
        oom::{Constraint, Decision, OomCall, OomSysctls, out_of_memory},
        slowpath::{self, AllocRequest, Ending, PathResult, TaskFlags, ZoneState},
        watermark::Watermarks,
    },
    snapshot::{Domains, Snapshotter, Source, SystemSnapshot, Want, zoneinfo::ZoneInfo},
};

/// `oomwatch simulate`.
pub fn simulate(gfp: &str, order: u32, cgroup: Option<&str>, json: bool) -> anyhow::Result<()> {
    if order > 10 {
        bail!(
            "--order {order}: the buddy allocator's largest order is 10 (MAX_PAGE_ORDER); use 0 – 10"
        );
    }
    let snap = read_snapshot(cgroup)?;
    let kb = snap.procs.behavior();
    let table = crate::host::gfp::live_gfp_table(&kb);
    let mask = table.parse(gfp).with_context(|| format!("--gfp {gfp:?}"))?;
    let req = AllocRequest {
        gfp: mask,
        order,
        task: TaskFlags::default(),
    };
    let path = allocation_path(&req, &snap, cgroup.is_some(), &table, &kb)?;
    let decision = oom_decision(&path, &snap, cgroup.is_some(), mask, &table, &kb);
    let sim = Simulation {
        snap: &snap,
        order,
        mask,
        table: &table,
        path: &path,
        decision: decision.as_ref(),
    };
    if json {
        sim.print_json()
    } else {
        sim.print_text()
    }
}

/// One simulated allocation and what became of it, for printing.
struct Simulation<'a> {
    snap: &'a SystemSnapshot,
    order: u32,
    mask: u64,
    table: &'a GfpTable,
    path: &'a PathResult,
    decision: Option<&'a Decision>,
}

/// The snapshot: always from /proc, with the zones for a host allocation.
fn read_snapshot(cgroup: Option<&str>) -> anyhow::Result<SystemSnapshot> {
    let want = Want {
        domains: cgroup.map_or(Domains::Host, |p| Domains::Memcg(p.to_owned())),
        zones: cgroup.is_none(),
        kernel_scores: 0,
        events: false,
    };
    Snapshotter::open(Source::Proc)?.read_system(std::path::Path::new("/proc"), &want)
}

/// The allocation's way through the model: a charge against the memcg's
/// limit, or the page allocator over the host's zones.
fn allocation_path(
    req: &AllocRequest,
    snap: &SystemSnapshot,
    memcg: bool,
    table: &GfpTable,
    kb: &KernelBehavior,
) -> anyhow::Result<PathResult> {
    Ok(match &snap.domains[0].charge {
        Some(Ok(state)) => slowpath::charge_memcg(req, state, table, kb),
        Some(Err(e)) => bail!("{e}"),
        None if memcg => bail!("memory controller"),
        None => {
            let swap_room = snap.procs.memory.total_swap_pages > 0;
            slowpath::alloc_pages(req, &zone_states(&snap.zones, swap_room), table, kb)
        }
    })
}

/// The zones the allocation may use (node 0, or every zone of a single
/// node), as the slowpath model takes them.
fn zone_states(zones: &[ZoneInfo], swap_room: bool) -> Vec<ZoneState> {
    zones
        .iter()
        .filter(|z| z.node == 0 || zones.iter().all(|o| o.node == z.node))
        .map(|z| ZoneState {
            name: z.name.clone(),
            free_pages: z.free_pages,
            wmark: Watermarks {
                min: z.min,
                low: z.low,
                high: z.high,
                promo: z.promo,
            },
            lowmem_reserve: z.protection.clone(),
            reclaimable_pages: z.file_lru + if swap_room { z.anon_lru } else { 0 },
            free_cma_pages: z.free_cma,
            free_blocks: z.free_blocks.clone(),
        })
        .collect()
}

/// The OOM killer's decision when the path ends in an OOM (None otherwise).
fn oom_decision(
    path: &PathResult,
    snap: &SystemSnapshot,
    memcg_oom: bool,
    mask: u64,
    table: &GfpTable,
    kb: &KernelBehavior,
) -> Option<Decision> {
    let oom = matches!(
        path.ending,
        Ending::OutOfMemory | Ending::MemcgOom | Ending::MemcgOomWaits
    );
    if !oom {
        return None;
    }
    let dom = &snap.domains[0];
    let processes = dom.processes(&snap.procs);
    let call = OomCall {
        constraint: if memcg_oom {
            Constraint::ConstraintMemcg
        } else {
            Constraint::ConstraintNone
        },
        gfp_fs: mask & table.flag("__GFP_FS") != 0,
        gfp_zero: mask == 0,
        sysrq: false,
        oom_killer_disabled: false,
        notifier_freed: false,
        current: None,
        current_exiting: false,
        sysctls: OomSysctls {
            panic_on_oom: snap.sysctls.panic_on_oom,
            oom_kill_allocating_task: snap.sysctls.oom_kill_allocating_task,
        },
        scan: Scan {
            domain: dom.kind,
            processes: &processes,
            totalpages: dom.totalpages,
            page_size: snap.procs.page_size,
            sysrq: false,
        },
        domain_memcg: dom.cgroup.as_deref(),
        oom_group_memcgs: &dom.oom_groups,
        cgroup_v2: snap.cgroup_v2,
    };
    Some(out_of_memory(&call, kb))
}

impl Simulation<'_> {
    /// `--json`: the allocation, its steps and ending, the decision, the victim.
    fn print_json(&self) -> anyhow::Result<()> {
        let dom = &self.snap.domains[0];
        let victim = self.decision.and_then(|d| match d {
            Decision::Kill { kill, selection } => {
                let c = selection.chosen()?;
                Some(serde_json::json!({
                    "pid": c.pid, "tgid": kill.victim_tgid, "comm": c.comm,
                    "points": c.badness.points, "margin": selection.margin(),
                    "also_killed": kill.also_killed,
                }))
            }
            _ => None,
        });
        let out = serde_json::json!({
            "kernel": self.snap.procs.kernel,
            "gfp": { "mask": format!("{:#x}", self.mask), "names": self.table.format(self.mask) },
            "order": self.order,
            "domain": { "kind": dom.kind, "cgroup": dom.cgroup, "totalpages": dom.totalpages },
            "steps": self.path.steps,
            "ending": self.path.ending,
            "oom": self.decision,
            "victim": victim,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(())
    }

    /// The human form: the steps, the ending, the victim.
    fn print_text(&self) -> anyhow::Result<()> {
        let Simulation {
            snap,
            order,
            mask,
            table,
            path,
            decision,
        } = *self;
        println!(
            "allocation: order {order}, gfp_mask={mask:#x}({}), Linux {}",
            table.format(mask),
            snap.procs.kernel
        );
        for (i, s) in path.steps.iter().enumerate() {
            println!("  {}. {}: {}", i + 1, s.at, s.detail);
        }
        println!("ending:     {}", describe_ending(&path.ending));
        if let Some(d) = decision {
            match d {
                Decision::Kill { kill, selection } => {
                    if let Some(c) = selection.chosen() {
                        println!(
                            "victim:     {} ({}) — {}; margin {} points over the runner-up",
                            crate::model::printable(&c.comm),
                            kill.victim_tgid,
                            crate::model::explain::breakdown(&c.badness),
                            selection.margin().map_or("n/a".into(), |m| m.to_string())
                        );
                    }
                }
                other => println!("oom:        {}", serde_json::to_string(other)?),
            }
        }
        Ok(())
    }
}

/// The path's ending in words.
fn describe_ending(ending: &Ending) -> String {
    match ending {
        Ending::Allocated { stage: "charge", .. } => "charged: the memcg stays within its limit".into(),
        Ending::Allocated { zone, stage } => format!("allocated from {zone} ({stage})"),
        Ending::AllocatedAfterReclaim { zone } => {
            format!("allocated from {zone} once reclaim frees what it counts as reclaimable")
        }
        Ending::DependsOnCompaction => "depends on compaction building a free block".into(),
        Ending::Fails { reason } => format!("fails without an OOM kill: {reason}"),
        Ending::OutOfMemory => "global OOM: out_of_memory() runs".into(),
        Ending::MemcgOom => "memcg OOM: the OOM killer runs in the memory cgroup".into(),
        Ending::MemcgOomWaits => {
            "memcg OOM with the OOM killer disabled: the task waits (victim below if it were enabled)".into()
        }
        Ending::NofailLoops => "__GFP_NOFAIL: never fails, loops".into(),
        Ending::FaultRetried => "the page fault is retried".into(),
    }
}
