//! SQL storage on `sqlx`: one code path for SQLite (the default, a file in the data directory)
//! and PostgreSQL (`--database-url` / `DATABASE_URL`, for scaling out).
//!
//! The model:
//! - [`Database`] wraps a `sqlx::AnyPool`. Queries are written once, with `$1`-style
//!   placeholders (which the SQLite driver accepts too); times are `i64` Unix milliseconds,
//!   UUIDs are `TEXT`, so the same statements run on both backends. Where the dialects differ
//!   (auto-increment keys, `BYTEA` vs `BLOB`, the current time) the toolkit picks per backend.
//! - SQLite files are opened in WAL mode (readers never block the writer) with
//!   `synchronous=FULL` (a commit is on disk when it returns: an accepted change survives a
//!   crash or a power cut), a 30 s busy timeout and foreign keys on. [`Database::begin`] runs
//!   SQLite commands with group commit (`group.rs`): each in its own savepoint of a transaction
//!   the concurrent commands share, opened with `BEGIN IMMEDIATE` (which takes the write lock up
//!   front: a deferred transaction that reads and then writes can fail at once with
//!   `SQLITE_BUSY` when another connection wrote in between, and the busy timeout does not help
//!   there), so one fsync commits many commands, and none is answered before it is durable.
//! - [`Database::migrate`] applies the toolkit's own tables ([`outbox`], [`inbox`], relay
//!   leases) and then the service's migrations, each once (see `migrate.rs`).
//! - [`outbox`]: stage messages in the same transaction as the state change; a
//!   [`outbox::Relay`] publishes them after commit. [`inbox`]: run a handler's writes in a
//!   transaction that records the message id, so a redelivered message is applied once.
//!
//! Threads: none of its own. The pool's connections are driven by whichever tokio task awaits
//! them (the SQLite driver runs each connection on a worker thread of its own, inside sqlx);
//! the outbox relay is one tokio task (see `outbox/relay.rs`).
//!
//! Each service owns its database: a SQLite file `<data dir>/<service>.db`, or a PostgreSQL
//! database or schema ([`Database::connect_in_schema`]) of its own. Services never read each
//! other's tables.

mod group;
pub mod inbox;
mod migrate;
pub mod outbox;
mod tx;

pub use tx::Tx;

use std::path::Path;
use std::str::FromStr;
use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions, AnyQueryResult};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor};

use self::group::GroupWriter;

use crate::error::{Error, Result};

/// A service's database. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Database {
    pool: AnyPool,
    /// Where transactions run on SQLite: the single writer connection, with group commit (see
    /// `group.rs`). `None` on PostgreSQL, where each transaction takes a connection of `pool`.
    group: Option<Arc<GroupWriter>>,
    backend: Backend,
    /// The PostgreSQL URL, for the relay's `LISTEN` connection.
    url: Option<Arc<str>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .field("connections", &self.pool.size())
            .finish()
    }
}

/// Which SQL dialect a [`Database`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// How long a SQLite connection waits for another one's write lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

static DRIVERS: Once = Once::new();

impl Database {
    /// Connects to `url`: `sqlite://<path>` (the file and its directory are created if missing;
    /// WAL, busy timeout, foreign keys) or `postgres://...`.
    pub async fn connect(url: &str) -> Result<Database> {
        Database::open(url, None).await
    }

    /// Like [`Database::connect`], but on PostgreSQL every connection works in `schema`
    /// (created if missing, then `search_path` set to it), so several services, or several test
    /// runs, can share one PostgreSQL database without sharing tables. On SQLite the schema is
    /// ignored: the file is the service's own already.
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<Database> {
        Database::open(url, Some(schema)).await
    }

    async fn open(url: &str, schema: Option<&str>) -> Result<Database> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(Error::Config(format!(
                "unsupported database URL {:?}: expected sqlite://<path> or postgres://...",
                redact(url)
            )));
        };
        match backend {
            Backend::Sqlite => Database::open_sqlite(url).await,
            Backend::Postgres => Database::open_postgres(url, schema).await,
        }
    }

    async fn open_sqlite(url: &str) -> Result<Database> {
        let (path, query) = match url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:")
            .split_once('?')
        {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (
                url.trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:")
                    .to_owned(),
                None,
            ),
        };
        if path.is_empty() || path == ":memory:" {
            // Each pooled connection would get a database of its own.
            return Err(Error::Config(
                "an in-memory SQLite database cannot be shared by a pool; use a file".into(),
            ));
        }
        if let Some(dir) = Path::new(&path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let query = match query {
            Some(q) if q.split('&').any(|kv| kv.starts_with("mode=")) => q,
            Some(q) => format!("{q}&mode=rwc"),
            None => "mode=rwc".to_owned(),
        };
        let url = format!("sqlite://{path}?{query}");
        let options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();

        // The journal mode is a property of the file and switching it needs an exclusive lock
        // that the busy timeout cannot wait for, so it is set once here, before the pool opens.
        let mut first = options.connect().await?;
        first.execute("PRAGMA journal_mode = WAL").await?;
        first.close().await?;

        // Readers get a few connections (WAL lets them run beside the writer).
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(|conn, _meta| Box::pin(sqlite_pragmas(conn)))
            .connect_with(options.clone())
            .await?;
        // Transactions get one connection of their own: SQLite has one writer at a time anyway,
        // and waiting in the pool's queue is first come, first served, while connections that
        // compete for the write lock sleep in SQLite's busy handler (up to 100 ms a turn),
        // which showed as a 185 ms p99 commit-to-publish delay at 500 commands/s.
        let writer = AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _meta| Box::pin(sqlite_pragmas(conn)))
            .connect_with(options)
            .await?;
        Ok(Database {
            pool,
            group: Some(GroupWriter::new(writer)),
            backend: Backend::Sqlite,
            url: None,
        })
    }

    async fn open_postgres(url: &str, schema: Option<&str>) -> Result<Database> {
        let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
        let schema = schema.map(quote_ident).transpose()?;
        if let Some(schema) = &schema {
            let mut conn = options.connect().await?;
            conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
                .await?;
            conn.close().await?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(10)
            .after_connect(move |conn, _meta| {
                let schema = schema.clone();
                Box::pin(async move {
                    if let Some(schema) = schema {
                        conn.execute(format!("SET search_path TO {schema}").as_str())
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Database {
            group: None,
            pool,
            backend: Backend::Postgres,
            url: Some(url.into()),
        })
    }

    /// The database of `service`: with `database_url` (`--database-url` / `DATABASE_URL`),
    /// that PostgreSQL database in a schema named after the service (`-` becomes `_`), so
    /// services sharing one server never share tables; otherwise the SQLite file
    /// `<data_dir>/<service>.db`.
    pub async fn for_service(
        database_url: Option<&str>,
        data_dir: &Path,
        service: &str,
    ) -> Result<Database> {
        match database_url.filter(|url| !url.is_empty()) {
            Some(url) => Database::connect_in_schema(url, &service.replace('-', "_")).await,
            None => Database::connect(&Database::sqlite_url(data_dir, service)).await,
        }
    }

    /// The SQLite URL of `<data_dir>/<service>.db`.
    pub fn sqlite_url(data_dir: &Path, service: &str) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            data_dir.join(format!("{service}.db")).display()
        )
    }

    /// The connection pool, for the service's own queries. On SQLite, prefer
    /// [`Database::begin`] for writes: transactions queue for the single writer connection in
    /// order, where a write through this pool waits for the write lock in SQLite's busy handler.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs one write statement on its own: on SQLite as a command of the writer's group
    /// commit (so it waits its turn and shares a batch's fsync), on PostgreSQL on the pool.
    pub(crate) async fn execute_write<'q>(
        &self,
        query: WriteQuery<'q>,
    ) -> sqlx::Result<AnyQueryResult> {
        self.write(query, true).await
    }

    /// Like [`Database::execute_write`], but on SQLite the write does not make its batch
    /// commit by itself: it returns, durable, with the next command's commit (or after 2 ms).
    /// For bookkeeping between commands, such as the relay marking rows sent.
    pub(crate) async fn execute_write_lazily<'q>(
        &self,
        query: WriteQuery<'q>,
    ) -> sqlx::Result<AnyQueryResult> {
        self.write(query, false).await
    }

    async fn write<'q>(&self, query: WriteQuery<'q>, eager: bool) -> sqlx::Result<AnyQueryResult> {
        let Some(group) = &self.group else {
            return query.execute(&self.pool).await;
        };
        let mut turn = group.begin().await?;
        match query.execute(turn.connection_mut()).await {
            Ok(result) => {
                if eager {
                    turn.commit().await?;
                } else {
                    turn.commit_lazily().await?;
                }
                Ok(result)
            }
            Err(e) => {
                let _ = turn.rollback().await;
                Err(e)
            }
        }
    }

    /// Whether this is PostgreSQL (else SQLite).
    pub fn is_postgres(&self) -> bool {
        self.backend == Backend::Postgres
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// The PostgreSQL URL (none for SQLite).
    pub(crate) fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// Starts a command's transaction. Use it as a connection (`&mut *tx`), then
    /// [`Tx::commit`] (which returns once the writes are durable) or [`Tx::rollback`];
    /// dropping it rolls back.
    ///
    /// On SQLite the command runs on the single writer connection in its own savepoint of a
    /// transaction shared with the commands around it (group commit, `group.rs`): it sees
    /// their writes, it holds the write lock from the start (`BEGIN IMMEDIATE`, so a command
    /// that reads before it writes cannot fail half-way with `SQLITE_BUSY`), and one fsync
    /// commits many commands. Do not start a second transaction while holding one (it would
    /// wait for the first); reading through [`Database::pool`] meanwhile is fine, and sees only
    /// committed data. On PostgreSQL it is a transaction of its own on a pooled connection
    /// (concurrent ones share WAL flushes in the server).
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match &self.group {
            Some(group) => Tx::group(group.begin().await?),
            None => Tx::plain(self.pool.begin().await?),
        })
    }

    /// Waits until every write already committed into the writer's open batch is durable and
    /// visible through [`Database::pool`] (SQLite group commit: an empty command that joins
    /// the batch and waits for its commit). A no-op on PostgreSQL, where a commit is visible
    /// once it returns. For a writer that lost a race to a command of the open batch (a unique
    /// violation) and must read the winner's write before it tries again.
    pub async fn sync(&self) -> Result<()> {
        if let Some(group) = &self.group {
            group.begin().await?.commit().await?;
        }
        Ok(())
    }

    /// Applies the toolkit's own tables, then `migrations` of `service`, each once. See
    /// `migrate.rs` for how concurrent starts are kept apart.
    ///
    /// `migrations` are `(version, name, sql)` in ascending version order; `sql` may hold
    /// several statements separated by `;`.
    pub async fn migrate(&self, service: &str, migrations: &[(i64, &str, &str)]) -> Result<()> {
        migrate::run(self, service, migrations).await
    }

    /// Closes every connection; pending queries finish first.
    pub async fn close(&self) {
        if let Some(group) = &self.group {
            group.close().await;
        }
        self.pool.close().await;
    }
}

type WriteQuery<'q> = sqlx::query::Query<'q, sqlx::Any, AnyArguments<'q>>;

/// `query.execute_write(db)`: [`Database::execute_write`] at the end of a query's chain.
pub(crate) trait ExecuteWrite<'q> {
    fn execute_write(
        self,
        db: &Database,
    ) -> impl Future<Output = sqlx::Result<AnyQueryResult>> + Send;
}

impl<'q> ExecuteWrite<'q> for WriteQuery<'q> {
    fn execute_write(
        self,
        db: &Database,
    ) -> impl Future<Output = sqlx::Result<AnyQueryResult>> + Send {
        db.execute_write(self)
    }
}

/// Per-connection SQLite settings (the journal mode is per file, set once at open).
async fn sqlite_pragmas(conn: &mut sqlx::AnyConnection) -> sqlx::Result<()> {
    conn.execute(
        format!(
            "PRAGMA busy_timeout = {}; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON",
            SQLITE_BUSY_TIMEOUT.as_millis()
        )
        .as_str(),
    )
    .await?;
    Ok(())
}

impl Backend {
    /// An SQL expression for the database server's clock in Unix milliseconds. Leases use the
    /// server's clock so relays on machines with skewed clocks still agree on expiry.
    pub(crate) fn now_millis_sql(self) -> &'static str {
        match self {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS BIGINT)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }
}

/// This process's clock in Unix milliseconds, the form timestamps take in services' tables
/// (an `i64` every SQL backend stores as `BIGINT`).
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `$from, $from+1, ...` for `count` values.
pub(crate) fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Quotes a schema name, accepting only names that need no escaping.
fn quote_ident(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(format!("\"{name}\""))
    } else {
        Err(Error::Config(format!(
            "invalid schema name {name:?}: use letters, digits and _"
        )))
    }
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_names() {
        assert_eq!(
            Database::sqlite_url(Path::new("/data"), "orders"),
            "sqlite:///data/orders.db?mode=rwc"
        );
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(quote_ident("svc_1").unwrap(), "\"svc_1\"");
        assert!(quote_ident("a;drop").is_err());
        assert!(quote_ident("1a").is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
