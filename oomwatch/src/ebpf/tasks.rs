//! The task iterator (`iter/task`, `oomwatch_tasks`): loaded alone, every
//! attach of it one pass over every task (read by `snapshot::bpf`).

use aya::{Ebpf, EbpfLoader};
use oomwatch_common::TaskIterLayout;

use super::{EBPF_OBJECT, LoadError, object_embedded, typed_program};

/// The task iterator, loaded (not attached): `oomwatch_tasks` from the
/// object, with `layout` written in. Every `attach()` of it is one pass over
/// every task. The object's other programs stay unloaded; its ring buffer
/// is shrunk to a page, as nothing writes to it here.
pub fn load_task_iterator(layout: &TaskIterLayout) -> Result<Ebpf, LoadError> {
    if !object_embedded() {
        return Err(LoadError::NoObject);
    }
    // One parse of the kernel's BTF (about 25 MiB while it lives) serves the
    // loader and the program's attach point.
    let btf = aya::Btf::from_sys_fs().map_err(|e| LoadError::Program {
        what: "the kernel's BTF for the task iterator".into(),
        source: aya::programs::ProgramError::Btf(e),
    })?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .map_max_entries("EVENTS", 4096)
        .override_global("TASK_ITER_LAYOUT", layout, true)
        .load(EBPF_OBJECT)
        .map_err(LoadError::Object)?;
    let prog: &mut aya::programs::Iter = typed_program(&mut ebpf, "oomwatch_tasks")?;
    prog.load("task", &btf)
        .map_err(|source| LoadError::Program {
            what: "load the task iterator (iter/task)".into(),
            source,
        })?;
    Ok(ebpf)
}
