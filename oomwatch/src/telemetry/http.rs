//! The HTTP endpoints: `/metrics` (Prometheus text exposition), `/events`
//! (every episode from now on, one JSON line each) and `/`; and the server
//! that keeps what its clients can hold bounded.
//!
//! The daemon runs as root with `OOMScoreAdjust=-900`: the OOM killer
//! spares it, so every socket and buffer a client makes it hold stays held
//! while the machine runs out of memory. Any local user can connect, so
//! each thing a client can hold has a limit below: connections, the time to
//! send a request head, its size, a request's time to be answered, the time
//! a socket may take no bytes, `/events` readers and how far each may lag.
//! The values are constants, not flags: they bound a monitoring endpoint
//! that one Prometheus and a few `oomwatch watch` clients use.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    http::{Request, Response, StatusCode, header},
    response::IntoResponse as _,
    routing::get,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{Notify, Semaphore, broadcast, watch},
    time::{Instant, Sleep},
};

use super::{
    events::event_stream,
    metrics::{Metrics, http_refusal},
};

/// Connections open at once. Prometheus holds one, each `oomwatch watch`
/// one; 64 leaves room for several scrapers, the readers and curl, while
/// 64 sockets with their buffers (at most [`MAX_BUF_BYTES`] each on our
/// side) stay under a few MiB. Past it, the oldest connection with no
/// request in flight is closed for the new one (see [`serve`]).
pub const MAX_CONNECTIONS: usize = 64;

/// Clients reading `/events` at once. Each holds a connection for as long
/// as it likes and a place in the episode channel (up to
/// [`EVENT_BACKLOG`](super::events::EVENT_BACKLOG) episodes queued for it):
/// 16 is many watchers, and leaves 48 connections for scrapes. Past it,
/// `/events` answers 503.
pub const MAX_EVENT_READERS: usize = 16;

/// Time from a connection's start, or from its last answer, to a complete
/// request head. A scraper sends its request at once; 5 s is plenty on any
/// link and frees a slot held by a client that sends nothing or a byte at a
/// time. hyper starts this timer again as soon as a kept-alive connection
/// goes idle, so it is the idle keep-alive timeout too: a scraper that
/// comes back every 15 s opens a new connection, which costs nothing next
/// to the scrape.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Time to answer a request other than `/events` (a stream that lasts),
/// from its head to the last byte handed to the socket. `/metrics` renders
/// in milliseconds; 10 s is Prometheus's default scrape timeout.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Time a socket may take no bytes while we have bytes for it: a client
/// that stops reading (an `/events` reader that went to sleep, a scrape
/// never read) is cut off after it instead of holding its buffers forever.
/// A client that reads at all empties a socket buffer in far less; 5 s
/// also cuts a stalled scrape before its [`REQUEST_DEADLINE`].
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A request head's size, request line included. Ours take no header a
/// client needs to make long; 8 KiB is what common servers allow (431
/// past it).
pub const MAX_HEADER_BYTES: usize = 8 << 10;

/// hyper's read and write buffer for one connection: the header limit with
/// room for the pipelined next one. 16 KiB × [`MAX_CONNECTIONS`] = 1 MiB.
pub const MAX_BUF_BYTES: usize = 16 << 10;

// hyper panics on a smaller buffer (its floor is 8 KiB), and a head at the
// limit must fit.
const _: () = assert!(MAX_BUF_BYTES >= 8192 && MAX_BUF_BYTES >= MAX_HEADER_BYTES);

/// The daemon's endpoints over `metrics` and the episodes sent on `events`.
pub fn router(metrics: Arc<Metrics>, events_tx: broadcast::Sender<String>) -> Router {
    let readers = Arc::new(Semaphore::new(MAX_EVENT_READERS));
    let for_events = Arc::clone(&metrics);
    Router::new()
        .route(
            "/events",
            get(move || {
                let response = events(&for_events, &readers, &events_tx);
                async move { response }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/", get(|| async { "oomwatch: metrics at /metrics\n" }))
}

/// `GET /events`: the stream, if a reader slot is free; 503 if not.
fn events(
    metrics: &Arc<Metrics>,
    readers: &Arc<Semaphore>,
    tx: &broadcast::Sender<String>,
) -> Response<Body> {
    let Ok(slot) = Arc::clone(readers).try_acquire_owned() else {
        metrics.http_refused(http_refusal::EVENTS_CAP);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "10")],
            format!(
                "oomwatch: {MAX_EVENT_READERS} clients already read /events, the most it serves; \
                 try again when one leaves\n"
            ),
        )
            .into_response();
    };
    metrics.http_event_readers.inc();
    let reader = Reader {
        _slot: slot,
        metrics: Arc::clone(metrics),
    };
    let on_lost = {
        let metrics = Arc::clone(metrics);
        move |_| metrics.http_refused(http_refusal::SLOW_READER)
    };
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        event_stream(tx.subscribe(), reader, on_lost),
    )
        .into_response()
}

/// An `/events` reader's slot, given back when its stream goes.
struct Reader {
    _slot: tokio::sync::OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.metrics.http_event_readers.dec();
    }
}

/// Serves `app` on `listener` within the limits above, until dropped.
///
/// At [`MAX_CONNECTIONS`], a new connection closes the oldest open one that
/// has no request in flight (a client still to send its head, or idle
/// between requests) and takes its place; if every connection is serving a
/// request, the new one is closed at once. Leaving it in the listen backlog
/// instead would queue a scrape behind every idle connection ahead of it
/// (5 s each, [`HEADER_READ_TIMEOUT`]), and closing every new connection
/// would refuse scrapes for as long as idle clients fill the slots: either
/// way one local user opening connections stops `/metrics`. Closing the
/// oldest idle one costs a well-behaved client nothing it needs: it sends
/// its request as soon as it connects.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, metrics: Arc<Metrics>) {
    let slots = Arc::new(Slots::default());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_BUF_BYTES);
    let http = Arc::new(http);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: the next accept fails the same way
                // at once, so give the process a moment to close something.
                tracing::warn!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some((conn, evicted)) = slots.admit(MAX_CONNECTIONS) else {
            metrics.http_refused(http_refusal::CONNECTION_CAP);
            drop(stream);
            continue;
        };
        if let Some(old) = evicted {
            old.cut(http_refusal::EVICTED);
        }
        let task = Connection {
            http: Arc::clone(&http),
            app: app.clone(),
            metrics: Arc::clone(&metrics),
            slots: Arc::clone(&slots),
            conn,
        };
        tokio::spawn(task.serve(stream));
    }
}

/// One accepted connection and what it needs to serve it.
struct Connection {
    http: Arc<hyper::server::conn::http1::Builder>,
    app: Router,
    metrics: Arc<Metrics>,
    slots: Arc<Slots>,
    conn: Arc<Conn>,
}

impl Connection {
    async fn serve(self, stream: tokio::net::TcpStream) {
        let Connection {
            http,
            app,
            metrics,
            slots,
            conn,
        } = self;
        metrics.http_connections.inc();
        let io = hyper_util::rt::TokioIo::new(Timed::new(stream, Arc::clone(&conn), WRITE_TIMEOUT));
        let service = {
            let conn = Arc::clone(&conn);
            let metrics = Arc::clone(&metrics);
            hyper::service::service_fn(move |req| {
                handle(req, app.clone(), Arc::clone(&conn), Arc::clone(&metrics))
            })
        };
        let ended = bounded(http.serve_connection(io, service), &conn).await;
        if let Some(reason) = refusal(&ended, &conn) {
            metrics.http_refused(reason);
        }
        slots.leave(conn.id);
        metrics.http_connections.dec();
    }
}

/// How a connection ended, when it was not hyper's own doing.
#[derive(Debug)]
enum End {
    Hyper(hyper::Error),
    /// Closed by us: evicted, or past its request's deadline.
    Cut(&'static str),
}

/// Serves `served` until it ends, the connection is evicted or its request
/// passes its deadline.
async fn bounded(served: impl Future<Output = hyper::Result<()>>, conn: &Conn) -> Result<(), End> {
    tokio::pin!(served);
    let mut deadline = conn.deadline.subscribe();
    loop {
        let at = *deadline.borrow_and_update();
        let timer = async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = &mut served => return ended.map_err(End::Hyper),
            () = conn.evict.notified() => {
                return Err(End::Cut(conn.cut.get().copied().unwrap_or(http_refusal::EVICTED)));
            }
            () = timer => return Err(End::Cut(http_refusal::DEADLINE)),
            Ok(()) = deadline.changed() => {}
        }
    }
}

/// The refusal a connection's end counts as, if any (a client that closes,
/// or resets, is not one).
fn refusal(ended: &Result<(), End>, conn: &Conn) -> Option<&'static str> {
    if let Some(why) = conn.cut.get() {
        return Some(why);
    }
    match ended {
        Ok(()) => None,
        Err(End::Cut(why)) => Some(why),
        Err(End::Hyper(e)) if e.is_timeout() => Some(conn.timeout_reason()),
        Err(End::Hyper(e)) if e.is_parse_too_large() => Some(http_refusal::TOO_LARGE),
        Err(End::Hyper(_)) => None,
    }
}

/// One request: refused if it has a body, else routed, with the connection
/// marked busy (and, but for `/events`, under [`REQUEST_DEADLINE`]) until
/// the answer's body is done.
async fn handle<B>(
    req: Request<B>,
    mut app: Router,
    conn: Arc<Conn>,
    metrics: Arc<Metrics>,
) -> Result<Response<Body>, Infallible>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    conn.requests.fetch_add(1, Ordering::Relaxed);
    conn.read_at_request
        .store(conn.read.load(Ordering::Relaxed), Ordering::Relaxed);
    if !req.body().is_end_stream() {
        metrics.http_refused(http_refusal::BODY);
        return Ok((
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONNECTION, "close")],
            "oomwatch: request bodies are refused: /metrics, /events and / take a GET without one\n",
        )
            .into_response());
    }
    let busy = Busy::start(conn, req.uri().path() != "/events");
    std::future::poll_fn(|cx| tower_service::Service::<Request<Body>>::poll_ready(&mut app, cx))
        .await?;
    let response = tower_service::Service::call(&mut app, req.map(Body::new)).await?;
    Ok(response.map(|body| Body::new(Guarded { body, _busy: busy })))
}

/// The open connections, oldest first.
#[derive(Default)]
struct Slots {
    open: Mutex<(u64, BTreeMap<u64, Arc<Conn>>)>,
}

impl Slots {
    /// A place for a new connection, when fewer than `cap` are open or one
    /// of them has no request in flight: that one, the oldest such, is
    /// returned to be closed (it no longer counts). None: every one is
    /// serving a request.
    fn admit(&self, cap: usize) -> Option<(Arc<Conn>, Option<Arc<Conn>>)> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (next, conns) = &mut *open;
        let evicted = if conns.len() >= cap {
            let id = conns
                .iter()
                .find(|(_, c)| c.in_flight.load(Ordering::Relaxed) == 0)
                .map(|(id, _)| *id)?;
            conns.remove(&id)
        } else {
            None
        };
        let conn = Arc::new(Conn::new(*next));
        conns.insert(*next, Arc::clone(&conn));
        *next += 1;
        Some((conn, evicted))
    }

    fn leave(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.1.remove(&id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().unwrap().1.len()
    }
}

/// What the server knows of one connection.
struct Conn {
    id: u64,
    /// Bytes read from the client so far.
    read: AtomicU64,
    /// `read` when the last request's head was complete (our requests have
    /// no body, so anything read since belongs to the next head).
    read_at_request: AtomicU64,
    requests: AtomicU64,
    /// Requests whose answer is not yet done (0 or 1 over HTTP/1).
    in_flight: AtomicUsize,
    /// When the request in flight must be answered by.
    deadline: watch::Sender<Option<Instant>>,
    /// Why we closed it ourselves, first reason wins.
    cut: OnceLock<&'static str>,
    /// Wakes the connection's task to close it.
    evict: Notify,
}

impl Conn {
    fn new(id: u64) -> Self {
        Conn {
            id,
            read: AtomicU64::new(0),
            read_at_request: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            deadline: watch::Sender::new(None),
            cut: OnceLock::new(),
            evict: Notify::new(),
        }
    }

    /// Closes the connection, counted as `why`.
    fn cut(&self, why: &'static str) {
        let _ = self.cut.set(why);
        self.evict.notify_one();
    }

    /// hyper's header-read timer ran out: on a connection that answered a
    /// request and has read nothing since, that is an idle keep-alive
    /// connection; otherwise a request head that came too slowly, or not at
    /// all.
    fn timeout_reason(&self) -> &'static str {
        let idle = self.requests.load(Ordering::Relaxed) > 0
            && self.read.load(Ordering::Relaxed) == self.read_at_request.load(Ordering::Relaxed);
        if idle {
            http_refusal::IDLE_TIMEOUT
        } else {
            http_refusal::HEADER_TIMEOUT
        }
    }
}

/// A request being answered: the connection is busy (not to be evicted)
/// and, with a deadline, must finish by it.
struct Busy(Arc<Conn>);

impl Busy {
    fn start(conn: Arc<Conn>, deadline: bool) -> Self {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        if deadline {
            conn.deadline
                .send_replace(Some(Instant::now() + REQUEST_DEADLINE));
        }
        Busy(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.deadline.send_replace(None);
        }
    }
}

/// An answer's body that keeps its request [`Busy`] until hyper is done
/// with it (sent, or the connection gone).
struct Guarded {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A client socket that counts the bytes read and fails a write, flush or
/// shutdown that has made no progress for `limit`: without it a client
/// that stops reading holds its connection, and the bytes queued for it,
/// for as long as it likes.
struct Timed<I> {
    io: I,
    conn: Arc<Conn>,
    limit: Duration,
    /// Set while the socket takes no bytes.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<I> Timed<I> {
    fn new(io: I, conn: Arc<Conn>, limit: Duration) -> Self {
        Timed {
            io,
            conn,
            limit,
            stalled: None,
        }
    }

    /// Runs one write-side operation, timing how long it stays pending.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut I>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        I: Unpin,
    {
        match op(Pin::new(&mut self.io), cx) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let stalled = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if stalled.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let _ = self.conn.cut.set(http_refusal::WRITE_TIMEOUT);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client took no bytes for {limit:?}"),
                )))
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Timed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        this.conn.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Timed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().timed(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .timed(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().timed(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().timed(cx, |io, cx| io.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new("6.18.0").unwrap())
    }

    fn refused(metrics: &Metrics, reason: &str) -> u64 {
        metrics.http_refusals.with_label_values(&[reason]).get()
    }

    /// At the cap, a new connection takes the place of the oldest one with
    /// no request in flight; a busy one is never closed for it.
    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let slots = Slots::default();
        let first: Vec<_> = (0..3).map(|_| slots.admit(3).unwrap()).collect();
        assert!(first.iter().all(|(_, evicted)| evicted.is_none()));
        first[0].0.in_flight.store(1, Ordering::Relaxed);
        let (newest, evicted) = slots.admit(3).unwrap();
        assert_eq!(evicted.map(|c| c.id), Some(first[1].0.id));
        assert_eq!(slots.len(), 3);
        slots.leave(newest.id);
        let (_, evicted) = slots.admit(3).unwrap();
        assert!(evicted.is_none(), "a slot was free");
    }

    /// When every connection is serving a request, a new one is refused.
    #[test]
    fn at_the_cap_with_every_connection_busy_a_new_one_is_refused() {
        let slots = Slots::default();
        for _ in 0..2 {
            let (c, _) = slots.admit(2).unwrap();
            c.in_flight.store(1, Ordering::Relaxed);
        }
        assert!(slots.admit(2).is_none());
        assert_eq!(slots.len(), 2);
    }

    /// hyper's header timer is both the header-read and the idle timeout:
    /// which one ran out is told by whether anything came since the last
    /// request.
    #[test]
    fn a_header_timeout_after_a_request_with_nothing_since_is_idle() {
        let conn = Conn::new(0);
        assert_eq!(conn.timeout_reason(), http_refusal::HEADER_TIMEOUT);
        conn.read.store(40, Ordering::Relaxed);
        conn.read_at_request.store(40, Ordering::Relaxed);
        conn.requests.store(1, Ordering::Relaxed);
        assert_eq!(conn.timeout_reason(), http_refusal::IDLE_TIMEOUT);
        conn.read.store(43, Ordering::Relaxed);
        assert_eq!(conn.timeout_reason(), http_refusal::HEADER_TIMEOUT);
    }

    /// A socket that never takes a byte.
    struct Stuck;

    impl AsyncWrite for Stuck {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    /// A socket that takes every other write, the first one pending (and
    /// ready again at once).
    struct Slow(bool);

    impl AsyncWrite for Slow {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0 = !self.0;
            if self.0 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(Ok(buf.len()))
            }
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn write<I: AsyncWrite + Unpin>(io: &mut Timed<I>) -> io::Result<usize> {
        std::future::poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, b"x")).await
    }

    /// A write the socket takes nothing of fails after the limit, and the
    /// connection is marked cut for it.
    #[tokio::test]
    async fn a_write_that_stalls_past_the_limit_fails() {
        let conn = Arc::new(Conn::new(0));
        let limit = Duration::from_millis(50);
        let mut io = Timed::new(Stuck, Arc::clone(&conn), limit);
        let t = std::time::Instant::now();
        let e = write(&mut io).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= limit, "{:?}", t.elapsed());
        assert_eq!(conn.cut.get(), Some(&http_refusal::WRITE_TIMEOUT));
        let e = std::future::poll_fn(|cx| Pin::new(&mut io).poll_flush(cx))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    /// The limit is on a stall, not on the whole: a socket that keeps
    /// taking bytes is never cut, however long it takes in all.
    #[tokio::test]
    async fn a_write_that_keeps_progressing_is_not_cut() {
        let conn = Arc::new(Conn::new(0));
        let limit = Duration::from_millis(20);
        let mut io = Timed::new(Slow(false), Arc::clone(&conn), limit);
        let t = std::time::Instant::now();
        while t.elapsed() < 5 * limit {
            assert_eq!(write(&mut io).await.unwrap(), 1);
            tokio::time::sleep(limit / 4).await;
        }
        assert_eq!(conn.cut.get(), None);
    }

    /// Bytes read are counted for the connection.
    #[tokio::test]
    async fn reads_are_counted() {
        let conn = Arc::new(Conn::new(0));
        let mut io = Timed::new(&b"GET / HTTP/1.1\r\n"[..], Arc::clone(&conn), WRITE_TIMEOUT);
        let mut buf = [0u8; 8];
        let mut rb = ReadBuf::new(&mut buf);
        std::future::poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut rb))
            .await
            .unwrap();
        assert_eq!(conn.read.load(Ordering::Relaxed), 8);
    }

    async fn call(app: &mut Router, req: Request<Body>) -> Response<Body> {
        std::future::poll_fn(|cx| tower_service::Service::<Request<Body>>::poll_ready(app, cx))
            .await
            .unwrap();
        tower_service::Service::call(app, req).await.unwrap()
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    /// `/events` serves [`MAX_EVENT_READERS`] readers; the next one gets
    /// 503 with a reason, and a place comes back when a reader goes.
    #[tokio::test]
    async fn events_past_the_reader_cap_answer_503_until_one_leaves() {
        let metrics = metrics();
        let (tx, _) = broadcast::channel(4);
        let mut app = router(Arc::clone(&metrics), tx);
        let mut readers = Vec::new();
        for _ in 0..MAX_EVENT_READERS {
            let r = call(&mut app, get("/events")).await;
            assert_eq!(r.status(), StatusCode::OK);
            readers.push(r);
        }
        assert_eq!(metrics.http_event_readers.get(), MAX_EVENT_READERS as i64);
        let r = call(&mut app, get("/events")).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let text = axum::body::to_bytes(r.into_body(), 1 << 10).await.unwrap();
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains(&format!("{MAX_EVENT_READERS} clients already read /events")),
            "{text}"
        );
        assert_eq!(refused(&metrics, http_refusal::EVENTS_CAP), 1);
        readers.pop();
        assert_eq!(
            call(&mut app, get("/events")).await.status(),
            StatusCode::OK
        );
        // `/metrics` is not counted against the readers.
        assert_eq!(
            call(&mut app, get("/metrics")).await.status(),
            StatusCode::OK
        );
    }

    /// A request with a body is refused (413, the connection to close);
    /// one without is served.
    #[tokio::test]
    async fn a_request_with_a_body_is_refused() {
        let metrics = metrics();
        let (tx, _) = broadcast::channel(4);
        let app = router(Arc::clone(&metrics), tx);
        let conn = Arc::new(Conn::new(0));
        let req = Request::get("/metrics").body(Body::from("hello")).unwrap();
        let r = handle(req, app.clone(), Arc::clone(&conn), Arc::clone(&metrics))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers()[header::CONNECTION], "close");
        assert_eq!(refused(&metrics, http_refusal::BODY), 1);
        let r = handle(get("/"), app, conn, Arc::clone(&metrics))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    /// A request keeps its connection busy (not evictable), under a
    /// deadline but for `/events`, until its answer's body is dropped.
    #[tokio::test]
    async fn a_request_is_busy_until_its_answer_is_done() {
        let metrics = metrics();
        let (tx, _) = broadcast::channel(4);
        let app = router(Arc::clone(&metrics), tx);
        let conn = Arc::new(Conn::new(0));
        let scrape = handle(
            get("/metrics"),
            app.clone(),
            Arc::clone(&conn),
            Arc::clone(&metrics),
        )
        .await
        .unwrap();
        assert_eq!(conn.in_flight.load(Ordering::Relaxed), 1);
        let at = conn.deadline.borrow().expect("a deadline for /metrics");
        assert!(at <= Instant::now() + REQUEST_DEADLINE);
        drop(scrape);
        assert_eq!(conn.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(*conn.deadline.borrow(), None);
        let stream = handle(get("/events"), app, Arc::clone(&conn), metrics)
            .await
            .unwrap();
        assert_eq!(conn.in_flight.load(Ordering::Relaxed), 1);
        assert_eq!(*conn.deadline.borrow(), None, "/events lasts");
        drop(stream);
        assert_eq!(conn.in_flight.load(Ordering::Relaxed), 0);
    }

    /// A reader a whole backlog behind gets its `{"lost":N}` line and no
    /// more: its stream ends, `on_lost` hears of it, its slot is given back.
    #[tokio::test]
    async fn an_events_reader_a_backlog_behind_is_told_and_dropped() {
        let (tx, rx) = broadcast::channel(2);
        for i in 0..5 {
            tx.send(format!("{{\"n\":{i}}}")).unwrap();
        }
        let slot = Arc::new(());
        let lost = Arc::new(AtomicU64::new(0));
        let told = Arc::clone(&lost);
        let body = event_stream(rx, Arc::clone(&slot), move |n| {
            told.store(n, Ordering::Relaxed)
        });
        // Ends although the sender is still open.
        let text = axum::body::to_bytes(body, 1 << 10).await.unwrap();
        assert_eq!(&text[..], b"{\"lost\":3}\n");
        assert_eq!(lost.load(Ordering::Relaxed), 3);
        assert_eq!(Arc::strong_count(&slot), 1, "the slot is given back");
        drop(tx);
    }

    /// A reader that keeps up gets every line, until the daemon stops.
    #[tokio::test]
    async fn an_events_reader_that_keeps_up_gets_every_line() {
        let (tx, rx) = broadcast::channel(2);
        let lost = Arc::new(AtomicBool::new(false));
        let told = Arc::clone(&lost);
        let body = event_stream(rx, (), move |_| told.store(true, Ordering::Relaxed));
        tx.send("{\"a\":1}".into()).unwrap();
        tx.send("{\"b\":2}".into()).unwrap();
        drop(tx);
        let text = axum::body::to_bytes(body, 1 << 10).await.unwrap();
        assert_eq!(&text[..], b"{\"a\":1}\n{\"b\":2}\n");
        assert!(!lost.load(Ordering::Relaxed));
    }
}
