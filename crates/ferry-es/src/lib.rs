//! Event sourcing for Ferry services: aggregates whose state is the fold of their events, an
//! SQL event store (SQLite or PostgreSQL, through `ferry_toolkit::sql::Database`), and read
//! models projected from it.
//!
//! The model:
//! - An [`Aggregate`] *decides* events from a command and its state (a pure function) and
//!   *evolves* its state from events. [`testing`] has given/when/then helpers for its rules.
//! - The [`EventStore`] keeps events in `es_events` under a unique `(stream_id, version)` key.
//!   Two writers that read the same version race on that key: one commits, the other gets a
//!   typed [`Error::Conflict`] `{ expected, actual }`. Every event also gets a global position,
//!   handed out in commit order, which projections follow.
//! - The [`CommandHandler`] loads an aggregate (latest snapshot plus the events after it,
//!   upcast to the current schema), decides, and in **one** transaction appends the events,
//!   writes each to the toolkit's outbox (via [`Event::publish`]) and, every N events, a
//!   snapshot. On a conflict it reloads and decides again, a bounded number of times.
//!   So a 2xx after a command means the events are stored *and* will be published, and a
//!   crash at any point loses neither (the complaints against cqrs-es in its issues #26, #172
//!   and #160 do not apply).
//! - [`Upcaster`]s turn stored payloads of an old schema version into the current one at read
//!   time.
//! - A [`Projector`] applies a [`Projection`] from the global log in batches, moving its
//!   checkpoint in the same read-model transaction, so no event is applied twice or skipped;
//!   [`Projector::replay`] rebuilds a read model from position 0 and reports [`Progress`]
//!   (the binaries draw the bar).
//!
//! Threads: none of its own. Everything is `async` on the caller's tokio runtime; the
//! database pool is the toolkit's.
//!
//! Tables: [`migrate`] creates the event store's, [`migrate_projections`] the checkpoints' (in
//! the read model's database). The same lists are public as [`MIGRATIONS`] and
//! [`PROJECTION_MIGRATIONS`] (versions 1000 and up) for a service that prefers to append them
//! to its own.

mod aggregate;
mod command;
mod error;
mod outbox;
mod projection;
mod store;
pub mod testing;
mod upcast;

pub use aggregate::{Aggregate, Event};
pub use command::{CommandError, CommandHandler, Committed};
pub use error::{Error, Result};
pub use outbox::Outbox;
pub use projection::{Progress, Projection, Projector};
pub use store::schema::{MIGRATIONS, PROJECTION_MIGRATIONS};
pub use store::{EventStore, Loaded, Metadata, Recorded};
pub use upcast::{Upcaster, Upcasters};

use ferry_toolkit::sql::Database;

/// Creates the event store's tables in `db` (once; recorded as migrations of `ferry-es`, so
/// they never clash with the service's own migration versions).
pub async fn migrate(db: &Database) -> Result<()> {
    db.migrate("ferry-es", MIGRATIONS).await?;
    Ok(())
}

/// Creates the projection checkpoint table in `db`, the read model's database (once; recorded
/// as migrations of `ferry-es-projections`).
pub async fn migrate_projections(db: &Database) -> Result<()> {
    db.migrate("ferry-es-projections", PROJECTION_MIGRATIONS)
        .await?;
    Ok(())
}
