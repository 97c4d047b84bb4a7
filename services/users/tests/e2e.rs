//! The users system end to end over HTTP: producer and consumer on the built-in broker
//! in-process, and the same scenario on RabbitMQ (`FERRY_TEST_AMQP_URL`, e.g.
//! `amqp://guest:guest@127.0.0.1:5672/%2f`; skipped with a message when unset).
//!
//! RabbitMQ queues are shared by everyone using that server, so the AMQP run uses unique
//! emails, looks only for its own messages, and does everything in one test (two tests
//! consuming `user_tasks` at once would take each other's messages).

use std::time::{Duration, Instant};

use ferry_service::ServiceConfig;
use ferry_testkit::reqwest::StatusCode;
use ferry_testkit::{DEADLINE, Harness, Http, consume_raw};
use ferry_toolkit::amqp::AmqpConfig;
use ferry_toolkit::kafka::KafkaConfig;
use ferry_toolkit::{Headers, OutgoingMessage, Publisher};
use serde_json::{Value, json};

const AMQP_ENV: &str = "FERRY_TEST_AMQP_URL";

/// Both services, on the harness's broker or on RabbitMQ.
struct System {
    harness: Harness,
    /// The RabbitMQ server the services use; `None`: the harness's broker.
    amqp_url: Option<String>,
    producer: Http,
    consumer: Http,
}

async fn start(amqp_url: Option<String>) -> System {
    let harness = Harness::start().await;
    let config = match &amqp_url {
        None => harness.config(),
        Some(url) => {
            // No Kafka broker the services can reach: they must not need one.
            let mut config = ServiceConfig::new("127.0.0.1:1", harness.dir(), 0);
            config.amqp_url = Some(url.clone());
            config
        }
    };
    let producer = users::start_producer(config.clone(), harness.token())
        .await
        .unwrap();
    let consumer = users::start_consumer(config, harness.token())
        .await
        .unwrap();
    System {
        harness,
        amqp_url,
        producer: Http::new(producer.addr),
        consumer: Http::new(consumer.addr),
    }
}

/// An email no earlier run used.
fn unique_email(name: &str) -> String {
    format!("{name}-{}@example.com", uuid::Uuid::now_v7().simple())
}

impl System {
    /// `POST /user`; returns the task id.
    async fn sign_up(&self, name: &str, email: &str, password: &str) -> String {
        let (status, body) = self
            .producer
            .post(
                "/user",
                json!({"name": name, "email": email, "password": password}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["message"], "User data sent to queue!");
        body["taskId"].as_str().unwrap().to_owned()
    }

    /// Polls the task's outcome until it is there (until then the answer must be 404).
    async fn outcome(&self, task_id: &str) -> Value {
        self.consumer
            .until(&format!("/tasks/{task_id}"), |status, body| {
                if status != StatusCode::OK {
                    assert_eq!(status, StatusCode::NOT_FOUND, "task {task_id}: {body}");
                }
                status == StatusCode::OK
            })
            .await
    }

    fn publisher(&self) -> Publisher {
        match &self.amqp_url {
            None => Publisher::kafka(&KafkaConfig::new(self.harness.bootstrap())).unwrap(),
            Some(url) => Publisher::amqp(&AmqpConfig::new(url)),
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

    /// Waits until a message whose payload satisfies `found` is in `queue`, or fails.
    /// On RabbitMQ this takes messages off the queue (and so empties a dead-letter queue).
    async fn wait_for(&self, queue: &str, found: impl Fn(&[u8]) -> bool) {
        match &self.amqp_url {
            None => {
                consume_raw(&self.harness.bootstrap(), queue, |m| {
                    found(m.payload.as_bytes())
                })
                .await;
            }
            Some(url) => assert!(
                amqp_wait_for(url, queue, found).await,
                "no such message in {queue}"
            ),
        }
    }
}

async fn amqp_wait_for(url: &str, queue: &str, found: impl Fn(&[u8]) -> bool) -> bool {
    use lapin::options::BasicGetOptions;
    use lapin::{Connection, ConnectionProperties};
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let mut channel = connection.create_channel().await.unwrap();
    let deadline = Instant::now() + DEADLINE;
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
    let (status, body) = s.producer.get("/").await;
    assert_eq!(
        (status, &body["message"]),
        (StatusCode::OK, &json!("Message sent to queue!"))
    );
    let (status, _) = s.producer.get("/send?msg=water%20the%20plants").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s.consumer.get("/").await;
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
    for path in ["/users".to_owned(), format!("/users/{user_id}")] {
        // The body as JSON text: every key and value, escapes resolved.
        let (status, body) = s.consumer.get(&path).await;
        let text = body.to_string();
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains(&email), "{path}: {text}");
        for secret in ["password", "Password", "argon2", password] {
            assert!(!text.contains(secret), "{path} shows {secret:?}: {text}");
        }
    }
    let (_, user) = s.consumer.get(&format!("/users/{user_id}")).await;
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
        let (status, err) = s.producer.post("/user", body.clone()).await;
        assert_eq!(status.as_u16(), want, "{body} -> {err}");
        assert!(err["error"]["code"].is_string(), "{err}");
    }
    let (status, _) = s.producer.get("/send").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for path in ["/users/nope", "/tasks/nope"] {
        let (status, err) = s.consumer.get(path).await;
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
        &[("ce_id", &poison_id), ("ce_type", "UserRequested")],
        marker.as_bytes(),
    )
    .await;
    let plain_task = format!("plain-{}", uuid::Uuid::now_v7());
    let plain = json!({"taskId": plain_task, "name": "Eve", "email": unique_email("eve"),
        "passwordHash": "hunter2"});
    let plain_id = uuid::Uuid::now_v7().to_string();
    s.send_raw(
        "user_tasks",
        &[("ce_id", &plain_id), ("ce_type", "UserRequested")],
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
    s.wait_for("user_tasks.dlq", |p| p == marker.as_bytes())
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
    // Fails the test unless the request is on user_tasks.
    consume_raw(&s.harness.bootstrap(), "user_tasks", |raw| {
        let m: Value = serde_json::from_str(&raw.payload).unwrap();
        if m["taskId"] != task.as_str() {
            return false;
        }
        let text = &raw.payload;
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
    let headers = [("ce_id", id.as_str()), ("ce_type", "UserRequested")];
    s.send_raw("user_tasks", &headers, request("first").as_bytes())
        .await;
    s.send_raw("user_tasks", &headers, request("redelivered").as_bytes())
        .await;
    let id = uuid::Uuid::now_v7().to_string();
    let headers = [("ce_id", id.as_str()), ("ce_type", "UserRequested")];
    s.send_raw("user_tasks", &headers, request("last").as_bytes())
        .await;

    assert_eq!(s.outcome("last").await["outcome"], "rejected");
    assert_eq!(s.outcome("first").await["outcome"], "created");
    let (status, _) = s.consumer.get("/tasks/redelivered").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the redelivery was skipped");
    let (_, list) = s.consumer.get("/users").await;
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
    for (api, path) in [(&s.producer, "/user"), (&s.consumer, "/tasks/{task_id}")] {
        let (status, spec) = api.get("/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert!(spec["paths"][path].is_object(), "{spec}");
    }
}
