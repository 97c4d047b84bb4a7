//! The dashboard over HTTP against the built-in broker: the page, invoice and score requests,
//! the live stream, traces, topics, groups, dead letters and re-drive, and the gateway.

use dashboard::Upstream;
use ferry_testkit::{Harness, Http, consume_raw, produce_raw};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Dashboard {
    harness: Harness,
    http: Http,
}

/// The broker, one stand-in upstream ("courses-consumer", an HTTP server that echoes what it
/// received) and the dashboard.
async fn start() -> Dashboard {
    let harness = Harness::start().await;
    let echo = axum::Router::new().fallback(
        |method: Method, uri: axum::http::Uri, body: String| async move {
            (
                StatusCode::IM_A_TEAPOT,
                axum::Json(
                    json!({"method": method.as_str(), "uri": uri.to_string(), "body": body}),
                ),
            )
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, echo).await });
    let upstreams = vec![
        Upstream::new("courses-consumer", format!("http://{echo_addr}")),
        // Nothing listens on port 9 of loopback (discard), so this one never answers.
        Upstream::new("orders", "http://127.0.0.1:9"),
    ];
    let handle = dashboard::start(harness.config(), upstreams, harness.token())
        .await
        .unwrap();
    Dashboard {
        http: Http::new(handle.addr),
        harness,
    }
}

/// Opens the live stream: once this returns, every later event reaches it.
async fn open_stream(http: &Http) -> reqwest::Response {
    let response = reqwest_get(http, "/api/ferry/events/stream").await;
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "the stream is server-sent events"
    );
    response
}

/// Reads the live stream until `found` holds for an event, or fails after the deadline.
async fn stream_until(mut response: reqwest::Response, found: impl Fn(&Value) -> bool) -> Value {
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + ferry_testkit::DEADLINE;
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("no matching event on the stream in time")
            .unwrap()
            .expect("the stream ended");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let data: String = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:")))
                .collect();
            if !frame.contains("event: events") {
                continue;
            }
            let batch: Vec<Value> = serde_json::from_str(&data).unwrap();
            if let Some(event) = batch.into_iter().find(&found) {
                return event;
            }
        }
    }
}

async fn reqwest_get(http: &Http, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", http.base()))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_served_from_the_binary() {
    let d = start().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let response = reqwest_get(&d.http, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(!response.text().await.unwrap().is_empty(), "{path}");
    }
    let (status, openapi) = d.http.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(openapi["paths"]["/api/ferry/invoices"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_request_is_sent_with_its_id_as_correlation_and_streamed_live() {
    let d = start().await;
    let live = open_stream(&d.http).await;
    let (status, accepted) = d
        .http
        .post(
            "/api/ferry/invoices",
            json!({"customer": "acme", "items": [{"description": "Widget", "quantity": 2, "unitPrice": 9.99}]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let request_id = accepted["requestId"].as_str().unwrap().to_owned();

    // On the topic, with the envelope the worker needs.
    let sent = consume_raw(&d.harness.bootstrap(), "generate-invoice", |m| {
        m.header("ce_correlationid") == Some(request_id.as_str())
    })
    .await;
    assert_eq!(sent.header("ce_type"), Some("GenerateInvoice"));
    assert_eq!(sent.key, "acme");
    let payload: Value = serde_json::from_str(&sent.payload).unwrap();
    assert_eq!(payload["requestId"], request_id.as_str());
    assert_eq!(payload["items"][0]["unitPrice"], 9.99);

    // On the live stream, and then in its trace.
    let event = stream_until(live, |e| e["correlationId"] == request_id.as_str()).await;
    assert_eq!(event["type"], "GenerateInvoice");
    assert_eq!(event["topic"], "generate-invoice");
    let trace = d
        .http
        .until(&format!("/api/ferry/traces/{request_id}"), |s, _| {
            s == StatusCode::OK
        })
        .await;
    assert_eq!(trace[0]["type"], "GenerateInvoice");
    assert_eq!(trace[0]["payload"]["customer"], "acme");

    let (status, accepted) = d
        .http
        .post("/score/calculate", json!({"customer": "acme"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
}

#[track_caller]
fn check_error(got: (StatusCode, Value), want: StatusCode, needle: &str) {
    let (status, body) = got;
    assert_eq!(status, want, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_4xx_and_nothing_is_sent() {
    let d = start().await;
    let cases = [
        (
            json!({"items": [{"description": "x", "quantity": 1, "unitPrice": 1}]}),
            "customer",
        ),
        (json!({"customer": "a", "items": []}), "at least one line"),
        (
            json!({"customer": "a", "items": [{"description": "x", "quantity": 0, "unitPrice": 1}]}),
            "quantity",
        ),
        (
            json!({"customer": "a", "items": [{"description": "x", "quantity": 1, "unitPrice": -1}]}),
            "positive",
        ),
        (
            json!({"customer": "a", "items": [{"description": "x", "quantity": 1, "unitPrice": 0.001}]}),
            "decimals",
        ),
        (
            json!({"customer": "a", "items": [{"quantity": 1, "unitPrice": 1}]}),
            "description",
        ),
    ];
    for (body, needle) in cases {
        check_error(
            d.http.post("/api/ferry/invoices", body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            needle,
        );
    }
    let (status, body) = d.http.send(Method::POST, "/api/ferry/scores", None).await;
    assert!(status.is_client_error(), "{status} {body}");
    check_error(
        d.http
            .post("/api/ferry/scores", json!({"customer": "  "}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "customer",
    );
    check_error(
        d.http
            .post("/api/ferry/dlq/not-a-dlq/redrive", json!({}))
            .await,
        StatusCode::BAD_REQUEST,
        "not a dead-letter topic",
    );
    check_error(
        d.http.get("/api/ferry/traces/nope").await,
        StatusCode::NOT_FOUND,
        "nope",
    );
    // The state-changing original paths are POST only now.
    let (status, _) = d.http.get("/invoice/generate").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_groups_and_dead_letters_are_shown_and_dead_letters_re_driven() {
    let d = start().await;
    let bootstrap = d.harness.bootstrap();
    let dead_letter_headers = [
        ("ce_id", "0190c5a4-0000-7000-8000-000000000001"),
        ("ce_type", "CourseMessage"),
        ("ferry-dlq-original-topic", "lessons"),
        ("ferry-dlq-error", "boom"),
    ];
    produce_raw(
        &bootstrap,
        "lessons.dlq",
        "k1",
        &dead_letter_headers,
        b"{\"n\":1}",
    )
    .await;

    let topics = d
        .http
        .until("/api/ferry/topics", |s, b| {
            s == StatusCode::OK
                && b.as_array()
                    .is_some_and(|t| t.iter().any(|t| t["name"] == "lessons.dlq"))
        })
        .await;
    let dlq = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "lessons.dlq")
        .unwrap();
    assert_eq!(dlq["partitions"][0]["end"], 1);

    let letters = d
        .http
        .until("/api/ferry/dlq", |s, b| {
            s == StatusCode::OK && b[0]["messages"] == 1
        })
        .await;
    assert_eq!(letters[0]["originalTopic"], "lessons");

    // The tap's own group shows up, caught up.
    d.http
        .until("/api/ferry/groups", |s, b| {
            s == StatusCode::OK
                && b.as_array().is_some_and(|g| {
                    g.iter().any(|g| {
                        g["name"] == "ferry-dashboard"
                            && g["offsets"].as_array().is_some_and(|o| !o.is_empty())
                    })
                })
        })
        .await;

    // The dead letter is in the live store with its error.
    let events = d
        .http
        .until("/api/ferry/events?topic=lessons.dlq", |s, b| {
            s == StatusCode::OK && b.as_array().is_some_and(|e| !e.is_empty())
        })
        .await;
    assert_eq!(events[0]["dlqError"], "boom");

    // A re-drive never creates the original topic; here it exists.
    ferry_testkit::create_topic(&bootstrap, "lessons", 1).await;
    let (status, report) = d
        .http
        .post("/api/ferry/dlq/lessons.dlq/redrive", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["redriven"], 1);
    let back = consume_raw(&bootstrap, "lessons", |_| true).await;
    assert_eq!(back.payload, "{\"n\":1}");
    assert_eq!(
        back.header("ferry-dlq-error"),
        None,
        "dead-letter headers are removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_forwards_api_paths_to_their_owner_and_says_when_it_cannot() {
    let d = start().await;
    // GET /api/v1/courses belongs to the courses consumer: method, path, query and body pass.
    let (status, echoed) = d.http.get("/api/v1/courses/7?x=1").await;
    assert_eq!(
        status,
        StatusCode::IM_A_TEAPOT,
        "the upstream's status passes through"
    );
    assert_eq!(echoed["method"], "GET");
    assert_eq!(echoed["uri"], "/api/v1/courses/7?x=1");
    let (_, echoed) = d
        .http
        .send(Method::GET, "/svc/courses-consumer/users/3", None)
        .await;
    assert_eq!(echoed["uri"], "/users/3");
    let (_, echoed) = d
        .http
        .send(Method::DELETE, "/svc/courses-consumer", None)
        .await;
    assert_eq!(
        (echoed["method"].as_str(), echoed["uri"].as_str()),
        (Some("DELETE"), Some("/"))
    );

    // Orders is configured but down; posts is not configured at all; /api/nope has no owner.
    check_error(
        d.http
            .post(
                "/api/Orders/NewOrder",
                json!({"customerId": "c", "amount": 1}),
            )
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "orders did not answer",
    );
    check_error(
        d.http.post("/api/v1/NewPost", json!({})).await,
        StatusCode::NOT_FOUND,
        "posts-command",
    );
    check_error(
        d.http.get("/api/nope").await,
        StatusCode::NOT_FOUND,
        "/api/nope",
    );
    check_error(
        d.http.get("/svc/nope/health").await,
        StatusCode::NOT_FOUND,
        "nope",
    );

    // Health: the echo answers 418 to /health, so it is not up; orders is down.
    let (status, services) = d.http.get("/api/ferry/services").await;
    assert_eq!(status, StatusCode::OK);
    let services = services.as_array().unwrap();
    assert_eq!(services.len(), 2);
    assert!(
        services
            .iter()
            .all(|s| s["up"] == false && s["ready"] == false)
    );
}

/// An event the broker refuses for good (here: its topic was configured with a 100-byte
/// `max.message.bytes`) is parked by the service's relay and shown beside the dead letters, with
/// its reason and without its payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_outbox_row_is_shown_with_the_dead_letters() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let harness = Harness::start().await;
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", harness.bootstrap())
        .create()
        .unwrap();
    let topic = ferry_contracts::courses::TOPIC;
    for created in admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "100")],
            &AdminOptions::new(),
        )
        .await
        .unwrap()
    {
        created.unwrap();
    }
    let producer = courses::start_producer(harness.config(), harness.token())
        .await
        .unwrap();
    let upstreams = vec![Upstream::new(
        "courses-producer",
        format!("http://{}", producer.addr),
    )];
    let dashboard = dashboard::start(harness.config(), upstreams, harness.token())
        .await
        .unwrap();
    let http = Http::new(dashboard.addr);
    let (status, created) = Http::new(producer.addr)
        .post(
            "/api/v1/courses",
            json!({"name": "Too big for its topic", "code": "P1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let rows = http
        .until("/api/ferry/parked", |st, rows| {
            st == StatusCode::OK && rows.as_array().is_some_and(|r| !r.is_empty())
        })
        .await;
    let row = &rows[0];
    assert_eq!(row["service"], "courses-producer", "{row}");
    assert_eq!(row["topic"], topic, "{row}");
    assert_eq!(row["key"], created["id"], "{row}");
    assert!(
        row["reason"]
            .as_str()
            .is_some_and(|r| r.to_lowercase().contains("too large")),
        "{row}"
    );
    assert!(row.get("payload").is_none(), "no payload is served: {row}");
}

/// Sends `head` (lines joined by CRLF, a blank line added) and `body` on a new connection and
/// returns (status, lowercased head, body).
async fn raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{}\r\nConnection: close\r\n\r\n",
        head.replace('\n', "\r\n")
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(ferry_testkit::DEADLINE, stream.read_to_end(&mut got))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => body[a..=b].to_string(),
        _ => body.to_string(),
    };
    (
        head[9..12].parse().unwrap(),
        head.to_ascii_lowercase(),
        body,
    )
}

#[track_caller]
fn check_shape(got: &(u16, String, String), status: u16, code: &str) {
    assert_eq!(got.0, status, "{}\n{}", got.1, got.2);
    let v: Value = serde_json::from_str(&got.2).unwrap_or_else(|e| panic!("{e}: {:?}", got.2));
    assert_eq!(v["error"]["code"], code, "{}", got.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_dot_segments_encoded_slashes_and_rebindable_hosts() {
    let d = start().await;
    let addr: std::net::SocketAddr = d.http.base().trim_start_matches("http://").parse().unwrap();
    let host = format!("Host: {addr}");
    // Each would reach another path than the one routed on; the echo upstream answers 418, so
    // a 400 means nothing was forwarded.
    for path in [
        "/api/v1/courses/../../../metrics",
        "/api/v1/courses/%2e%2e/%2E%2E/metrics",
        "/api/v1/courses/./7",
        "/api/v1/courses/a%2fb",
        "/api/v1/courses/a%5cb",
        "/svc/courses-consumer/../orders/health",
    ] {
        let got = raw(addr, &format!("GET {path} HTTP/1.1\n{host}"), b"").await;
        check_shape(&got, 400, "bad_request");
    }
    let got = raw(
        addr,
        &format!("POST /api/v1/PostLookup/../RestoreReadDb HTTP/1.1\n{host}\nContent-Length: 0"),
        b"",
    )
    .await;
    check_shape(&got, 400, "bad_request");

    // A page whose DNS name was rebound to this machine is refused; the address itself and
    // localhost are served.
    let got = raw(
        addr,
        "GET /api/ferry/topics HTTP/1.1\nHost: evil.example:8000",
        b"",
    )
    .await;
    check_shape(&got, 403, "forbidden");
    let got = raw(addr, "GET /api/v1/courses HTTP/1.1\nHost: localhost", b"").await;
    assert_eq!(got.0, 418, "forwarded: {}", got.2);
    let got = raw(
        addr,
        &format!("GET /api/v1/courses/7 HTTP/1.1\n{host}"),
        b"",
    )
    .await;
    assert_eq!(got.0, 418, "forwarded: {}", got.2);

    // The gateway's and the dashboard API's own rejections are in the error shape too.
    let got = raw(
        addr,
        &format!("GET /api/ferry/invoices HTTP/1.1\n{host}"),
        b"",
    )
    .await;
    check_shape(&got, 405, "method_not_allowed");
    assert!(got.1.contains("\r\nallow: post"), "{}", got.1);
    let big = vec![b'x'; ferry_service::fields::MAX_BODY_BYTES + 1];
    let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
    chunked.extend_from_slice(&big);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let got = raw(
        addr,
        &format!("POST /api/v1/courses HTTP/1.1\n{host}\nContent-Type: application/json\nTransfer-Encoding: chunked"),
        &chunked,
    )
    .await;
    check_shape(&got, 413, "payload_too_large");
    let got = raw(
        addr,
        &format!("GET /api/ferry/traces/%FF%FE HTTP/1.1\n{host}"),
        b"",
    )
    .await;
    check_shape(&got, 400, "invalid_parameter");
    drop(d.harness);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_ready_is_false_and_a_request_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    // Nothing listens on port 1 of loopback.
    let config = ferry_service::ServiceConfig::new("127.0.0.1:1", dir.path(), 0);
    let handle = dashboard::start(config, Vec::new(), shutdown.clone())
        .await
        .unwrap();
    let http = Http::new(handle.addr);
    let ready = http
        .until("/ready", |s, b| {
            s == StatusCode::SERVICE_UNAVAILABLE
                && b["checks"]["broker"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("127.0.0.1:1"))
        })
        .await;
    assert_eq!(ready["ready"], false, "{ready}");
    let started = std::time::Instant::now();
    let (status, body) = http
        .send(
            Method::POST,
            "/api/ferry/invoices",
            Some(json!({"customer": "acme", "items": [{"description": "x", "quantity": 1, "unitPrice": 10}]})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:1"),
        "{body}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    shutdown.cancel();
    handle.task.await.unwrap();
}
