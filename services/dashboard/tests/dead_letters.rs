//! The dashboard's dead-letter view and re-drive button over HTTP, against the built-in broker:
//! the count shown is the letters still pending, it falls after a re-drive, and a re-drive of a
//! topic that does not exist is a 404 that creates nothing.

use ferry_testkit::{Harness, Http, create_topic, produce_raw};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Dashboard {
    harness: Harness,
    http: Http,
}

async fn start() -> Dashboard {
    let harness = Harness::start().await;
    let handle = dashboard::start(harness.config(), Vec::new(), harness.token())
        .await
        .unwrap();
    Dashboard {
        http: Http::new(handle.addr),
        harness,
    }
}

/// A dead letter that `group` wrote for a record of `original`.
async fn letter(bootstrap: &str, original: &str, id: u32, group: &str) {
    let message_id = format!("0190c5a4-0000-7000-8000-{id:012}");
    produce_raw(
        bootstrap,
        &format!("{original}.dlq"),
        &format!("k{id}"),
        &[
            ("ce_id", &message_id),
            ("ce_type", "CourseMessage"),
            ("ferry-dlq-original-topic", original),
            ("ferry-dlq-group", group),
            ("ferry-dlq-error", "boom"),
        ],
        b"{}",
    )
    .await;
}

fn row<'a>(letters: &'a Value, topic: &str) -> Option<&'a Value> {
    letters.as_array()?.iter().find(|d| d["topic"] == topic)
}

#[track_caller]
fn check_error(answer: (StatusCode, Value), status: StatusCode, code: &str) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

/// Issue 13 #6: the page showed each dead-letter topic's all-time count, which never fell after
/// a re-drive. It shows the letters still pending now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_letters_fall_after_a_redrive() {
    let d = start().await;
    let bootstrap = d.harness.bootstrap();
    create_topic(&bootstrap, "lessons", 1).await;
    letter(&bootstrap, "lessons", 1, "courses-consumer").await;
    letter(&bootstrap, "lessons", 2, "courses-consumer").await;

    let before = d
        .http
        .until("/api/ferry/dlq", |s, b| {
            s == StatusCode::OK && row(b, "lessons.dlq").is_some_and(|r| r["messages"] == 2)
        })
        .await;
    let before = row(&before, "lessons.dlq").unwrap();
    assert_eq!(before["pending"], 2);
    assert_eq!(before["originalTopic"], "lessons");

    let (status, report) = d
        .http
        .post("/api/ferry/dlq/lessons.dlq/redrive", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["redriven"], 2);
    let (status, after) = d.http.get("/api/ferry/dlq").await;
    assert_eq!(status, StatusCode::OK);
    let after = row(&after, "lessons.dlq").unwrap();
    assert_eq!(
        (after["pending"].as_i64(), after["messages"].as_i64()),
        (Some(0), Some(2)),
        "nothing pending, both still held"
    );

    // A new letter is pending again; a second re-drive sends only it.
    letter(&bootstrap, "lessons", 3, "courses-consumer").await;
    d.http
        .until("/api/ferry/dlq", |s, b| {
            s == StatusCode::OK && row(b, "lessons.dlq").is_some_and(|r| r["pending"] == 1)
        })
        .await;
    let (_, report) = d
        .http
        .post("/api/ferry/dlq/lessons.dlq/redrive", json!({}))
        .await;
    assert_eq!(report["redriven"], 1);
}

/// Issue 13 #6: re-driving a topic that does not exist answered 200 and created the topic and
/// its original. Now: 404 for an unknown topic, 400 for a name that is not a dead-letter topic's,
/// 409 when a letter's original topic is gone, and no topic is created by any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_of_unknown_topic_is_404_and_creates_nothing() {
    let d = start().await;
    let bootstrap = d.harness.bootstrap();
    check_error(
        d.http
            .post("/api/ferry/dlq/nowhere.dlq/redrive", json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    for bad in ["not-a-dlq", "bad%20name.dlq", ".dlq", "a%2Fb.dlq"] {
        check_error(
            d.http
                .post(&format!("/api/ferry/dlq/{bad}/redrive"), json!({}))
                .await,
            StatusCode::BAD_REQUEST,
            // An encoded slash never reaches a route (`ferry_service::edge`).
            if bad.contains("%2F") {
                "bad_request"
            } else {
                "invalid_parameter"
            },
        );
    }
    let long = format!("{}.dlq", "x".repeat(300));
    check_error(
        d.http
            .post(&format!("/api/ferry/dlq/{long}/redrive"), json!({}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
    );

    // A letter whose original topic does not exist: 409, the letter stays pending.
    letter(&bootstrap, "vanished", 1, "g").await;
    check_error(
        d.http
            .post("/api/ferry/dlq/vanished.dlq/redrive", json!({}))
            .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    let (_, letters) = d.http.get("/api/ferry/dlq").await;
    assert_eq!(row(&letters, "vanished.dlq").unwrap()["pending"], 1);

    let (status, topics) = d.http.get("/api/ferry/topics").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = topics
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for never in ["nowhere", "nowhere.dlq", "vanished", "not-a-dlq"] {
        assert!(!names.contains(&never), "{never} was created: {names:?}");
    }
}
