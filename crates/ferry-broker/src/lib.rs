//! Ferry's built-in Kafka-compatible broker.
//!
//! A single-node broker that speaks the Kafka wire protocol (decoded and encoded by the
//! `kafka-protocol` crate) over a [`ferry_log::Store`]. Unmodified Kafka clients (librdkafka,
//! kcat, kafka-python, kafkajs, the Java client) produce to it and fetch from it.
//!
//! Threads and tasks: one accept task; per connection a reader task (decodes frames and runs the
//! synchronous part of each handler, such as appending to a log) and a writer task (awaits each
//! request's reply in order and writes it); fsyncs run on tokio's blocking pool; one retention
//! task and one log-cleaner task (compaction). See `server.rs` for why requests are pipelined that way.
//!
//! Transactions (KIP-98): `txn` is the coordinator (transactional ids, epochs, the durable
//! two-phase end of each transaction, aborting those past their timeout on a clock task); the
//! partitions keep the markers, the last stable offset and the aborted-transaction index
//! (ferry-log), and Fetch/ListOffsets honour `read_committed`.
//!
//! Durability: a produce with acks=all is answered after its data is fsynced; consumers see only
//! fsynced data (the high watermark is the durable end of the log), so a crash can never take
//! back a record that someone has read.

mod codec;
mod config;
mod dynamic_config;
mod groups;
mod handlers;
mod journal;
mod producer_ids;
mod server;
mod state;
mod txn;
mod versions;

use std::net::SocketAddr;
use std::sync::Arc;

pub use codec::{DecodeError, decode_request};
pub use config::BrokerConfig;
pub use versions::{SUPPORTED, Supported};

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::Shared;

/// Errors that stop the broker from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address we tried.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The data directory could not be opened or recovered.
    #[error("storage: {0}")]
    Storage(#[from] ferry_log::Error),
    /// The consumer-group store could not be opened.
    #[error("group store: {0}")]
    Groups(String),
    /// The transaction coordinator's store could not be opened.
    #[error("transaction store: {0}")]
    Transactions(std::io::Error),
    /// A background task failed (a panic in storage code).
    #[error("broker task failed: {0}")]
    Task(String),
    /// Another process (or another broker in this one) owns the data directory.
    #[error(transparent)]
    Locked(#[from] ferry_lockfile::Error),
    /// The data directory's own files (the cluster id) could not be read or written.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The file involved.
        path: std::path::PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// A running broker. Dropping it does not stop the broker; call [`BrokerHandle::shutdown`].
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The data directory's lock, also held by the accept loop: released once the broker has
    /// stopped (or, if this handle is dropped without a shutdown, when the accept loop ends).
    _lock: Arc<ferry_lockfile::LockFile>,
}

impl BrokerHandle {
    /// The address the broker listens on (with the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `host:port` for a client's `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.local_addr.to_string()
    }

    /// Stop accepting, close connections, flush every partition.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        let shared = self.shared;
        tokio::task::spawn_blocking(move || shared.store.flush_all())
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        tracing::info!("broker stopped");
        Ok(())
    }
}

/// Start a broker: open (and recover) the data directory, bind, and serve in background tasks.
pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, Error> {
    let data_ready = Arc::new(Notify::new());
    let listener_signal = data_ready.clone();
    let listener: ferry_log::DurableListener = Arc::new(move || listener_signal.notify_waiters());
    let data_dir = config.data_dir.clone();
    let log_defaults = config.log.clone();
    let max_txn_timeout_ms =
        i32::try_from(config.transaction_max_timeout.as_millis()).unwrap_or(i32::MAX);
    let consumer_session_timeout = config.consumer_session_timeout;
    let consumer_heartbeat_interval = config.consumer_heartbeat_interval;
    let (lock, (store, dynamic), cluster_id, groups, producer_ids, txns) =
        tokio::task::spawn_blocking(move || -> Result<_, Error> {
            std::fs::create_dir_all(&data_dir).map_err(|source| Error::DataDir {
                path: data_dir.clone(),
                source,
            })?;
            // Before reading anything: a second broker on these files would hand out the same
            // offsets to other records, and one side's acknowledged data would be lost.
            let lock = Arc::new(ferry_lockfile::LockFile::for_dir(&data_dir)?);
            let cluster_id = cluster_id(&data_dir)?;
            // Topic defaults: the static config with the dynamic broker configs applied.
            let dynamic = dynamic_config::DynamicConfigs::open(&data_dir).map_err(|source| {
                Error::DataDir {
                    path: data_dir.join("broker-config.json"),
                    source,
                }
            })?;
            let log_defaults = dynamic.layers().log_defaults(&log_defaults)?;
            let store = ferry_log::Store::open(&data_dir, log_defaults, listener)?;
            let groups = groups::Groups::open(
                &data_dir,
                consumer_session_timeout,
                consumer_heartbeat_interval,
            )
            .map_err(|e| Error::Groups(e.to_string()))?;
            let producer_ids =
                producer_ids::ProducerIds::open(&data_dir).map_err(|source| Error::DataDir {
                    path: data_dir.join("producer-ids"),
                    source,
                })?;
            let txns = txn::TxnCoordinator::open(&data_dir, max_txn_timeout_ms)
                .map_err(Error::Transactions)?;
            Ok((
                lock,
                (store, dynamic),
                cluster_id,
                groups,
                Arc::new(producer_ids),
                txns,
            ))
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;

    let tcp = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = tcp.local_addr().map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;
    let host = config.advertised_host.clone().unwrap_or_else(|| {
        if local_addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            local_addr.ip().to_string()
        }
    });
    let shared = Arc::new(Shared {
        store,
        data_ready,
        advertised: (
            host,
            i32::from(config.advertised_port.unwrap_or(local_addr.port())),
        ),
        cluster_id,
        groups,
        producer_ids,
        dynamic,
        txns,
        config,
    });
    let shutdown = CancellationToken::new();
    let (offset_changes, offset_changes_rx) = tokio::sync::mpsc::unbounded_channel();
    shared.groups.store.mirror_to(offset_changes);
    txn::TxnCoordinator::resume(&shared);
    let accept_lock = lock.clone();
    let accepting = server::accept_loop(tcp, shared.clone(), shutdown.clone());
    let tasks = vec![
        tokio::spawn(async move {
            accepting.await;
            drop(accept_lock);
        }),
        tokio::spawn(retention_loop(shared.clone(), shutdown.clone())),
        tokio::spawn(cleaner_loop(shared.clone(), shutdown.clone())),
        tokio::spawn(group_clock(shared.clone(), shutdown.clone())),
        tokio::spawn(txn_clock(shared.clone(), shutdown.clone())),
        tokio::spawn(groups::offsets_topic::run(
            shared.clone(),
            offset_changes_rx,
            shutdown.clone(),
        )),
    ];
    tracing::info!(addr = %local_addr, data = %shared.config.data_dir.display(), topics = shared.store.topics().len(), "broker listening");
    Ok(BrokerHandle {
        local_addr,
        shared,
        shutdown,
        tasks,
        _lock: lock,
    })
}

/// Apply retention now and then, off the async threads.
async fn retention_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.retention_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = shared.clone();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        match tokio::task::spawn_blocking(move || s.store.enforce_retention(now_ms)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(segments = n, "retention deleted old segments"),
            Ok(Err(e)) => tracing::warn!(error = %e, "retention failed"),
            Err(e) => tracing::warn!(error = %e, "retention task failed"),
        }
    }
}

/// The log cleaner: now and then, compact every partition of every `cleanup.policy=compact`
/// topic that is due (see `ferry_log::PartitionLog::clean`), one partition at a time on the
/// blocking pool so that cleaning never competes with itself for disk and memory.
async fn cleaner_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.cleaner_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the first clean waits one interval, so that a restart is not
    // followed at once by a burst of cleaning.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let partitions: Vec<_> = shared
            .store
            .topics()
            .into_iter()
            .filter(|t| t.config().compacts())
            .flat_map(|t| t.partitions())
            .collect();
        for log in partitions {
            if shutdown.is_cancelled() {
                return;
            }
            let options = shared.config.cleaner.clone();
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let dir = log.dir().to_path_buf();
            match tokio::task::spawn_blocking(move || log.clean(now_ms, &options)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "log cleaning failed")
                }
                Err(e) => tracing::warn!(error = %e, "log cleaner task failed"),
            }
        }
    }
}

/// Expire silent group members and finish overdue rebalances.
async fn group_clock(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(groups::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => shared.groups.tick(&shared.store),
        }
    }
}

/// Abort transactions open past their timeout.
async fn txn_clock(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(txn::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => txn::TxnCoordinator::expire_overdue(&shared),
        }
    }
}

/// The data directory's cluster id, made on first start and kept in `cluster.id`.
fn cluster_id(data_dir: &std::path::Path) -> Result<String, Error> {
    let path = data_dir.join("cluster.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        Ok(_) | Err(_) => {
            let id = format!("ferry-{}", uuid::Uuid::new_v4().simple());
            std::fs::write(&path, &id).map_err(|source| Error::DataDir {
                path: path.clone(),
                source,
            })?;
            Ok(id)
        }
    }
}
