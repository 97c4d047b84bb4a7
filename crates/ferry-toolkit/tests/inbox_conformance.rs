//! One conformance suite for every store, part 2: the idempotent inbox. Each case runs on
//! SQLite and on PostgreSQL (`FERRY_TEST_POSTGRES_URL`; skipped with a message when unset).
//! Transport redelivery (a message delivered again after a crash) is in
//! `transport_conformance.rs`; here the store's side is pinned down.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::stores::{POSTGRES, SQLITE, StoreFeatures, TestStore};
use ferry_toolkit::HandlerError;
use ferry_toolkit::sql::{Database, inbox};
use sqlx::Row as _;

const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "totals",
    "CREATE TABLE totals (entity TEXT PRIMARY KEY, total BIGINT NOT NULL)",
)];

async fn migrated(f: &StoreFeatures) -> Option<TestStore> {
    let store = TestStore::open(f).await?;
    store
        .db
        .migrate("inbox-conformance", MIGRATIONS)
        .await
        .expect("migrations apply");
    Some(store)
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    super::$case(&super::SQLITE).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    super::$case(&super::POSTGRES).await
                }
            )*
        }
    };
}

conformance!(
    redelivered_message_is_applied_once,
    concurrent_deliveries_of_one_message_apply_it_once,
    failed_handler_rolls_back_its_claim_and_keeps_its_error,
    prune_forgets_only_old_inbox_records,
);

/// A handler's write: adds `amount` to the entity's total.
async fn add(
    db: &Database,
    group: &str,
    message_id: uuid::Uuid,
    entity: &str,
    amount: i64,
) -> ferry_toolkit::Result<bool> {
    let entity = entity.to_owned();
    inbox::process_once(db, group, message_id, move |tx| {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO totals (entity, total) VALUES ($1, $2)
                 ON CONFLICT (entity) DO UPDATE SET total = totals.total + excluded.total",
            )
            .bind(entity)
            .bind(amount)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
    })
    .await
}

async fn total(db: &Database, entity: &str) -> i64 {
    sqlx::query("SELECT total FROM totals WHERE entity = $1")
        .bind(entity)
        .fetch_optional(db.pool())
        .await
        .unwrap()
        .map_or(0, |r| r.try_get(0).unwrap())
}

async fn redelivered_message_is_applied_once(f: &StoreFeatures) -> anyhow::Result<()> {
    let Some(store) = migrated(f).await else {
        return Ok(());
    };
    let db = &store.db;
    let id = uuid::Uuid::now_v7();
    assert!(add(db, "billing", id, "e", 5).await?);
    assert!(
        !add(db, "billing", id, "e", 5).await?,
        "second delivery skipped"
    );
    assert_eq!(total(db, "e").await, 5);
    // Another group processes the same message independently.
    assert!(add(db, "audit", id, "e", 5).await?);
    assert_eq!(total(db, "e").await, 10);
    assert!(inbox::is_processed(db, "billing", id).await?);
    assert!(!inbox::is_processed(db, "billing", uuid::Uuid::now_v7()).await?);
    // The borrowing form: claim, write, commit.
    let other = uuid::Uuid::now_v7();
    let mut tx = inbox::claim(db, "billing", other)
        .await?
        .expect("first time");
    sqlx::query("UPDATE totals SET total = total + 1 WHERE entity = 'e'")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    assert!(inbox::claim(db, "billing", other).await?.is_none());
    assert_eq!(total(db, "e").await, 11);
    Ok(())
}

async fn concurrent_deliveries_of_one_message_apply_it_once(
    f: &StoreFeatures,
) -> anyhow::Result<()> {
    let Some(store) = migrated(f).await else {
        return Ok(());
    };
    let other = store.connect_again().await;
    let applied = Arc::new(AtomicUsize::new(0));
    for round in 0..20 {
        let id = uuid::Uuid::now_v7();
        let entity = format!("e{round}");
        let (a, b) = tokio::join!(
            add(&store.db, "g", id, &entity, 1),
            add(&other, "g", id, &entity, 1)
        );
        let n = usize::from(a?) + usize::from(b?);
        assert_eq!(n, 1, "round {round}: exactly one delivery applies it");
        applied.fetch_add(n, Ordering::Relaxed);
        assert_eq!(total(&store.db, &entity).await, 1);
    }
    other.close().await;
    Ok(())
}

async fn failed_handler_rolls_back_its_claim_and_keeps_its_error(
    f: &StoreFeatures,
) -> anyhow::Result<()> {
    let Some(store) = migrated(f).await else {
        return Ok(());
    };
    let db = &store.db;
    let id = uuid::Uuid::now_v7();
    let result = inbox::process_once(db, "g", id, |tx| {
        Box::pin(async move {
            sqlx::query("INSERT INTO totals (entity, total) VALUES ('x', 1)")
                .execute(&mut *tx)
                .await?;
            Err::<(), _>(HandlerError::permanent("invalid order"))
        })
    })
    .await;
    let error = result.expect_err("the handler failed");
    // Back in a handler, `?` restores the original error, permanence included.
    let handler_error = HandlerError::from(error);
    assert!(handler_error.is_permanent());
    assert_eq!(handler_error.to_string(), "invalid order");
    assert_eq!(total(db, "x").await, 0, "its write rolled back");
    assert!(
        !inbox::is_processed(db, "g", id).await?,
        "its claim rolled back"
    );
    // The retry runs it.
    assert!(add(db, "g", id, "x", 1).await?);
    assert_eq!(total(db, "x").await, 1);
    Ok(())
}

async fn prune_forgets_only_old_inbox_records(f: &StoreFeatures) -> anyhow::Result<()> {
    let Some(store) = migrated(f).await else {
        return Ok(());
    };
    let db = &store.db;
    let old = uuid::Uuid::now_v7();
    assert!(add(db, "g", old, "p", 1).await?);
    // Backdate it by two hours.
    sqlx::query(
        "UPDATE ferry_inbox SET processed_at = processed_at - 7200000 WHERE message_id = $1",
    )
    .bind(old.to_string())
    .execute(db.pool())
    .await?;
    let fresh = uuid::Uuid::now_v7();
    assert!(add(db, "g", fresh, "p", 1).await?);
    assert_eq!(inbox::prune(db, Duration::from_secs(3600)).await?, 1);
    assert!(!inbox::is_processed(db, "g", old).await?);
    assert!(inbox::is_processed(db, "g", fresh).await?);
    assert_eq!(inbox::prune(db, Duration::from_secs(3600)).await?, 0);
    Ok(())
}
