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
}
