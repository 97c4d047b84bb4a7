//! The posts system end to end over HTTP, against the built-in broker in-process, with real
//! Kafka clients. The cases that depend on the store run on SQLite and on PostgreSQL
//! (`FERRY_TEST_POSTGRES_URL`, each service in a fresh database; skipped with a message when
//! unset).

use std::time::{Duration, Instant};

use ferry_service::ServiceConfig;
use ferry_testkit::pg::FreshDatabase;
use ferry_testkit::{RawMessage, consume_until, produce_raw};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any condition may take to hold.
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs each case on SQLite and on PostgreSQL.
macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Store::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    // Prints "skipped: FERRY_TEST_POSTGRES_URL not set" when unset.
                    let Some(url) = ferry_testkit::postgres_url() else {
                        return;
                    };
                    super::$case(super::Store::Postgres(url)).await
                }
            )*
        }
    };
}

on_both_stores!(
    fifty_concurrent_likes_count_once_and_restore_read_db_is_idempotent,
    gap_is_filled_before_applying,
    liked_twice_on_redelivery_counts_once,
    comments_rules_and_errors,
);

/// Where the services keep their tables.
#[derive(Debug, Clone)]
enum Store {
    /// SQLite files in a temp directory.
    Sqlite,
    /// This PostgreSQL server.
    Postgres(String),
}

/// Databases nobody else uses, dropped at the end: a temp directory per SQLite config, a
/// PostgreSQL database per PostgreSQL config (the services pick their schemas, `posts_command`
/// and `posts_query`, so a fresh database is what keeps tests and runs apart).
struct Databases {
    store: Store,
    dirs: Vec<tempfile::TempDir>,
    postgres: Vec<FreshDatabase>,
}

impl Databases {
    fn new(store: Store) -> Databases {
        Databases {
            store,
            dirs: Vec::new(),
            postgres: Vec::new(),
        }
    }

    /// A config whose databases are fresh and empty.
    async fn config(&mut self, bootstrap: &str) -> ServiceConfig {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServiceConfig::new(bootstrap, dir.path(), 0);
        self.dirs.push(dir);
        if let Store::Postgres(url) = &self.store {
            let db = FreshDatabase::create(url, "posts").await;
            config.database_url = Some(db.url.clone());
            self.postgres.push(db);
        }
        config
    }
}

/// The broker, both services, and a client.
struct System {
    _broker: ferry_broker::BrokerHandle,
    bootstrap: String,
    command: String,
    query: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    query_stop: CancellationToken,
    query_task: Option<JoinHandle<()>>,
    databases: Databases,
}

impl System {
    async fn start(store: Store) -> System {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn")
            .with_test_writer()
            .try_init();
        let mut databases = Databases::new(store);
        let broker_dir = tempfile::tempdir().unwrap();
        let broker = ferry_broker::start(ferry_broker::BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: broker_dir.path().join("broker"),
            ..Default::default()
        })
        .await
        .unwrap();
        databases.dirs.insert(0, broker_dir);
        let bootstrap = broker.bootstrap_servers();
        let shutdown = CancellationToken::new();
        let config = databases.config(&bootstrap).await;
        let command = posts::start_command(config, shutdown.clone())
            .await
            .unwrap();
        let mut s = System {
            _broker: broker,
            bootstrap,
            command: format!("http://{}", command.addr),
            query: String::new(),
            http: reqwest::Client::new(),
            query_stop: CancellationToken::new(),
            query_task: None,
            shutdown,
            databases,
        };
        s.start_query().await;
        s
    }

    /// Starts a query service with an empty read model, in the consumer group (so it resumes
    /// at the group's committed offsets).
    async fn start_query(&mut self) {
        let mut config = self.databases.config(&self.bootstrap).await;
        config
            .peers
            .insert(posts::COMMAND_SERVICE.to_owned(), self.command.clone());
        self.query_stop = self.shutdown.child_token();
        let query = posts::start_query(config, self.query_stop.clone())
            .await
            .unwrap();
        self.query = format!("http://{}", query.addr);
        self.query_task = Some(query.task);
    }

    /// The read model is lost: the query service stops (it has left the consumer group when
    /// this returns) and a new one with an empty database takes over the group.
    async fn replace_query_with_an_empty_one(&mut self) {
        self.query_stop.cancel();
        if let Some(task) = self.query_task.take() {
            task.await.unwrap();
        }
        self.start_query().await;
    }

    async fn call(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{base}{path}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A request to the command service.
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(&self.command, method, path, body).await
    }

    /// A GET from the query service.
    async fn read(&self, path: &str) -> (StatusCode, Value) {
        self.call(&self.query, Method::GET, path, None).await
    }

    async fn new_post(&self, author: &str, message: &str) -> String {
        let (status, body) = self
            .send(
                Method::POST,
                "/api/v1/NewPost",
                Some(json!({"author": author, "message": message})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"]
            .as_str()
            .expect("NewPost returns the id")
            .to_owned()
    }

    async fn like(&self, id: &str) {
        let (status, body) = self
            .send(Method::PUT, &format!("/api/v1/LikePost/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn comment(&self, id: &str, comment: &str) {
        let (status, body) = self
            .send(
                Method::PUT,
                &format!("/api/v1/AddComment/{id}"),
                Some(json!({"comment": comment, "username": "bob"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Poll the query service until `cond` holds for the answer to `path`, or fail.
    async fn until(&self, path: &str, cond: impl Fn(StatusCode, &Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (status, body) = self.read(path).await;
            if cond(status, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never satisfied the condition; last: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `RestoreReadDb` on `base` (either service); polls the query service until the job has
    /// finished, asserts it is done, and returns its report.
    async fn restore(&self, base: &str, query: &str) -> Value {
        let (status, accepted) = self
            .call(
                base,
                Method::POST,
                &format!("/api/v1/RestoreReadDb{query}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        let job = accepted["job"].as_str().expect("a job id").to_owned();
        let report = self
            .until(&format!("/api/v1/RestoreReadDb/{job}"), |status, b| {
                status == StatusCode::OK && (b["state"] == "done" || b["state"] == "failed")
            })
            .await;
        assert_eq!(report["state"], "done", "{report}");
        report
    }

    /// The post after a comment `marker`, staged after everything before, has been applied:
    /// the post's messages share a partition, so everything before it was consumed too.
    async fn after_marker(&self, id: &str, marker: &str) -> Value {
        self.comment(id, marker).await;
        let body = self
            .until(&format!("/api/v1/PostLookup/byId/{id}"), |_, b| {
                b["posts"][0]["comments"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["comment"] == marker))
            })
            .await;
        body["posts"][0].clone()
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Produces `message` to `topic` as it was read (same key, headers and payload).
async fn produce(bootstrap: &str, topic: &str, message: &RawMessage) {
    let headers: Vec<(&str, &str)> = message
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    produce_raw(
        bootstrap,
        topic,
        &message.key,
        &headers,
        message.payload.as_bytes(),
    )
    .await;
}

/// The post's messages on the topic, once `n` of them are there.
async fn messages_of(bootstrap: &str, id: &str, n: usize) -> Vec<RawMessage> {
    consume_until(bootstrap, posts_domain::TOPIC, |read| {
        read.iter().filter(|m| m.key == id).count() >= n
    })
    .await
    .into_iter()
    .filter(|m| m.key == id)
    .collect()
}

async fn fifty_concurrent_likes_count_once_and_restore_read_db_is_idempotent(store: Store) {
    let mut s = System::start(store).await;
    let id = s.new_post("alice", "hello world").await;
    let by_id = format!("/api/v1/PostLookup/byId/{id}");

    let likes = (0..50).map(|_| s.like(&id));
    futures::future::join_all(likes).await;

    // The store numbers the post's events 1 (PostCreated) to 51, and the feed serves them so.
    let (status, feed) = s
        .send(Method::GET, &format!("/api/v1/EventFeed/byPost/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{feed}");
    let events = feed["events"].as_array().unwrap();
    let versions: Vec<i64> = events
        .iter()
        .map(|e| e["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, (1..=51).collect::<Vec<_>>());
    assert_eq!(events[0]["type"], "PostCreated");
    assert!(
        events[1..].iter().all(|e| e["type"] == "PostLiked"),
        "{feed}"
    );

    // Each message on the topic carries its event's version, in order.
    let messages = messages_of(&s.bootstrap, &id, 51).await;
    let on_the_wire: Vec<Option<&str>> = messages
        .iter()
        .map(|m| m.header("ce_streamversion"))
        .collect();
    let expected: Vec<String> = (1..=51).map(|v: i64| v.to_string()).collect();
    assert_eq!(
        on_the_wire,
        expected
            .iter()
            .map(|v| Some(v.as_str()))
            .collect::<Vec<_>>()
    );

    let before = s.until(&by_id, |_, b| b["posts"][0]["likes"] == 50).await;
    assert_eq!(before["posts"][0]["author"], "alice");
    assert_eq!(before["message"], "Successfully returned 1 post(s)!");

    // Twice, through the command service: everything is there already, nothing is applied.
    for _ in 0..2 {
        let report = s.restore(&s.command.clone(), "").await;
        assert_eq!(
            (&report["read"], &report["applied"], &report["skipped"]),
            (&json!(51), &json!(0), &json!(51)),
            "{report}"
        );
    }
    let (_, restored) = s.read("/api/v1/PostLookup").await;
    assert_eq!(restored["posts"][0]["likes"], 50, "{restored}");
    assert_eq!(restored["posts"][0], before["posts"][0]);

    // From scratch: a query service with an empty read model, rebuilt from the event store,
    // shows the same read model.
    s.replace_query_with_an_empty_one().await;
    let (_, empty) = s.read("/api/v1/PostLookup").await;
    assert_eq!(empty["posts"], json!([]), "{empty}");
    let report = s.restore(&s.command.clone(), "").await;
    assert_eq!(
        (&report["read"], &report["applied"]),
        (&json!(51), &json!(51)),
        "{report}"
    );
    let (_, rebuilt) = s.read("/api/v1/PostLookup").await;
    assert_eq!(rebuilt, restored);

    // And a reset (empty first, then rebuild) on the query service itself, twice.
    for _ in 0..2 {
        let report = s.restore(&s.query.clone(), "?reset=true").await;
        assert_eq!(report["applied"], 51, "{report}");
    }
    let (_, reset) = s.read("/api/v1/PostLookup").await;
    assert_eq!(reset, restored);
    let (_, liked) = s.read("/api/v1/PostLookup/withLikes/51").await;
    assert_eq!(liked["posts"], json!([]), "{liked}");
}

/// The regression: a wiped read model used to get a post's new event before its restored
/// `PostCreated`, and lost it. Now the gap makes the post catch up from the event store first.
async fn gap_is_filled_before_applying(store: Store) {
    let mut s = System::start(store).await;
    let id = s.new_post("erin", "before the wipe").await;
    for _ in 0..3 {
        s.like(&id).await;
    }
    let by_id = format!("/api/v1/PostLookup/byId/{id}");
    s.until(&by_id, |_, b| b["posts"][0]["likes"] == 3).await;

    s.replace_query_with_an_empty_one().await;
    let (status, _) = s.read(&by_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the read model is empty");

    // Version 5 arrives at a read model at version 0: versions 1 to 5 are applied, in order,
    // without any RestoreReadDb.
    s.like(&id).await;
    let body = s.until(&by_id, |st, _| st == StatusCode::OK).await;
    assert_eq!(body["posts"][0]["likes"], 4, "{body}");
    assert_eq!(body["posts"][0]["message"], "before the wipe");
    let post = s.after_marker(&id, "marker").await;
    assert_eq!(post["likes"], 4, "{post}");
    // A restore now finds everything there.
    let report = s.restore(&s.command.clone(), "").await;
    assert_eq!(report["applied"], 0, "{report}");
}

async fn liked_twice_on_redelivery_counts_once(store: Store) {
    let s = System::start(store).await;
    let id = s.new_post("frank", "like me once").await;
    s.like(&id).await;
    let by_id = format!("/api/v1/PostLookup/byId/{id}");
    s.until(&by_id, |_, b| b["posts"][0]["likes"] == 1).await;

    let messages = messages_of(&s.bootstrap, &id, 2).await;
    let liked = messages
        .iter()
        .find(|m| m.header("ce_type") == Some("PostLiked"))
        .expect("the PostLiked message")
        .clone();
    assert_eq!(liked.header("ce_streamversion"), Some("2"));
    // The same message again, as a redelivery would bring it ...
    produce(&s.bootstrap, posts_domain::TOPIC, &liked).await;
    // ... and again under a new message id, as a republication would: the version says it
    // is the same event.
    let mut republished = liked.clone();
    for (name, value) in &mut republished.headers {
        if name == "ce_id" {
            *value = uuid::Uuid::now_v7().to_string();
        }
    }
    produce(&s.bootstrap, posts_domain::TOPIC, &republished).await;

    let post = s.after_marker(&id, "marker").await;
    assert_eq!(post["likes"], 1, "{post}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ahead_of_the_event_store_is_dead_lettered_not_applied() {
    let s = System::start(Store::Sqlite).await;
    let id = s.new_post("gina", "nothing skips ahead").await;
    s.like(&id).await;
    let messages = messages_of(&s.bootstrap, &id, 2).await;
    let mut ahead = messages[1].clone();
    for (name, value) in &mut ahead.headers {
        match name.as_str() {
            "ce_id" => *value = uuid::Uuid::now_v7().to_string(),
            "ce_streamversion" => *value = "9".into(),
            _ => {}
        }
    }
    produce(&s.bootstrap, posts_domain::TOPIC, &ahead).await;

    let dead = consume_until(&s.bootstrap, "SocialMediaPostEvents.dlq", |r| !r.is_empty()).await;
    assert_eq!(dead[0].header("ce_streamversion"), Some("9"));
    assert!(
        dead[0]
            .header("ferry-dlq-error")
            .is_some_and(|e| e.contains("up to version 2 only")),
        "{:?}",
        dead[0]
    );
    let post = s.after_marker(&id, "marker").await;
    assert_eq!(post["likes"], 1, "{post}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_feed_serves_the_store_in_pages() {
    let s = System::start(Store::Sqlite).await;
    let first = s.new_post("hal", "one").await;
    let second = s.new_post("ida", "two").await;
    s.like(&first).await;

    let (status, page) = s.send(Method::GET, "/api/v1/EventFeed?limit=2", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let positions: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2]);
    assert_eq!(page["events"][1]["streamId"], second.as_str());
    assert_eq!(page["events"][1]["data"]["author"], "ida");
    let (_, rest) = s.send(Method::GET, "/api/v1/EventFeed?after=2", None).await;
    assert_eq!(rest["events"][0]["type"], "PostLiked", "{rest}");
    assert_eq!(rest["events"][0]["version"], 2, "{rest}");
    let (_, count) = s
        .send(Method::GET, "/api/v1/EventFeed/count?after=1", None)
        .await;
    assert_eq!(count["count"], 2, "{count}");
    let (_, stream) = s
        .send(
            Method::GET,
            &format!("/api/v1/EventFeed/byPost/{first}?afterVersion=1"),
            None,
        )
        .await;
    assert_eq!(stream["events"].as_array().unwrap().len(), 1, "{stream}");

    for bad in [
        "/api/v1/EventFeed?limit=0",
        "/api/v1/EventFeed?limit=5000",
        "/api/v1/EventFeed?after=x",
    ] {
        let (status, err) = s.send(Method::GET, bad, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
        assert_eq!(err["error"]["code"], "invalid_parameter", "{bad}");
    }
    let (status, _) = s.read("/api/v1/RestoreReadDb/not-a-job").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn comments_rules_and_errors(store: Store) {
    let s = System::start(store).await;
    let id = s.new_post("Alice", "first").await;
    let other = s.new_post("carol", "second").await;

    // Unknown posts are 404 on both sides.
    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("/api/v1/LikePost/{unknown}"),
        "/api/v1/LikePost/not-a-uuid".to_owned(),
    ] {
        let (status, err) = s.send(Method::PUT, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {err}");
        assert_eq!(err["error"]["code"], "not_found");
    }
    let (status, err) = s.read(&format!("/api/v1/PostLookup/byId/{unknown}")).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    // Invalid input is a 422 on the field.
    let (status, err) = s
        .send(
            Method::POST,
            "/api/v1/NewPost",
            Some(json!({"author": "x", "message": "  "})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "invalid_field");

    // Comments: AddComment answers with the comment id, which EditComment and RemoveComment use.
    let (status, added) = s
        .send(
            Method::PUT,
            &format!("/api/v1/AddComment/{id}"),
            Some(json!({"comment": "nice", "username": "Bob"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{added}");
    let comment_id = added["commentId"]
        .as_str()
        .expect("AddComment returns the comment id")
        .to_owned();
    let (status, err) = s
        .send(
            Method::PUT,
            &format!("/api/v1/EditComment/{id}"),
            Some(json!({"commentId": comment_id, "comment": "hacked", "username": "mallory"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(
        err["error"]["message"],
        "only the author of a comment may edit it"
    );
    let (status, body) = s
        .send(
            Method::PUT,
            &format!("/api/v1/EditComment/{id}"),
            Some(json!({"commentId": comment_id, "comment": "very nice", "username": "bob"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = s
        .until("/api/v1/PostLookup/withComments", |_, b| {
            b["posts"][0]["comments"][0]["comment"] == "very nice"
        })
        .await;
    assert_eq!(body["posts"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        body["posts"][0]["comments"][0]["commentId"],
        comment_id.as_str()
    );
    assert_eq!(body["posts"][0]["comments"][0]["edited"], true);
    let (status, body) = s
        .send(
            Method::DELETE,
            &format!("/api/v1/RemoveComment/{id}"),
            Some(json!({"commentId": comment_id, "username": "bob"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    s.until("/api/v1/PostLookup/withComments", |_, b| {
        b["posts"].as_array().is_some_and(Vec::is_empty)
    })
    .await;

    let (_, mine) = s.read("/api/v1/PostLookup/byAuthor/lic").await;
    assert_eq!(mine["posts"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["posts"][0]["postId"], id.as_str());

    // Only the author deletes, once; a deleted post refuses edits with the rule's message.
    let (status, err) = s
        .send(
            Method::DELETE,
            &format!("/api/v1/DeletePost/{id}"),
            Some(json!({"username": "bob"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(
        err["error"]["message"],
        "only the author of a post may delete it"
    );
    let (status, body) = s
        .send(
            Method::DELETE,
            &format!("/api/v1/DeletePost/{id}"),
            Some(json!({"username": "alice"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, err) = s
        .send(
            Method::PUT,
            &format!("/api/v1/EditMessage/{id}"),
            Some(json!({"message": "again"})),
        )
        .await;
    assert!(status.is_client_error(), "{status} {err}");
    assert_eq!(err["error"]["code"], "rule_violated");
    assert_eq!(
        err["error"]["message"],
        "you cannot edit the message of a deleted post"
    );
    s.until(&format!("/api/v1/PostLookup/byId/{id}"), |st, _| {
        st == StatusCode::NOT_FOUND
    })
    .await;
    let (status, _) = s.read(&format!("/api/v1/PostLookup/byId/{other}")).await;
    assert_eq!(status, StatusCode::OK);

    // A deleted post stays deleted through a rebuild.
    let report = s.restore(&s.command.clone(), "?reset=true").await;
    assert_eq!(report["state"], "done", "{report}");
    let (status, _) = s.read(&format!("/api/v1/PostLookup/byId/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, all) = s.read("/api/v1/PostLookup").await;
    assert_eq!(all["posts"].as_array().unwrap().len(), 1, "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_dead_lettered_and_the_next_is_applied() {
    let s = System::start(Store::Sqlite).await;
    produce_raw(&s.bootstrap, posts_domain::TOPIC, "x", &[], b"{not json").await;
    let id = s.new_post("dave", "after the poison").await;
    s.until(&format!("/api/v1/PostLookup/byId/{id}"), |st, _| {
        st == StatusCode::OK
    })
    .await;
    let dead = consume_until(&s.bootstrap, "SocialMediaPostEvents.dlq", |r| !r.is_empty()).await;
    assert_eq!(
        dead[0].payload, "{not json",
        "the poison message is in SocialMediaPostEvents.dlq"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_has_an_openapi_document_and_unknown_paths_are_json_404() {
    let s = System::start(Store::Sqlite).await;
    for base in [&s.command, &s.query] {
        let (status, spec) = s.call(base, Method::GET, "/openapi.json", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            spec["paths"].as_object().is_some_and(|p| !p.is_empty()),
            "{spec}"
        );
        assert!(
            spec["paths"]["/api/v1/RestoreReadDb"].is_object(),
            "{base}: {spec}"
        );
        let (status, body) = s.call(base, Method::GET, "/nowhere", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_found");
    }
}
