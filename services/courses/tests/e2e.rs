//! The courses system end to end over HTTP, against the built-in broker in-process.

use std::time::{Duration, Instant};

use ferry_service::ServiceConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct System {
    _broker: ferry_broker::BrokerHandle,
    bootstrap: String,
    producer: String,
    consumer: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start() -> System {
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
    let producer = courses::start_producer(config.clone(), shutdown.clone())
        .await
        .unwrap();
    let consumer = courses::start_consumer(config, shutdown.clone())
        .await
        .unwrap();
    System {
        _broker: broker,
        bootstrap,
        producer: format!("http://{}", producer.addr),
        consumer: format!("http://{}", consumer.addr),
        http: reqwest::Client::new(),
        shutdown,
        _dir: dir,
    }
}

impl System {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.producer, path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn read(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}{}", self.consumer, path))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Poll the consumer until `cond` holds for the answer to `path`, or fail after 20 s.
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
async fn create_read_update_delete_and_validation() {
    let s = start().await;
    let (status, created) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/courses",
            Some(json!({"name": "Rust", "code": "RS101", "active": true})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"]
        .as_str()
        .expect("POST returns the id")
        .to_owned();

    let body = s
        .until(&format!("/api/v1/courses/{id}"), |st, _| {
            st == StatusCode::OK
        })
        .await;
    assert_eq!(
        body["course"],
        json!({"id": id, "name": "Rust", "code": "RS101", "active": true})
    );

    let (status, _) = s
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/courses/{id}"),
            Some(json!({"name": "Rust 2"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    s.until(&format!("/api/v1/courses/{id}"), |_, b| {
        b["course"]["name"] == "Rust 2"
    })
    .await;

    // Validation and conflicts: clear 4xx with the JSON error contract.
    for (body, want) in [
        (json!({"code": "X1"}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"name": "  ", "code": "X2"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"name": "Dup", "code": "RS101"}),
            StatusCode::CONFLICT,
        ),
        (json!("not an object"), StatusCode::BAD_REQUEST),
    ] {
        let (status, err) = s
            .send(reqwest::Method::POST, "/api/v1/courses", Some(body.clone()))
            .await;
        assert_eq!(status, want, "{body} -> {err}");
        assert!(
            err["error"]["code"].is_string() && err["error"]["message"].is_string(),
            "{err}"
        );
    }
    let (status, _) = s
        .send(
            reqwest::Method::PUT,
            "/api/v1/courses/nope",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = s
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/courses/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    s.until(&format!("/api/v1/courses/{id}"), |st, _| {
        st == StatusCode::NOT_FOUND
    })
    .await;
    let (status, err) = s.read("/api/v1/courses/never-existed").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    // The code is free again once its course is deleted.
    let (status, _) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/courses",
            Some(json!({"name": "Again", "code": "RS101"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_then_delete_in_quick_succession_always_ends_deleted() {
    let s = start().await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let (_, c) = s
            .send(
                reqwest::Method::POST,
                "/api/v1/courses",
                Some(json!({"name": "C", "code": format!("Q{i}")})),
            )
            .await;
        let id = c["id"].as_str().unwrap().to_owned();
        s.send(
            reqwest::Method::PUT,
            &format!("/api/v1/courses/{id}"),
            Some(json!({"active": false})),
        )
        .await;
        let (status, _) = s
            .send(
                reqwest::Method::DELETE,
                &format!("/api/v1/courses/{id}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        ids.push(id);
    }
    let marker = s
        .send(
            reqwest::Method::POST,
            "/api/v1/courses",
            Some(json!({"name": "M", "code": "MARK"})),
        )
        .await
        .1;
    s.until(
        &format!("/api/v1/courses/{}", marker["id"].as_str().unwrap()),
        |st, _| st == StatusCode::OK,
    )
    .await;
    let list = s.until("/api/v1/courses", |_, b| b["results"] == 1).await;
    assert_eq!(
        list["data"][0]["code"], "MARK",
        "every PUT+DELETE pair ended deleted; ids {ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_dead_lettered_and_the_next_is_processed() {
    let s = start().await;
    let raw: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.bootstrap)
        .create()
        .unwrap();
    raw.send(
        FutureRecord::to("test").key("x").payload("{not json"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let (_, c) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/courses",
            Some(json!({"name": "After", "code": "AFTER"})),
        )
        .await;
    s.until(
        &format!("/api/v1/courses/{}", c["id"].as_str().unwrap()),
        |st, _| st == StatusCode::OK,
    )
    .await;

    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.bootstrap)
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    consumer.subscribe(&["test.dlq"]).unwrap();
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
        "the poison message is in test.dlq"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_has_an_openapi_document_and_unknown_paths_are_json_404() {
    let s = start().await;
    for base in [&s.producer, &s.consumer] {
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
