//! Readiness that tells the truth: checks every service gets from its [`crate::Runtime`],
//! probed in the background and shown at `/ready`, beside the routers' own (broker reachable
//! and consumer group joined, per group).
//!
//! - `broker`: a TCP connection to one of the bootstrap servers (or the AMQP host) opens within
//!   [`PROBE_TIMEOUT`]. A producer-only service (no router) used to say `ready` with no checks
//!   at all while the broker was unreachable; this is the check that says so. The reason names
//!   the address tried, never credentials.
//! - `database`: a row of the service's database can be written (`ferry_ready`, one row,
//!   upserted), so a read-only file or a full disk shows up here rather than on the next command.
//! - `outbox`: no row of the outbox is parked (refused by the broker for good, see
//!   `/outbox/parked`): the relay cannot make progress on it without a person.
//!
//! Every [`PROBE_EVERY`]; the first probe runs at once. A not-ready probe is logged at DEBUG
//! (an orchestrator asks often; the answer is in `/ready`), a change of state at WARN/INFO.

use std::time::Duration;

use ferry_toolkit::ops::{Check, Health};
use ferry_toolkit::sql::Database;
use tokio_util::sync::CancellationToken;

/// How often the checks are probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long one probe may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The `host:port` addresses a broker list (`a:9092,PLAINTEXT://b:9092`) or an AMQP URL
/// (`amqp://user:secret@host:5672/vhost`) points at, without scheme or credentials.
pub fn broker_addresses(brokers: &str) -> Vec<String> {
    brokers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let amqp = s.starts_with("amqp://") || s.starts_with("amqps://");
            let s = s.split_once("://").map_or(s, |(_, rest)| rest);
            let s = s.rsplit_once('@').map_or(s, |(_, host)| host);
            let s = s.split(['/', '?']).next().unwrap_or(s);
            if amqp && !s.contains(':') {
                format!("{s}:5672")
            } else {
                s.to_string()
            }
        })
        .collect()
}

/// Whether a TCP connection to one of `brokers` opens within [`PROBE_TIMEOUT`]; the error names
/// the addresses tried.
pub async fn broker_reachable(brokers: &str) -> Result<(), String> {
    let addresses = broker_addresses(brokers);
    let mut last = String::from("no address given");
    for address in &addresses {
        match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no answer within {PROBE_TIMEOUT:?}"),
        }
    }
    Err(format!(
        "cannot reach the broker at {}: {last}",
        addresses.join(",")
    ))
}

/// Writes one row of `db`, within [`PROBE_TIMEOUT`].
pub async fn database_writable(db: &Database) -> Result<(), String> {
    let write = async {
        sqlx::query("CREATE TABLE IF NOT EXISTS ferry_ready (id INTEGER PRIMARY KEY, checked_at BIGINT NOT NULL)")
            .execute(db.pool())
            .await?;
        sqlx::query(
            "INSERT INTO ferry_ready (id, checked_at) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
        )
        .bind(ferry_toolkit::sql::now_millis())
        .execute(db.pool())
        .await?;
        Ok::<_, sqlx::Error>(())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot write the database: {e}")),
        Err(_) => Err(format!("a write took longer than {PROBE_TIMEOUT:?}")),
    }
}

/// Whether no row of `db`'s outbox is parked.
pub async fn outbox_flowing(db: &Database) -> Result<(), String> {
    match ferry_toolkit::sql::outbox::parked(db, 1000).await {
        Ok(rows) if rows.is_empty() => Ok(()),
        Ok(rows) => Err(format!(
            "{} outbox row(s) parked: the broker refused them for good (see {})",
            rows.len(),
            crate::PARKED_PATH
        )),
        Err(e) => Err(format!("cannot read the outbox: {e}")),
    }
}

/// Sets `check` from `outcome`, logging only changes.
fn report(service: &str, check: &Check, outcome: Result<(), String>) {
    match outcome {
        Ok(()) => {
            if !check.is_ready() {
                tracing::info!(service, check = check.name(), "ready");
            }
            check.ready();
        }
        Err(reason) => {
            if check.is_ready() {
                tracing::warn!(service, check = check.name(), %reason, "not ready");
            } else {
                tracing::debug!(service, check = check.name(), %reason, "still not ready");
            }
            check.not_ready(reason);
        }
    }
}

/// Registers the checks and probes them until `stop` is cancelled.
pub(crate) fn start(
    service: &'static str,
    health: &Health,
    brokers: String,
    databases: Vec<Database>,
    outboxes: Vec<Database>,
    stop: CancellationToken,
) {
    let broker = health.register("broker", "not probed yet");
    let database: Vec<Check> = databases
        .iter()
        .map(|_| health.register("database", "not probed yet"))
        .collect();
    let outbox: Vec<Check> = outboxes
        .iter()
        .map(|_| health.register("outbox", "not probed yet"))
        .collect();
    tokio::spawn(async move {
        loop {
            report(service, &broker, broker_reachable(&brokers).await);
            for (db, check) in databases.iter().zip(&database) {
                report(service, check, database_writable(db).await);
            }
            for (db, check) in outboxes.iter().zip(&outbox) {
                report(service, check, outbox_flowing(db).await);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_drop_schemes_and_credentials() {
        assert_eq!(
            broker_addresses("127.0.0.1:9092, PLAINTEXT://b:9093"),
            ["127.0.0.1:9092", "b:9093"]
        );
        assert_eq!(
            broker_addresses("amqp://guest:s3cret@rabbit/vhost"),
            ["rabbit:5672"]
        );
        assert_eq!(
            broker_addresses("amqps://u:p@rabbit:5671/%2f?x=1"),
            ["rabbit:5671"]
        );
    }
}
