//! What the running kernel offers oomwatch, read from the files it publishes:
//! its BTF ([`btf`]), tracefs and its event formats ([`tracefs`]), the GFP
//! flag names it prints ([`gfp`]), where the memory controller is mounted
//! ([`cgroup`]), this process's capabilities ([`privilege`]), its symbols
//! ([`kallsyms`]), the possible CPUs ([`cpus`]) and the release.
//!
//! May use: `model` (the layouts and tables it fills). Nothing else of the
//! crate: everything else reads the host through here.

pub mod btf;
pub mod cgroup;
pub mod cpus;
pub mod gfp;
pub mod kallsyms;
pub mod privilege;
pub mod psi;
pub mod tracefs;

/// The running kernel's release string (`uname -r`), or `unknown`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
