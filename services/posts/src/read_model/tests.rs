//! The read model's version check, case by case, and racing appliers, on SQLite and on
//! PostgreSQL (`FERRY_TEST_POSTGRES_URL`, a fresh database per test; skipped when unset).

use std::future::Future;

use ferry_es::CommandHandler;
use ferry_toolkit::sql::Database;
use posts_domain::{
    CommentAdded, Post, PostCommand, PostCreated, PostEvent, PostLiked, PostRemoved,
};
use sqlx::Row;
use uuid::Uuid;

use super::*;
use crate::rebuild::{RebuildOptions, rebuild_read_model};

async fn on_sqlite<F: FnOnce(Database) -> Fut, Fut: Future<Output = ()>>(test: F) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::connect(&Database::sqlite_url(dir.path(), "posts"))
        .await
        .unwrap();
    test(db).await;
}

async fn on_postgres<F: FnOnce(Database) -> Fut, Fut: Future<Output = ()>>(test: F) {
    let Some(url) = ferry_testkit::postgres_url() else {
        return;
    };
    let fresh = ferry_testkit::pg::FreshDatabase::create(&url, "posts_rm").await;
    let db = Database::connect(&fresh.url).await.unwrap();
    test(db.clone()).await;
    db.close().await;
}

macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::on_sqlite(super::$case).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::on_postgres(super::$case).await
                }
            )*
        }
    };
}

on_both_stores!(
    each_event_applies_once_and_only_in_order,
    runs_apply_the_part_the_read_model_lacks,
    a_deleted_post_stays_deleted_on_redelivery,
    rebuilds_racing_the_consumer_and_a_reset_count_every_like_once,
);

/// The post's `(likes, version)` in the read model; `likes` is `None` without a post row.
async fn state(db: &Database, post_id: Uuid) -> (Option<i64>, i64) {
    let likes = sqlx::query("SELECT likes FROM posts WHERE id = $1")
        .bind(post_id.to_string())
        .fetch_optional(db.pool())
        .await
        .unwrap()
        .map(|row| row.get::<i64, _>(0));
    (likes, version_of(db, post_id).await.unwrap())
}

/// A post's stream: created, then `likes` likes (versions 1..=1+likes).
fn stream(post_id: Uuid, likes: usize) -> Vec<(i64, PostEvent)> {
    let mut events = vec![PostEvent::from(PostCreated {
        post_id,
        author: "ann".into(),
        message: "hi".into(),
        date_posted: 1,
    })];
    events.extend((0..likes).map(|_| PostEvent::from(PostLiked { post_id })));
    (1..).zip(events).collect()
}

/// Applies versions `from..=to` of `events` as one run and checks the outcome and the state.
#[track_caller]
fn check_run<'a>(
    db: &'a Database,
    events: &'a [(i64, PostEvent)],
    (from, to): (i64, i64),
    expected: RunOutcome,
    expected_state: (Option<i64>, i64),
) -> impl Future<Output = ()> + 'a {
    let caller = std::panic::Location::caller();
    async move {
        let run: Vec<(i64, &PostEvent)> = events
            .iter()
            .filter(|(v, _)| (from..=to).contains(v))
            .map(|(v, e)| (*v, e))
            .collect();
        let post_id = run[0].1.post_id();
        let mut tx = db.begin().await.unwrap();
        let outcome = apply_run_in(&mut tx, &run).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(outcome, expected, "run {from}..={to} (checked at {caller})");
        assert_eq!(
            state(db, post_id).await,
            expected_state,
            "after run {from}..={to} (checked at {caller})"
        );
    }
}

const fn applied(n: u64) -> RunOutcome {
    RunOutcome {
        applied: n,
        skipped: 0,
        gap: None,
    }
}

async fn each_event_applies_once_and_only_in_order(db: Database) {
    migrate(&db).await.unwrap();
    let post_id = Uuid::now_v7();
    let events = stream(post_id, 3);
    let one = |v: i64| &events[usize::try_from(v - 1).unwrap()].1;

    assert_eq!(
        apply_one(&db, 2, one(2)).await.unwrap(),
        Outcome::Gap { last: 0 }
    );
    assert_eq!(apply_one(&db, 1, one(1)).await.unwrap(), Outcome::Applied);
    assert_eq!(apply_one(&db, 1, one(1)).await.unwrap(), Outcome::Duplicate);
    assert_eq!(
        apply_one(&db, 3, one(3)).await.unwrap(),
        Outcome::Gap { last: 1 }
    );
    assert_eq!(apply_one(&db, 2, one(2)).await.unwrap(), Outcome::Applied);
    assert_eq!(apply_one(&db, 2, one(2)).await.unwrap(), Outcome::Duplicate);
    assert_eq!(apply_one(&db, 3, one(3)).await.unwrap(), Outcome::Applied);
    assert_eq!(state(&db, post_id).await, (Some(2), 3));
}

async fn runs_apply_the_part_the_read_model_lacks(db: Database) {
    migrate(&db).await.unwrap();
    let post_id = Uuid::now_v7();
    let events = stream(post_id, 9);
    check_run(&db, &events, (1, 4), applied(4), (Some(3), 4)).await;
    check_run(
        &db,
        &events,
        (2, 4),
        RunOutcome {
            skipped: 3,
            ..RunOutcome::default()
        },
        (Some(3), 4),
    )
    .await;
    // Overlapping: the first two are there, the rest is applied.
    check_run(
        &db,
        &events,
        (3, 7),
        RunOutcome {
            applied: 3,
            skipped: 2,
            gap: None,
        },
        (Some(6), 7),
    )
    .await;
    // Past a gap: nothing.
    check_run(
        &db,
        &events,
        (9, 10),
        RunOutcome {
            gap: Some(7),
            ..RunOutcome::default()
        },
        (Some(6), 7),
    )
    .await;
    check_run(&db, &events, (8, 10), applied(3), (Some(9), 10)).await;
}

async fn a_deleted_post_stays_deleted_on_redelivery(db: Database) {
    migrate(&db).await.unwrap();
    let post_id = Uuid::now_v7();
    let mut events = stream(post_id, 1);
    events.push((
        3,
        PostEvent::from(CommentAdded {
            post_id,
            comment_id: Uuid::now_v7(),
            comment: "c".into(),
            username: "bo".into(),
            comment_date: 2,
        }),
    ));
    events.push((4, PostEvent::from(PostRemoved { post_id })));
    check_run(&db, &events, (1, 4), applied(4), (None, 4)).await;
    assert_eq!(
        apply_one(&db, 1, &events[0].1).await.unwrap(),
        Outcome::Duplicate
    );
    let comments: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM comments")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!((state(&db, post_id).await, comments), ((None, 4), 0));
}

/// The consumer applies every event as it comes while two rebuilds and a reset-rebuild run:
/// every like counts once, and the post ends at its last version.
async fn rebuilds_racing_the_consumer_and_a_reset_count_every_like_once(db: Database) {
    const LIKES: usize = 300;
    // One database for the event store and the read model is enough here: the tables differ.
    let source = EventSource::event_store(db.clone()).await.unwrap();
    migrate(&db).await.unwrap();
    let posts = CommandHandler::<Post>::new(ferry_es::EventStore::new(db.clone()));
    let mut ids = Vec::new();
    for author in ["ann", "bo"] {
        let command = PostCommand::new_post(author, "race");
        let PostCommand::NewPost { post_id, .. } = &command else {
            unreachable!()
        };
        posts.execute(&post_id.to_string(), &command).await.unwrap();
        ids.push(*post_id);
    }
    let mut recorded = Vec::new();
    for i in 0..LIKES {
        let committed = posts
            .execute(&ids[i % 2].to_string(), &PostCommand::LikePost)
            .await
            .unwrap();
        recorded.extend(committed.events);
    }

    let consumer = {
        let db = db.clone();
        tokio::spawn(async move {
            for r in recorded {
                // A gap here is the reset's doing; the rebuilds fill it.
                apply_one(&db, r.version, &r.event).await.unwrap();
            }
        })
    };
    let rebuild = |reset: bool, batch_size: usize| {
        let (source, db) = (source.clone(), db.clone());
        tokio::spawn(async move {
            let options = RebuildOptions {
                reset,
                batch_size,
                ..RebuildOptions::default()
            };
            rebuild_read_model(&source, &db, &options, |_| {})
                .await
                .unwrap()
        })
    };
    let (a, b, c) = (rebuild(false, 7), rebuild(false, 50), rebuild(true, 13));
    consumer.await.unwrap();
    for r in [a, b, c] {
        assert_eq!(r.await.unwrap().read, (LIKES + 2) as u64);
    }
    // Whatever the interleaving, one more catch-up per post brings each to the store's end,
    // and no like was counted twice.
    for id in &ids {
        sync_post(&source, &db, *id).await.unwrap();
        let likes = (LIKES / 2) as i64;
        assert_eq!(state(&db, *id).await, (Some(likes), likes + 1));
    }
}
