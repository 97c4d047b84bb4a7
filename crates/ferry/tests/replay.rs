//! `ferry replay posts` as a person runs it: against the databases where `ferry up` keeps them
//! (SQLite files under `--data`, or PostgreSQL with `--database-url` when
//! `FERRY_TEST_POSTGRES_URL` is set), twice, and from scratch with `--reset`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_es::{CommandHandler, EventStore};
use ferry_testkit::pg::FreshDatabase;
use ferry_toolkit::sql::Database;
use posts_domain::{Post, PostCommand};
use sqlx::Row;
use uuid::Uuid;

/// Longest one run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `ferry ARGS`, killing it after RUN_TIMEOUT.
fn ferry(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry");
    let deadline = Instant::now() + RUN_TIMEOUT;
    while child.try_wait().expect("poll ferry").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ferry {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect ferry's output")
}

/// Runs a replay that must succeed; returns its stdout.
#[track_caller]
fn replay(args: &[&str]) -> String {
    let out = ferry(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ferry {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Writes three posts to the event store in `store`, as the command service would: one with
/// 10 likes, one with a comment, one deleted. 15 events. Returns the first two ids.
async fn seed(store: Database) -> (Uuid, Uuid) {
    ferry_es::migrate(&store).await.unwrap();
    let posts = CommandHandler::<Post>::new(EventStore::new(store));
    let mut ids = Vec::new();
    for (author, message) in [("ann", "liked"), ("bo", "commented"), ("cy", "deleted")] {
        let command = PostCommand::new_post(author, message);
        let PostCommand::NewPost { post_id, .. } = &command else {
            unreachable!()
        };
        posts.execute(&post_id.to_string(), &command).await.unwrap();
        ids.push(*post_id);
    }
    for _ in 0..10 {
        posts
            .execute(&ids[0].to_string(), &PostCommand::LikePost)
            .await
            .unwrap();
    }
    posts
        .execute(
            &ids[1].to_string(),
            &PostCommand::add_comment("nice", "ann"),
        )
        .await
        .unwrap();
    posts
        .execute(
            &ids[2].to_string(),
            &PostCommand::DeletePost {
                username: "cy".into(),
            },
        )
        .await
        .unwrap();
    (ids[0], ids[1])
}

/// The read model as (post, likes, comments), by post id.
async fn read_model(db: &Database) -> Vec<(String, i64, i64)> {
    sqlx::query(
        "SELECT p.id, p.likes, (SELECT COUNT(*) FROM comments c WHERE c.post_id = p.id)
         FROM posts p ORDER BY p.id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1), row.get(2)))
    .collect()
}

/// Three runs: all applied, then nothing applied (safe twice), then all applied after a reset;
/// the read model is the same after each.
async fn replays_twice_and_from_scratch(
    args: &[&str],
    store: Database,
    query: impl AsyncFn() -> Database,
) {
    let (liked, commented) = seed(store).await;
    let expected = {
        let mut rows = vec![(liked.to_string(), 10, 0), (commented.to_string(), 0, 1)];
        rows.sort();
        rows
    };
    let mut replay_args = vec!["replay", "posts"];
    replay_args.extend_from_slice(args);

    let out = replay(&replay_args);
    assert!(
        out.contains("replayed 15 event(s)") && out.contains("15 applied, 0 already there"),
        "{out}"
    );
    assert_eq!(read_model(&query().await).await, expected);

    let out = replay(&replay_args);
    assert!(out.contains("0 applied, 15 already there"), "{out}");
    assert_eq!(
        read_model(&query().await).await,
        expected,
        "likes never double"
    );

    replay_args.push("--reset");
    let out = replay(&replay_args);
    assert!(out.contains("15 applied, 0 already there"), "{out}");
    assert_eq!(read_model(&query().await).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_posts_rebuilds_the_read_model_and_is_safe_twice_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let store = Database::connect(&Database::sqlite_url(dir.path(), "posts-command"))
        .await
        .unwrap();
    let query = async || {
        Database::connect(&Database::sqlite_url(dir.path(), "posts-query"))
            .await
            .unwrap()
    };
    replays_twice_and_from_scratch(&["--data", data], store, query).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_posts_rebuilds_the_read_model_and_is_safe_twice_on_postgres() {
    // Prints "skipped: FERRY_TEST_POSTGRES_URL not set" when unset.
    let Some(url) = ferry_testkit::postgres_url() else {
        return;
    };
    // The services pick their schemas (posts_command, posts_query): a database of its own
    // keeps this run apart from every other.
    let db = FreshDatabase::create(&url, "replay").await;
    let store = Database::connect_in_schema(&db.url, "posts_command")
        .await
        .unwrap();
    let query = async || {
        Database::connect_in_schema(&db.url, "posts_query")
            .await
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    replays_twice_and_from_scratch(&["--data", data, "--database-url", &db.url], store, query)
        .await;
}

#[test]
fn replay_posts_without_an_event_store_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(&["replay", "posts", "--data", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: no posts event store at"),
        "{stderr}"
    );
    assert!(
        !Path::new(&dir.path().join("posts-command.db")).exists(),
        "a wrong --data creates nothing"
    );
}
