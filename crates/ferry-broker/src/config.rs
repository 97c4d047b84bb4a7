//! Broker configuration: what `ferry broker` and `ferry up` set from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferry_log::LogConfig;

/// Everything the broker needs to start. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Address to listen on; port 0 picks a free port (see [`crate::BrokerHandle::local_addr`]).
    pub listen: SocketAddr,
    /// Host name clients are told to connect to in Metadata. `None`: the listen address's IP
    /// (or 127.0.0.1 when listening on an unspecified address).
    pub advertised_host: Option<String>,
    /// Port clients are told to connect to in Metadata. `None`: the port actually bound. Set it
    /// when clients reach the broker through a proxy or port forward.
    pub advertised_port: Option<u16>,
    /// Root of the broker's data: topics, partitions, and (later) group offsets.
    pub data_dir: PathBuf,
    /// Create a topic the first time a client produces to it or asks for it in Metadata.
    pub auto_create_topics: bool,
    /// Partition count for auto-created topics and for CreateTopics with `num_partitions = -1`.
    pub default_partitions: u32,
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`); a larger one closes the connection.
    pub max_request_bytes: usize,
    /// A connection with no request and no response outstanding for this long is closed (Kafka's
    /// `connections.max.idle.ms`, 10 minutes by default). Clients reconnect when they need to.
    pub connections_max_idle: Duration,
    /// Once the first byte of a request frame arrived, the whole frame must arrive within this
    /// time or the connection is closed: a client that trickles a frame (slowloris) cannot hold a
    /// connection forever. Kafka has no exact equivalent (its `request.timeout.ms` is the
    /// client's); 30 s lets a 100 MiB frame through at 3.5 MB/s, far slower than any link a broker
    /// should serve. Raise it with `max_request_bytes` for huge frames over slow links.
    pub frame_read_timeout: Duration,
    /// Connections served at once (Kafka's `max.connections`). A connection over the cap is
    /// closed as soon as it is accepted, with a warning at most every 10 s; the client retries
    /// with its reconnect backoff. Kafka's default is unlimited; 4,096 is far above what a
    /// single-node broker's clients open (one or two per client) and far below the open-files
    /// limit `ferry` raises at start, so a flood of connections cannot take every descriptor
    /// the log and the services need.
    pub max_connections: usize,
    /// Defaults for every topic's log (segment size, retention, ...); topics override them by config.
    pub log: LogConfig,
    /// How often retention runs.
    pub retention_check_interval: Duration,
    /// How often the log cleaner looks for compacted partitions due for a clean (Kafka's
    /// `log.cleaner.backoff.ms`).
    pub cleaner_check_interval: Duration,
    /// Tunables of the log cleaner (offset map budget).
    pub cleaner: ferry_log::CleanerOptions,
    /// Longest `transaction.timeout.ms` a transactional producer may ask for (Kafka's
    /// `transaction.max.timeout.ms`); InitProducerId with more is INVALID_TRANSACTION_TIMEOUT.
    pub transaction_max_timeout: Duration,
    /// Session timeout of consumer-protocol (KIP-848) group members, set by the broker, not the
    /// client (Kafka's `group.consumer.session.timeout.ms`, 45 s): a member that does not
    /// heartbeat for this long is removed and its partitions reassigned.
    pub consumer_session_timeout: Duration,
    /// Heartbeat interval the broker tells consumer-protocol members (Kafka's
    /// `group.consumer.heartbeat.interval.ms`, 5 s). A member learns of a new target assignment
    /// at its next heartbeat, so this bounds how long a rebalance step waits.
    pub consumer_heartbeat_interval: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_host: None,
            advertised_port: None,
            data_dir: PathBuf::from("./ferry-data/broker"),
            auto_create_topics: true,
            default_partitions: 1,
            max_request_bytes: 100 * 1024 * 1024,
            connections_max_idle: Duration::from_secs(10 * 60),
            frame_read_timeout: Duration::from_secs(30),
            max_connections: 4096,
            log: LogConfig::default(),
            retention_check_interval: Duration::from_secs(60),
            cleaner_check_interval: Duration::from_secs(15),
            cleaner: ferry_log::CleanerOptions::default(),
            transaction_max_timeout: Duration::from_secs(15 * 60),
            consumer_session_timeout: Duration::from_secs(45),
            consumer_heartbeat_interval: Duration::from_secs(5),
        }
    }
}
