//! The parts every service wires the same way: its database, its publisher, an outbox relay,
//! message routers, and the HTTP server, stopped in the right order.
//!
//! A service's `start` builds a [`Runtime`], asks it for what it needs, and ends with
//! [`Runtime::serve`]. Shutdown (the token is cancelled) stops the HTTP server first (no new
//! commands), then the routers (in-flight messages finish and their offsets are committed),
//! then the relays (whatever the routers staged is still published), and only then does the
//! [`ServiceHandle`]'s task finish, so `ferry up` waiting on it really waits for all of that.

use std::sync::{Mutex, MutexGuard};

use ferry_toolkit::amqp::{self, AmqpConfig};
use ferry_toolkit::kafka::{self, KafkaConfig};
use ferry_toolkit::ops::Health;
use ferry_toolkit::sql::Database;
use ferry_toolkit::sql::outbox::{Relay, RelayWaker};
use ferry_toolkit::{Message, Publisher, Router};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::asyncapi::AsyncApi;
use crate::{ServiceConfig, ServiceHandle};

/// Why a service could not start; every service's `start` returns it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The database or the broker client could not be set up.
    #[error(transparent)]
    Toolkit(#[from] ferry_toolkit::Error),
    /// The HTTP port could not be bound.
    #[error("cannot serve HTTP: {0}")]
    Http(#[from] std::io::Error),
    /// Another process runs this service on the same data directory.
    #[error(transparent)]
    Locked(#[from] ferry_lockfile::Error),
}

/// The transport a service talks over: RabbitMQ when the configuration has an AMQP URL,
/// otherwise the Kafka protocol.
#[derive(Debug, Clone)]
pub enum Transport {
    /// The built-in broker or any Kafka cluster.
    Kafka(KafkaConfig),
    /// RabbitMQ.
    Amqp(AmqpConfig),
}

impl Transport {
    /// RabbitMQ if an AMQP URL is configured, else Kafka.
    pub fn of(config: &ServiceConfig) -> Transport {
        match &config.amqp_url {
            Some(url) => Transport::Amqp(AmqpConfig::new(url)),
            None => Transport::Kafka(KafkaConfig::new(&config.brokers)),
        }
    }

    /// A publisher on this transport. It does not connect here: a broker that is down now is
    /// not an error.
    pub fn publisher(&self) -> ferry_toolkit::Result<Publisher> {
        match self {
            Transport::Kafka(config) => Publisher::kafka(config),
            Transport::Amqp(config) => Ok(Publisher::amqp(config)),
        }
    }
}

/// One service being assembled; see the module docs.
pub struct Runtime {
    name: &'static str,
    config: ServiceConfig,
    shutdown: CancellationToken,
    health: Health,
    transport: Transport,
    publisher: Publisher,
    /// Background parts to stop after the HTTP server, routers (and other consumers, see
    /// [`Runtime::stop_on_shutdown`]) before relays. In a mutex only so that `&Runtime` is
    /// `Send` (a boxed future is not `Sync`); never contended.
    routers: Mutex<Vec<BoxFuture<'static, ()>>>,
    relays: Mutex<Vec<BoxFuture<'static, ()>>>,
    /// On SQLite, the lock on `<data_dir>/<name>.db.lock`, held until the service has stopped.
    lock: Option<ferry_lockfile::LockFile>,
    /// The databases whose outbox a relay publishes: `/outbox/parked` lists their parked rows.
    outboxes: Vec<Database>,
    /// What `/asyncapi.json` describes: the routers' topics and what [`Runtime::sends`] declared.
    asyncapi: AsyncApi,
    /// Every database opened through [`Runtime::database`]: `/ready` checks each is writable.
    databases: Vec<Database>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("name", &self.name)
            .field("transport", &self.transport)
            .field("routers", &lock(&self.routers).len())
            .field("relays", &lock(&self.relays).len())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime for service `name`. Creates the publisher; connects nothing yet.
    ///
    /// With SQLite (no database URL) it first locks `<data_dir>/<name>.db.lock`: two copies of a
    /// service on one file would both relay its outbox and race on its counters, so the second
    /// is refused at once with [`StartError::Locked`], naming the holder's pid.
    pub fn new(
        name: &'static str,
        config: ServiceConfig,
        shutdown: CancellationToken,
    ) -> Result<Runtime, StartError> {
        let lock = match &config.database_url {
            Some(url) if !url.is_empty() => None,
            _ => {
                std::fs::create_dir_all(&config.data_dir)?;
                Some(ferry_lockfile::LockFile::acquire(
                    config.data_dir.join(format!("{name}.db.lock")),
                )?)
            }
        };
        let transport = Transport::of(&config);
        let publisher = transport.publisher()?.for_service(name);
        Ok(Runtime {
            name,
            config,
            shutdown,
            health: Health::new(),
            transport,
            publisher,
            routers: Mutex::default(),
            relays: Mutex::default(),
            lock,
            outboxes: Vec::new(),
            asyncapi: AsyncApi::new(name),
            databases: Vec::new(),
        })
    }

    /// The service's name (its database, its log lines).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The token that stops the service.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// What `/ready` reports; routers started here report into it.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The service's publisher (shared by its relay, routers and handlers).
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// The service's own database, migrated to `migrations` (`(version, name, sql)`).
    pub async fn database(
        &mut self,
        migrations: &[(i64, &str, &str)],
    ) -> ferry_toolkit::Result<Database> {
        let db = self.config.database(self.name).await?;
        db.migrate(self.name, migrations)
            .await
            .map_err(|e| self.config.name_the_file(self.name, e))?;
        self.databases.push(db.clone());
        Ok(db)
    }

    /// Has `/ready` check that `db` (opened without [`Runtime::database`]) stays writable.
    pub fn watch_database(&mut self, db: &Database) {
        self.databases.push(db.clone());
    }

    /// Starts an outbox relay on `db`, publishing through the service's publisher; stopped
    /// (after the routers) on shutdown.
    pub fn start_relay(&mut self, db: &Database) -> RelayWaker {
        self.outboxes.push(db.clone());
        let relay = Relay::start(db.clone(), self.publisher.clone());
        let waker = relay.waker();
        lock(&self.relays).push(Box::pin(relay.shutdown()));
        waker
    }

    /// Starts `router` on the service's transport, reporting into its health; stopped
    /// gracefully (in-flight messages finish, offsets are committed) on shutdown.
    pub fn start_router(&mut self, router: Router) -> ferry_toolkit::Result<()> {
        self.asyncapi.receives(&router);
        let router = router.health(&self.health);
        let publisher = self.publisher.clone();
        match &self.transport {
            Transport::Kafka(config) => {
                let handle = kafka::start_router(router, config, publisher)?;
                lock(&self.routers).push(Box::pin(handle.shutdown()));
            }
            Transport::Amqp(config) => {
                let handle = amqp::start_router(router, config, publisher)?;
                lock(&self.routers).push(Box::pin(handle.shutdown()));
            }
        }
        Ok(())
    }

    /// Declares that the service sends `M` to `topic` (for `/asyncapi.json`; what it receives
    /// is known from its routers).
    pub fn sends<M: Message>(&mut self, topic: &str) {
        self.asyncapi.sends::<M>(topic);
    }

    /// Registers another background part (a tap, a poller) to stop with the routers, after
    /// the HTTP server: `stop` is awaited on shutdown.
    pub fn stop_on_shutdown(&mut self, stop: impl Future<Output = ()> + Send + 'static) {
        lock(&self.routers).push(Box::pin(stop));
    }

    /// Serves `app` (plus the ops endpoints and `openapi`) until the token is cancelled, then
    /// stops the routers and relays; the handle's task finishes when all of them have.
    pub async fn serve(
        self,
        app: axum::Router,
        openapi: utoipa::openapi::OpenApi,
    ) -> std::io::Result<ServiceHandle> {
        let Runtime {
            name,
            config,
            shutdown,
            health,
            routers,
            relays,
            lock: data_lock,
            outboxes,
            asyncapi,
            databases,
            transport,
            ..
        } = self;
        let brokers = match &transport {
            Transport::Kafka(_) => config.brokers.clone(),
            Transport::Amqp(_) => config.amqp_url.clone().unwrap_or_default(),
        };
        crate::ready::start(
            name,
            &health,
            brokers,
            databases,
            outboxes.clone(),
            shutdown.clone(),
        );
        let asyncapi = asyncapi.document();
        let app = app.route(
            ASYNCAPI_PATH,
            axum::routing::get(move || async move { axum::Json(asyncapi) }),
        );
        let app = if outboxes.is_empty() {
            app
        } else {
            app.route(
                PARKED_PATH,
                axum::routing::get(move || parked_rows(name, outboxes.clone())),
            )
        };
        // Larger bodies are refused with 413 (see `fields`): announced ones before a handler
        // runs, chunked ones by the extractors' limit.
        let app = app
            .layer(axum::extract::DefaultBodyLimit::max(
                crate::fields::MAX_BODY_BYTES,
            ))
            .layer(axum::middleware::from_fn(
                crate::fields::refuse_oversized_body,
            ));
        let mut handle = crate::serve(name, &config, app, health, openapi, shutdown).await?;
        let server = handle.task;
        let stage = handle.stage.clone();
        handle.task = tokio::spawn(async move {
            let _ = server.await;
            stage.set("consumers: messages in flight and their offset commits");
            let routers = std::mem::take(&mut *lock(&routers));
            for stop in routers {
                stop.await;
            }
            stage.set("outbox relay: publishes in flight (unsent rows stay for the next start)");
            let relays = std::mem::take(&mut *lock(&relays));
            for stop in relays {
                stop.await;
            }
            stage.set("stopped");
            // Only now may another copy take over the files.
            drop(data_lock);
            tracing::info!(service = name, "stopped");
        });
        Ok(handle)
    }
}

/// Where every service serves its AsyncAPI 3.0 document.
pub const ASYNCAPI_PATH: &str = "/asyncapi.json";

/// Where a service with an outbox lists the rows its relay parked (the dashboard shows them
/// with the dead letters).
pub const PARKED_PATH: &str = "/outbox/parked";

/// How many parked rows `/outbox/parked` lists at most, newest first.
const PARKED_LIMIT: u32 = 100;

/// The parked rows of a service's outboxes (metadata and reason only, never payloads).
#[derive(Debug, serde::Serialize)]
pub struct ParkedRows {
    /// The service.
    pub service: &'static str,
    /// Newest first.
    pub rows: Vec<ferry_toolkit::sql::outbox::ParkedRow>,
}

async fn parked_rows(
    service: &'static str,
    outboxes: Vec<Database>,
) -> Result<axum::Json<ParkedRows>, crate::ApiError> {
    let mut rows = Vec::new();
    for db in &outboxes {
        rows.extend(
            ferry_toolkit::sql::outbox::parked(db, PARKED_LIMIT)
                .await
                .map_err(|e| {
                    crate::ApiError::new(
                        crate::ErrorCode::Unavailable,
                        format!("cannot read the outbox: {e}"),
                    )
                })?,
        );
    }
    Ok(axum::Json(ParkedRows { service, rows }))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
