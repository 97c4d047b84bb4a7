//! The HTTP server every service runs: its routes plus ops endpoints and OpenAPI, on a bounded
//! number of connections that time out.
//!
//! Under `ferry up` one process serves every service, so one service's clients must not be able
//! to use up what the others need (file descriptors, memory). Each server therefore has:
//!
//! - a **connection cap** ([`HttpLimits::max_connections`]): the accept loop takes a slot from a
//!   semaphore *before* it accepts, so over the cap new connections wait in the kernel's listen
//!   backlog (holding no descriptor of ours; the queue is [`BACKLOG`] long) and are served, in
//!   order, as slots free up. We chose
//!   waiting over accepting-and-closing: a browser or a client then sees a slow connect instead
//!   of an error, and the slots do free up, because every held connection is bounded by the two
//!   timeouts below (or is doing real work). Go's `netutil.LimitListener` works the same way.
//! - an **idle timeout** ([`HttpLimits::idle_timeout`]): a connection that sends no byte of a
//!   request for this long, after it was accepted or after its previous response, is closed.
//! - a **header-read timeout** ([`HttpLimits::header_read_timeout`]): once the first byte of a
//!   request arrived, its request line and headers must all arrive within this time (slowloris).
//!
//! Connections are HTTP/1.1 (axum here is built for HTTP/1 only; browsers speak HTTP/1.1 to a
//! plain `http://` origin). axum's `serve` offers neither timeout nor a cap, so this module runs
//! the accept loop itself and hands each connection to hyper's HTTP/1 server. hyper has one timer
//! of its own, `header_read_timeout`, which starts when the connection becomes ready for a request
//! and so mixes the idle wait with the head's transfer; the two separate timeouts are kept by a
//! small watch per connection ([`Watch`]): the socket wrapper notes the first byte of a request,
//! the service wrapper notes its head was parsed, and the response body's drop notes it is done.
//! hyper's own timer is set to the sum of both as a backstop.
//!
//! Threads: one accept task per server, one task per connection. Shutdown (the token is
//! cancelled) stops accepting, asks every connection to finish its in-flight request and close
//! (hyper's graceful shutdown), and the [`ServiceHandle`]'s task finishes when all have closed.
//!
//! Metrics (Prometheus, at every service's `/metrics`): `ferry_http_connections{service}` open
//! connections; `ferry_http_connections_closed_total{service,reason}` connections closed by a
//! timeout (`idle` or `header_timeout`); `ferry_http_connection_cap_reached_total{service}`
//! times the accept loop waited for a free slot.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Uri};
use axum::routing::get;
use ferry_toolkit::ops::{self, Health};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::{ApiError, ServiceConfig};

/// Open HTTP connections, per service.
pub const CONNECTIONS: &str = "ferry_http_connections";
/// HTTP connections closed by a timeout, per service and reason (`idle`, `header_timeout`).
pub const CONNECTIONS_CLOSED: &str = "ferry_http_connections_closed_total";
/// Times a service's accept loop had all its connection slots taken and waited for one.
pub const CAP_REACHED: &str = "ferry_http_connection_cap_reached_total";

/// Bounds on one service's HTTP connections ([`ServiceConfig::http`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once. Further ones wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// How long a connection may stay silent, after it was accepted or after its previous
    /// response, before the first byte of its next request; then it is closed.
    pub idle_timeout: Duration,
    /// How long a request's line and headers may take to arrive, from their first byte.
    pub header_read_timeout: Duration,
}

impl Default for HttpLimits {
    /// 1,024 connections per service (eleven services stay well under the open-files limit
    /// `ferry` raises at start), 60 s idle (longer than the dashboard's refresh, so a page keeps
    /// its connection; shorter than any client's own keep-alive), 10 s for a request head (a head
    /// is a few hundred bytes: anything slower is broken or hostile).
    fn default() -> Self {
        HttpLimits {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// A running HTTP server.
#[derive(Debug)]
pub struct ServiceHandle {
    /// The service's name.
    pub name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Finishes when the server stopped (after the token was cancelled).
    pub task: JoinHandle<()>,
    /// What the service is waiting for while it stops, for a person watching the shutdown.
    pub stage: Stage,
}

/// What a stopping service still waits for ("HTTP requests in flight", "routers: ...").
/// Cheap to clone; clones share the text.
#[derive(Debug, Clone)]
pub struct Stage(Arc<Mutex<&'static str>>);

impl Stage {
    fn new(what: &'static str) -> Stage {
        Stage(Arc::new(Mutex::new(what)))
    }

    /// Says what the service waits for now.
    pub fn set(&self, what: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = what;
    }

    /// What the service waits for now.
    pub fn get(&self) -> &'static str {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Serve `app` plus `/health`, `/ready`, `/metrics` and `/openapi.json` on the configured port
/// until `shutdown` is cancelled, within the configured [`HttpLimits`]. Unknown paths get a JSON
/// 404.
pub async fn serve(
    name: &'static str,
    config: &ServiceConfig,
    app: Router,
    health: Health,
    openapi: utoipa::openapi::OpenApi,
    shutdown: CancellationToken,
) -> io::Result<ServiceHandle> {
    let mut spec = serde_json::to_value(&openapi).unwrap_or_default();
    crate::openapi::complete(&mut spec);
    let app = app
        .merge(ops::routes_for(name, health))
        .route(
            "/openapi.json",
            get(move || async move { axum::Json(spec) }),
        )
        .route(
            "/docs",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/html; charset=utf-8",
                    )],
                    crate::openapi::DOCS_PAGE,
                )
            }),
        )
        .fallback(|uri: Uri| async move { ApiError::not_found(format!("path {}", uri.path())) })
        // axum's own rejections (405, a path parameter it cannot decode, a body over the
        // limit) in the JSON contract too.
        // Dot-segments, encoded slashes and rebindable Host names never reach a route.
        .layer(axum::middleware::from_fn(crate::edge::guard))
        .layer(axum::middleware::map_response(crate::json_errors))
        // The span names the path only: a query string may carry a token, and logs must not.
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(|request: &Request<Body>| {
                    tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
                })
                // A 5xx is not an ERROR line by itself: a not-ready probe answers 503 every few
                // seconds, and a real fault is logged where it happens (`ApiError::internal`).
                .on_failure(
                    tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
                ),
        );
    let listener = listen(SocketAddr::new(config.host, config.port))?;
    let addr = listener.local_addr()?;
    tracing::info!(service = name, %addr, "HTTP server listening");
    let stage = Stage::new("running");
    let server = Server {
        name,
        app,
        limits: config.http,
        shutdown,
        stage: stage.clone(),
    };
    let task = tokio::spawn(server.run(listener));
    Ok(ServiceHandle {
        name,
        addr,
        task,
        stage,
    })
}

/// Connections the kernel holds for us, handshake done, while every slot is taken. Rust's and
/// tokio's `bind` ask for 128; past the backlog the kernel drops new SYNs and clients retry only
/// after a second or more, so a longer queue keeps "wait for a slot" a short wait. The kernel
/// caps it at `net.core.somaxconn` (4,096 on current Linux).
const BACKLOG: u32 = 1024;

/// Binds `addr` like `TcpListener::bind`, with a [`BACKLOG`]-long accept queue.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std and tokio do: a restarted service can bind its port again at once. (On Windows this
    // would let another process take over the port, so they don't set it there.)
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                e.kind(),
                format!(
                    "port {} is taken ({addr} is in use by another process)",
                    addr.port()
                ),
            )
        } else {
            io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
        }
    })?;
    socket.listen(BACKLOG)
}

/// One service's accept loop and what its connections share.
struct Server {
    name: &'static str,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    stage: Stage,
}

impl Server {
    async fn run(self, listener: TcpListener) {
        // Zero would never accept: treat it as one. The top is what a semaphore holds and the
        // final wait can count.
        let top = Semaphore::MAX_PERMITS.min(u32::MAX as usize);
        let max = self.limits.max_connections.clamp(1, top);
        let slots = Arc::new(Semaphore::new(max));
        let this = Arc::new(self);
        loop {
            let permit = match slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    metrics::counter!(CAP_REACHED, "service" => this.name).increment(1);
                    tracing::debug!(
                        service = this.name,
                        max_connections = max,
                        "connection cap reached; new connections wait in the backlog"
                    );
                    tokio::select! {
                        _ = this.shutdown.cancelled() => break,
                        permit = slots.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break, // never closed
                        },
                    }
                }
            };
            let (stream, peer) = tokio::select! {
                _ = this.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        // Out of file descriptors and the like: the connections we have go on;
                        // wait a little rather than spin (axum's own loop does the same).
                        tracing::warn!(service = this.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(this.clone().connection(stream, peer, permit));
        }
        drop(listener);
        this.stage.set("HTTP requests in flight");
        // Every connection holds a slot until its task ends, so having them all back means every
        // connection has finished (graceful shutdown: in-flight requests are answered).
        let _ = slots.acquire_many(max as u32).await;
    }

    /// Serve one connection until it closes, times out, or shutdown has let it finish.
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        _slot: OwnedSemaphorePermit,
    ) {
        let name = self.name;
        let open = metrics::gauge!(CONNECTIONS, "service" => name);
        open.increment(1.0);
        let watch = Arc::new(Watch::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            watch: watch.clone(),
            rewritten: None,
        });
        let app = self.app.clone();
        let service_watch = watch.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            service_watch.request_started();
            let done = Done(service_watch.clone());
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(Body::new)).await?;
                Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, _done: done })))
            }
        });
        let limits = self.limits;
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            // hyper's timer runs from "ready for a request" to "head parsed": the idle wait plus
            // the head. The watch below enforces each part; this only backs it up.
            .header_read_timeout(limits.idle_timeout + limits.header_read_timeout)
            .keep_alive(true)
            .serve_connection(io, service);
        tokio::pin!(connection);
        let mut shutting_down = false;
        loop {
            let deadline = watch.deadline(&limits);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(service = name, %peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                _ = self.shutdown.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    // Finish the request in flight, if any, then close.
                    connection.as_mut().graceful_shutdown();
                }
                _ = watch.changed.notified() => {}
                _ = tokio::time::sleep_until(deadline.map_or_else(Instant::now, |(at, _)| at)), if deadline.is_some() => {
                    if let Some(reason) = watch.expired(&limits, Instant::now()) {
                        tracing::debug!(service = name, %peer, reason = reason.as_str(), "closing connection");
                        metrics::counter!(CONNECTIONS_CLOSED, "service" => name, "reason" => reason.as_str())
                            .increment(1);
                        // Nothing is in flight (that is what the watch said): dropping the
                        // connection just closes the socket.
                        break;
                    }
                }
            }
        }
        open.decrement(1.0);
    }
}

/// Errors of one incoming connection (it was reset before we accepted it): not the listener's.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Where a connection is between requests, for its two timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request, since then.
    Idle(Instant),
    /// A request's head has been arriving since then.
    Head(Instant),
    /// A request is being served (its body read, its handler run, its response sent): no
    /// timeout of ours applies. A handler takes as long as it takes; a server-sent event stream
    /// lasts as long as the page is open.
    Busy,
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Idle,
    HeaderTimeout,
}

impl Expired {
    fn as_str(self) -> &'static str {
        match self {
            Expired::Idle => "idle",
            Expired::HeaderTimeout => "header_timeout",
        }
    }
}

/// One connection's phase, moved by its socket, its service and its response bodies, and read
/// by its task. A mutex, not atomics: it is taken a few times per request, never contended
/// beyond the connection's own task and the runtime thread polling hyper.
#[derive(Debug)]
struct Watch {
    phase: Mutex<Phase>,
    /// Signalled when the phase moves to one with an earlier deadline, so the task re-arms.
    changed: Notify,
}

impl Watch {
    fn new() -> Watch {
        Watch {
            phase: Mutex::new(Phase::Idle(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes arrived from the client.
    fn bytes_read(&self) {
        let mut phase = self.phase();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// hyper parsed a request head and calls the service.
    fn request_started(&self) {
        *self.phase() = Phase::Busy;
    }

    /// The response was sent (its body dropped): wait for the next request.
    fn response_done(&self) {
        *self.phase() = Phase::Idle(Instant::now());
        self.changed.notify_one();
    }

    /// When the current phase times out, and as what.
    fn deadline(&self, limits: &HttpLimits) -> Option<(Instant, Expired)> {
        match *self.phase() {
            Phase::Idle(since) => Some((since + limits.idle_timeout, Expired::Idle)),
            Phase::Head(since) => {
                Some((since + limits.header_read_timeout, Expired::HeaderTimeout))
            }
            Phase::Busy => None,
        }
    }

    /// The timeout that has passed at `now`, if any (the phase may have moved since the timer
    /// was armed).
    fn expired(&self, limits: &HttpLimits, now: Instant) -> Option<Expired> {
        self.deadline(limits)
            .filter(|(at, _)| *at <= now)
            .map(|(_, why)| why)
    }
}

/// A connection's socket, telling its [`Watch`] when request bytes arrive, and putting hyper's
/// own error answers in the JSON contract.
struct Watched {
    inner: TcpStream,
    watch: Arc<Watch>,
    /// A rewritten error answer being written, and how much of it is out.
    rewritten: Option<(Vec<u8>, usize)>,
}

impl Watched {
    /// Writes the rewritten answer out; `Ready` once all of it is.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, sent)) = &mut self.rewritten {
            if *sent == bytes.len() {
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes `buf`, unless it is the head of an error answer hyper made itself: then writes
    /// that answer with a JSON body instead and reports `buf` as written.
    fn write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.rewritten.is_none()
            && let Some(answer) = json_parse_error(buf)
        {
            self.rewritten = Some((answer, 0));
        }
        if self.rewritten.is_some() {
            return match self.drain(cx) {
                Poll::Ready(Ok(())) => {
                    // Hyper closes the connection after such an answer; nothing follows it.
                    Poll::Ready(Ok(buf.len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            };
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
}

/// hyper answers a request it cannot parse (a control character in a header, a head too large)
/// by itself, before any service sees it, with an empty body. Every answer of ours to a request
/// has a body (the [`crate::json_errors`] layer sees to it), so a 4xx head with
/// `content-length: 0` is one of hyper's: this returns it with an error body in the contract.
fn json_parse_error(head: &[u8]) -> Option<Vec<u8>> {
    if !head.starts_with(b"HTTP/1.1 4") || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.trim_end().split("\r\n");
    let status_line = lines.next()?;
    let headers: Vec<&str> = lines.collect();
    if !headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"))
    {
        return None;
    }
    let status = status_line.get(9..12)?.parse::<u16>().ok()?;
    let message = match status {
        431 => "the request's headers are too large",
        414 => "the request's URL is too long",
        _ => {
            "the request's line or headers cannot be read (a control character in a header, a malformed URL)"
        }
    };
    let body =
        serde_json::json!({"error": {"code": "bad_request", "message": message}}).to_string();
    let mut out = format!("{status_line}\r\n");
    for h in headers {
        if !h.to_ascii_lowercase().starts_with("content-length:") {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ));
    Some(out.into_bytes())
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // A head hyper made alone comes as the first slice, with no body after it.
        if let [head] = bufs.iter().filter(|b| !b.is_empty()).collect::<Vec<_>>()[..]
            && (self.rewritten.is_some() || json_parse_error(head).is_some())
        {
            return self.write(cx, head);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Tells the watch a request is over when dropped: with its response body once hyper has sent
/// it (or given up on it), or with the service's future if that never produced a response.
struct Done(Arc<Watch>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.response_done();
    }
}

/// A response body that holds the request's [`Done`] until hyper drops it.
struct Tracked {
    body: Body,
    _done: Done,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`) to its hard limit and
/// returns the limit now in force.
///
/// The soft limit is often 1,024 while the hard limit is far higher; one `ferry up` process
/// holds every service's connections, the broker's, and the log segments, so it asks for all it
/// may have. Uses the `rlimit` crate (a safe wrapper of `getrlimit`/`setrlimit`, which also
/// knows macOS's `kern.maxfilesperproc` cap) because the workspace forbids `unsafe`.
pub fn raise_open_files_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}
