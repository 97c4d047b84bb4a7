//! The query side's read model: its tables, and the one way events get into it, used alike by
//! the topic consumer, the gap catch-up and the rebuild.
//!
//! Once and in order, by version. `post_versions` keeps, per post, the stream version of the
//! last event applied to it. An event at version `v` is applied only when the post is at
//! `v - 1`: in one transaction, the post's version row moves first, by compare-and-set
//! (`UPDATE ... WHERE version = v - 1`, or for `v = 1` an insert that does nothing if the row
//! exists), and the read-model change follows. So an event with
//! - `v <= last` is a duplicate (a redelivery, an event a rebuild or a catch-up already
//!   applied) and changes nothing: likes never double;
//! - `v == last + 1` is applied;
//! - `v > last + 1` is a gap (an earlier event of the post is missing here, say the read model
//!   was wiped): it is not applied, and the caller fills the gap from the event store first
//!   ([`sync_post`]), which applies the missing events and this one, in order.
//!
//! Two appliers racing on one post (the consumer and a rebuild, two query replicas, the
//! service and `ferry replay posts`) cannot both apply an event: on PostgreSQL the second waits
//! on the version row and then finds it moved (no row updated: a duplicate); on SQLite write
//! transactions run one at a time. The version row outlives its post (`PostRemoved` deletes
//! the post and its comments, not the row), so a redelivered `PostCreated` cannot bring a
//! deleted post back.

use ferry_toolkit::sql::Database;
use posts_domain::PostEvent;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::Error;
use crate::source::EventSource;

/// The query service's name: its database (SQLite file or PostgreSQL schema) and migrations.
pub const SERVICE: &str = "posts-query";

/// Events of one post read per round trip while catching it up.
const SYNC_PAGE: usize = 1000;

// Booleans are INTEGER 0/1: sqlx's Any driver maps no boolean type on SQLite.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "read model",
        "CREATE TABLE posts (
            id TEXT PRIMARY KEY,
            author TEXT NOT NULL,
            message TEXT NOT NULL,
            date_posted BIGINT NOT NULL,
            likes BIGINT NOT NULL DEFAULT 0
        );
        CREATE TABLE comments (
            id TEXT PRIMARY KEY,
            post_id TEXT NOT NULL,
            username TEXT NOT NULL,
            comment TEXT NOT NULL,
            comment_date BIGINT NOT NULL,
            edited INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX comments_post ON comments (post_id)",
    ),
    // A read model kept before versions (de-duplicated by event id) cannot say which version
    // each post is at, so it is emptied: RestoreReadDb rebuilds it, and until then each post
    // comes back on its next event (a gap, caught up from the event store).
    (
        2,
        "per-post versions",
        "CREATE TABLE post_versions (
            post_id TEXT PRIMARY KEY,
            version BIGINT NOT NULL
        );
        DELETE FROM comments;
        DELETE FROM posts",
    ),
];

/// Creates or upgrades the read model's tables in `db` (idempotent).
pub(crate) async fn migrate(db: &Database) -> Result<(), Error> {
    db.migrate(SERVICE, MIGRATIONS).await?;
    Ok(())
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It was the post's next event, and is applied.
    Applied,
    /// The read model has it already.
    Duplicate,
    /// The read model lacks an earlier event of the post; it is at version `last`.
    Gap { last: i64 },
}

/// What became of a run of one post's consecutive events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RunOutcome {
    /// Events applied (the end of the run the read model lacked).
    pub applied: u64,
    /// Events the read model had (the start of the run).
    pub skipped: u64,
    /// The read model lacks events before the run: nothing was applied, and this is the
    /// post's version.
    pub gap: Option<i64>,
}

/// Applies `event`, version `version` of its post, inside the caller's transaction, if it is
/// the post's next event (see the module docs). Write only through `conn`.
pub(crate) async fn apply_in(
    conn: &mut AnyConnection,
    version: i64,
    event: &PostEvent,
) -> Result<Outcome, sqlx::Error> {
    let run = apply_run_in(conn, &[(version, event)]).await?;
    Ok(match run.gap {
        Some(last) => Outcome::Gap { last },
        None if run.applied == 1 => Outcome::Applied,
        None => Outcome::Duplicate,
    })
}

/// Applies a run of one post's consecutive events (`(version, event)`, versions increasing by
/// one), inside the caller's transaction: the part the read model lacks, if the run reaches
/// back to the post's version; nothing if the read model has it all, or if there is a gap
/// before it. One version check for the whole run, and consecutive likes in one statement, is
/// what makes a rebuild fast. Write only through `conn`.
pub(crate) async fn apply_run_in(
    conn: &mut AnyConnection,
    events: &[(i64, &PostEvent)],
) -> Result<RunOutcome, sqlx::Error> {
    let (Some(&(first, head)), Some(&(last, _))) = (events.first(), events.last()) else {
        return Ok(RunOutcome::default());
    };
    debug_assert!(events.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    let post_id = head.post_id().to_string();
    // The version the post must be at for the rest of the run to be its next events: before
    // the run at first; after a partial overlap (a racing applier got further), where it is.
    let mut at = first - 1;
    let mut tries = 0;
    while move_version(conn, &post_id, at, last).await? == 0 {
        let current = version_in(conn, &post_id).await?;
        tries += 1;
        if current >= last {
            return Ok(RunOutcome {
                skipped: events.len() as u64,
                ..RunOutcome::default()
            });
        }
        // Behind the run, or moving under us again and again (concurrent resets): a gap, for
        // the caller to fill from the event store.
        if current < first - 1 || tries > 8 {
            return Ok(RunOutcome {
                gap: Some(current),
                ..RunOutcome::default()
            });
        }
        at = current;
    }
    let skipped = usize::try_from(at - (first - 1)).unwrap_or(0);
    write_all(conn, &events[skipped..]).await?;
    Ok(RunOutcome {
        applied: (events.len() - skipped) as u64,
        skipped: skipped as u64,
        gap: None,
    })
}

/// Moves the post's version from `from` to `to` if it is at `from` (0: no row yet); answers
/// how many rows moved (0 or 1).
async fn move_version(
    conn: &mut AnyConnection,
    post_id: &str,
    from: i64,
    to: i64,
) -> Result<u64, sqlx::Error> {
    let done = if from == 0 {
        sqlx::query(
            "INSERT INTO post_versions (post_id, version) VALUES ($1, $2)
             ON CONFLICT (post_id) DO NOTHING",
        )
        .bind(post_id)
        .bind(to)
        .execute(conn)
        .await?
    } else {
        sqlx::query("UPDATE post_versions SET version = $2 WHERE post_id = $1 AND version = $3")
            .bind(post_id)
            .bind(to)
            .bind(from)
            .execute(conn)
            .await?
    };
    Ok(done.rows_affected())
}

/// Applies one event in a transaction of its own (see [`apply_in`]).
pub(crate) async fn apply_one(
    db: &Database,
    version: i64,
    event: &PostEvent,
) -> Result<Outcome, Error> {
    let mut tx = db.begin().await?;
    let outcome = apply_in(&mut tx, version, event).await?;
    if outcome == Outcome::Applied {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(outcome)
}

async fn version_in(conn: &mut AnyConnection, post_id: &str) -> Result<i64, sqlx::Error> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT version FROM post_versions WHERE post_id = $1")
            .bind(post_id)
            .fetch_optional(conn)
            .await?;
    Ok(version.unwrap_or(0))
}

/// The version of the last event of `post_id` the read model has, 0 for none.
pub(crate) async fn version_of(db: &Database, post_id: Uuid) -> Result<i64, Error> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT version FROM post_versions WHERE post_id = $1")
            .bind(post_id.to_string())
            .fetch_optional(db.pool())
            .await?;
    Ok(version.unwrap_or(0))
}

/// The read-model changes of `events`, in order, without any check; a row of likes is one
/// statement.
async fn write_all(
    conn: &mut AnyConnection,
    events: &[(i64, &PostEvent)],
) -> Result<(), sqlx::Error> {
    let mut i = 0;
    while let Some(&(_, event)) = events.get(i) {
        let likes = events[i..]
            .iter()
            .take_while(|(_, e)| matches!(e, PostEvent::PostLiked(_)))
            .count();
        if likes > 0 {
            sqlx::query("UPDATE posts SET likes = likes + $1 WHERE id = $2")
                .bind(likes as i64)
                .bind(event.post_id().to_string())
                .execute(&mut *conn)
                .await?;
            i += likes;
        } else {
            write(&mut *conn, event).await?;
            i += 1;
        }
    }
    Ok(())
}

/// The read-model change of one event, without any check.
async fn write(conn: &mut AnyConnection, event: &PostEvent) -> Result<(), sqlx::Error> {
    match event {
        PostEvent::PostCreated(e) => {
            sqlx::query(
                "INSERT INTO posts (id, author, message, date_posted, likes) VALUES ($1, $2, $3, $4, 0)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(e.post_id.to_string())
            .bind(&e.author)
            .bind(&e.message)
            .bind(e.date_posted)
            .execute(conn)
            .await?;
        }
        PostEvent::MessageUpdated(e) => {
            sqlx::query("UPDATE posts SET message = $1 WHERE id = $2")
                .bind(&e.message)
                .bind(e.post_id.to_string())
                .execute(conn)
                .await?;
        }
        PostEvent::PostLiked(e) => {
            sqlx::query("UPDATE posts SET likes = likes + 1 WHERE id = $1")
                .bind(e.post_id.to_string())
                .execute(conn)
                .await?;
        }
        PostEvent::CommentAdded(e) => {
            sqlx::query(
                "INSERT INTO comments (id, post_id, username, comment, comment_date, edited)
                 VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (id) DO NOTHING",
            )
            .bind(e.comment_id.to_string())
            .bind(e.post_id.to_string())
            .bind(&e.username)
            .bind(&e.comment)
            .bind(e.comment_date)
            .execute(conn)
            .await?;
        }
        PostEvent::CommentUpdated(e) => {
            sqlx::query("UPDATE comments SET comment = $1, edited = 1 WHERE id = $2")
                .bind(&e.comment)
                .bind(e.comment_id.to_string())
                .execute(conn)
                .await?;
        }
        PostEvent::CommentRemoved(e) => {
            sqlx::query("DELETE FROM comments WHERE id = $1")
                .bind(e.comment_id.to_string())
                .execute(conn)
                .await?;
        }
        PostEvent::PostRemoved(e) => {
            sqlx::query("DELETE FROM comments WHERE post_id = $1")
                .bind(e.post_id.to_string())
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM posts WHERE id = $1")
                .bind(e.post_id.to_string())
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

/// Empties the read model, versions included, in one transaction.
pub(crate) async fn reset(db: &Database) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    // On PostgreSQL the three deletes must see one state: locking only the version rows that
    // exist let an applier commit a *new* post between them (its version row survived the first
    // delete, its post row fell to the last: a version without a post, seen as a lost like count
    // under load). EXCLUSIVE mode lets readers on and makes writers wait for the reset (and the
    // reset for writers in flight). post_versions comes first, the table every applier writes
    // first, so the two cannot deadlock.
    if db.is_postgres() {
        sqlx::query("LOCK TABLE post_versions, posts, comments IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
    }
    for table in ["post_versions", "comments", "posts"] {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What [`sync_post`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Synced {
    /// The post's version in the read model afterwards.
    pub version: i64,
    /// How many events it applied.
    pub applied: u64,
}

/// Brings one post up to the event store: applies, in order, every stored event of the post
/// after the version the read model has. Safe beside any other applier (see the module docs).
pub(crate) async fn sync_post(
    source: &EventSource,
    db: &Database,
    post_id: Uuid,
) -> Result<Synced, Error> {
    let mut applied = 0;
    // Only a concurrent reset (the version went back under us) makes a round end early; each
    // round starts again from where the read model is then.
    for _ in 0..8 {
        let mut last = version_of(db, post_id).await?;
        'pages: loop {
            // Read first, then write: on SQLite a read on the pool inside the open write
            // transaction could wait on the connection the transaction holds.
            let events = source.stream(post_id, last, SYNC_PAGE).await?;
            let Some(newest) = events.last().map(|e| e.version) else {
                return Ok(Synced {
                    version: last,
                    applied,
                });
            };
            let run: Vec<(i64, &PostEvent)> =
                events.iter().map(|e| (e.version, &e.event)).collect();
            let mut tx = db.begin().await?;
            let outcome = apply_run_in(&mut tx, &run).await?;
            tx.commit().await?;
            if outcome.gap.is_some() {
                break 'pages;
            }
            applied += outcome.applied;
            last = newest;
            if events.len() < SYNC_PAGE {
                return Ok(Synced {
                    version: last,
                    applied,
                });
            }
        }
    }
    Err(Error::KeptResetting { post_id })
}

#[cfg(test)]
mod tests;
