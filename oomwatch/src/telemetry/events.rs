//! The episodes' own outputs: the event log (JSON lines to a file or stdout)
//! and the `/events` stream (`oomwatch watch` reads it).

use std::io::Write as _;

use anyhow::Context as _;

/// The event log: episodes as JSON lines, to a file or stdout, flushed per
/// line so `tail -f` and log shippers see each OOM at once.
pub struct EventLog(Box<dyn std::io::Write + Send>);

impl EventLog {
    pub fn open(path: &std::path::Path) -> anyhow::Result<Self> {
        if path == std::path::Path::new("-") {
            return Ok(EventLog(Box::new(std::io::stdout())));
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| {
                format!(
                    "open the event log {} for appending (--events): check the directory exists \
                     and is writable, or use --events - for stdout",
                    path.display()
                )
            })?;
        Ok(EventLog(Box::new(f)))
    }

    pub fn write(&mut self, line: &str) {
        if let Err(e) = writeln!(self.0, "{line}").and_then(|()| self.0.flush()) {
            tracing::warn!(error = %e, "cannot write the event log");
        }
    }
}

/// How many episodes a slow `/events` reader may fall behind before it is
/// told it lost some.
pub const EVENT_BACKLOG: usize = 256;

/// `GET /events`: every episode from now on, one JSON line each, for as
/// long as the client stays (`oomwatch watch` reads it).
pub fn event_stream(rx: tokio::sync::broadcast::Receiver<String>) -> axum::body::Body {
    use tokio::sync::broadcast::error::RecvError;
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = match rx.recv().await {
            Ok(line) => line,
            Err(RecvError::Lagged(n)) => format!("{{\"lost\":{n}}}"),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(format!("{line}\n")), rx))
    });
    axum::body::Body::from_stream(lines)
}
