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

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::codec::{self, DecodeError};
use crate::handlers;
use crate::state::Shared;
use crate::versions;

/// Requests read ahead of their responses on one connection.
const MAX_IN_FLIGHT: usize = 32;

/// A response still being worked out: `None` when the request gets no answer (acks=0).
pub type Pending = BoxFuture<'static, Option<Bytes>>;

/// Accept connections until `shutdown` is cancelled.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, peer, shared.clone(), shutdown.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    tracing::debug!(%peer, "connection opened");
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(write_responses(wr, rx));
    let mut reader = BufReader::with_capacity(64 * 1024, rd);
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => break,
            frame = read_frame(&mut reader, shared.config.max_request_bytes) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        match dispatch(&shared, frame, peer) {
            Ok(pending) => {
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
    tracing::debug!(%peer, "connection closed");
}

async fn write_responses(wr: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Pending>) {
    let mut out = BufWriter::with_capacity(64 * 1024, wr);
    while let Some(pending) = rx.recv().await {
        if let Some(bytes) = pending.await
            && out.write_all(&bytes).await.is_err()
        {
            return;
        }
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

/// Decode a frame and start its handler. Errors close the connection.
fn dispatch(shared: &Arc<Shared>, frame: Bytes, peer: SocketAddr) -> Result<Pending, FrameError> {
    let pre = codec::preamble(&frame)?;
    let api = ApiKey::try_from(pre.api_key).map_err(|_| DecodeError::UnknownApiKey(pre.api_key))?;
    if !versions::is_supported(api, pre.api_version) {
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
            Ok(bytes) => Some(bytes),
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
