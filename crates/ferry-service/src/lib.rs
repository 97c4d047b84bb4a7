//! What every Ferry service shares, so each service crate holds only its domain.
//!
//! - [`ServiceConfig`]: where the broker is, where the data lives, which port to serve.
//! - [`ApiError`] and [`ApiJson`]: the one error contract of every HTTP API,
//!   `{"error":{"code":"…","message":"…"}}` with a 4xx for the client's mistakes. Codes come from
//!   one table ([`ErrorCode`]), each with its HTTP status, so a code means the same everywhere.
//! - [`Runtime`]: the wiring every service repeats (its database and migrations, publisher,
//!   outbox relay, routers on Kafka or AMQP, the HTTP server) and the order they stop in.
//! - [`serve`]: binds the port, adds `/health`, `/ready`, `/metrics` (from the toolkit's ops
//!   module) and `/openapi.json` to the service's routes, answers unknown paths with a JSON 404,
//!   bounds its connections ([`HttpLimits`]: a cap, an idle timeout, a header-read timeout), and
//!   shuts down gracefully when the token is cancelled.
//! - [`raise_open_files_limit`]: what the `ferry` binary (and tests holding many sockets) call
//!   first, since one process serves every service.
//!
//! A service crate exposes `start(ServiceConfig, CancellationToken) -> ServiceHandle`; the `ferry`
//! binary runs one (`ferry run <service>`) or all of them (`ferry up`) that way.

pub mod asyncapi;
pub mod edge;
mod error;
pub mod fields;
pub mod openapi;
pub mod ready;
mod runtime;
mod server;

pub use error::{
    ApiError, ApiJson, ApiQuery, DEFAULT_LIMIT, ErrorCode, MAX_LIMIT, json_errors, limit,
};
pub use runtime::{ASYNCAPI_PATH, PARKED_PATH, ParkedRows, Runtime, StartError, Transport};
pub use server::{
    CAP_REACHED, CONNECTIONS, CONNECTIONS_CLOSED, HttpLimits, ServiceHandle, Stage,
    raise_open_files_limit, serve,
};

use std::path::PathBuf;

/// How a service reaches the world.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Kafka bootstrap servers (the built-in broker or any Kafka cluster).
    pub brokers: String,
    /// A database URL; `None` means a SQLite file under `data_dir`.
    pub database_url: Option<String>,
    /// Where SQLite files and other local state go.
    pub data_dir: PathBuf,
    /// The HTTP port; 0 picks a free one.
    pub port: u16,
    /// The interface to listen on.
    pub host: std::net::IpAddr,
    /// An AMQP URL, for services that can run over RabbitMQ instead of Kafka.
    pub amqp_url: Option<String>,
    /// Base URLs of the other services this one calls over HTTP, by service name
    /// (`"posts-command"` -> `"http://10.0.0.5:5010"`). Empty by default: a service then looks
    /// for its peer on this host at the peer's default port. Services meet through topics;
    /// this is only for the few read-only HTTP feeds (the posts event feed).
    pub peers: std::collections::BTreeMap<String, String>,
    /// Bounds on the HTTP server's connections: a cap and two timeouts.
    pub http: HttpLimits,
}

impl ServiceConfig {
    /// A config for tests and `ferry up`: the given brokers, a data directory, a port.
    pub fn new(brokers: impl Into<String>, data_dir: impl Into<PathBuf>, port: u16) -> Self {
        ServiceConfig {
            brokers: brokers.into(),
            database_url: None,
            data_dir: data_dir.into(),
            port,
            host: std::net::IpAddr::from([127, 0, 0, 1]),
            amqp_url: None,
            peers: std::collections::BTreeMap::new(),
            http: HttpLimits::default(),
        }
    }

    /// The database of `service`: with a database URL, a PostgreSQL schema named after the
    /// service (so services sharing one server never share tables, outbox or inbox); otherwise
    /// the SQLite file `<data_dir>/<service>.db`.
    pub async fn database(
        &self,
        service: &str,
    ) -> ferry_toolkit::Result<ferry_toolkit::sql::Database> {
        ferry_toolkit::sql::Database::for_service(
            self.database_url.as_deref(),
            &self.data_dir,
            service,
        )
        .await
        .map_err(|e| self.name_the_file(service, e))
    }

    /// On SQLite, an error that names the file it is about (a read-only file, a directory in
    /// its place), so a person knows which one to fix.
    pub fn name_the_file(&self, service: &str, e: ferry_toolkit::Error) -> ferry_toolkit::Error {
        if self.database_url.as_deref().is_some_and(|u| !u.is_empty()) {
            return e;
        }
        let file = self.data_dir.join(format!("{service}.db"));
        ferry_toolkit::Error::Io(std::io::Error::other(format!(
            "cannot open or write the SQLite file {}: {e}",
            file.display()
        )))
    }
}
