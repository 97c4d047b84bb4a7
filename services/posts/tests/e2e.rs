//! The posts system end to end over HTTP, against the built-in broker in-process.

use std::time::{Duration, Instant};

use ferry_service::ServiceConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct System {
    _broker: ferry_broker::BrokerHandle,
    bootstrap: String,
    command: String,
    query: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start() -> System {
    start_with(None).await
}

/// Start the system; the query service stops with `query_shutdown` if given, else with the
/// system.
async fn start_with(query_shutdown: Option<CancellationToken>) -> System {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let broker = ferry_broker::start(ferry_broker::BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("broker"),
        ..Default::default()
    })
    .await
    .unwrap();
    let bootstrap = broker.bootstrap_servers();
    let shutdown = CancellationToken::new();
    let config = ServiceConfig::new(&bootstrap, dir.path(), 0);
    let command = posts::start_command(config.clone(), shutdown.clone())
        .await
        .unwrap();
    let query = posts::start_query(config, query_shutdown.unwrap_or_else(|| shutdown.clone()))
        .await
        .unwrap();
    System {
        _broker: broker,
        bootstrap,
        command: format!("http://{}", command.addr),
        query: format!("http://{}", query.addr),
        http: reqwest::Client::new(),
        shutdown,
        _dir: dir,
    }
}

impl System {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.command, path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
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

    async fn read(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}{}", self.query, path))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Poll the query service until `cond` holds for the answer to `path`, or fail after 20 s.
    async fn until(&self, path: &str, cond: impl Fn(StatusCode, &Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
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
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_likes_count_once_and_restore_read_db_is_idempotent() {
    let s = start().await;
    let id = s.new_post("alice", "hello world").await;
    let by_id = format!("/api/v1/PostLookup/byId/{id}");
    let body = s.until(&by_id, |st, _| st == StatusCode::OK).await;
    assert_eq!(body["posts"][0]["author"], "alice");
    assert_eq!(body["posts"][0]["message"], "hello world");
    assert_eq!(body["message"], "Successfully returned 1 post(s)!");

    let like_path = format!("/api/v1/LikePost/{id}");
    let likes = (0..20).map(|_| s.send(Method::PUT, &like_path, None));
    for (status, body) in futures::future::join_all(likes).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let before = s.until(&by_id, |_, b| b["posts"][0]["likes"] == 20).await;

    for _ in 0..2 {
        let (status, body) = s.send(Method::POST, "/api/v1/RestoreReadDb", None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["events"], 21, "{body}");
    }
    // A comment is staged after the republished events and shares their key (the post id),
    // so once it shows, every republished event of the post has been consumed.
    let (status, added) = s
        .send(
            Method::PUT,
            &format!("/api/v1/AddComment/{id}"),
            Some(json!({"comment": "marker", "username": "bob"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{added}");
    let after = s
        .until(&by_id, |_, b| {
            b["posts"][0]["comments"]
                .as_array()
                .is_some_and(|c| c.len() == 1)
        })
        .await;
    assert_eq!(after["posts"][0]["likes"], 20, "{after}");
    let mut unchanged = after["posts"][0].clone();
    unchanged["comments"] = json!([]);
    assert_eq!(unchanged, before["posts"][0]);
    let (_, all) = s.read("/api/v1/PostLookup").await;
    assert_eq!(all["posts"].as_array().unwrap().len(), 1, "{all}");

    let (_, liked) = s.read("/api/v1/PostLookup/withLikes/20").await;
    assert_eq!(liked["posts"].as_array().unwrap().len(), 1, "{liked}");
    let (_, liked) = s.read("/api/v1/PostLookup/withLikes/21").await;
    assert_eq!(liked["posts"].as_array().unwrap().len(), 0, "{liked}");
    assert_eq!(liked["message"], "Successfully returned 0 post(s)!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_rules_and_errors() {
    let s = start().await;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_dead_lettered_and_the_next_is_applied() {
    let s = start().await;
    let raw: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.bootstrap)
        .create()
        .unwrap();
    raw.send(
        FutureRecord::to("SocialMediaPostEvents")
            .key("x")
            .payload("{not json"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let id = s.new_post("dave", "after the poison").await;
    s.until(&format!("/api/v1/PostLookup/byId/{id}"), |st, _| {
        st == StatusCode::OK
    })
    .await;

    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.bootstrap)
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    consumer.subscribe(&["SocialMediaPostEvents.dlq"]).unwrap();
    let got = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                return m.payload().map(<[u8]>::to_vec);
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(
        got.as_deref(),
        Some(&b"{not json"[..]),
        "the poison message is in SocialMediaPostEvents.dlq"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_has_an_openapi_document_and_unknown_paths_are_json_404() {
    let s = start().await;
    for base in [&s.command, &s.query] {
        let spec: Value = s
            .http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            spec["paths"].as_object().is_some_and(|p| !p.is_empty()),
            "{spec}"
        );
        let resp = s.http.get(format!("{base}/nowhere")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_read_db_rebuilds_a_lost_read_model_from_the_event_store() {
    let first_token = CancellationToken::new();
    let mut s = start_with(Some(first_token.clone())).await;

    let id = s.new_post("erin", "to be restored").await;
    for _ in 0..5 {
        let (status, body) = s
            .send(Method::PUT, &format!("/api/v1/LikePost/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let by_id = format!("/api/v1/PostLookup/byId/{id}");
    s.until(&by_id, |_, b| b["posts"][0]["likes"] == 5).await;

    // The read model is lost: a new query service with an empty database takes over the
    // consumer group (and its committed offsets).
    first_token.cancel();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = posts::start_query(
        ServiceConfig::new(&s.bootstrap, fresh_dir.path(), 0),
        s.shutdown.clone(),
    )
    .await
    .unwrap();
    s.query = format!("http://{}", fresh.addr);

    // It resumes after the committed offsets: the post is not there until the restore.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, _) = s.read(&by_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = s.send(Method::POST, "/api/v1/RestoreReadDb", None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["events"], 6, "{body}");
    let body = s.until(&by_id, |_, b| b["posts"][0]["likes"] == 5).await;
    assert_eq!(body["posts"][0]["message"], "to be restored");
    // Nothing more arrives: a marker comment staged after the restore shows with 5 likes.
    let (status, _) = s
        .send(
            Method::PUT,
            &format!("/api/v1/AddComment/{id}"),
            Some(json!({"comment": "marker", "username": "erin"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = s
        .until(&by_id, |_, b| {
            b["posts"][0]["comments"]
                .as_array()
                .is_some_and(|c| c.len() == 1)
        })
        .await;
    assert_eq!(body["posts"][0]["likes"], 5, "{body}");
}
