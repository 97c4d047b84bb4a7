//! The TCP side: accept loop and one task pair per connection.
//!
//! Kafka clients pipeline requests on one connection and expect responses in request order.
//! Each connection has a reader task and a writer task joined by a bounded channel of
//! "pending responses": the reader decodes a frame and runs the synchronous part of its handler
//! at once (so appends happen in arrival order), and hands the rest (waiting for an fsync, a
//! long-poll fetch) to the writer as a future. The writer awaits those futures in order and
//! writes the responses, so a slow fsync for one request overlaps with reading the next.
//! A malformed or oversized frame stops the reader with a log line; the writer then finishes
//! what is pending and the connection closes. Nothing else is affected.
//!
//! Connections are bounded, so no client can take what the others need:
//! - at most `max_connections` at once: the accept loop closes a connection over the cap as soon
//!   as it is accepted (a Kafka client reconnects with backoff) and says so, at most every
//!   [`REFUSAL_LOG_INTERVAL`], with the count refused since its last line;
//! - a connection with no request and no response outstanding for `connections_max_idle` is
//!   closed (Kafka's `connections.max.idle.ms`): the reader waits for the next frame's first
//!   byte only that long after the connection last read a request or wrote a response;
//! - once a frame's first byte arrived, the whole frame must arrive within
//!   `frame_read_timeout`, or the connection is closed (a client trickling bytes, slowloris).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::codec::{self, DecodeError};
use crate::handlers;
use crate::state::Shared;
use crate::versions;

/// Requests read ahead of their responses on one connection.
const MAX_IN_FLIGHT: usize = 32;

/// The shortest time between two "connection limit reached" warnings.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A response still being worked out: `None` when the request gets no answer (acks=0).
pub type Pending = BoxFuture<'static, Option<Bytes>>;

/// Accept connections until `shutdown` is cancelled.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let max = shared
        .config
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let mut refusals = Refusals::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(connection(stream, peer, shared.clone(), shutdown.clone(), slot));
                    }
                    // Dropping the stream closes it: the client sees the connection end and
                    // retries later. Waiting in the backlog instead would leave a Kafka client
                    // hanging on a connection that looks open until its request times out.
                    Err(_) => refusals.refused(peer, max, Instant::now()),
                },
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Connections refused over the cap, logged at most every [`REFUSAL_LOG_INTERVAL`] so that a
/// flood of connections does not become a flood of log lines.
#[derive(Debug, Default)]
struct Refusals {
    /// Refused since the last line.
    unlogged: u64,
    last_line: Option<Instant>,
}

impl Refusals {
    fn refused(&mut self, peer: SocketAddr, max: usize, now: Instant) {
        self.unlogged += 1;
        if self
            .last_line
            .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL)
        {
            tracing::warn!(
                %peer,
                max_connections = max,
                refused = self.unlogged,
                "connection limit reached: refusing new connections (count since the last such line)"
            );
            self.unlogged = 0;
            self.last_line = Some(now);
        }
    }
}

/// What the idle timeout watches on one connection: when it last read a request or wrote a
/// response, and how many requests are read but not yet answered. Shared by its reader and
/// writer tasks.
#[derive(Debug)]
struct Activity {
    base: Instant,
    /// Milliseconds after `base`.
    last: AtomicU64,
    pending: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    fn request_read(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    fn response_written(&self) {
        // The time first: a reader that sees no request pending also sees when the last ended.
        self.touch();
        self.pending.fetch_sub(1, Ordering::Release);
    }

    /// Requests waiting for their response: the client waits on us, so we are not idle.
    fn busy(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    tracing::debug!(%peer, "connection opened");
    let open = metrics::gauge!(CONNECTIONS, "service" => "broker");
    open.increment(1.0);
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    let activity = Arc::new(Activity::new());
    let writer = tokio::spawn(write_responses(wr, rx, activity.clone()));
    let mut reader = BufReader::with_capacity(64 * 1024, rd);
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => break,
            frame = next_frame(&mut reader, &activity, &shared.config) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(FrameError::Idle(idle)) => {
                tracing::debug!(%peer, idle_ms = idle.as_millis() as u64, "closing idle connection");
                break;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        match dispatch(&shared, frame, peer) {
            Ok(pending) => {
                activity.request_read();
                if tx.send(pending).await.is_err() {
                    break; // the writer stopped: the peer went away
                }
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection after a bad request");
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
    open.decrement(1.0);
    tracing::debug!(%peer, "connection closed");
}

async fn write_responses(
    wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Pending>,
    activity: Arc<Activity>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, wr);
    while let Some(pending) = rx.recv().await {
        if let Some(bytes) = pending.await
            && out.write_all(&bytes).await.is_err()
        {
            return;
        }
        activity.response_written();
        // Flush when nothing else is ready, so pipelined responses share one write.
        if rx.is_empty() && out.flush().await.is_err() {
            return;
        }
    }
    let _ = out.shutdown().await;
}

/// Why a connection is being closed while reading.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A length prefix that is negative or above the configured limit.
    #[error("frame length {len} outside 0..={max} bytes")]
    BadLength {
        /// The length the client sent.
        len: i32,
        /// The configured maximum.
        max: usize,
    },
    /// The socket failed or closed mid-frame.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The frame did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A response could not be encoded (a bug; logged and the connection closed).
    #[error("cannot encode response: {0}")]
    Encode(String),
    /// No request and no response outstanding for `connections_max_idle`.
    #[error("idle for {0:?}")]
    Idle(Duration),
    /// A frame started but did not finish arriving within `frame_read_timeout`.
    #[error("request frame not complete within {0:?} of its first byte")]
    FrameTimeout(Duration),
}

/// Wait for the next frame and read it, within the connection's two timeouts; `Ok(None)` on a
/// clean end of stream.
async fn next_frame<R: AsyncBufRead + Unpin>(
    r: &mut R,
    activity: &Activity,
    config: &crate::BrokerConfig,
) -> Result<Option<Bytes>, FrameError> {
    let max_idle = config.connections_max_idle;
    loop {
        // `fill_buf` only looks: cancelled by the timeout, it loses no byte.
        let deadline = if activity.busy() {
            // Look again later: by then the responses may be written, which restarts the clock.
            Instant::now() + max_idle
        } else {
            activity.last() + max_idle
        };
        match tokio::time::timeout_at(deadline, r.fill_buf()).await {
            Ok(Ok([])) => return Ok(None),
            Ok(Ok(_)) => break,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) if !activity.busy() && activity.last() + max_idle <= Instant::now() => {
                return Err(FrameError::Idle(max_idle));
            }
            Err(_) => {} // there was activity meanwhile: wait out the rest
        }
    }
    let limit = config.frame_read_timeout;
    tokio::time::timeout(limit, read_frame(r, config.max_request_bytes))
        .await
        .map_err(|_| FrameError::FrameTimeout(limit))?
}

/// Read one length-prefixed frame; `Ok(None)` on a clean end of stream.
async fn read_frame<R: AsyncReadExt + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = i32::from_be_bytes(len);
    if len < 0 || len as usize > max {
        return Err(FrameError::BadLength { len, max });
    }
    let mut buf = BytesMut::zeroed(len as usize);
    r.read_exact(&mut buf).await?;
    Ok(Some(buf.freeze()))
}

/// Open client connections (`service="broker"`, as every broker series).
pub const CONNECTIONS: &str = "ferry_broker_connections";
/// Requests answered, by API.
pub const REQUESTS: &str = "ferry_broker_requests_total";
/// Time from a request's decoding to its encoded answer, by API (Produce includes the fsync
/// `acks=all` waits for; Fetch includes its long-poll wait).
pub const REQUEST_DURATION: &str = "ferry_broker_request_duration_seconds";
/// Request bytes read, frames included.
pub const RECEIVED_BYTES: &str = "ferry_broker_received_bytes_total";
/// Response bytes written.
pub const SENT_BYTES: &str = "ferry_broker_sent_bytes_total";

/// Counts one answered request of `api` that took `took` and answered `sent` bytes.
fn record(api: ApiKey, took: Duration, sent: usize) {
    let api = format!("{api:?}");
    metrics::counter!(REQUESTS, "service" => "broker", "api" => api.clone()).increment(1);
    metrics::histogram!(REQUEST_DURATION, "service" => "broker", "api" => api)
        .record(took.as_secs_f64());
    metrics::counter!(SENT_BYTES, "service" => "broker").increment(sent as u64);
}

/// Decode a frame and start its handler. Errors close the connection.
fn dispatch(shared: &Arc<Shared>, frame: Bytes, peer: SocketAddr) -> Result<Pending, FrameError> {
    metrics::counter!(RECEIVED_BYTES, "service" => "broker").increment(frame.len() as u64 + 4);
    let started = std::time::Instant::now();
    let pre = codec::preamble(&frame)?;
    let api = ApiKey::try_from(pre.api_key).map_err(|_| DecodeError::UnknownApiKey(pre.api_key))?;
    if !versions::is_supported(api, pre.api_version) {
        if let Some(bytes) = handlers::legacy::unsupported_version(api, pre.api_version, &frame) {
            tracing::warn!(
                ?api,
                version = pre.api_version,
                %peer,
                "answered UNSUPPORTED_VERSION to a request version Kafka 4.0 removed"
            );
            return Ok(Box::pin(async move { Some(bytes) }));
        }
        return match handlers::unsupported(api, pre.api_version) {
            Some((version, body)) => ready(api, version, pre.correlation_id, body),
            None => Err(FrameError::Decode(DecodeError::Malformed {
                api,
                version: pre.api_version,
                reason: "unsupported API or version, and it has no error field to say so".into(),
            })),
        };
    }
    let request = codec::decode_request(frame)?;
    let version = request.header.request_api_version;
    let correlation_id = request.header.correlation_id;
    let reply = handlers::handle(shared, request, peer);
    Ok(Box::pin(async move {
        let body = reply.await?;
        match codec::encode_response(api, version, correlation_id, &body) {
            Ok(bytes) => {
                record(api, started.elapsed(), bytes.len());
                Some(bytes)
            }
            Err(e) => {
                // Encoding our own response failed: a bug. Answer nothing; the client times out
                // and reconnects, which is better than a half-written frame.
                tracing::error!(?api, version, error = %e, "cannot encode response");
                None
            }
        }
    }))
}

fn ready(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: ResponseKind,
) -> Result<Pending, FrameError> {
    let bytes = codec::encode_response(api, version, correlation_id, &body)
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    Ok(Box::pin(async move { Some(bytes) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_at_most_once_per_interval_with_their_count() {
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let start = Instant::now();
        let mut refusals = Refusals::default();
        refusals.refused(peer, 3, start);
        assert_eq!((refusals.unlogged, refusals.last_line), (0, Some(start)));
        for i in 1..=5 {
            refusals.refused(peer, 3, start + Duration::from_millis(i));
        }
        assert_eq!((refusals.unlogged, refusals.last_line), (5, Some(start)));
        let later = start + REFUSAL_LOG_INTERVAL;
        refusals.refused(peer, 3, later);
        assert_eq!((refusals.unlogged, refusals.last_line), (0, Some(later)));
    }
}
