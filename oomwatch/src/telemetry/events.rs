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
/// told it lost some, and dropped.
pub const EVENT_BACKLOG: usize = 256;

/// `GET /events`: every episode from now on, one JSON line each, for as
/// long as the client stays and keeps up (`oomwatch watch` reads it).
///
/// A reader that falls [`EVENT_BACKLOG`] episodes behind gets one
/// `{"lost":N}` line, `on_lost(N)` is called, and its stream ends: a client
/// that cannot keep up would otherwise hold its place forever and lag
/// again. `held` (a reader slot, say) lives as long as the stream.
pub fn event_stream(
    rx: tokio::sync::broadcast::Receiver<String>,
    held: impl Send + 'static,
    on_lost: impl FnOnce(u64) + Send + 'static,
) -> axum::body::Body {
    use tokio::sync::broadcast::error::RecvError;
    // None once the lost line went out: the stream ends at the next poll.
    let state = Some((rx, held, on_lost));
    let lines = futures_util::stream::unfold(state, |state| async move {
        let (mut rx, held, on_lost) = state?;
        match rx.recv().await {
            Ok(line) => Some((format!("{line}\n"), Some((rx, held, on_lost)))),
            Err(RecvError::Lagged(n)) => {
                on_lost(n);
                Some((format!("{{\"lost\":{n}}}\n"), None))
            }
            Err(RecvError::Closed) => None,
        }
    });
    axum::body::Body::from_stream(futures_util::StreamExt::map(
        lines,
        Ok::<_, std::convert::Infallible>,
    ))
}
