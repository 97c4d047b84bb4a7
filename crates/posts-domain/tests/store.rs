//! The post aggregate on the real event store, SQLite and PostgreSQL
//! (`FERRY_TEST_POSTGRES_URL`): concurrency, outbox, and every event type round-tripping.

use std::future::Future;
use std::time::Duration;

use ferry_es::{CommandHandler, EventStore};
use ferry_toolkit::sql::Database;
use posts_domain::{Post, PostCommand, PostError, PostEvent, TOPIC};
use sqlx::Row;
use uuid::Uuid;

async fn on_sqlite<F: FnOnce(Database) -> Fut, Fut: Future<Output = ()>>(test: F) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::connect(&Database::sqlite_url(dir.path(), "posts"))
        .await
        .unwrap();
    ferry_es::migrate(&db).await.unwrap();
    tokio::time::timeout(Duration::from_secs(120), test(db))
        .await
        .expect("the test timed out");
}

async fn on_postgres<F: FnOnce(Database) -> Fut, Fut: Future<Output = ()>>(test: F) {
    let Ok(url) = std::env::var("FERRY_TEST_POSTGRES_URL") else {
        println!("skipped: FERRY_TEST_POSTGRES_URL not set");
        return;
    };
    let schema = format!("posts_test_{}", Uuid::new_v4().simple());
    let db = Database::connect_in_schema(&url, &schema).await.unwrap();
    ferry_es::migrate(&db).await.unwrap();
    tokio::time::timeout(Duration::from_secs(120), test(db.clone()))
        .await
        .expect("the test timed out");
    db.close().await;
    let admin = Database::connect(&url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(admin.pool())
        .await
        .unwrap();
    admin.close().await;
}

fn handler(db: &Database) -> CommandHandler<Post> {
    CommandHandler::new(EventStore::new(db.clone()))
        .with_outbox(TOPIC)
        .with_max_retries(200)
}

/// 50 likes at once on one post, each through its own handler as if from 50 replicas of the
/// command service: each stored once, versions without gaps, each published once.
async fn fifty_concurrent_likes(db: Database) {
    let posts = handler(&db);
    let new = PostCommand::new_post("alice", "hello");
    let PostCommand::NewPost { post_id, .. } = &new else {
        unreachable!()
    };
    let id = post_id.to_string();
    posts.execute(&id, &new).await.unwrap();

    let likes: Vec<_> = (0..50)
        .map(|_| {
            let (posts, id) = (handler(&db), id.clone());
            tokio::spawn(async move { posts.execute(&id, &PostCommand::LikePost).await })
        })
        .collect();
    for like in likes {
        like.await.unwrap().unwrap();
    }

    let events = posts
        .store()
        .read_stream::<PostEvent>(&id, 1)
        .await
        .unwrap();
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        (2..=51).collect::<Vec<_>>(),
        "after PostCreated at 1"
    );
    assert!(
        events
            .iter()
            .all(|e| matches!(e.event, PostEvent::PostLiked(_)))
    );
    assert_eq!(posts.load(&id).await.unwrap().state.likes, 50);

    let rows = sqlx::query("SELECT msg_key, type_name, topic FROM ferry_outbox ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        51,
        "one outbox row per stored event, none for retried attempts"
    );
    assert!(
        rows.iter()
            .all(|r| r.get::<String, _>(0) == id && r.get::<String, _>(2) == TOPIC)
    );
    assert_eq!(rows[0].get::<String, _>(1), "PostCreated");
    assert_eq!(rows[50].get::<String, _>(1), "PostLiked");
}

/// A post's whole life through the store: every event type is stored, read back and folded.
async fn every_event_round_trips_through_the_store(db: Database) {
    let posts = handler(&db);
    let id = Uuid::now_v7();
    let stream = id.to_string();
    let run = |command: PostCommand| {
        let posts = posts.clone();
        let stream = stream.clone();
        async move { posts.execute(&stream, &command).await }
    };
    run(PostCommand::NewPost {
        post_id: id,
        author: "alice".into(),
        message: "hello".into(),
        at: 1,
    })
    .await
    .unwrap();
    run(PostCommand::EditMessage {
        message: "hello, world".into(),
    })
    .await
    .unwrap();
    run(PostCommand::LikePost).await.unwrap();
    let add = PostCommand::add_comment("first", "bob");
    let PostCommand::AddComment { comment_id, .. } = add else {
        unreachable!()
    };
    run(add).await.unwrap();
    let keep = PostCommand::add_comment("second", "carol");
    let PostCommand::AddComment {
        comment_id: kept, ..
    } = keep
    else {
        unreachable!()
    };
    run(keep).await.unwrap();
    run(PostCommand::edit_comment(comment_id, "first!", "BOB"))
        .await
        .unwrap();
    run(PostCommand::RemoveComment {
        comment_id,
        username: "bob".into(),
    })
    .await
    .unwrap();
    run(PostCommand::DeletePost {
        username: "Alice".into(),
    })
    .await
    .unwrap();
    let refused = run(PostCommand::LikePost).await.unwrap_err();
    assert_eq!(
        refused.rejection(),
        Some(&PostError::PostDeleted(posts_domain::PostAction::Like))
    );

    let types: Vec<&str> = posts
        .store()
        .read_stream::<PostEvent>(&stream, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| ferry_es::Event::event_type(&e.event))
        .collect();
    assert_eq!(
        types,
        [
            "PostCreated",
            "MessageUpdated",
            "PostLiked",
            "CommentAdded",
            "CommentAdded",
            "CommentUpdated",
            "CommentRemoved",
            "PostRemoved"
        ]
    );
    let post = posts.load(&stream).await.unwrap().state;
    assert_eq!(post.message, "hello, world");
    assert_eq!(post.likes, 1);
    assert_eq!(post.comments.keys().copied().collect::<Vec<_>>(), [kept]);
    assert!(post.deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_fifty_concurrent_likes() {
    on_sqlite(fifty_concurrent_likes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fifty_concurrent_likes() {
    on_postgres(fifty_concurrent_likes).await;
}

#[tokio::test]
async fn sqlite_every_event_round_trips_through_the_store() {
    on_sqlite(every_event_round_trips_through_the_store).await;
}

#[tokio::test]
async fn postgres_every_event_round_trips_through_the_store() {
    on_postgres(every_event_round_trips_through_the_store).await;
}
