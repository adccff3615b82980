//! The GFP flag names of the running kernel.

use crate::model::{KernelBehavior, gfp::GfpTable};

/// The GFP table of the running kernel: its own flag list when tracefs is
/// readable, else the model's table for this version.
pub fn live_gfp_table(kb: &KernelBehavior) -> GfpTable {
    super::tracefs::find()
        .and_then(|root| {
            std::fs::read_to_string(root.join("events/kmem/mm_page_alloc/format")).ok()
        })
        .and_then(|fmt| GfpTable::from_trace_format(&fmt))
        .unwrap_or_else(|| GfpTable::builtin(kb))
}
