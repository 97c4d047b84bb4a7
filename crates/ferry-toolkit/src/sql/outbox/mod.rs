//! The transactional outbox: a service stages its outgoing messages in the same database
//! transaction as its state change, and a [`Relay`] publishes them after commit.
//!
//! So a command that committed will have its messages delivered, even if the broker was down
//! when it ran (the relay retries until the broker is back), and a command that rolled back
//! publishes nothing. Delivery is at least once: if the process dies after a publish and
//! before the row is marked sent, the row is published again; consumers de-duplicate by
//! message id (the [`crate::sql::inbox`]), which the row keeps.
//!
//! ```no_run
//! # use ferry_toolkit::{Envelope, Message, sql::{Database, outbox}};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct OrderPlaced { id: String }
//! # impl Message for OrderPlaced { const TYPE: &'static str = "order-placed"; fn key(&self) -> String { self.id.clone() } }
//! # async fn command(db: &Database, relay: &outbox::RelayHandle) -> ferry_toolkit::Result<()> {
//! let mut tx = db.begin().await?;
//! sqlx::query("INSERT INTO orders (id) VALUES ($1)").bind("o-1").execute(&mut *tx).await?;
//! let event = OrderPlaced { id: "o-1".into() };
//! outbox::enqueue(&mut tx, "orders", &event, &Envelope::new::<OrderPlaced>()).await?;
//! tx.commit().await?;
//! relay.notify(); // publish now rather than at the next poll
//! # Ok(()) }
//! ```
//!
//! Rows live in `ferry_outbox` (created by [`crate::sql::Database::migrate`]): the destination
//! topic and key, the headers as a JSON array of `[name, value]` pairs (the envelope, so the
//! message id chosen at staging is the one consumers see), the payload, when it was staged,
//! when it was sent, and the failed attempts with the last error.

mod lease;
mod listen;
mod relay;

use crate::sql::ExecuteWrite;
use sqlx::AnyConnection;

pub use relay::{Relay, RelayConfig, RelayHandle, RelayWaker};

use super::now_millis;
use crate::envelope::{self, Envelope, Headers, Message, header};
use crate::error::{Error, Result};
use crate::transport::OutgoingMessage;

/// The channel a PostgreSQL transaction notifies when it stages a row; relays listen on it.
pub(crate) const CHANNEL: &str = "ferry_outbox";

/// Stages `message` for `topic` in the caller's transaction, keyed by [`Message::key`]. The
/// envelope's type name and version are set from `M`; everything else (message id,
/// correlation, causation, trace) is taken as given. The relay publishes it after commit.
pub async fn enqueue<M: Message>(
    tx: &mut AnyConnection,
    topic: &str,
    message: &M,
    envelope: &Envelope,
) -> Result<()> {
    let payload = envelope::encode(message)?;
    let mut envelope = envelope.clone();
    envelope.type_name = M::TYPE.to_owned();
    envelope.version = M::VERSION;
    let mut headers = Headers::new();
    envelope.write_to(&mut headers);
    let outgoing = OutgoingMessage {
        topic: topic.to_owned(),
        key: Some(message.key().into_bytes()),
        headers,
        payload,
    };
    enqueue_raw(tx, &outgoing).await
}

/// Stages an already encoded message (one whose headers carry an envelope, such as an event
/// an event store serialized). Header values must be UTF-8 text, as envelope headers are; a
/// message without a key shares the empty key, and so one order, with every other one.
pub async fn enqueue_raw(tx: &mut AnyConnection, message: &OutgoingMessage) -> Result<()> {
    let mut pairs = Vec::with_capacity(message.headers.len());
    for (name, value) in message.headers.iter() {
        let value = std::str::from_utf8(value).map_err(|_| Error::BadHeader {
            name: "outbox header",
            value: format!("{name}: not UTF-8"),
        })?;
        pairs.push((name, value));
    }
    let headers = serde_json::to_string(&pairs).map_err(|source| Error::Encode {
        type_name: "outbox headers",
        source,
    })?;
    let key = match &message.key {
        Some(key) => String::from_utf8(key.clone()).map_err(|_| Error::BadHeader {
            name: "outbox key",
            value: String::from_utf8_lossy(key).into_owned(),
        })?,
        None => String::new(),
    };
    let message_id = message
        .headers
        .get_str(header::MESSAGE_ID)
        .unwrap_or_default();
    let type_name = message.headers.get_str(header::TYPE).unwrap_or_default();
    sqlx::query(
        "INSERT INTO ferry_outbox (topic, msg_key, message_id, type_name, headers, payload, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&message.topic)
    .bind(key)
    .bind(message_id)
    .bind(type_name)
    .bind(headers)
    .bind(message.payload.as_slice())
    .bind(now_millis())
    .execute(&mut *tx)
    .await?;
    if tx.backend_name() == "PostgreSQL" {
        // Delivered at commit (and only then), once per transaction however many rows it
        // staged: wakes relays in other processes, which the in-process notify cannot reach.
        sqlx::query(&format!("NOTIFY {CHANNEL}"))
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// One staged row, as the relay reads it.
#[derive(Clone)]
pub(crate) struct Row {
    pub(crate) id: i64,
    pub(crate) key: String,
    pub(crate) created_at: i64,
    pub(crate) message: OutgoingMessage,
}

impl Row {
    pub(crate) fn decode(row: &sqlx::any::AnyRow) -> Result<Row> {
        use sqlx::Row as _;
        let headers: String = row.try_get("headers")?;
        let pairs: Vec<(String, String)> =
            serde_json::from_str(&headers).map_err(|source| Error::Decode {
                type_name: "outbox headers".into(),
                source,
            })?;
        let key: String = row.try_get("msg_key")?;
        Ok(Row {
            id: row.try_get("id")?,
            created_at: row.try_get("created_at")?,
            message: OutgoingMessage {
                topic: row.try_get("topic")?,
                key: Some(key.clone().into_bytes()),
                headers: pairs.into_iter().collect(),
                payload: row.try_get("payload")?,
            },
            key,
        })
    }
}

/// Rows staged and not yet sent (parked rows are not pending: they are never sent).
pub async fn pending(db: &super::Database) -> Result<i64> {
    use sqlx::Row as _;
    let row = sqlx::query(
        "SELECT COUNT(*) FROM ferry_outbox WHERE sent_at IS NULL AND parked_at IS NULL",
    )
    .fetch_one(db.pool())
    .await?;
    Ok(row.try_get(0)?)
}

/// A row the relay parked because the broker refused it for good. Its payload is left out on
/// purpose: this is shown on dashboards, and a payload may hold what must not leave the service.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedRow {
    /// The row's id in `ferry_outbox`.
    pub id: i64,
    /// The topic it was for.
    pub topic: String,
    /// Its key.
    pub key: String,
    /// The message id consumers would have seen.
    pub message_id: String,
    /// The message type.
    pub type_name: String,
    /// The payload's size in bytes.
    pub payload_bytes: i64,
    /// When it was staged (ms since the epoch).
    pub created_at: i64,
    /// When it was parked (ms since the epoch).
    pub parked_at: i64,
    /// Why the broker refused it.
    pub reason: String,
}

/// Parked rows, newest first, at most `limit`.
pub async fn parked(db: &super::Database, limit: u32) -> Result<Vec<ParkedRow>> {
    use sqlx::Row as _;
    let rows = sqlx::query(
        "SELECT id, topic, msg_key, message_id, type_name, LENGTH(payload) AS payload_bytes,
                created_at, parked_at, last_error
         FROM ferry_outbox WHERE parked_at IS NOT NULL ORDER BY id DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ParkedRow {
                id: row.try_get("id")?,
                topic: row.try_get("topic")?,
                key: row.try_get("msg_key")?,
                message_id: row.try_get("message_id")?,
                type_name: row.try_get("type_name")?,
                payload_bytes: row.try_get::<Option<i64>, _>("payload_bytes")?.unwrap_or(0),
                created_at: row.try_get("created_at")?,
                parked_at: row.try_get("parked_at")?,
                reason: row
                    .try_get::<Option<String>, _>("last_error")?
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Deletes rows sent before `older_than` ago, a bounded batch per statement so writers are never
/// held up for long. Returns how many were deleted. The relay calls it periodically.
pub async fn prune_sent(db: &super::Database, older_than: std::time::Duration) -> Result<u64> {
    let horizon = now_millis() - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
    let mut deleted = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM ferry_outbox WHERE id IN
                (SELECT id FROM ferry_outbox WHERE sent_at IS NOT NULL AND sent_at < $1 LIMIT 1000)",
        )
        .bind(horizon)
        .execute_write(db)
        .await?
        .rows_affected();
        deleted += n;
        if n < 1000 {
            return Ok(deleted);
        }
    }
}
