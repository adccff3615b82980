//! Kernel versions as the model keys on them: `major.minor.sublevel`, because
//! the LTS branches carry OOM backports that a family number cannot express
//! (kernel-oom.md §0.2).

use std::{fmt, str::FromStr};

use serde::Serialize;

/// A kernel release reduced to what decides its OOM behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct KernelVersion {
    pub major: u16,
    pub minor: u16,
    pub sublevel: u16,
}

/// Shorthand for tables.
pub const fn v(major: u16, minor: u16, sublevel: u16) -> KernelVersion {
    KernelVersion {
        major,
        minor,
        sublevel,
    }
}

impl KernelVersion {
    /// Whether this is `series` (major.minor) at `sublevel` or later within it.
    pub fn in_series_from(&self, series: KernelVersion) -> bool {
        self.major == series.major && self.minor == series.minor && self.sublevel >= series.sublevel
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.sublevel)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a kernel release (expected MAJOR.MINOR[.SUBLEVEL][suffix], e.g. 6.18.44 or 5.4.0-150-generic)"
)]
pub struct ParseVersionError(pub String);

impl FromStr for KernelVersion {
    type Err = ParseVersionError;

    /// Parses `uname -r` style strings: `6.18.44-fc-v782`, `5.4.0-150-generic`,
    /// `6.1`, `4.19.78+`. Anything after the numeric prefix is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseVersionError(s.to_owned());
        let mut nums = [0u16; 3];
        let mut count = 0;
        for part in s.trim().split('.').take(3) {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                break;
            }
            nums[count] = digits.parse().map_err(|_| err())?;
            count += 1;
            if digits.len() != part.len() {
                break;
            }
        }
        if count < 2 {
            return Err(err());
        }
        Ok(v(nums[0], nums[1], nums[2]))
    }
}

/// The version the rules key on for a running (or reporting) kernel, and
/// where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunningVersion {
    pub version: KernelVersion,
    /// Where the version was read, in words.
    pub from: String,
}

/// The version of a kernel from its release and what it says of its build.
///
/// A distribution release hides the stable sublevel the backports key on:
/// Debian's `5.10.0-46-cloud-amd64` is 5.10.262, named in the build line of
/// `/proc/version` (and of an OOM report's `CPU:` line) as
/// `Debian 5.10.262-1`; Ubuntu's `6.8.0-45-generic` names its upstream
/// sublevel last in `/proc/version_signature` (`Ubuntu 6.8.0-45.45-generic
/// 6.8.12`). Either is taken when it is the release's own series; otherwise
/// the release itself.
pub fn running_version(
    release: &str,
    build: Option<&str>,
    signature: Option<&str>,
) -> Result<RunningVersion, ParseVersionError> {
    let version: KernelVersion = release.parse()?;
    let same_series = |v: &KernelVersion| v.major == version.major && v.minor == version.minor;
    // The compiler's "(Debian 10.2.1-6)" comes first in /proc/version.
    let debian = build.and_then(|b| {
        b.split("Debian ")
            .skip(1)
            .filter_map(|v| v.split_whitespace().next()?.parse::<KernelVersion>().ok())
            .find(same_series)
    });
    if let Some(d) = debian {
        let from = if d == version {
            "the release".to_owned()
        } else {
            format!("Debian's package version in the build line ({release} is {d})")
        };
        return Ok(RunningVersion { version: d, from });
    }
    let ubuntu = signature
        .filter(|s| s.starts_with("Ubuntu "))
        .and_then(|s| s.split_whitespace().last())
        .and_then(|v| v.parse::<KernelVersion>().ok())
        .filter(same_series);
    if let Some(u) = ubuntu {
        return Ok(RunningVersion {
            version: u,
            from: format!(
                "Ubuntu's upstream version in /proc/version_signature ({release} is {u})"
            ),
        });
    }
    Ok(RunningVersion {
        version,
        from: "the release".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uname_releases() {
        for (text, want) in [
            ("6.18.44-fc-v782", v(6, 18, 44)),
            ("5.4.0-150-generic", v(5, 4, 0)),
            ("6.1", v(6, 1, 0)),
            ("4.19.78+", v(4, 19, 78)),
            ("6.12.107+deb12-cloud-amd64", v(6, 12, 107)),
            ("3.10.0-1160.el7.x86_64", v(3, 10, 0)),
            ("6.9-rc3", v(6, 9, 0)),
        ] {
            assert_eq!(text.parse::<KernelVersion>().unwrap(), want, "{text}");
        }
        for bad in ["", "linux", "6", "x.1.2"] {
            assert!(bad.parse::<KernelVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ordering_and_series() {
        assert!(v(5, 4, 144) > v(5, 4, 59));
        assert!(v(5, 10, 0) > v(5, 9, 99));
        assert!(v(5, 4, 150).in_series_from(v(5, 4, 144)));
        assert!(!v(5, 4, 143).in_series_from(v(5, 4, 144)));
        assert!(!v(5, 10, 150).in_series_from(v(5, 4, 144)));
    }

    #[test]
    fn distribution_sublevels() {
        let deb = running_version(
            "5.10.0-46-cloud-amd64",
            Some("Linux version 5.10.0-46-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-10 (Debian 10.2.1-6) 10.2.1 20210110, GNU ld (GNU Binutils for Debian) 2.35.2) #1 SMP Debian 5.10.262-1 (2026-10-01)"),
            None,
        )
        .unwrap();
        assert_eq!(deb.version, v(5, 10, 262));
        assert!(
            deb.from.contains("5.10.0-46-cloud-amd64 is 5.10.262"),
            "{}",
            deb.from
        );
        // The compiler's "Debian 10.2.1-6" is another series: not taken.
        let gcc_only = running_version(
            "5.10.0-46-cloud-amd64",
            Some("(gcc (Debian 10.2.1-6) 10.2.1) #1 SMP"),
            None,
        )
        .unwrap();
        assert_eq!(gcc_only.version, v(5, 10, 0));
        let same = running_version(
            "7.3.4+deb13-cloud-amd64",
            Some("#1 SMP PREEMPT_DYNAMIC Debian 7.3.4-1~bpo13+1"),
            None,
        )
        .unwrap();
        assert_eq!(
            (same.version, same.from.as_str()),
            (v(7, 3, 4), "the release")
        );
        let ubuntu = running_version(
            "6.8.0-45-generic",
            Some("#45-Ubuntu SMP"),
            Some("Ubuntu 6.8.0-45.45-generic 6.8.12"),
        )
        .unwrap();
        assert_eq!(ubuntu.version, v(6, 8, 12));
        let plain = running_version("6.18.44-fc-v782", None, None).unwrap();
        assert_eq!(
            (plain.version, plain.from.as_str()),
            (v(6, 18, 44), "the release")
        );
        assert!(running_version("linux", None, None).is_err());
    }
}
