//! RabbitMQ for tests: the server named by `FERRY_TEST_AMQP_URL` (skipped with a message when
//! unset), unique queue names deleted afterwards, and a TCP proxy in front of it that can cut
//! every connection and refuse new ones for a while, which is what clients see when the broker
//! restarts. (Restarting this machine's shared RabbitMQ from a test would break other tests
//! running against it.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_toolkit::amqp::AmqpConfig;
use ferry_toolkit::{IncomingMessage, RetryPolicy};
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const AMQP_ENV: &str = "FERRY_TEST_AMQP_URL";

pub fn amqp_url() -> Option<String> {
    std::env::var(AMQP_ENV).ok().filter(|v| !v.is_empty())
}

/// Client settings for tests: quick reconnects.
pub fn amqp_config(url: &str) -> AmqpConfig {
    let mut config = AmqpConfig::new(url);
    config.connect_backoff = RetryPolicy {
        initial: Duration::from_millis(100),
        multiplier: 2.0,
        max_delay: Duration::from_millis(500),
        max_attempts: u32::MAX,
        jitter: 0.0,
        attempt_timeout: Some(Duration::from_secs(2)),
    };
    config.confirm_timeout = Duration::from_secs(10);
    config.prefetch = 8;
    config
}

/// A loopback TCP proxy to `target` that can be cut and restored.
pub struct TcpProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    stop: CancellationToken,
}

struct ProxyState {
    up: bool,
    /// Cancelled to drop every connection of the current generation.
    connections: CancellationToken,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState {
            up: true,
            connections: CancellationToken::new(),
        }));
        let stop = CancellationToken::new();
        let (task_state, task_stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = task_stop.cancelled() => return,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let (up, cut) = {
                    let state = task_state.lock();
                    (state.up, state.connections.clone())
                };
                if !up {
                    // The "broker" is down: the connection is refused, as it would be.
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut.cancelled() => {}
                    }
                });
            }
        });
        TcpProxy { addr, state, stop }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        let mut state = self.state.lock();
        state.up = false;
        state.connections.cancel();
        state.connections = CancellationToken::new();
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.state.lock().up = true;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.state.lock().connections.cancel();
    }
}

/// The `host:port` of an AMQP URL.
pub fn amqp_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap();
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5672")
    };
    host_port
        .parse()
        .expect("a numeric host:port in the AMQP URL")
}

/// `url` with its host and port replaced by `addr`.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((u, r)) => (format!("{u}@"), r),
        None => (String::new(), rest),
    };
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    format!("{scheme}://{userinfo}{addr}/{path}")
}

pub async fn connect_direct(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ reachable")
}

/// Takes up to `count` messages off `queue` (acknowledging them), waiting at most `timeout`.
pub async fn take(url: &str, queue: &str, count: usize, timeout: Duration) -> Vec<IncomingMessage> {
    let connection = connect_direct(url).await;
    let channel = connection.create_channel().await.unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await;
        match got {
            Ok(Some(message)) => {
                let delivery = &message.delivery;
                let table = delivery.properties.headers().clone();
                let mut headers = ferry_toolkit::Headers::new();
                let mut key = None;
                for (name, value) in table.iter().flat_map(|t| t.inner()) {
                    let bytes = match value {
                        lapin::types::AMQPValue::LongString(s) => s.as_bytes().to_vec(),
                        other => format!("{other:?}").into_bytes(),
                    };
                    if name.as_str() == ferry_toolkit::amqp::KEY_HEADER {
                        key = Some(bytes);
                    } else {
                        headers.append(name.as_str(), bytes);
                    }
                }
                out.push(IncomingMessage {
                    topic: queue.to_owned(),
                    partition: 0,
                    offset: out.len() as i64,
                    key,
                    headers,
                    payload: delivery.data.clone(),
                });
            }
            // Not declared yet, or empty: look again shortly.
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                return out_or_retry(url, queue, count, deadline, out).await;
            }
        }
    }
    let _ = connection.close(200, "done".into()).await;
    out
}

/// After a channel error (queue not declared yet), carries on with a fresh channel.
async fn out_or_retry(
    url: &str,
    queue: &str,
    count: usize,
    deadline: Instant,
    mut out: Vec<IncomingMessage>,
) -> Vec<IncomingMessage> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return out;
    }
    let more = Box::pin(take(url, queue, count - out.len(), left)).await;
    out.extend(more);
    out
}

/// Deletes `queues` (a test's own), on a runtime of its own so it also works from `Drop`.
pub fn delete_queues(url: &str, queues: Vec<String>) {
    let url = url.to_owned();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let Ok(connection) = Connection::connect(&url, ConnectionProperties::default()).await
            else {
                return;
            };
            for queue in queues {
                // A failed delete closes the channel, so one channel per queue.
                if let Ok(channel) = connection.create_channel().await {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            }
            let _ = connection.close(200, "done".into()).await;
        });
    })
    .join();
}
