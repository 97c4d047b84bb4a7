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
    /// Defaults for every topic's log (segment size, retention, ...); topics override them by config.
    pub log: LogConfig,
    /// How often retention runs.
    pub retention_check_interval: Duration,
    /// Longest `transaction.timeout.ms` a transactional producer may ask for (Kafka's
    /// `transaction.max.timeout.ms`); InitProducerId with more is INVALID_TRANSACTION_TIMEOUT.
    pub transaction_max_timeout: Duration,
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
            log: LogConfig::default(),
            retention_check_interval: Duration::from_secs(60),
            transaction_max_timeout: Duration::from_secs(15 * 60),
        }
    }
}
