//! The courses system end to end over HTTP, against the built-in broker in-process.

use ferry_testkit::reqwest::{Method, StatusCode};
use ferry_testkit::{Harness, Http, consume_raw, produce_plain, produce_raw, rewind_group};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The broker and both services; `producer` takes the writes, `consumer` answers the reads.
struct System {
    harness: Harness,
    producer: Http,
    consumer: Http,
}

async fn start() -> System {
    let harness = Harness::start().await;
    let producer = courses::start_producer(harness.config(), harness.token())
        .await
        .unwrap();
    let consumer = courses::start_consumer(harness.config(), harness.token())
        .await
        .unwrap();
    System {
        producer: Http::new(producer.addr),
        consumer: Http::new(consumer.addr),
        harness,
    }
}

impl System {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.producer.send(method, path, body).await
    }

    async fn read(&self, path: &str) -> (StatusCode, Value) {
        self.consumer.get(path).await
    }

    /// Polls the consumer until `cond` holds for the answer to `path`.
    async fn until(&self, path: &str, cond: impl Fn(StatusCode, &Value) -> bool) -> Value {
        self.consumer.until(path, cond).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_update_delete_and_validation() {
    let s = start().await;
    let (status, created) = s
        .send(
            Method::POST,
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
            Method::PUT,
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
            .send(Method::POST, "/api/v1/courses", Some(body.clone()))
            .await;
        assert_eq!(status, want, "{body} -> {err}");
        assert!(
            err["error"]["code"].is_string() && err["error"]["message"].is_string(),
            "{err}"
        );
    }
    let (status, _) = s
        .send(
            Method::PUT,
            "/api/v1/courses/nope",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = s
        .send(Method::DELETE, &format!("/api/v1/courses/{id}"), None)
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
            Method::POST,
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
                Method::POST,
                "/api/v1/courses",
                Some(json!({"name": "C", "code": format!("Q{i}")})),
            )
            .await;
        let id = c["id"].as_str().unwrap().to_owned();
        s.send(
            Method::PUT,
            &format!("/api/v1/courses/{id}"),
            Some(json!({"active": false})),
        )
        .await;
        let (status, _) = s
            .send(Method::DELETE, &format!("/api/v1/courses/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        ids.push(id);
    }
    let marker = s
        .send(
            Method::POST,
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
    produce_raw(&s.harness.bootstrap(), "test", "x", &[], b"{not json").await;
    let (_, c) = s
        .send(
            Method::POST,
            "/api/v1/courses",
            Some(json!({"name": "After", "code": "AFTER"})),
        )
        .await;
    s.until(
        &format!("/api/v1/courses/{}", c["id"].as_str().unwrap()),
        |st, _| st == StatusCode::OK,
    )
    .await;
    let got = consume_raw(&s.harness.bootstrap(), "test.dlq", |_| true).await;
    assert_eq!(
        got.payload, "{not json",
        "the poison message is in test.dlq"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_has_an_openapi_document_and_unknown_paths_are_json_404() {
    let s = start().await;
    for api in [&s.producer, &s.consumer] {
        let (status, spec) = api.get("/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            spec["paths"].as_object().is_some_and(|p| !p.is_empty()),
            "{spec}"
        );
        let (status, body) = api.get("/nowhere").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_found");
    }
}

/// A 1.5 MB course name once got 201, and its event could never be published: the relay retried
/// it forever and the course never appeared. Now every field has a bound and the body a limit,
/// so whatever is accepted is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_field_is_rejected_not_stuck() {
    let s = start().await;
    #[track_caller]
    fn check_error(got: (StatusCode, Value), status: StatusCode, code: &str) {
        let (got_status, body) = got;
        assert_eq!(got_status, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let huge = "n".repeat(1_500_000);
    check_error(
        s.send(
            Method::POST,
            "/api/v1/courses",
            Some(json!({"name": huge, "code": "BIG"})),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    check_error(
        s.send(
            Method::POST,
            "/api/v1/courses",
            Some(json!({"name": "n".repeat(201), "code": "C1"})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    check_error(
        s.send(
            Method::POST,
            "/api/v1/courses",
            Some(json!({"name": "ok", "code": "c".repeat(51)})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );

    // At the bound (200 characters of 4 bytes each) it is accepted, and delivered.
    let longest = "😀".repeat(200);
    let (status, created) = s
        .send(
            Method::POST,
            "/api/v1/courses",
            Some(json!({"name": longest, "code": "LONG"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let read = s
        .until(&format!("/api/v1/courses/{id}"), |st, _| {
            st == StatusCode::OK
        })
        .await;
    assert_eq!(read["course"]["name"], longest.as_str());

    check_error(
        s.send(
            Method::PUT,
            &format!("/api/v1/courses/{id}"),
            Some(json!({"name": huge})),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    check_error(
        s.send(
            Method::PUT,
            &format!("/api/v1/courses/{id}"),
            Some(json!({"name": "n".repeat(201)})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
}

/// The original course producer's JSON, sent with no key and no headers (as the Node original
/// and any plain producer send it), is applied once, and once again after a redelivery: the
/// record's position gives it a stable id, so the inbox skips it the second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_plain_course_json_is_applied_exactly_once_even_when_redelivered() {
    let harness = Harness::start().await;
    let bootstrap = harness.bootstrap();
    let first_stop = CancellationToken::new();
    let consumer = courses::start_consumer(harness.config(), first_stop.clone())
        .await
        .unwrap();
    let http = Http::new(consumer.addr);
    let course = |id: &str, method: &str| {
        json!({"id": id, "name": "Plain", "code": format!("P-{id}"), "active": true, "method": method})
            .to_string()
    };
    let created = produce_plain(&bootstrap, "test", course("plain-1", "POST").as_bytes()).await;
    http.until("/api/v1/courses/plain-1", |st, _| st == StatusCode::OK)
        .await;
    produce_plain(&bootstrap, "test", course("plain-1", "DELETE").as_bytes()).await;
    http.until("/api/v1/courses/plain-1", |st, _| {
        st == StatusCode::NOT_FOUND
    })
    .await;

    // Stop the consumer, rewind its group to the POST, start it again on the same database.
    first_stop.cancel();
    consumer.task.await.unwrap();
    rewind_group(&bootstrap, courses::CONSUMER_GROUP, "test", created);
    let consumer = courses::start_consumer(harness.config(), harness.token())
        .await
        .unwrap();
    let http = Http::new(consumer.addr);
    produce_plain(&bootstrap, "test", course("plain-2", "POST").as_bytes()).await;
    http.until("/api/v1/courses/plain-2", |st, _| st == StatusCode::OK)
        .await;
    // The POST and the DELETE were read again before plain-2; applying the POST again would
    // have brought plain-1 back.
    let (status, body) = http.get("/api/v1/courses/plain-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, list) = http.get("/api/v1/courses").await;
    assert_eq!(list["results"], 1, "{list}");
    // The catalogue cannot tell (the replay ends deleted either way); the inbox can: three
    // records, three message ids, however often the first two were delivered.
    let db = harness.config().database("courses-consumer").await.unwrap();
    let claimed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM ferry_inbox WHERE consumer_group = $1")
            .bind(courses::CONSUMER_GROUP)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(claimed, 3, "each plain record is claimed once");
}

/// A plain course that breaks the message schema (a name over the producer's 200 characters,
/// which serde alone would take) is dead-lettered with the violation; the next one is applied.
/// The schema's bounds are the HTTP API's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn course_breaking_its_schema_is_dead_lettered_with_the_violation() {
    use ferry_toolkit::Message;
    let schema = ferry_contracts::courses::CourseMessage::json_schema().unwrap();
    let props = &schema["properties"];
    assert_eq!(props["name"]["maxLength"], ferry_service::fields::NAME);
    assert_eq!(props["code"]["maxLength"], ferry_service::fields::CODE);

    let s = start().await;
    let bootstrap = s.harness.bootstrap();
    let long = json!({"id": "too-long", "name": "n".repeat(201), "code": "C", "active": true, "method": "POST"});
    produce_plain(&bootstrap, "test", long.to_string().as_bytes()).await;
    let fine = json!({"id": "fine", "name": "n", "code": "C", "active": true, "method": "POST"});
    produce_plain(&bootstrap, "test", fine.to_string().as_bytes()).await;
    s.until("/api/v1/courses/fine", |st, _| st == StatusCode::OK)
        .await;
    let (status, _) = s.read("/api/v1/courses/too-long").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let letter = consume_raw(&bootstrap, "test.dlq", |m| m.payload.contains("too-long")).await;
    let error = letter.header("ferry-dlq-error").unwrap_or_default();
    assert!(
        error.contains("breaks its schema") && error.contains("/name"),
        "{error}"
    );
}
