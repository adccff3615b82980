//! The capabilities oomwatch needs, read from the process's effective set.

use serde::Serialize;

/// Capability numbers from `include/uapi/linux/capability.h`.
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capabilities that matter to oomwatch.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Privileges {
    pub euid: u32,
    pub cap_bpf: bool,
    pub cap_perfmon: bool,
    pub cap_sys_admin: bool,
    pub cap_sys_resource: bool,
}

impl Privileges {
    /// From a `CapEff` mask as in `/proc/PID/status`.
    pub fn from_capeff(euid: u32, capeff: u64) -> Self {
        let has = |cap: u32| capeff & (1u64 << cap) != 0;
        Self {
            euid,
            cap_bpf: has(CAP_BPF),
            cap_perfmon: has(CAP_PERFMON),
            cap_sys_admin: has(CAP_SYS_ADMIN),
            cap_sys_resource: has(CAP_SYS_RESOURCE),
        }
    }

    /// This process's privileges (all false when /proc cannot be read).
    pub fn current() -> Self {
        let euid = nix::unistd::geteuid().as_raw();
        let capeff = procfs::process::Process::myself()
            .and_then(|p| p.status())
            .map(|s| s.capeff)
            .unwrap_or(0);
        Self::from_capeff(euid, capeff)
    }

    /// One sentence naming what is missing to load and attach the programs,
    /// or `None` when nothing is. Since 5.8 CAP_BPF loads programs and
    /// CAP_PERFMON attaches tracing ones; CAP_SYS_ADMIN covers both.
    pub fn missing_for_tracing(&self) -> Option<String> {
        if self.cap_sys_admin || (self.cap_bpf && self.cap_perfmon) {
            return None;
        }
        let mut missing = Vec::new();
        if !self.cap_bpf {
            missing.push("CAP_BPF");
        }
        if !self.cap_perfmon {
            missing.push("CAP_PERFMON");
        }
        Some(format!(
            "oomwatch needs {} (or CAP_SYS_ADMIN) to load and attach its eBPF programs, and this \
             process (euid {}) lacks it: run it as root, e.g. `sudo oomwatch run`",
            missing.join(" and "),
            self.euid
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_with_full_caps_needs_nothing() {
        assert_eq!(
            Privileges::from_capeff(0, 0x1ff_ffff_ffff).missing_for_tracing(),
            None
        );
    }

    #[test]
    fn bpf_and_perfmon_suffice_without_sys_admin() {
        let caps = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        assert_eq!(
            Privileges::from_capeff(1000, caps).missing_for_tracing(),
            None
        );
    }

    #[test]
    fn unprivileged_names_both_capabilities() {
        let msg = Privileges::from_capeff(1000, 0)
            .missing_for_tracing()
            .unwrap();
        assert!(msg.contains("CAP_BPF and CAP_PERFMON"), "{msg}");
        assert!(msg.contains("euid 1000"), "{msg}");
        let msg = Privileges::from_capeff(1000, 1 << CAP_BPF)
            .missing_for_tracing()
            .unwrap();
        assert!(msg.contains("needs CAP_PERFMON (or"), "{msg}");
    }
}
