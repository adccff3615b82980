//! `oomwatch run --config FILE`: the daemon's settings in a TOML file.
//! Flags given on the command line win over the file; the file wins over
//! the defaults.
//!
//! ```toml
//! listen = "127.0.0.1:7707"   # the /metrics and /events address
//! interval = 1.0              # seconds between prediction passes
//! events = "/var/log/oomwatch/events.jsonl"   # or "-" for stdout
//! events_max_bytes = "64M"    # rotate there (bytes, K, M or G; 0: never)
//! events_keep = 4             # rotated files kept: events.jsonl.1 … .4
//!
//! [on_forecast]               # off unless command is given
//! command = ["/usr/local/bin/heap-dump", "--all"]   # never through a shell
//! within = 60                 # run when an OOM is forecast this close (s)
//! timeout = 30                # kill the command after this long (s)
//! cooldown = 300              # not again for the same domain before (s)
//! max_running = 2             # runs at once
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
    pub events_max_bytes: Option<SizeSetting>,
    pub events_keep: Option<usize>,
    pub on_forecast: Option<OnForecastFile>,
}

/// A size in the file: a number of bytes, or a string with a K, M or G.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SizeSetting {
    Bytes(u64),
    Text(String),
}

impl SizeSetting {
    fn bytes(&self) -> anyhow::Result<u64> {
        match self {
            SizeSetting::Bytes(b) => Ok(*b),
            SizeSetting::Text(t) => super::run::parse_size(t)
                .map_err(|e| anyhow::anyhow!("events_max_bytes = {t:?}: {e}")),
        }
    }
}

/// `run`'s `--events*` flags, as given.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EventsFlags {
    pub path: Option<PathBuf>,
    pub max_bytes: Option<u64>,
    pub keep: Option<usize>,
}

/// The `[on_forecast]` table.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OnForecastFile {
    pub command: Option<Vec<String>>,
    pub within: Option<f64>,
    pub timeout: Option<f64>,
    pub cooldown: Option<f64>,
    pub max_running: Option<usize>,
}

/// `run`'s `--on-forecast*` flags, as given.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct OnForecastFlags {
    pub command: Option<String>,
    pub within: Option<f64>,
    pub timeout: Option<f64>,
    pub cooldown: Option<f64>,
    pub max_running: Option<usize>,
}

/// The daemon's settings after merging.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub listen: SocketAddr,
    pub interval: f64,
    pub events: Option<PathBuf>,
    pub events_rotation: crate::telemetry::events::Rotation,
    pub on_forecast: Option<crate::daemon::on_forecast::OnForecast>,
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
            "{}(known keys: listen, interval, events, events_max_bytes, events_keep, and the table [on_forecast] with command, within, timeout, cooldown, max_running)",
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
    if let Some(m) = &c.events_max_bytes {
        m.bytes()?;
    }
    if let Some(k) = c.events_keep {
        check_keep(k).map_err(|e| anyhow::anyhow!("events_keep = {k}: {e}"))?;
    }
    Ok(c)
}

/// Rotated event logs kept: 0 (the full file is removed) to 1000.
pub fn check_keep(k: usize) -> Result<usize, String> {
    if k <= 1000 {
        Ok(k)
    } else {
        Err(format!("{k} rotated files is out of range: use 0 to 1000"))
    }
}

/// Prediction passes run every 0.1 to 3600 seconds.
pub fn check_interval(v: f64) -> Result<f64, String> {
    if (0.1..=3600.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} s is out of range: use 0.1 to 3600"))
    }
}

/// The on-forecast hook from its flags over its table over the defaults;
/// None when no command is given (off).
pub fn merge_on_forecast(
    file: Option<OnForecastFile>,
    flags: OnForecastFlags,
) -> anyhow::Result<Option<crate::daemon::on_forecast::OnForecast>> {
    use crate::daemon::on_forecast::OnForecast;
    let file = file.unwrap_or_default();
    let argv: Vec<String> = match (&flags.command, file.command) {
        (Some(c), _) => c.split_whitespace().map(str::to_owned).collect(),
        (None, Some(argv)) => argv,
        (None, None) => {
            if flags != OnForecastFlags::default() {
                bail!("--on-forecast-* settings need a command: give --on-forecast CMD");
            }
            return Ok(None);
        }
    };
    if argv.first().is_none_or(|p| p.is_empty()) {
        bail!(
            "the on-forecast command is empty: give the program to run, e.g. --on-forecast \"/usr/local/bin/heap-dump --all\""
        );
    }
    let secs = |name: &str, v: f64, min: f64, max: f64| {
        if v.is_finite() && (min..=max).contains(&v) {
            Ok(std::time::Duration::from_secs_f64(v))
        } else {
            Err(anyhow::anyhow!(
                "on-forecast {name} {v} s is out of range: use {min} to {max}"
            ))
        }
    };
    let max_running = flags
        .max_running
        .or(file.max_running)
        .unwrap_or(OnForecast::DEFAULT_MAX_RUNNING);
    if !(1..=64).contains(&max_running) {
        bail!("on-forecast max_running {max_running} is out of range: use 1 to 64");
    }
    Ok(Some(OnForecast {
        argv,
        within: secs(
            "within",
            flags
                .within
                .or(file.within)
                .unwrap_or(OnForecast::DEFAULT_WITHIN),
            0.1,
            86_400.0,
        )?,
        timeout: secs(
            "timeout",
            flags
                .timeout
                .or(file.timeout)
                .unwrap_or(OnForecast::DEFAULT_TIMEOUT),
            0.1,
            3_600.0,
        )?,
        cooldown: secs(
            "cooldown",
            flags
                .cooldown
                .or(file.cooldown)
                .unwrap_or(OnForecast::DEFAULT_COOLDOWN),
            0.0,
            86_400.0,
        )?,
        max_running,
    }))
}

/// Flags over the file over the defaults.
pub fn merge(
    file: FileConfig,
    listen: Option<SocketAddr>,
    interval: Option<f64>,
    events: EventsFlags,
    on_forecast: OnForecastFlags,
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
    use crate::telemetry::events::Rotation;
    let max_bytes = match (events.max_bytes, &file.events_max_bytes) {
        (Some(b), _) => b,
        (None, Some(m)) => m.bytes()?,
        (None, None) => Rotation::DEFAULT_MAX_BYTES,
    };
    let keep = events
        .keep
        .or(file.events_keep)
        .unwrap_or(Rotation::DEFAULT_KEEP);
    check_keep(keep).map_err(|e| anyhow::anyhow!("--events-keep {keep}: {e}"))?;
    Ok(Settings {
        listen,
        interval,
        events: events.path.or(file.events),
        events_rotation: Rotation { max_bytes, keep },
        on_forecast: merge_on_forecast(file.on_forecast, on_forecast)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file the packages install as /etc/oomwatch/config.toml gives
    /// the daemon its defaults, and each commented-out example, once
    /// uncommented, is a valid setting too.
    #[test]
    fn the_shipped_config_file_is_the_defaults_and_its_examples_are_valid() {
        let shipped = include_str!("../../../deploy/config.toml");
        let s = merge(
            parse(shipped).unwrap(),
            None,
            None,
            EventsFlags::default(),
            OnForecastFlags::default(),
        )
        .unwrap();
        let defaults = merge(
            FileConfig::default(),
            None,
            None,
            EventsFlags::default(),
            OnForecastFlags::default(),
        )
        .unwrap();
        assert_eq!(s, defaults);
        let uncommented: String = shipped
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let all = parse(&uncommented).unwrap();
        assert!(
            all.events.is_some() && all.on_forecast.is_some(),
            "{uncommented}"
        );
        merge(
            all,
            None,
            None,
            EventsFlags::default(),
            OnForecastFlags::default(),
        )
        .unwrap();
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let f = parse("listen = \"0.0.0.0:9000\"\ninterval = 5\nevents = \"-\"\n").unwrap();
        let s = merge(
            f,
            None,
            Some(2.0),
            EventsFlags::default(),
            OnForecastFlags::default(),
        )
        .unwrap();
        assert_eq!(s.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(s.interval, 2.0);
        assert_eq!(s.events.as_deref(), Some(Path::new("-")));
        let s = merge(
            FileConfig::default(),
            None,
            None,
            EventsFlags::default(),
            OnForecastFlags::default(),
        )
        .unwrap();
        assert_eq!(
            s.events_rotation,
            crate::telemetry::events::Rotation::default()
        );
        assert_eq!(s.on_forecast, None);
        assert_eq!(s.listen, crate::daemon::DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(s.interval, 1.0);
        assert_eq!(s.events, None);
    }

    /// Rotation: flags over the file (a number or a string with a suffix)
    /// over the defaults; bad values named.
    #[test]
    fn event_log_rotation_settings() {
        let f = parse("events = \"/x\"\nevents_max_bytes = \"8M\"\nevents_keep = 2\n").unwrap();
        let s = merge(
            f,
            None,
            None,
            EventsFlags::default(),
            OnForecastFlags::default(),
        )
        .unwrap();
        assert_eq!(
            (s.events_rotation.max_bytes, s.events_rotation.keep),
            (8 << 20, 2)
        );
        let f = parse("events_max_bytes = 1000\n").unwrap();
        let flags = EventsFlags {
            path: None,
            max_bytes: None,
            keep: Some(7),
        };
        let s = merge(f, None, None, flags, OnForecastFlags::default()).unwrap();
        assert_eq!(
            (s.events_rotation.max_bytes, s.events_rotation.keep),
            (1000, 7)
        );
        let e = parse("events_max_bytes = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("events_max_bytes = \"lots\": "), "{e}");
        let e = parse("events_keep = 5000\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "events_keep = 5000: 5000 rotated files is out of range: use 0 to 1000"
        );
    }

    #[test]
    fn bad_files_are_named_precisely() {
        let e = parse("lisen = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `lisen`"), "{e}");
        assert!(e.contains("known keys: listen, interval, events"), "{e}");
        let e = parse("[on_forecast]\ncomand = [\"x\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `comand`"), "{e}");
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

    /// The hook: off without a command; the flag's command (split at
    /// whitespace, never a shell) wins over the file's argv; each setting
    /// from the flag, the file or the default; bad values are named.
    #[test]
    fn on_forecast_settings() {
        let f = parse(
            "[on_forecast]\ncommand = [\"/bin/dump\", \"a b\"]\nwithin = 120\ncooldown = 0\n",
        )
        .unwrap();
        let h = merge_on_forecast(f.on_forecast, OnForecastFlags::default())
            .unwrap()
            .unwrap();
        assert_eq!(h.argv, ["/bin/dump", "a b"]);
        assert_eq!(h.within.as_secs(), 120);
        assert_eq!(h.cooldown.as_secs(), 0);
        assert_eq!(h.timeout.as_secs(), 30);
        assert_eq!(h.max_running, 2);
        let flags = OnForecastFlags {
            command: Some("/bin/other  --x".into()),
            max_running: Some(1),
            ..Default::default()
        };
        let h = merge_on_forecast(None, flags).unwrap().unwrap();
        assert_eq!(h.argv, ["/bin/other", "--x"]);
        assert_eq!(h.max_running, 1);
        let e = merge_on_forecast(
            None,
            OnForecastFlags {
                within: Some(30.0),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("give --on-forecast CMD"), "{e}");
        let e = merge_on_forecast(
            None,
            OnForecastFlags {
                command: Some("x".into()),
                timeout: Some(0.0),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "on-forecast timeout 0 s is out of range: use 0.1 to 3600"
        );
        assert!(
            merge_on_forecast(
                None,
                OnForecastFlags {
                    command: Some("  ".into()),
                    ..Default::default()
                }
            )
            .is_err()
        );
    }
}
