//! The users system end to end over HTTP: producer and consumer on the built-in broker
//! in-process, and the same scenario on RabbitMQ (`FERRY_TEST_AMQP_URL`, e.g.
//! `amqp://guest:guest@127.0.0.1:5672/%2f`; skipped with a message when unset).
//!
//! RabbitMQ queues are shared by everyone using that server, so the AMQP run uses unique
//! emails, looks only for its own messages, and does everything in one test (two tests
//! consuming `user_tasks` at once would take each other's messages).

use std::time::{Duration, Instant};

use ferry_service::ServiceConfig;
use ferry_toolkit::amqp::AmqpConfig;
use ferry_toolkit::kafka::KafkaConfig;
use ferry_toolkit::{Headers, OutgoingMessage, Publisher};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const AMQP_ENV: &str = "FERRY_TEST_AMQP_URL";

struct System {
    _broker: Option<ferry_broker::BrokerHandle>,
    /// Kafka bootstrap servers, or the AMQP URL.
    transport: Transport,
    producer: String,
    consumer: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

#[derive(Debug, Clone)]
enum Transport {
    Kafka(String),
    Amqp(String),
}

async fn start(amqp_url: Option<String>) -> System {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let (broker, transport, config) = match amqp_url {
        None => {
            let broker = ferry_broker::start(ferry_broker::BrokerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                data_dir: dir.path().join("broker"),
                ..Default::default()
            })
            .await
            .unwrap();
            let bootstrap = broker.bootstrap_servers();
            let config = ServiceConfig::new(&bootstrap, dir.path(), 0);
            (Some(broker), Transport::Kafka(bootstrap), config)
        }
        Some(url) => {
            // No Kafka broker at all: the services must not need one.
            let mut config = ServiceConfig::new("127.0.0.1:1", dir.path(), 0);
            config.amqp_url = Some(url.clone());
            (None, Transport::Amqp(url), config)
        }
    };
    let shutdown = CancellationToken::new();
    let producer = users::start_producer(config.clone(), shutdown.clone())
        .await
        .unwrap();
    let consumer = users::start_consumer(config, shutdown.clone())
        .await
        .unwrap();
    System {
        _broker: broker,
        transport,
        producer: format!("http://{}", producer.addr),
        consumer: format!("http://{}", consumer.addr),
        http: reqwest::Client::new(),
        shutdown,
        _dir: dir,
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An email no earlier run used.
fn unique_email(name: &str) -> String {
    format!("{name}-{}@example.com", uuid::Uuid::now_v7().simple())
}

impl System {
    /// One request; the body as text and parsed as JSON (null if it is not).
    async fn call(&self, method: Method, url: &str, body: Option<Value>) -> (StatusCode, String) {
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.text().await.unwrap())
    }

    async fn json(&self, method: Method, url: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, text) = self.call(method, url, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `POST /user`; returns the task id.
    async fn sign_up(&self, name: &str, email: &str, password: &str) -> String {
        let (status, body) = self
            .json(
                Method::POST,
                &format!("{}/user", self.producer),
                Some(json!({"name": name, "email": email, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["message"], "User data sent to queue!");
        body["taskId"].as_str().unwrap().to_owned()
    }

    /// Polls the task's outcome until it is there, or fails after 20 s.
    async fn outcome(&self, task_id: &str) -> Value {
        let url = format!("{}/tasks/{task_id}", self.consumer);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.json(Method::GET, &url, None).await;
            if status == StatusCode::OK {
                return body;
            }
            assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
            assert!(Instant::now() < deadline, "task {task_id} never processed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn publisher(&self) -> Publisher {
        match &self.transport {
            Transport::Kafka(bootstrap) => Publisher::kafka(&KafkaConfig::new(bootstrap)).unwrap(),
            Transport::Amqp(url) => Publisher::amqp(&AmqpConfig::new(url)),
        }
    }

    /// Sends a record as it is given: any headers, any payload.
    async fn send_raw(&self, topic: &str, headers: &[(&str, &str)], payload: &[u8]) {
        let headers: Headers = headers.iter().map(|(k, v)| (*k, *v)).collect();
        self.publisher()
            .send_raw(OutgoingMessage {
                topic: topic.to_owned(),
                key: Some(b"raw".to_vec()),
                headers,
                payload: payload.to_vec(),
            })
            .await
            .unwrap();
    }

    /// Waits until a message whose payload satisfies `found` is in `queue`, or fails after 20 s.
    /// On RabbitMQ this takes messages off the queue (and so empties a dead-letter queue).
    async fn wait_for(&self, queue: &str, found: impl Fn(&[u8]) -> bool + Send + 'static) {
        let seen = match &self.transport {
            Transport::Kafka(bootstrap) => kafka_wait_for(bootstrap, queue, found).await,
            Transport::Amqp(url) => amqp_wait_for(url, queue, found).await,
        };
        assert!(seen, "no such message in {queue}");
    }
}

async fn kafka_wait_for(
    bootstrap: &str,
    topic: &str,
    found: impl Fn(&[u8]) -> bool + Send + 'static,
) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100))
                && found(m.payload().unwrap_or_default())
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap()
}

async fn amqp_wait_for(url: &str, queue: &str, found: impl Fn(&[u8]) -> bool) -> bool {
    use lapin::options::BasicGetOptions;
    use lapin::{Connection, ConnectionProperties};
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let mut channel = connection.create_channel().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        match channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
        {
            Ok(Some(m)) => seen = found(&m.delivery.data),
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            // The queue is not declared yet, which closes the channel.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                channel = connection.create_channel().await.unwrap();
            }
        }
    }
    let _ = connection.close(200, "done".into()).await;
    seen
}

/// The whole scenario: work items, a sign-up, a duplicate email, validation, lookups.
async fn sign_up_scenario(s: &System) {
    // The original's endpoints.
    let (status, body) = s.json(Method::GET, &format!("{}/", s.producer), None).await;
    assert_eq!(
        (status, &body["message"]),
        (StatusCode::OK, &json!("Message sent to queue!"))
    );
    let (status, _) = s
        .json(
            Method::GET,
            &format!("{}/send?msg=water%20the%20plants", s.producer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s.json(Method::GET, &format!("{}/", s.consumer), None).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"message": "Hello World from Consumer Service!"})
        )
    );

    // A sign-up becomes a user; the email is stored lower-cased; the hash never shows.
    let email = unique_email("ada");
    let password = "correct horse battery staple";
    let task = s.sign_up("Ada", &email.to_uppercase(), password).await;
    let outcome = s.outcome(&task).await;
    assert_eq!(outcome["outcome"], "created", "{outcome}");
    assert_eq!(outcome["reason"], Value::Null, "{outcome}");
    let user_id = outcome["userId"].as_str().unwrap().to_owned();
    for url in [
        format!("{}/users", s.consumer),
        format!("{}/users/{user_id}", s.consumer),
    ] {
        let (status, text) = s.call(Method::GET, &url, None).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains(&email), "{url}: {text}");
        for secret in ["password", "Password", "argon2", password] {
            assert!(!text.contains(secret), "{url} shows {secret:?}: {text}");
        }
    }
    let (_, user) = s
        .json(
            Method::GET,
            &format!("{}/users/{user_id}", s.consumer),
            None,
        )
        .await;
    assert_eq!(
        (&user["name"], &user["email"]),
        (&json!("Ada"), &json!(email))
    );

    // The same email again (in another case) is rejected, with the reason.
    let again = s.sign_up("Ada Again", &email, "another one").await;
    let outcome = s.outcome(&again).await;
    assert_eq!(outcome["outcome"], "rejected", "{outcome}");
    let reason = outcome["reason"].as_str().unwrap();
    assert!(reason.contains("already registered"), "{reason}");
    assert_eq!(outcome["userId"], Value::Null);

    // Bad input is a 4xx in the error contract; unknown ids are 404.
    let user_url = format!("{}/user", s.producer);
    for (body, want) in [
        (
            json!({"name": "Bo", "email": "not-an-email", "password": "x"}),
            422,
        ),
        (
            json!({"name": " ", "email": unique_email("bo"), "password": "x"}),
            422,
        ),
        (
            json!({"name": "Bo", "email": unique_email("bo"), "password": ""}),
            422,
        ),
        (json!({"name": "Bo", "email": unique_email("bo")}), 422),
        (json!("nothing"), 400),
    ] {
        let (status, err) = s.json(Method::POST, &user_url, Some(body.clone())).await;
        assert_eq!(status.as_u16(), want, "{body} -> {err}");
        assert!(err["error"]["code"].is_string(), "{err}");
    }
    let (status, _) = s
        .json(Method::GET, &format!("{}/send", s.producer), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for url in [
        format!("{}/users/nope", s.consumer),
        format!("{}/tasks/nope", s.consumer),
    ] {
        let (status, err) = s.json(Method::GET, &url, None).await;
        assert_eq!(
            (status, &err["error"]["code"]),
            (StatusCode::NOT_FOUND, &json!("not_found"))
        );
    }
}

/// A poison message on `user_tasks` goes to `user_tasks.dlq`; a request carrying a plain
/// password instead of a hash is rejected; the next good request is processed.
async fn poison_scenario(s: &System) {
    let marker = format!("{{not json {}", uuid::Uuid::now_v7());
    let poison_id = uuid::Uuid::now_v7().to_string();
    s.send_raw(
        "user_tasks",
        &[
            ("ferry-message-id", &poison_id),
            ("ferry-type", "UserRequested"),
        ],
        marker.as_bytes(),
    )
    .await;
    let plain_task = format!("plain-{}", uuid::Uuid::now_v7());
    let plain = json!({"taskId": plain_task, "name": "Eve", "email": unique_email("eve"),
        "passwordHash": "hunter2"});
    let plain_id = uuid::Uuid::now_v7().to_string();
    s.send_raw(
        "user_tasks",
        &[
            ("ferry-message-id", &plain_id),
            ("ferry-type", "UserRequested"),
        ],
        plain.to_string().as_bytes(),
    )
    .await;

    let task = s.sign_up("Next", &unique_email("next"), "pw").await;
    assert_eq!(s.outcome(&task).await["outcome"], "created");
    let outcome = s.outcome(&plain_task).await;
    assert_eq!(
        (&outcome["outcome"], &outcome["reason"]),
        (
            &json!("rejected"),
            &json!("passwordHash is not an argon2 hash")
        )
    );
    s.wait_for("user_tasks.dlq", move |p| p == marker.as_bytes())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_over_kafka() {
    let s = start(None).await;
    sign_up_scenario(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_argon2_hash_travels_over_kafka() {
    let s = start(None).await;
    let password = "tr0ub4dor&3";
    let email = unique_email("cy");
    let task = s.sign_up("Cy", &email, password).await;
    s.outcome(&task).await;
    let Transport::Kafka(bootstrap) = &s.transport else {
        unreachable!()
    };
    let expected_task = task.clone();
    let seen = kafka_wait_for(bootstrap, "user_tasks", move |p| {
        let m: Value = serde_json::from_slice(p).unwrap();
        if m["taskId"] != expected_task.as_str() {
            return false;
        }
        let text = String::from_utf8_lossy(p);
        assert!(!text.contains(password), "{text}");
        assert!(
            m["passwordHash"]
                .as_str()
                .unwrap()
                .starts_with("$argon2id$"),
            "{m}"
        );
        true
    })
    .await;
    assert!(seen, "the request is on user_tasks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_dead_lettered_over_kafka() {
    let s = start(None).await;
    poison_scenario(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_sign_up_is_applied_once() {
    let s = start(None).await;
    let email = unique_email("dup");
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                Jz0vD0ZRkMgQ2HSuHLNNw4PqYrdZ7M3kI9zk0KJWYbM";
    let request = |task: &str| {
        json!({"taskId": task, "name": "Dup", "email": email, "passwordHash": hash}).to_string()
    };
    // One message id delivered twice (the second copy names another task, only so that its
    // effect, if any, would be visible), then a new request for the same email. All share a key,
    // so they are handled in this order.
    let id = uuid::Uuid::now_v7().to_string();
    let headers = [
        ("ferry-message-id", id.as_str()),
        ("ferry-type", "UserRequested"),
    ];
    s.send_raw("user_tasks", &headers, request("first").as_bytes())
        .await;
    s.send_raw("user_tasks", &headers, request("redelivered").as_bytes())
        .await;
    let id = uuid::Uuid::now_v7().to_string();
    let headers = [
        ("ferry-message-id", id.as_str()),
        ("ferry-type", "UserRequested"),
    ];
    s.send_raw("user_tasks", &headers, request("last").as_bytes())
        .await;

    assert_eq!(s.outcome("last").await["outcome"], "rejected");
    assert_eq!(s.outcome("first").await["outcome"], "created");
    let (status, _) = s
        .json(
            Method::GET,
            &format!("{}/tasks/redelivered", s.consumer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the redelivery was skipped");
    let (_, list) = s
        .json(Method::GET, &format!("{}/users", s.consumer), None)
        .await;
    let users = list["users"].as_array().unwrap();
    assert_eq!(
        users
            .iter()
            .filter(|u| u["email"] == email.as_str())
            .count(),
        1,
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_and_poison_over_rabbitmq() {
    let Some(url) = std::env::var(AMQP_ENV).ok().filter(|v| !v.is_empty()) else {
        println!("skipped: {AMQP_ENV} not set");
        return;
    };
    let s = start(Some(url)).await;
    sign_up_scenario(&s).await;
    poison_scenario(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_apis_have_an_openapi_document() {
    let s = start(None).await;
    for (base, path) in [(&s.producer, "/user"), (&s.consumer, "/tasks/{task_id}")] {
        let (status, spec) = s
            .json(Method::GET, &format!("{base}/openapi.json"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(spec["paths"][path].is_object(), "{spec}");
    }
}
