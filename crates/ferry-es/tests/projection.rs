//! Projection conformance on SQLite and PostgreSQL: checkpoints, exactly-once application,
//! replay.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::{Added, CounterEvent, Totals, totals};
use ferry_es::{EventStore, Metadata, Progress, Projector};
use ferry_toolkit::sql::Database;

conformance!(
    catch_up_applies_each_event_once_and_resumes_from_the_checkpoint,
    replay_rebuilds_the_read_model_with_progress_and_is_safe_twice,
    failed_batch_applies_nothing_and_keeps_the_checkpoint,
    racing_projectors_never_apply_an_event_twice,
);

/// Appends `per_stream` events of amount 1..=per_stream to each of `streams` streams.
async fn fill(store: &EventStore, streams: usize, per_stream: u64) {
    for s in 0..streams {
        let events = (1..=per_stream)
            .map(|amount| CounterEvent::Added(Added { amount }))
            .collect();
        store
            .append(&format!("s{s}"), "Counter", 0, events, &Metadata::default())
            .await
            .unwrap();
    }
}

fn expected(streams: usize, per_stream: u64) -> Vec<(String, i64, i64)> {
    let total = (per_stream * (per_stream + 1) / 2) as i64;
    (0..streams)
        .map(|s| (format!("s{s}"), total, per_stream as i64))
        .collect()
}

async fn catch_up_applies_each_event_once_and_resumes_from_the_checkpoint(db: Database) {
    let store = EventStore::new(db.clone());
    let projector =
        Projector::new(store.clone(), db.clone(), Totals::named("totals")).with_batch_size(7);
    assert_eq!(projector.checkpoint().await.unwrap(), 0);
    fill(&store, 3, 10).await;
    assert_eq!(projector.catch_up().await.unwrap(), 30);
    assert_eq!(projector.checkpoint().await.unwrap(), 30);
    assert_eq!(totals(&db).await, expected(3, 10));

    assert_eq!(
        projector.catch_up().await.unwrap(),
        0,
        "nothing new, nothing applied"
    );
    assert_eq!(totals(&db).await, expected(3, 10));

    store
        .append(
            "s0",
            "Counter",
            10,
            vec![CounterEvent::Added(Added { amount: 11 })],
            &Metadata::default(),
        )
        .await
        .unwrap();
    // A new projector (a restarted process) resumes from the stored checkpoint.
    let restarted = Projector::new(store, db.clone(), Totals::named("totals"));
    assert_eq!(restarted.catch_up().await.unwrap(), 1);
    assert_eq!(totals(&db).await[0], ("s0".into(), 66, 11));
}

async fn replay_rebuilds_the_read_model_with_progress_and_is_safe_twice(db: Database) {
    let store = EventStore::new(db.clone());
    fill(&store, 4, 25).await;
    let projector = Projector::new(store, db.clone(), Totals::named("totals")).with_batch_size(30);
    projector.catch_up().await.unwrap();
    // The read model drifted (someone edited it by hand).
    sqlx::query("UPDATE totals SET total = 0")
        .execute(db.pool())
        .await
        .unwrap();

    for _ in 0..2 {
        let mut reports: Vec<Progress> = Vec::new();
        let applied = projector.replay(|p| reports.push(p)).await.unwrap();
        assert_eq!(applied, 100);
        assert_eq!(totals(&db).await, expected(4, 25));
        let applied_so_far: Vec<u64> = reports.iter().map(|p| p.applied).collect();
        assert_eq!(applied_so_far, [30, 60, 90, 100]);
        assert!(reports.iter().all(|p| p.total == 100));
        assert_eq!(reports.last().unwrap().position, 100);
    }
}

async fn failed_batch_applies_nothing_and_keeps_the_checkpoint(db: Database) {
    let store = EventStore::new(db.clone());
    fill(&store, 1, 10).await;
    let projector = Projector::new(store, db.clone(), Totals::named("totals")).with_batch_size(4);
    projector.projection().fail_at.store(6, Ordering::SeqCst);
    // Batch 1..=4 commits; batch 5..=8 fails at 6 and is rolled back whole.
    let err = projector.catch_up().await.unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_eq!(projector.checkpoint().await.unwrap(), 4);
    assert_eq!(totals(&db).await, [("s0".into(), 1 + 2 + 3 + 4, 4)]);

    projector.projection().fail_at.store(0, Ordering::SeqCst);
    assert_eq!(projector.catch_up().await.unwrap(), 6);
    assert_eq!(
        totals(&db).await,
        expected(1, 10),
        "event 5 was applied once"
    );
}

async fn racing_projectors_never_apply_an_event_twice(db: Database) {
    let store = EventStore::new(db.clone());
    fill(&store, 5, 40).await;
    let projectors: Vec<_> = (0..3)
        .map(|_| {
            Arc::new(
                Projector::new(store.clone(), db.clone(), Totals::named("totals"))
                    .with_batch_size(3),
            )
        })
        .collect();
    let tasks: Vec<_> = projectors
        .iter()
        .map(|p| {
            let p = p.clone();
            tokio::spawn(async move { p.catch_up().await.unwrap() })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        applied += task.await.unwrap();
    }
    assert_eq!(applied, 200, "every event applied by exactly one projector");
    assert_eq!(totals(&db).await, expected(5, 40));
}

/// The read model may live in another database than the events (the query service's own).
#[tokio::test]
async fn the_read_model_can_live_in_another_database() {
    let dir = tempfile::tempdir().unwrap();
    let events = common::sqlite_in(dir.path(), "events").await;
    let reads = common::sqlite_in(dir.path(), "reads").await;
    let store = EventStore::new(events.clone());
    fill(&store, 2, 3).await;
    let projector = Projector::new(store, reads.clone(), Totals::named("totals"));
    assert_eq!(projector.catch_up().await.unwrap(), 6);
    assert_eq!(totals(&reads).await, expected(2, 3));
    assert!(totals(&events).await.is_empty());
}

/// `run` keeps the read model current until shut down.
#[tokio::test]
async fn run_follows_new_events_until_shut_down() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_in(dir.path(), "store").await;
    let store = EventStore::new(db.clone());
    let projector = Arc::new(Projector::new(
        store.clone(),
        db.clone(),
        Totals::named("live"),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let projector = projector.clone();
        async move {
            projector
                .run(std::time::Duration::from_millis(10), async {
                    let _ = stopped.await;
                })
                .await;
        }
    });
    fill(&store, 2, 5).await;
    // Poll for the result with a deadline rather than sleeping a guessed time.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while totals(&db).await != expected(2, 5) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the projection never caught up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), running)
        .await
        .expect("run stops when asked")
        .unwrap();
}
