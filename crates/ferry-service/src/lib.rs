//! What every Ferry service shares, so each service crate holds only its domain.
//!
//! - [`ServiceConfig`]: where the broker is, where the data lives, which port to serve.
//! - [`ApiError`] and [`ApiJson`]: the one error contract of every HTTP API,
//!   `{"error":{"code":"…","message":"…"}}` with a 4xx for the client's mistakes. Codes come from
//!   one table ([`ErrorCode`]), each with its HTTP status, so a code means the same everywhere.
//! - [`serve`]: binds the port, adds `/health`, `/ready`, `/metrics` (from the toolkit's ops
//!   module) and `/openapi.json` to the service's routes, answers unknown paths with a JSON 404,
//!   and shuts down gracefully when the token is cancelled.
//!
//! A service crate exposes `start(ServiceConfig, CancellationToken) -> ServiceHandle`; the `ferry`
//! binary runs one (`ferry run <service>`) or all of them (`ferry up`) that way.

mod error;
mod server;

pub use error::{ApiError, ApiJson, ErrorCode};
pub use server::{ServiceHandle, serve};

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
    }
}
