//! The episodes' own outputs: the event log (JSON lines to a file or stdout)
//! and the `/events` stream (`oomwatch watch` reads it).

use std::{
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::mpsc,
};

use anyhow::{Context as _, bail};

/// When the event log file is rotated: at `max_bytes` (0: never), keeping
/// `keep` old files beside it (`FILE.1` the newest … `FILE.keep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: usize,
}

impl Rotation {
    /// 64 MiB: about 40 000 episodes of a large report (a task table of a
    /// few hundred rows is 1 – 2 KiB of JSON).
    pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
    pub const DEFAULT_KEEP: usize = 4;
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            keep: Self::DEFAULT_KEEP,
        }
    }
}

/// Lines waiting for the writer: a disk that stalls for this many episodes
/// costs lines (counted), never the daemon's loop.
pub const EVENT_LOG_QUEUE: usize = 1024;

/// The event log: episodes as JSON lines, to a file or stdout, flushed per
/// line so `tail -f` and log shippers see each OOM at once. Written by its
/// own thread, so a slow or stalled disk never holds the daemon's loop: the
/// loop only queues the line. Dropping it writes what is queued and waits
/// for the writer.
pub struct EventLog {
    tx: Option<mpsc::SyncSender<String>>,
    writer: Option<std::thread::JoinHandle<()>>,
    lost: prometheus::IntCounter,
}

/// Where the writer puts the lines.
enum Sink {
    Stdout,
    File {
        path: PathBuf,
        file: std::fs::File,
        size: u64,
        rotation: Rotation,
    },
}

/// Opens the event log `path` for appending, the way a root daemon must:
/// never through a symbolic link (`O_NOFOLLOW`: a link planted in a
/// writable directory would make root append to any file), only a regular
/// file, created with mode 0640 (episodes name processes and cgroups).
pub fn open_append(path: &Path) -> anyhow::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path);
    let f = match f {
        Ok(f) => f,
        // A FIFO with no reader: O_NONBLOCK makes the open fail instead of
        // waiting for one.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => bail!(
            "the event log {} is not a regular file (a FIFO, device or socket): give a file path, \
             or --events - for stdout",
            path.display()
        ),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!(
            "the event log {} is a symbolic link: oomwatch does not follow links for files it writes as root; give the link's target, or --events - for stdout",
            path.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "open the event log {} for appending (--events): check the directory exists and is writable, or use --events - for stdout",
                    path.display()
                )
            });
        }
    };
    let meta = f
        .metadata()
        .with_context(|| format!("stat the event log {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!(
            "the event log {} is not a regular file (a FIFO, device or socket): give a file path, or --events - for stdout",
            path.display()
        );
    }
    // O_NONBLOCK only kept a FIFO from blocking the open; a regular file
    // ignores it, but clear it all the same.
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        use std::os::fd::AsRawFd as _;
        let fd = f.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(f)
}

/// `FILE.n`, the n-th newest rotated file.
fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Sink {
    fn write(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}")?;
                out.flush()
            }
            Sink::File {
                path,
                file,
                size,
                rotation,
            } => {
                let len = line.len() as u64 + 1;
                if rotation.max_bytes > 0 && *size > 0 && *size + len > rotation.max_bytes {
                    rotate(path, rotation.keep)?;
                    *file = open_append(path).map_err(std::io::Error::other)?;
                    *size = 0;
                }
                writeln!(file, "{line}")?;
                *size += len;
                Ok(())
            }
        }
    }
}

/// Shifts `FILE.1` … to `FILE.2` …, `FILE` to `FILE.1`, and drops what
/// falls beyond `keep` (`keep` 0: `FILE` is removed).
fn rotate(path: &Path, keep: usize) -> std::io::Result<()> {
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    match std::fs::remove_file(rotated(path, keep)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    for n in (1..keep).rev() {
        match std::fs::rename(rotated(path, n), rotated(path, n + 1)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(path, rotated(path, 1))
}

impl EventLog {
    /// Opens `path` (`-`: stdout) now, so a bad path fails at start, and
    /// starts the writer. `lost` counts lines that could not be written (the
    /// queue was full, or the write failed).
    pub fn open(
        path: &Path,
        rotation: Rotation,
        lost: prometheus::IntCounter,
    ) -> anyhow::Result<Self> {
        let sink = if path == Path::new("-") {
            Sink::Stdout
        } else {
            let file = open_append(path)?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            Sink::File {
                path: path.to_owned(),
                file,
                size,
                rotation,
            }
        };
        Ok(Self::start(sink, lost))
    }

    fn start(mut sink: Sink, lost: prometheus::IntCounter) -> Self {
        let (tx, rx) = mpsc::sync_channel::<String>(EVENT_LOG_QUEUE);
        let lost_in_writer = lost.clone();
        let writer = std::thread::Builder::new()
            .name("oomwatch-events".into())
            .spawn(move || {
                let mut failing = false;
                for line in rx {
                    match sink.write(&line) {
                        Ok(()) => failing = false,
                        Err(e) => {
                            lost_in_writer.inc();
                            // One warning per run of failures, not per line.
                            if !failing {
                                tracing::warn!(error = %e, "cannot write the event log");
                            }
                            failing = true;
                        }
                    }
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "cannot start the event log's writer"))
            .ok();
        EventLog {
            tx: writer.is_some().then_some(tx),
            writer,
            lost,
        }
    }

    /// Queues `line`; false (and counted) when it cannot be written: the
    /// writer is that far behind, or gone.
    pub fn write(&mut self, line: &str) -> bool {
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.try_send(line.to_owned()).is_ok());
        if !sent {
            self.lost.inc();
        }
        sent
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has written the rest.
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn counter() -> prometheus::IntCounter {
        prometheus::IntCounter::new("lost", "lines lost").unwrap()
    }

    #[test]
    fn a_symbolic_link_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("shadow");
        std::fs::write(&target, "root:x:0:0\n").unwrap();
        let link = dir.path().join("events.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = EventLog::open(&link, Rotation::default(), counter())
            .err()
            .expect("a link is refused");
        assert!(format!("{err:#}").contains("is a symbolic link"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "root:x:0:0\n");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("events.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = EventLog::open(&fifo, Rotation::default(), counter())
            .err()
            .expect("a FIFO is refused");
        assert!(format!("{err:#}").contains("not a regular file"), "{err:#}");
    }

    #[test]
    fn a_new_file_is_not_world_readable_and_gets_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let lost = counter();
        let mut log = EventLog::open(&path, Rotation::default(), lost.clone()).unwrap();
        for i in 0..100 {
            assert!(log.write(&format!("{{\"n\":{i}}}")));
        }
        drop(log);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "mode {mode:o}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 100);
        assert_eq!(text.lines().last(), Some("{\"n\":99}"));
        assert_eq!(lost.get(), 0);
    }

    #[test]
    fn rotation_keeps_n_files_below_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let rotation = Rotation {
            max_bytes: 100,
            keep: 2,
        };
        let mut log = EventLog::open(&path, rotation, counter()).unwrap();
        // 10 lines of 30 bytes (29 + newline): 3 per file.
        for i in 0..10 {
            log.write(&format!("{i:0>29}"));
        }
        drop(log);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let first = |t: String| t.lines().next().unwrap().trim_start_matches('0').to_owned();
        assert_eq!(
            read(&path).lines().count(),
            1,
            "the newest file holds line 9"
        );
        assert_eq!(first(read(&path)), "9");
        assert_eq!(first(read(&rotated(&path, 1))), "6");
        assert_eq!(first(read(&rotated(&path, 2))), "3");
        assert!(!rotated(&path, 3).exists(), "only 2 kept");
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 100);
        }
    }

    #[test]
    fn rotation_off_keeps_one_growing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let rotation = Rotation {
            max_bytes: 0,
            keep: 2,
        };
        let mut log = EventLog::open(&path, rotation, counter()).unwrap();
        for _ in 0..50 {
            log.write("0123456789");
        }
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 51, "appended after the old line");
        assert!(!rotated(&path, 1).exists());
    }
}
