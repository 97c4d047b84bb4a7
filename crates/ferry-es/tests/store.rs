//! Event store conformance: the same suite on SQLite and on PostgreSQL
//! (`FERRY_TEST_POSTGRES_URL`). Each test gets a fresh database (SQLite file / PostgreSQL
//! schema).

mod common;

use common::{Add, Added, Counter, CounterEvent, Rendezvous};
use ferry_es::{CommandHandler, Error, EventStore, Metadata, Upcaster};
use ferry_toolkit::sql::Database;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use uuid::Uuid;

conformance!(
    appends_read_back_in_order_with_global_positions,
    stale_append_is_a_typed_conflict_and_writes_nothing,
    append_ahead_of_the_stream_is_a_conflict_not_a_gap,
    fifty_concurrent_commands_on_one_stream_get_versions_1_to_50,
    one_handler_serializes_its_own_commands_on_a_stream,
    conflicting_command_is_decided_again_on_the_new_state,
    without_retries_the_conflict_reaches_the_caller_typed,
    snapshots_every_n_events_are_used_and_never_trusted_blindly,
    old_schema_versions_are_upcast_on_read,
    outbox_rows_commit_with_the_events_they_carry,
    failed_outbox_write_stores_no_event,
    rejected_command_stores_nothing,
);

fn added(amount: u64) -> CounterEvent {
    CounterEvent::Added(Added { amount })
}

async fn appends_read_back_in_order_with_global_positions(db: Database) {
    let store = EventStore::new(db);
    let metadata = Metadata {
        correlation_id: Some(Uuid::now_v7()),
        causation_id: None,
        traceparent: None,
    };
    let a = store
        .append(
            "a",
            "Counter",
            0,
            vec![added(1), added(2), added(3)],
            &metadata,
        )
        .await
        .unwrap();
    let b = store
        .append("b", "Counter", 0, vec![added(10)], &Metadata::default())
        .await
        .unwrap();
    let a2 = store
        .append("a", "Counter", 3, vec![added(4)], &Metadata::default())
        .await
        .unwrap();

    let versions = |r: &[ferry_es::Recorded<CounterEvent>]| {
        r.iter()
            .map(|e| (e.version, e.position))
            .collect::<Vec<_>>()
    };
    assert_eq!(versions(&a), [(1, 1), (2, 2), (3, 3)]);
    assert_eq!(versions(&b), [(1, 4)]);
    assert_eq!(versions(&a2), [(4, 5)]);

    let read = store.read_stream::<CounterEvent>("a", 0).await.unwrap();
    let mut expected = a.clone();
    expected.extend(a2.clone());
    assert_eq!(read, expected, "what was read is what the append returned");
    assert_eq!(read[0].metadata, metadata);
    assert_eq!(
        store
            .read_stream::<CounterEvent>("a", 2)
            .await
            .unwrap()
            .len(),
        2
    );
    let page = store
        .read_stream_page::<CounterEvent>("a", 1, 2)
        .await
        .unwrap();
    assert_eq!(
        versions(&page),
        [(2, 2), (3, 3)],
        "a page: after 1, at most 2"
    );
    assert_eq!(store.stream_version("a").await.unwrap(), 4);
    assert_eq!(store.stream_version("nope").await.unwrap(), 0);

    let all = store
        .read_all::<CounterEvent>("Counter", 0, 100)
        .await
        .unwrap();
    let positions: Vec<i64> = all.iter().map(|e| e.position).collect();
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    assert_eq!(
        store
            .read_all::<CounterEvent>("Counter", 3, 1)
            .await
            .unwrap()[0]
            .stream_id,
        "b"
    );
    assert!(
        store
            .read_all::<CounterEvent>("Other", 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.count_after("Counter", 2).await.unwrap(), 3);

    let loaded = store.load::<Counter>("a").await.unwrap();
    assert_eq!(
        (loaded.state.total, loaded.version, loaded.snapshot),
        (10, 4, None)
    );
}

async fn stale_append_is_a_typed_conflict_and_writes_nothing(db: Database) {
    let store = EventStore::new(db);
    let m = Metadata::default();
    store
        .append("s", "Counter", 0, vec![added(1)], &m)
        .await
        .unwrap();
    let err = store
        .append("s", "Counter", 0, vec![added(2), added(3)], &m)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { stream_id, expected: 0, actual: 1 } if stream_id == "s"),
        "{err:?}"
    );
    assert_eq!(store.stream_version("s").await.unwrap(), 1);
    // The failed append's positions were rolled back with it: no gap in the global order.
    let next = store
        .append("t", "Counter", 0, vec![added(4)], &m)
        .await
        .unwrap();
    assert_eq!(next[0].position, 2);
}

async fn append_ahead_of_the_stream_is_a_conflict_not_a_gap(db: Database) {
    let store = EventStore::new(db);
    let m = Metadata::default();
    store
        .append("s", "Counter", 0, vec![added(1), added(1)], &m)
        .await
        .unwrap();
    let err = store
        .append("s", "Counter", 5, vec![added(1)], &m)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 5,
                actual: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let versions: Vec<i64> = store
        .read_stream::<CounterEvent>("s", 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2]);
}

/// 50 writers at once on one stream, each its own handler as if in its own process, so they
/// really race on the `(stream_id, version)` key: every command lands once, versions 1..=50.
async fn fifty_concurrent_commands_on_one_stream_get_versions_1_to_50(db: Database) {
    let store = EventStore::new(db);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let handler = CommandHandler::<Counter>::new(store.clone()).with_max_retries(200);
            tokio::spawn(async move { handler.execute("hot", &Add::new(1)).await })
        })
        .collect();
    let mut retried = 0;
    for task in tasks {
        let committed = task.await.unwrap().unwrap();
        retried += committed.attempts - 1;
    }
    let events = store.read_stream::<CounterEvent>("hot", 0).await.unwrap();
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=50).collect::<Vec<_>>());
    let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=50).collect::<Vec<_>>(),
        "no position lost to a conflict"
    );
    assert_eq!(store.load::<Counter>("hot").await.unwrap().state.total, 50);
    println!("50 concurrent commands: {retried} conflict retries");
}

/// The same through one shared handler: its commands on one stream take turns, so they never
/// conflict with each other.
async fn one_handler_serializes_its_own_commands_on_a_stream(db: Database) {
    let handler = CommandHandler::<Counter>::new(EventStore::new(db)).with_max_retries(0);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let handler = handler.clone();
            tokio::spawn(async move { handler.execute("hot", &Add::new(1)).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().attempts, 1);
    }
    let loaded = handler.load("hot").await.unwrap();
    assert_eq!((loaded.version, loaded.state.total), (50, 50));
}

async fn conflicting_command_is_decided_again_on_the_new_state(db: Database) {
    // Two handlers: two processes, since one handler would make them take turns.
    let store = EventStore::new(db);
    let handler = CommandHandler::<Counter>::new(store.clone());
    let rendezvous = Rendezvous::new(2);
    let tasks: Vec<_> = [1, 2]
        .map(|amount| {
            let handler = CommandHandler::<Counter>::new(store.clone());
            let command = Add {
                amount,
                rendezvous: Some(rendezvous.clone()),
                ..Add::default()
            };
            tokio::spawn(async move { handler.execute("s", &command).await })
        })
        .into_iter()
        .collect();
    let mut attempts = Vec::new();
    for task in tasks {
        let committed = task.await.unwrap().unwrap();
        attempts.push(committed.attempts);
    }
    attempts.sort();
    // Both decided on version 0; one won, the other reloaded version 1 and decided again.
    assert_eq!(attempts, [1, 2]);
    let loaded = handler.load("s").await.unwrap();
    assert_eq!((loaded.version, loaded.state.total), (2, 3));
}

async fn without_retries_the_conflict_reaches_the_caller_typed(db: Database) {
    let store = EventStore::new(db);
    let rendezvous = Rendezvous::new(2);
    let tasks: Vec<_> = [1, 2]
        .map(|amount| {
            let handler = CommandHandler::<Counter>::new(store.clone()).with_max_retries(0);
            let command = Add {
                amount,
                rendezvous: Some(rendezvous.clone()),
                ..Add::default()
            };
            tokio::spawn(async move { handler.execute("s", &command).await })
        })
        .into_iter()
        .collect();
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(committed) => assert_eq!(committed.version, 1),
            Err(e) => {
                assert!(e.is_conflict(), "{e:?}");
                let ferry_es::CommandError::Store(Error::Conflict {
                    expected, actual, ..
                }) = e
                else {
                    unreachable!()
                };
                assert_eq!((expected, actual), (0, 1));
                conflicts += 1;
            }
        }
    }
    assert_eq!(conflicts, 1);
}

async fn snapshots_every_n_events_are_used_and_never_trusted_blindly(db: Database) {
    let handler =
        CommandHandler::<Counter>::new(EventStore::new(db.clone())).with_snapshots_every(3);
    for _ in 0..7 {
        handler.execute("s", &Add::new(2)).await.unwrap();
    }
    let loaded = handler.load("s").await.unwrap();
    assert_eq!(
        (loaded.state.total, loaded.version, loaded.snapshot),
        (14, 7, Some(6))
    );

    // A snapshot written by another state shape is ignored: rebuilt from the events.
    sqlx::query("UPDATE es_snapshots SET snapshot_version = 99")
        .execute(db.pool())
        .await
        .unwrap();
    let loaded = handler.load("s").await.unwrap();
    assert_eq!((loaded.state.total, loaded.snapshot), (14, None));

    // So is one that does not decode.
    sqlx::query("UPDATE es_snapshots SET snapshot_version = 1, state = 'garbage'")
        .execute(db.pool())
        .await
        .unwrap();
    let loaded = handler.load("s").await.unwrap();
    assert_eq!((loaded.state.total, loaded.snapshot), (14, None));

    // The next multiple of 3 writes a fresh snapshot over it.
    handler.execute("s", &Add::new(2)).await.unwrap();
    handler.execute("s", &Add::new(2)).await.unwrap();
    let loaded = handler.load("s").await.unwrap();
    assert_eq!((loaded.state.total, loaded.snapshot), (18, Some(9)));
}

/// The counter's event as version 1 of the schema wrote it: `n` instead of `amount`.
#[derive(Debug, Serialize, Deserialize)]
enum CounterEventV1 {
    Added { n: u64 },
}

impl ferry_es::Event for CounterEventV1 {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

async fn old_schema_versions_are_upcast_on_read(db: Database) {
    let old = EventStore::new(db.clone());
    let m = Metadata::default();
    old.append("s", "Counter", 0, vec![CounterEventV1::Added { n: 5 }], &m)
        .await
        .unwrap();
    let current = EventStore::new(db.clone());
    current
        .append("s", "Counter", 1, vec![added(1)], &m)
        .await
        .unwrap();

    let stored: Vec<i64> = sqlx::query("SELECT schema_version FROM es_events ORDER BY version")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, [1, 2]);

    // Without an upcaster the old payload does not decode as today's event.
    let err = current.load::<Counter>("s").await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Decode {
                version: 1,
                schema_version: 1,
                ..
            }
        ),
        "{err:?}"
    );

    let upcasting = EventStore::new(db).with_upcaster(Upcaster::new("Added", 1, |mut p| {
        let n = p
            .as_object_mut()
            .and_then(|o| o.remove("n"))
            .ok_or("no n")?;
        p["amount"] = n;
        Ok(p)
    }));
    let loaded = upcasting.load::<Counter>("s").await.unwrap();
    assert_eq!(loaded.state.total, 6);
}

async fn outbox_rows_commit_with_the_events_they_carry(db: Database) {
    let handler =
        CommandHandler::<Counter>::new(EventStore::new(db.clone())).with_outbox("counters");
    let correlation_id = Uuid::now_v7();
    let metadata = Metadata {
        correlation_id: Some(correlation_id),
        ..Metadata::default()
    };
    let first = handler
        .execute_with("s", &Add::new(3), metadata)
        .await
        .unwrap();
    let second = handler.execute("s", &Add::new(4)).await.unwrap();

    let rows = sqlx::query(
        "SELECT topic, msg_key, message_id, type_name, headers, payload FROM ferry_outbox ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    for (row, committed) in rows.iter().zip([&first, &second]) {
        assert_eq!(row.get::<String, _>(0), "counters");
        assert_eq!(row.get::<String, _>(1), "counter");
        assert_eq!(
            row.get::<String, _>(2),
            committed.events[0].event_id.to_string(),
            "the message id is the event id, so consumers de-duplicate republished events"
        );
        assert_eq!(row.get::<String, _>(3), "Added");
    }
    let headers: String = rows[0].get(4);
    assert!(headers.contains(&correlation_id.to_string()), "{headers}");
    // Each message carries its event's version in the stream, for consumers' order checks.
    for (row, version) in rows.iter().zip(["1", "2"]) {
        let headers: Vec<(String, String)> =
            serde_json::from_str(&row.get::<String, _>(4)).unwrap();
        let stream_version = headers
            .iter()
            .find(|(name, _)| name == "ce_streamversion")
            .map(|(_, value)| value.as_str());
        assert_eq!(stream_version, Some(version), "{headers:?}");
    }
    let payload: Vec<u8> = rows[1].get(5);
    assert_eq!(payload, br#"{"amount":4}"#);
}

async fn failed_outbox_write_stores_no_event(db: Database) {
    let handler =
        CommandHandler::<Counter>::new(EventStore::new(db.clone())).with_outbox("counters");
    handler.execute("s", &Add::new(1)).await.unwrap();
    let command = Add {
        amount: 2,
        unpublishable: true,
        ..Add::default()
    };
    let err = handler.execute("s", &command).await.unwrap_err();
    assert!(
        matches!(
            err,
            ferry_es::CommandError::Store(Error::NotPublishable { .. })
        ),
        "{err:?}"
    );
    assert_eq!(handler.store().stream_version("s").await.unwrap(), 1);
    let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ferry_outbox")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(outbox, 1);
}

async fn rejected_command_stores_nothing(db: Database) {
    let handler = CommandHandler::<Counter>::new(EventStore::new(db));
    let err = handler.execute("s", &Add::new(0)).await.unwrap_err();
    assert_eq!(err.rejection(), Some(&common::AddZero));
    assert_eq!(handler.store().stream_version("s").await.unwrap(), 0);
}
