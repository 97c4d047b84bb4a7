//! The stores the conformance suite runs on, and what each guarantees.
//!
//! SQLite: a file in a temp directory. PostgreSQL: the server named by
//! `FERRY_TEST_POSTGRES_URL`, in a fresh schema per test (dropped afterwards), so parallel
//! tests and runs never see each other's tables. Without that variable the PostgreSQL cases
//! print that they are skipped and pass.

use std::path::PathBuf;

use ferry_toolkit::sql::Database;
use uuid::Uuid;

/// What a store adapter guarantees; the suite's checks follow from it.
#[derive(Debug, Clone, Copy)]
pub struct StoreFeatures {
    pub name: &'static str,
    /// Committed data survives the process (SQLite: WAL with synchronous=FULL; PostgreSQL:
    /// the server's WAL).
    pub durable: bool,
    /// Several processes may share the database (relay lease, inbox claims across processes).
    pub shared_by_processes: bool,
    /// Rows staged by another process wake the relay at once (PostgreSQL LISTEN/NOTIFY);
    /// otherwise the fallback poll picks them up.
    pub notifies_across_processes: bool,
}

pub const SQLITE: StoreFeatures = StoreFeatures {
    name: "sqlite",
    durable: true,
    shared_by_processes: true,
    notifies_across_processes: false,
};

pub const POSTGRES: StoreFeatures = StoreFeatures {
    name: "postgres",
    durable: true,
    shared_by_processes: true,
    notifies_across_processes: true,
};

pub const POSTGRES_ENV: &str = "FERRY_TEST_POSTGRES_URL";

/// A database for one test.
pub struct TestStore {
    pub features: StoreFeatures,
    pub db: Database,
    /// The URL and schema to open the same database again (as another process would).
    pub url: String,
    pub schema: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    /// Opens a fresh database of the `features` kind; `None` (after saying so) when the
    /// PostgreSQL case is skipped.
    pub async fn open(features: &StoreFeatures) -> Option<TestStore> {
        super::init_tracing();
        let schema = format!("ferry_test_{}", Uuid::now_v7().simple());
        match features.name {
            "sqlite" => {
                let dir = tempfile::tempdir().unwrap();
                let url = Database::sqlite_url(dir.path(), "service");
                let db = Database::connect(&url).await.expect("sqlite opens");
                Some(TestStore {
                    features: *features,
                    db,
                    url,
                    schema,
                    _dir: Some(dir),
                })
            }
            _ => {
                let Some(url) = postgres_url() else {
                    eprintln!("skipped: {POSTGRES_ENV} not set");
                    return None;
                };
                let db = Database::connect_in_schema(&url, &schema)
                    .await
                    .expect("postgres connects");
                Some(TestStore {
                    features: *features,
                    db,
                    url,
                    schema,
                    _dir: None,
                })
            }
        }
    }

    /// Another connection pool on the same database, like a second process.
    pub async fn connect_again(&self) -> Database {
        Database::connect_in_schema(&self.url, &self.schema)
            .await
            .expect("reconnects")
    }

    /// The SQLite file's directory, if this is SQLite.
    pub fn dir(&self) -> Option<PathBuf> {
        self._dir.as_ref().map(|d| d.path().to_path_buf())
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if self._dir.is_some() {
            return;
        }
        // Drop the schema even when the test panicked; on a runtime of its own, since this
        // may run inside (or after) the test's runtime.
        let url = self.url.clone();
        let schema = self.schema.clone();
        let _ = std::thread::spawn(move || drop_schema(&url, &schema)).join();
    }
}

pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_ENV).ok().filter(|v| !v.is_empty())
}

fn drop_schema(url: &str, schema: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if let Ok(db) = Database::connect(url).await {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(db.pool())
                .await;
            db.close().await;
        }
    });
}
