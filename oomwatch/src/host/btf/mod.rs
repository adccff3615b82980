//! The kernel's BTF: [`parse`] turns bytes into a [`Btf`] to query (pure, as
//! aya-obj parses); this module reads the bytes from the running kernel or a
//! file (as aya reads them for aya-obj).

mod parse;

use std::path::Path;

pub use parse::{Btf, BtfError, MemberLayout};

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads and parses the BTF in `path`.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data).map_err(|reason| BtfError::InFile {
            path: path.display().to_string(),
            reason: Box::new(reason),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the running kernel, when it publishes BTF: the offsets the eBPF
    /// programs use must resolve.
    #[test]
    fn running_kernel_offsets_resolve() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: no readable {VMLINUX_BTF}");
            return;
        };
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        let tgid = btf.member_offset("task_struct", "tgid").unwrap();
        assert_eq!(tgid, pid + 4, "pid_t pid; pid_t tgid; are adjacent");
        assert!(
            btf.enum_value("cgroup_subsys_id", "memory_cgrp_id")
                .unwrap()
                >= 0
        );
        assert!(btf.has_func("out_of_memory"));
    }
}
