//! Secrets never leave their service: after a real sign-up (users producer and consumer on the
//! built-in broker, reached through the dashboard's gateway) and two dead-lettered requests
//! carrying a hash, no dashboard endpoint, not the live stream, and not the dashboard's own
//! database holds an argon2 hash or the password.

mod common;

use ferry_testkit::{DEADLINE, Harness, Http, consume_raw, produce_raw};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A hash as a client might have put on the queue by hand: valid PHC, not from the producer.
const FOREIGN_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                            Jz0vD0ZRkMgQ2HSuHLNNw4PqYrdZ7M3kI9zk0KJWYbM";

/// What must never be served: the argon2 marker, and each secret's tell-tale tail (the digest
/// of a hash, the password itself).
struct Secrets(Vec<String>);

impl Secrets {
    #[track_caller]
    fn check(&self, what: &str, text: &str) {
        for secret in &self.0 {
            assert!(
                !text.contains(secret.as_str()),
                "{what} serves {secret:?}: {text}"
            );
        }
    }
}

/// The last `$`-separated part of a PHC string: the digest.
fn digest(hash: &str) -> String {
    hash.rsplit('$').next().unwrap().to_owned()
}

async fn get_text(http: &Http, path: &str) -> (StatusCode, String) {
    let response = reqwest::get(format!("{}{path}", http.base()))
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Reads the live stream until `done` holds for everything read so far, or the deadline
/// passes; answers the text read.
async fn read_stream(mut stream: reqwest::Response, done: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done(&text) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("the stream did not show everything in time: {text}"))
            .unwrap()
            .expect("the stream ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hash_never_served() {
    let harness = Harness::start().await;
    let http = common::dashboard_with_users(&harness).await;
    // Open before anything happens: every later event reaches it.
    let stream = reqwest::get(format!("{}/api/ferry/events/stream", http.base()))
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);

    // A sign-up through the gateway.
    let password = format!("pw-{}", uuid::Uuid::now_v7().simple());
    let email = format!("ada-{}@example.com", uuid::Uuid::now_v7().simple());
    let (status, accepted) = http
        .post(
            "/svc/users-producer/user",
            json!({"name": "Ada", "email": email, "password": password}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let task = accepted["taskId"].as_str().unwrap().to_owned();

    // Two requests the consumer cannot decode, so they are dead-lettered with the hash they
    // carry: one JSON with a wrongly typed field, one not JSON at all.
    let bad_json = json!({"taskId": 7, "name": "Mallory", "email": "m@example.com",
        "passwordHash": FOREIGN_HASH});
    let not_json = format!("sign me up, passwordHash={FOREIGN_HASH}");
    for payload in [bad_json.to_string(), not_json] {
        let id = uuid::Uuid::now_v7().to_string();
        produce_raw(
            &harness.bootstrap(),
            "user_tasks",
            "mallory",
            &[("ce_id", &id), ("ce_type", "UserRequested")],
            payload.as_bytes(),
        )
        .await;
    }

    let outcome = http
        .until(&format!("/svc/users-consumer/tasks/{task}"), |status, _| {
            status == StatusCode::OK
        })
        .await;
    assert_eq!(outcome["outcome"], "created", "{outcome}");
    let user_id = outcome["userId"].as_str().unwrap().to_owned();
    // The hash the producer made, read off the topic, so the test can look for it by value.
    let on_topic = consume_raw(&harness.bootstrap(), "user_tasks", |m| {
        m.payload.contains(&task)
    })
    .await;
    let real_hash: Value = serde_json::from_str(&on_topic.payload).unwrap();
    let real_hash = real_hash["passwordHash"].as_str().unwrap().to_owned();
    assert!(real_hash.starts_with("$argon2id$"), "{real_hash}");
    let secrets = Secrets(vec![
        "$argon2".to_owned(),
        digest(&real_hash),
        digest(FOREIGN_HASH),
        password.clone(),
    ]);

    // The event list has the sign-up and both dead letters, redacted.
    let events = http
        .until("/api/ferry/events?limit=1000", |_, events| {
            let events = events.as_array().map(Vec::as_slice).unwrap_or_default();
            let letters = events
                .iter()
                .filter(|e| e["topic"] == "user_tasks.dlq")
                .count();
            letters == 2
                && events
                    .iter()
                    .any(|e| e["payload"]["taskId"] == task.as_str())
        })
        .await;
    let events = events.as_array().unwrap();
    let sign_up = events
        .iter()
        .find(|e| e["payload"]["taskId"] == task.as_str())
        .unwrap();
    assert_eq!(sign_up["type"], "UserRequested");
    assert_eq!(
        (&sign_up["payload"]["name"], &sign_up["payload"]["email"]),
        (&json!("Ada"), &json!(email)),
        "only the secret is redacted: {sign_up}"
    );
    assert_eq!(sign_up["payload"]["passwordHash"], "[redacted]");

    // Every endpoint of the dashboard, and what its gateway serves of the users services.
    let mut paths: Vec<String> = [
        "/",
        "/app.js",
        "/style.css",
        "/openapi.json",
        "/health",
        "/ready",
        "/metrics",
        "/api/ferry/events",
        "/api/ferry/events?limit=1000",
        "/api/ferry/events?type=UserRequested",
        "/api/ferry/events?topic=user_tasks",
        "/api/ferry/events?topic=user_tasks.dlq",
        "/api/ferry/topics",
        "/api/ferry/groups",
        "/api/ferry/dlq",
        "/api/ferry/services",
        "/svc/users-consumer/users",
        "/svc/users-producer/metrics",
        "/svc/users-consumer/metrics",
    ]
    .map(str::to_owned)
    .into();
    paths.push(format!("/svc/users-consumer/users/{user_id}"));
    paths.push(format!("/svc/users-consumer/tasks/{task}"));
    for event in events {
        if let Some(correlation) = event["correlationId"].as_str() {
            paths.push(format!("/api/ferry/traces/{correlation}"));
        }
    }
    let mut traced_sign_up = false;
    for path in &paths {
        let (status, text) = get_text(&http, path).await;
        // (Readiness may say no for a moment; what it says is checked all the same.)
        assert!(
            status.is_success() || path == "/ready",
            "{path}: {status} {text}"
        );
        secrets.check(path, &text);
        traced_sign_up |= path.starts_with("/api/ferry/traces/") && text.contains(&task);
    }
    assert!(traced_sign_up, "the sign-up's trace was among those read");

    // The live stream showed the same three events, redacted.
    let streamed = read_stream(stream, |text| {
        text.contains(&task) && text.matches("user_tasks.dlq").count() >= 2
    })
    .await;
    assert!(
        streamed.contains(r#""passwordHash":"[redacted]""#),
        "{streamed}"
    );
    secrets.check("the live stream", &streamed);

    // Nor did the secrets reach the dashboard's store.
    for file in ["dashboard.db", "dashboard.db-wal", "dashboard.db-journal"] {
        let path = harness.dir().join(file);
        if let Ok(bytes) = std::fs::read(&path) {
            secrets.check(file, &String::from_utf8_lossy(&bytes));
        }
    }
}
