//! `oomwatch run --config FILE`: the daemon's settings in a TOML file.
//! Flags given on the command line win over the file; the file wins over
//! the defaults.
//!
//! ```toml
//! listen = "127.0.0.1:7707"   # the /metrics and /events address
//! interval = 1.0              # seconds between prediction passes
//! events = "/var/log/oomwatch/events.jsonl"   # or "-" for stdout
//! ```

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// The file's keys, all optional.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub interval: Option<f64>,
    pub events: Option<PathBuf>,
}

/// The daemon's settings after merging.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub listen: SocketAddr,
    pub interval: f64,
    pub events: Option<PathBuf>,
}

/// Reads and checks `path`; every error names the file and the fix.
pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the config file {} (--config)", path.display()))?;
    parse(&text).with_context(|| format!("config file {}", path.display()))
}

/// Parses and checks a config file's text.
pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
    let c: FileConfig = toml::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{}(known keys: listen, interval, events)",
            e.to_string().trim_end().to_owned() + "\n"
        )
    })?;
    if let Some(l) = &c.listen {
        l.parse::<SocketAddr>().map_err(|_| {
            anyhow::anyhow!("listen = {l:?} is not an ADDR:PORT, e.g. \"127.0.0.1:7707\"")
        })?;
    }
    if let Some(i) = c.interval {
        check_interval(i).map_err(|e| anyhow::anyhow!("interval = {i}: {e}"))?;
    }
    Ok(c)
}

/// Prediction passes run every 0.1 to 3600 seconds.
pub fn check_interval(v: f64) -> Result<f64, String> {
    if (0.1..=3600.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} s is out of range: use 0.1 to 3600"))
    }
}

/// Flags over the file over the defaults.
pub fn merge(
    file: FileConfig,
    listen: Option<SocketAddr>,
    interval: Option<f64>,
    events: Option<PathBuf>,
) -> anyhow::Result<Settings> {
    let listen = match (listen, file.listen) {
        (Some(l), _) => l,
        (None, Some(l)) => l.parse()?,
        (None, None) => crate::daemon::DEFAULT_LISTEN.parse()?,
    };
    let interval = interval.or(file.interval).unwrap_or(1.0);
    if check_interval(interval).is_err() {
        bail!("interval {interval} s is out of range: use 0.1 to 3600");
    }
    Ok(Settings {
        listen,
        interval,
        events: events.or(file.events),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let f = parse("listen = \"0.0.0.0:9000\"\ninterval = 5\nevents = \"-\"\n").unwrap();
        let s = merge(f, None, Some(2.0), None).unwrap();
        assert_eq!(s.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(s.interval, 2.0);
        assert_eq!(s.events.as_deref(), Some(Path::new("-")));
        let s = merge(FileConfig::default(), None, None, None).unwrap();
        assert_eq!(s.listen, crate::daemon::DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(s.interval, 1.0);
        assert_eq!(s.events, None);
    }

    #[test]
    fn bad_files_are_named_precisely() {
        let e = parse("lisen = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `lisen`"), "{e}");
        assert!(e.contains("known keys: listen, interval, events"), "{e}");
        let e = parse("listen = \"localhost\"\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "listen = \"localhost\" is not an ADDR:PORT, e.g. \"127.0.0.1:7707\""
        );
        let e = parse("interval = 0.01\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "interval = 0.01: 0.01 s is out of range: use 0.1 to 3600"
        );
        let e = parse("interval = \"fast\"\n").unwrap_err().to_string();
        assert!(e.contains("invalid type"), "{e}");
        let e = load(Path::new("/nonexistent/oomwatch.toml")).unwrap_err();
        assert!(
            format!("{e:#}")
                .starts_with("read the config file /nonexistent/oomwatch.toml (--config): "),
            "{e:#}"
        );
    }
}
