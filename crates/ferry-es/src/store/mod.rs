//! The SQL event store: streams of events with atomic optimistic concurrency, snapshots, and
//! the global log that projections read. See [`schema`] for the tables and why they look the
//! way they do.

pub(crate) mod schema;

use std::sync::Arc;

use ferry_toolkit::Envelope;
use ferry_toolkit::sql::Database;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::aggregate::{Aggregate, Event};
use crate::error::{Error, Result};
use crate::upcast::{Upcaster, Upcasters};

/// Who and what caused a command's events: stored with each event and copied into the
/// envelope of its outbox message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The flow the command belongs to. The command handler fills it with a fresh id when
    /// absent, so all events of one command share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The message whose handling issued the command, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// W3C Trace Context of the span that issued the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Metadata {
    /// Metadata for a command issued while handling the message with `envelope`: same flow,
    /// caused by that message, traced as a child of its span.
    pub fn caused_by(envelope: &Envelope) -> Metadata {
        Metadata {
            correlation_id: Some(envelope.correlation_id),
            causation_id: Some(envelope.message_id),
            traceparent: Some(envelope.traceparent.child().to_string()),
        }
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded<E> {
    /// The event's id (UUID v7); its outbox message has the same id, so consumers can
    /// de-duplicate on it.
    pub event_id: Uuid,
    /// The stream (aggregate instance) it belongs to.
    pub stream_id: String,
    /// The aggregate type that wrote it.
    pub aggregate_type: String,
    /// Its version in the stream: 1 for the first event, no gaps.
    pub version: i64,
    /// Its position in the whole store: increasing in commit order, no gaps.
    pub position: i64,
    /// When it was stored, milliseconds since the Unix epoch.
    pub recorded_at: i64,
    /// Who and what caused it.
    pub metadata: Metadata,
    /// The event itself, upcast to the current schema.
    pub event: E,
}

/// An aggregate's state as loaded from the store.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// The state: the fold of all events (from the snapshot, if one was used).
    pub state: A,
    /// The stream's version: its number of events, 0 for a stream with none.
    pub version: i64,
    /// The version of the snapshot loading started from, if one was used.
    pub snapshot: Option<i64>,
}

/// The event store over one [`Database`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventStore {
    db: Database,
    upcasters: Arc<Upcasters>,
}

/// Why an append inside a transaction failed; a conflict's `actual` version can only be read
/// after the transaction is rolled back (PostgreSQL refuses every statement in a transaction
/// that hit an error).
pub(crate) enum AppendError {
    Conflict,
    Other(Error),
}

impl<E: Into<Error>> From<E> for AppendError {
    fn from(e: E) -> AppendError {
        AppendError::Other(e.into())
    }
}

impl EventStore {
    /// A store over `db`, whose migrations must include [`crate::MIGRATIONS`].
    pub fn new(db: Database) -> EventStore {
        EventStore {
            db,
            upcasters: Arc::new(Upcasters::new()),
        }
    }

    /// Adds an upcaster applied to every event read from now on.
    pub fn with_upcaster(mut self, upcaster: Upcaster) -> EventStore {
        Arc::make_mut(&mut self.upcasters).add(upcaster);
        self
    }

    /// The database the store lives in.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The stream's version: its number of events, 0 if it has none.
    pub async fn stream_version(&self, stream_id: &str) -> Result<i64> {
        let version: i64 = sqlx::query_scalar(schema::STREAM_VERSION)
            .bind(stream_id)
            .fetch_one(self.db.pool())
            .await?;
        Ok(version)
    }

    /// The stream's events with a version above `after_version`, in order.
    pub async fn read_stream<E: Event>(
        &self,
        stream_id: &str,
        after_version: i64,
    ) -> Result<Vec<Recorded<E>>> {
        let rows = sqlx::query(&schema::read_stream())
            .bind(stream_id)
            .bind(after_version)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|row| self.decode_row(row)).collect()
    }

    /// Up to `limit` of the stream's events with a version above `after_version`, in order: a
    /// page of [`Self::read_stream`], for serving a long stream in pieces.
    pub async fn read_stream_page<E: Event>(
        &self,
        stream_id: &str,
        after_version: i64,
        limit: usize,
    ) -> Result<Vec<Recorded<E>>> {
        let rows = sqlx::query(&schema::read_stream_page())
            .bind(stream_id)
            .bind(after_version)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|row| self.decode_row(row)).collect()
    }

    /// Up to `limit` events of `aggregate_type` with a global position above `after`, in
    /// position order: the feed of projections.
    pub async fn read_all<E: Event>(
        &self,
        aggregate_type: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Recorded<E>>> {
        let rows = sqlx::query(&schema::read_all())
            .bind(aggregate_type)
            .bind(after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|row| self.decode_row(row)).collect()
    }

    /// How many events of `aggregate_type` have a global position above `after`.
    pub async fn count_after(&self, aggregate_type: &str, after: i64) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(schema::COUNT_AFTER)
            .bind(aggregate_type)
            .bind(after)
            .fetch_one(self.db.pool())
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Loads an aggregate: its latest snapshot (if any and of the current
    /// [`Aggregate::SNAPSHOT_VERSION`]), then the events after it.
    pub async fn load<A: Aggregate>(&self, stream_id: &str) -> Result<Loaded<A>> {
        let snapshot = self.load_snapshot::<A>(stream_id).await?;
        let (mut state, from) = match snapshot {
            Some((version, state)) => (state, version),
            None => (A::default(), 0),
        };
        // No transaction: events are immutable and a snapshot is consistent with its version,
        // so events committed between the two reads are simply picked up too.
        let events = self.read_stream::<A::Event>(stream_id, from).await?;
        let version = events.last().map_or(from, |e| e.version);
        for recorded in &events {
            state.evolve(&recorded.event);
        }
        Ok(Loaded {
            state,
            version,
            snapshot: (from > 0).then_some(from),
        })
    }

    async fn load_snapshot<A: Aggregate>(&self, stream_id: &str) -> Result<Option<(i64, A)>> {
        let row = sqlx::query(schema::SNAPSHOT)
            .bind(stream_id)
            .fetch_optional(self.db.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let version: i64 = row.try_get(0)?;
        let snapshot_version: i64 = row.try_get(1)?;
        if snapshot_version != i64::from(A::SNAPSHOT_VERSION) {
            return Ok(None);
        }
        let state: String = row.try_get(2)?;
        match serde_json::from_str(&state) {
            Ok(state) => Ok(Some((version, state))),
            Err(e) => {
                // A snapshot is only a cache of the events: rebuild instead of failing.
                tracing::warn!(stream_id, error = %e, "ignoring an undecodable snapshot");
                Ok(None)
            }
        }
    }

    /// Appends `events` to a stream whose version the caller read as `expected`, in one
    /// transaction. If another writer got there first, nothing is written and the result is
    /// [`Error::Conflict`] with the stream's actual version. Most callers want
    /// [`crate::CommandHandler`], which also retries conflicts and writes the outbox.
    pub async fn append<E: Event>(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        expected: i64,
        events: Vec<E>,
        metadata: &Metadata,
    ) -> Result<Vec<Recorded<E>>> {
        let mut tx = self.db.begin().await?;
        match self
            .append_in(
                &mut tx,
                stream_id,
                aggregate_type,
                expected,
                events,
                metadata,
            )
            .await
        {
            Ok(recorded) => {
                tx.commit().await?;
                Ok(recorded)
            }
            Err(e) => {
                let seen = self.conflict_version_in(&mut tx, stream_id, &e).await;
                tx.rollback().await?;
                Err(self.append_error(stream_id, expected, e, seen).await)
            }
        }
    }

    /// On a conflict, the stream's version as the failed append's transaction sees it, read
    /// before that transaction is rolled back. On SQLite the winner may be a command of the
    /// same group commit batch, not committed yet, so only this view has it; on PostgreSQL the
    /// failed statement aborted the transaction, the read fails and `None` says to read the
    /// committed version (where the winner is: PostgreSQL reports a unique violation only
    /// once the other transaction committed).
    pub(crate) async fn conflict_version_in(
        &self,
        conn: &mut AnyConnection,
        stream_id: &str,
        e: &AppendError,
    ) -> Option<i64> {
        if !matches!(e, AppendError::Conflict) || self.db.is_postgres() {
            return None;
        }
        sqlx::query_scalar(schema::STREAM_VERSION)
            .bind(stream_id)
            .fetch_one(&mut *conn)
            .await
            .ok()
    }

    /// Turns an [`AppendError`] into the caller's error, after the transaction was rolled back;
    /// `seen` is the version [`EventStore::conflict_version_in`] read, if any.
    pub(crate) async fn append_error(
        &self,
        stream_id: &str,
        expected: i64,
        e: AppendError,
        seen: Option<i64>,
    ) -> Error {
        if let (AppendError::Conflict, Some(actual)) = (&e, seen) {
            return Error::Conflict {
                stream_id: stream_id.to_owned(),
                expected,
                actual,
            };
        }
        match e {
            AppendError::Conflict => match self.stream_version(stream_id).await {
                Ok(actual) => Error::Conflict {
                    stream_id: stream_id.to_owned(),
                    expected,
                    actual,
                },
                Err(e) => e,
            },
            AppendError::Other(e) => e,
        }
    }

    /// The append, inside the caller's transaction.
    pub(crate) async fn append_in<E: Event>(
        &self,
        conn: &mut AnyConnection,
        stream_id: &str,
        aggregate_type: &str,
        expected: i64,
        events: Vec<E>,
        metadata: &Metadata,
    ) -> Result<Vec<Recorded<E>>, AppendError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let recorded_at = ferry_toolkit::now_millis();
        let metadata_json = serde_json::to_string(metadata).map_err(|source| Error::Encode {
            what: "event metadata".into(),
            source,
        })?;
        let mut rows = Vec::with_capacity(events.len());
        for event in &events {
            let payload = event.to_payload().map_err(|source| Error::Encode {
                what: format!("event {}", event.event_type()),
                source,
            })?;
            rows.push((Uuid::now_v7(), payload.to_string()));
        }
        let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
        // The store-wide append lock (see `schema`), taken before anything else: from here to
        // commit no other append can take positions, so positions follow commit order.
        let last: i64 = sqlx::query_scalar(schema::RESERVE_POSITIONS)
            .bind(count)
            .fetch_one(&mut *conn)
            .await?;
        let first_position = last - count + 1;

        // Chunks keep the number of bind parameters far below every driver's limit.
        const CHUNK: usize = 100;
        for (chunk_index, chunk) in events.chunks(CHUNK).enumerate() {
            let offset = chunk_index * CHUNK;
            let guard = chunk_index == 0 && expected > 0;
            let sql = schema::insert_events(chunk.len(), guard);
            let mut query = sqlx::query(&sql)
                .bind(stream_id)
                .bind(aggregate_type)
                .bind(metadata_json.as_str())
                .bind(recorded_at);
            if guard {
                query = query.bind(expected);
            }
            for (i, event) in chunk.iter().enumerate() {
                let n = i64::try_from(offset + i).unwrap_or(i64::MAX);
                let (event_id, payload) = &rows[offset + i];
                query = query
                    .bind(first_position + n)
                    .bind(expected + 1 + n)
                    .bind(event_id.to_string())
                    .bind(event.event_type())
                    .bind(i64::from(event.schema_version()))
                    .bind(payload.as_str());
            }
            match query.execute(&mut *conn).await {
                Ok(done) if done.rows_affected() == chunk.len() as u64 => {}
                // The guard found no event at `expected`: the stream is behind the caller.
                Ok(_) => return Err(AppendError::Conflict),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    return Err(AppendError::Conflict);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(events
            .into_iter()
            .zip(rows)
            .enumerate()
            .map(|(i, (event, (event_id, _)))| {
                let n = i64::try_from(i).unwrap_or(i64::MAX);
                Recorded {
                    event_id,
                    stream_id: stream_id.to_owned(),
                    aggregate_type: aggregate_type.to_owned(),
                    version: expected + 1 + n,
                    position: first_position + n,
                    recorded_at,
                    metadata: metadata.clone(),
                    event,
                }
            })
            .collect())
    }

    /// Stores `state` as the stream's snapshot at `version`, inside the caller's transaction.
    pub(crate) async fn save_snapshot_in<A: Aggregate>(
        conn: &mut AnyConnection,
        stream_id: &str,
        version: i64,
        state: &A,
    ) -> Result<()> {
        let json = serde_json::to_string(state).map_err(|source| Error::Encode {
            what: format!("snapshot of {}", A::TYPE),
            source,
        })?;
        sqlx::query(schema::SAVE_SNAPSHOT)
            .bind(stream_id)
            .bind(A::TYPE)
            .bind(version)
            .bind(i64::from(A::SNAPSHOT_VERSION))
            .bind(json)
            .bind(ferry_toolkit::now_millis())
            .execute(conn)
            .await?;
        Ok(())
    }

    fn decode_row<E: Event>(&self, row: &AnyRow) -> Result<Recorded<E>> {
        let position: i64 = row.try_get(0)?;
        let stream_id: String = row.try_get(1)?;
        let version: i64 = row.try_get(2)?;
        let aggregate_type: String = row.try_get(3)?;
        let event_id: String = row.try_get(4)?;
        let event_type: String = row.try_get(5)?;
        let stored_version: i64 = row.try_get(6)?;
        let payload: String = row.try_get(7)?;
        let metadata: String = row.try_get(8)?;
        let recorded_at: i64 = row.try_get(9)?;

        let corrupt = |what: &str| Error::Corrupt(format!("{what} of event {stream_id}@{version}"));
        let event_id = Uuid::parse_str(&event_id).map_err(|_| corrupt("event id"))?;
        let metadata = serde_json::from_str(&metadata).map_err(|_| corrupt("metadata"))?;
        let stored_version =
            u32::try_from(stored_version).map_err(|_| corrupt("schema version"))?;
        let payload: serde_json::Value =
            serde_json::from_str(&payload).map_err(|_| corrupt("payload"))?;
        let (payload, schema_version) =
            self.upcasters
                .upcast(&event_type, stored_version, payload)?;
        let event = E::from_payload(&event_type, payload).map_err(|source| Error::Decode {
            stream_id: stream_id.clone(),
            version,
            event_type: event_type.clone(),
            schema_version,
            source,
        })?;
        Ok(Recorded {
            event_id,
            stream_id,
            aggregate_type,
            version,
            position,
            recorded_at,
            metadata,
            event,
        })
    }
}
