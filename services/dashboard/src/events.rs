//! The live event view and the trace store.
//!
//! A tap reads every topic (internal `__` topics aside) as consumer group [`TAP_GROUP`]. Each
//! batch is stored (one row per message: where it is, its envelope, a preview of its payload)
//! and then broadcast to every open event stream. The stream is a server-sent-events response
//! carrying one JSON array per batch, so the page keeps up with thousands of events a second;
//! a page that falls behind the broadcast buffer is told how many events it missed (they are
//! still in the event list and the traces).
//!
//! Secrets never reach the page or the store: each payload is redacted before it is stored or
//! broadcast (the fields its contract declares sensitive, found by type name in
//! `ferry_contracts`, any field named like a password, secret or token, and anything that looks
//! like a password hash), and again when read back, for rows stored before redaction existed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use ferry_service::{ApiError, ApiJson, ApiQuery};
use ferry_toolkit::IncomingMessage;
use ferry_toolkit::Summary;
use ferry_toolkit::kafka::{KafkaConfig, TapHandle, start_tap};
use ferry_toolkit::redact;
use ferry_toolkit::sql::Database;
use futures::Stream;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::AppState;

/// The tap's consumer group.
pub const TAP_GROUP: &str = "ferry-dashboard";
/// How long stored events are kept for the event list and traces.
pub const KEEP: Duration = Duration::from_secs(24 * 3600);
/// The largest payload preview stored and sent, in bytes.
const PREVIEW: usize = 4096;
/// Tries at storing a batch before it is shown without being stored.
const STORE_ATTEMPTS: u32 = 5;
/// Batches buffered per open stream before a slow page starts missing some.
const STREAM_BUFFER: usize = 1024;

pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "events",
    "CREATE TABLE events (
        topic TEXT NOT NULL,
        part INTEGER NOT NULL,
        offs BIGINT NOT NULL,
        msg_key TEXT,
        type_name TEXT,
        message_id TEXT,
        correlation_id TEXT,
        causation_id TEXT,
        produced_at BIGINT NOT NULL,
        payload TEXT NOT NULL,
        dlq_error TEXT,
        PRIMARY KEY (topic, part, offs)
    );
    CREATE INDEX events_correlation ON events (correlation_id, produced_at);
    CREATE INDEX events_time ON events (produced_at)",
)];

/// One message as the page shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveEvent {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset in the partition.
    pub offset: i64,
    /// The key, as text.
    pub key: Option<String>,
    /// The envelope's type name (none for a message without an envelope).
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    /// The envelope's message id.
    pub message_id: Option<String>,
    /// The flow's correlation id.
    pub correlation_id: Option<String>,
    /// The message that caused this one.
    pub causation_id: Option<String>,
    /// When it was produced, Unix epoch milliseconds.
    pub produced_at: i64,
    /// The payload: JSON as JSON, anything else as (lossy) text; cut at 4 KiB.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// For a dead letter, why it was dead-lettered.
    pub dlq_error: Option<String>,
}

impl LiveEvent {
    fn from_message(m: &IncomingMessage) -> LiveEvent {
        let text = |name: &str| m.headers.get_str(name).map(str::to_owned);
        let summary = Summary::of(&m.headers);
        let produced_at = summary
            .produced_at_millis
            .and_then(|t| i64::try_from(t).ok())
            .unwrap_or_else(ferry_toolkit::now_millis);
        LiveEvent {
            topic: m.topic.clone(),
            partition: m.partition,
            offset: m.offset,
            key: m
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: preview(&m.payload, summary.type_name.as_deref()),
            type_name: summary.type_name,
            message_id: summary.message_id,
            correlation_id: summary.correlation_id,
            causation_id: summary.causation_id,
            produced_at,
            dlq_error: text(ferry_toolkit::dlq::header::ERROR)
                .map(|e| redact::text(&e).into_owned()),
        }
    }

    fn from_row(row: &sqlx::any::AnyRow) -> Result<LiveEvent, sqlx::Error> {
        let payload: String = row.try_get("payload")?;
        let type_name: Option<String> = row.try_get("type_name")?;
        // Redacted again on the way out: rows stored before redaction existed must not show
        // what they hold either.
        // (A text preview is stored as a JSON string, which `redact::json` scans as text.)
        let mut payload =
            serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
        redact::json(&mut payload, sensitive_fields(type_name.as_deref()));
        let dlq_error: Option<String> = row.try_get("dlq_error")?;
        Ok(LiveEvent {
            topic: row.try_get("topic")?,
            partition: i32::try_from(row.try_get::<i64, _>("part")?).unwrap_or_default(),
            offset: row.try_get("offs")?,
            key: row.try_get("msg_key")?,
            type_name,
            message_id: row.try_get("message_id")?,
            correlation_id: row.try_get("correlation_id")?,
            causation_id: row.try_get("causation_id")?,
            produced_at: row.try_get("produced_at")?,
            payload,
            dlq_error: dlq_error.map(|e| redact::text(&e).into_owned()),
        })
    }
}

/// The fields of `type_name`'s contract that hold secrets.
fn sensitive_fields(type_name: Option<&str>) -> &'static [&'static str] {
    type_name.map_or(&[], ferry_contracts::sensitive_fields)
}

/// The payload as the page may see it: secrets redacted ([`redact`]: the contract's sensitive
/// fields, fields named like passwords, secrets or tokens, password hashes), then JSON as JSON
/// when it fits the preview, anything else as text cut at [`PREVIEW`] bytes.
///
/// JSON is parsed whole, however long, so that a secret past the cut is found too.
fn preview(payload: &[u8], type_name: Option<&str>) -> serde_json::Value {
    let (text, cut) = match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(mut json) => {
            redact::json(&mut json, sensitive_fields(type_name));
            let text = json.to_string();
            if text.len() <= PREVIEW {
                return json;
            }
            (text, true)
        }
        Err(_) => {
            let head = &payload[..payload.len().min(PREVIEW)];
            (
                String::from_utf8_lossy(head).into_owned(),
                payload.len() > PREVIEW,
            )
        }
    };
    let mut end = text.len().min(PREVIEW);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut shown = redact::text(&text[..end]).into_owned();
    if cut || end < text.len() {
        shown.push('…');
    }
    serde_json::Value::String(shown)
}

/// The event store and the broadcast to open streams.
#[derive(Clone)]
pub(crate) struct Events {
    db: Database,
    live: broadcast::Sender<Arc<Vec<LiveEvent>>>,
}

impl Events {
    pub(crate) fn new(db: Database) -> Events {
        Events {
            db,
            live: broadcast::channel(STREAM_BUFFER).0,
        }
    }

    /// Starts the tap that feeds the store and the streams.
    pub(crate) fn start_tap(&self, kafka: &KafkaConfig) -> ferry_toolkit::Result<TapHandle> {
        let events = self.clone();
        start_tap(kafka, TAP_GROUP, "^[^_].*", move |batch| {
            let events = events.clone();
            async move { events.record(&batch).await }
        })
    }

    /// Stores a batch (a message seen twice after a restart is stored once) and broadcasts it.
    async fn record(&self, batch: &[IncomingMessage]) {
        let batch: Vec<LiveEvent> = batch.iter().map(LiveEvent::from_message).collect();
        // A busy or briefly failing database is retried; the batch's offsets are committed
        // only after this returns, so the page and the store see it after a restart either way.
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=STORE_ATTEMPTS {
            match self.store(&batch).await {
                Ok(()) => break,
                Err(e) if attempt < STORE_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "cannot store events yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                // The page still sees them; only the event list and the traces miss them.
                Err(e) => tracing::warn!(error = %e, events = batch.len(), "cannot store events"),
            }
        }
        let _ = self.live.send(Arc::new(batch));
    }

    async fn store(&self, batch: &[LiveEvent]) -> ferry_toolkit::Result<()> {
        let mut tx = self.db.begin().await?;
        for e in batch {
            sqlx::query(
                "INSERT INTO events (topic, part, offs, msg_key, type_name, message_id,
                    correlation_id, causation_id, produced_at, payload, dlq_error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (topic, part, offs) DO NOTHING",
            )
            .bind(&e.topic)
            .bind(i64::from(e.partition))
            .bind(e.offset)
            .bind(e.key.as_deref())
            .bind(e.type_name.as_deref())
            .bind(e.message_id.as_deref())
            .bind(e.correlation_id.as_deref())
            .bind(e.causation_id.as_deref())
            .bind(e.produced_at)
            .bind(e.payload.to_string())
            .bind(e.dlq_error.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes events older than [`KEEP`] once a minute until `stop`.
    pub(crate) fn start_pruning(
        &self,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let db = self.db.clone();
        let task = tokio::spawn(async move {
            loop {
                let cutoff = ferry_toolkit::now_millis()
                    - i64::try_from(KEEP.as_millis()).unwrap_or(i64::MAX);
                if let Err(e) = sqlx::query("DELETE FROM events WHERE produced_at < $1")
                    .bind(cutoff)
                    .execute(db.pool())
                    .await
                {
                    tracing::warn!(error = %e, "cannot prune old events");
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(60)) => {}
                    () = stop.cancelled() => return,
                }
            }
        });
        async move {
            let _ = task.await;
        }
    }

    async fn query(
        &self,
        sql: &str,
        binds: &[&str],
        limit: i64,
    ) -> Result<Vec<LiveEvent>, ApiError> {
        let mut query = sqlx::query(sql);
        for b in binds {
            query = query.bind(*b);
        }
        let rows = query
            .bind(limit)
            .fetch_all(self.db.pool())
            .await
            .map_err(ApiError::internal)?;
        rows.iter()
            .map(LiveEvent::from_row)
            .collect::<Result<_, _>>()
            .map_err(ApiError::internal)
    }
}

/// Filters of the event list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct ListQuery {
    /// Only this topic.
    topic: Option<String>,
    /// Only this type.
    #[serde(rename = "type")]
    type_name: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<u32>,
}

/// The most recent events, newest first.
#[utoipa::path(get, path = "/api/ferry/events", params(ListQuery),
    responses((status = 200, body = [LiveEvent])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<ApiJson<Vec<LiveEvent>>, ApiError> {
    let limit = i64::from(ferry_service::limit(q.limit)?);
    let sql = "SELECT * FROM events
               WHERE ($1 = '' OR topic = $1) AND ($2 = '' OR type_name = $2)
               ORDER BY produced_at DESC, topic, part, offs DESC LIMIT $3";
    let topic = q.topic.unwrap_or_default();
    let type_name = q.type_name.unwrap_or_default();
    Ok(ApiJson(
        state
            .events
            .query(sql, &[&topic, &type_name], limit)
            .await?,
    ))
}

/// Every event of one flow, in the order it was produced, across services.
#[utoipa::path(get, path = "/api/ferry/traces/{correlation_id}",
    params(("correlation_id" = String, Path, description = "the flow's correlation id")),
    responses((status = 200, body = [LiveEvent]), (status = 404, description = "no such flow")))]
pub(crate) async fn trace(
    State(state): State<AppState>,
    Path(correlation_id): Path<String>,
) -> Result<ApiJson<Vec<LiveEvent>>, ApiError> {
    let sql = "SELECT * FROM events WHERE correlation_id = $1
               ORDER BY produced_at, topic, part, offs LIMIT $2";
    let events = state.events.query(sql, &[&correlation_id], 1000).await?;
    if events.is_empty() {
        return Err(ApiError::not_found(format!("flow {correlation_id}")));
    }
    Ok(ApiJson(events))
}

/// The live stream: server-sent events named `events`, each a JSON array of [`LiveEvent`];
/// `missed` (a number) when this page fell behind and skipped some.
#[utoipa::path(get, path = "/api/ferry/events/stream",
    responses((status = 200, content_type = "text/event-stream", description = "live events")))]
pub(crate) async fn stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.events.live.subscribe();
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(batch) => Event::default()
                .event("events")
                .json_data(&*batch)
                .unwrap_or_default(),
            Err(broadcast::error::RecvError::Lagged(batches)) => {
                Event::default().event("missed").data(batches.to_string())
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                        Jz0vD0ZRkMgQ2HSuHLNNw4PqYrdZ7M3kI9zk0KJWYbM";

    #[test]
    fn a_sign_up_is_previewed_without_its_hash() {
        let payload = json!({"taskId": "t1", "name": "Ada", "email": "ada@example.com",
            "passwordHash": HASH});
        assert_eq!(
            preview(payload.to_string().as_bytes(), Some("UserRequested")),
            json!({"taskId": "t1", "name": "Ada", "email": "ada@example.com",
                "passwordHash": "[redacted]"})
        );
    }

    #[test]
    fn a_long_payload_is_redacted_before_it_is_cut() {
        // Keys in alphabetical order, so the secret is inside the preview whether or not
        // serde_json keeps insertion order.
        let payload = json!({"a": "x".repeat(PREVIEW / 2), "password": "hunter2",
            "z": ["y".repeat(PREVIEW), HASH.to_owned()]});
        let shown = preview(payload.to_string().as_bytes(), None);
        let shown = shown.as_str().unwrap();
        assert!(shown.contains(r#""password":"[redacted]""#), "{shown}");
        assert!(shown.ends_with('…'), "{shown}");
        assert!(shown.len() <= PREVIEW + '…'.len_utf8());
        for secret in ["hunter2", "argon2"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn text_payloads_lose_their_hashes() {
        let payload = format!("not json; passwordHash={HASH}; the end");
        assert_eq!(
            preview(payload.as_bytes(), Some("UserRequested")),
            json!("not json; passwordHash=[redacted]; the end")
        );
        // Cut in the middle of a hash: what is left of it goes too.
        let payload = format!("{}{HASH}", "z".repeat(PREVIEW - 20));
        let shown = preview(payload.as_bytes(), None);
        assert_eq!(
            shown,
            json!(format!("{}[redacted]…", "z".repeat(PREVIEW - 20)))
        );
    }
}
