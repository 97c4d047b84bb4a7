//! The event store's tables, as migrations for `ferry_toolkit::sql::Database::migrate`, and
//! the SQL that reads and writes them. One text serves SQLite and PostgreSQL: `BIGINT`, `TEXT`,
//! `$n` placeholders, `ON CONFLICT`, `RETURNING`.
//!
//! `es_events` holds every event once:
//! - `(stream_id, version)` is the primary key. Versions start at 1 and have no gaps. Two
//!   writers that read the same version both insert `version + 1`; the key lets exactly one
//!   commit, and the other gets a unique violation, reported as a typed conflict. That is the
//!   atomic optimistic concurrency check (a read-then-insert check, as in the original service,
//!   lets both through).
//! - `global_position` orders all events of the store, across streams. It comes from the one
//!   row of `es_global_position`, incremented inside the appending transaction. That row's lock
//!   is held until commit, so positions are handed out in commit order: a projection that has
//!   read up to position p can never later see a smaller position commit. (A sequence or an
//!   autoincrement column would let a slow transaction commit a smaller position after a larger
//!   one was read, and a projection would skip it for ever.) The cost is that appends
//!   serialize on that row; SQLite serializes writers anyway.
//!
//! `es_snapshots` holds at most one snapshot per stream (the latest). `es_checkpoints` holds
//! each projection's position and lives in the database of the projection's read model, so it
//! commits together with the read-model writes.

/// The event store's migrations: `es_events`, `es_global_position`, `es_snapshots`.
/// [`crate::migrate`] applies them; a service may instead append them to its own list for
/// `Database::migrate` (versions 1000 and up are reserved for this crate, and the list must be
/// ascending, so the service's own come first):
///
/// ```ignore
/// let migrations = [MY_MIGRATIONS, ferry_es::MIGRATIONS, ferry_es::PROJECTION_MIGRATIONS].concat();
/// db.migrate("posts", &migrations).await?;
/// ```
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1001,
        "es_events",
        "CREATE TABLE es_events (
            global_position BIGINT NOT NULL,
            stream_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            aggregate_type TEXT NOT NULL,
            event_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            schema_version BIGINT NOT NULL,
            payload TEXT NOT NULL,
            metadata TEXT NOT NULL,
            recorded_at BIGINT NOT NULL,
            PRIMARY KEY (stream_id, version)
        )",
    ),
    (
        1002,
        "es_events_global_position",
        "CREATE UNIQUE INDEX es_events_global_position ON es_events (global_position)",
    ),
    (
        1003,
        "es_events_aggregate_type",
        "CREATE INDEX es_events_aggregate_type ON es_events (aggregate_type, global_position)",
    ),
    (
        1004,
        "es_global_position",
        "CREATE TABLE es_global_position (id BIGINT PRIMARY KEY, position BIGINT NOT NULL)",
    ),
    (
        1005,
        "es_global_position_row",
        "INSERT INTO es_global_position (id, position) VALUES (1, 0)",
    ),
    (
        1006,
        "es_snapshots",
        "CREATE TABLE es_snapshots (
            stream_id TEXT PRIMARY KEY,
            aggregate_type TEXT NOT NULL,
            version BIGINT NOT NULL,
            snapshot_version BIGINT NOT NULL,
            state TEXT NOT NULL,
            taken_at BIGINT NOT NULL
        )",
    ),
];

/// The projection checkpoint table, `es_checkpoints`. Apply it to the database that holds the
/// read model (which may be the event store's).
pub const PROJECTION_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1101,
    "es_checkpoints",
    "CREATE TABLE es_checkpoints (
        projection TEXT PRIMARY KEY,
        position BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    )",
)];

/// The columns every event read selects, in the order `decode_row` reads them.
pub(crate) const EVENT_COLUMNS: &str = "global_position, stream_id, version, aggregate_type, \
     event_id, event_type, schema_version, payload, metadata, recorded_at";

/// Reserves `$1` positions; returns the last one.
pub(crate) const RESERVE_POSITIONS: &str =
    "UPDATE es_global_position SET position = position + $1 WHERE id = 1 RETURNING position";

pub(crate) const STREAM_VERSION: &str =
    "SELECT COALESCE(MAX(version), 0) FROM es_events WHERE stream_id = $1";

pub(crate) const SNAPSHOT: &str =
    "SELECT version, snapshot_version, state FROM es_snapshots WHERE stream_id = $1";

pub(crate) const SAVE_SNAPSHOT: &str = "INSERT INTO es_snapshots \
     (stream_id, aggregate_type, version, snapshot_version, state, taken_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (stream_id) DO UPDATE SET aggregate_type = excluded.aggregate_type, \
     version = excluded.version, snapshot_version = excluded.snapshot_version, \
     state = excluded.state, taken_at = excluded.taken_at";

/// Per-append parameters shared by every row: stream, aggregate type, metadata, time.
const SHARED_PARAMS: usize = 4;
/// Per-row parameters: position, version, event id, type, schema version, payload.
pub(crate) const ROW_PARAMS: usize = 6;

/// The insert of `rows` events of one stream. With `guard`, parameter `$5` is the expected
/// version and the rows are inserted only if the stream has an event at that version, so an
/// append based on a version the stream never reached (a caller bug) inserts nothing instead
/// of leaving a gap.
pub(crate) fn insert_events(rows: usize, guard: bool) -> String {
    let first = SHARED_PARAMS + 1 + usize::from(guard);
    let values = (0..rows)
        .map(|i| {
            let b = first + i * ROW_PARAMS;
            format!(
                "(${b}, $1, ${}, $2, ${}, ${}, ${}, ${}, $3, $4)",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let head = format!("INSERT INTO es_events ({EVENT_COLUMNS})");
    if guard {
        format!(
            "{head} SELECT * FROM (VALUES {values}) AS v WHERE EXISTS \
             (SELECT 1 FROM es_events WHERE stream_id = $1 AND version = $5)"
        )
    } else {
        format!("{head} VALUES {values}")
    }
}

pub(crate) fn read_stream() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM es_events WHERE stream_id = $1 AND version > $2 \
         ORDER BY version"
    )
}

pub(crate) fn read_stream_page() -> String {
    format!("{} LIMIT $3", read_stream())
}

pub(crate) fn read_all() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM es_events WHERE aggregate_type = $1 \
         AND global_position > $2 ORDER BY global_position LIMIT $3"
    )
}

pub(crate) const COUNT_AFTER: &str =
    "SELECT COUNT(*) FROM es_events WHERE aggregate_type = $1 AND global_position > $2";

pub(crate) const CHECKPOINT: &str = "SELECT position FROM es_checkpoints WHERE projection = $1";

pub(crate) const CREATE_CHECKPOINT: &str = "INSERT INTO es_checkpoints (projection, position, updated_at) \
     VALUES ($1, 0, $2) ON CONFLICT (projection) DO NOTHING";

/// Moves a checkpoint from `$3` to `$2`; touches no row if someone else moved it first.
pub(crate) const ADVANCE_CHECKPOINT: &str = "UPDATE es_checkpoints SET position = $2, updated_at = $4 \
     WHERE projection = $1 AND position = $3";

pub(crate) const RESET_CHECKPOINT: &str =
    "UPDATE es_checkpoints SET position = 0, updated_at = $2 WHERE projection = $1";
