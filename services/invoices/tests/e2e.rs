//! The invoice generator end to end: the built-in broker in-process, requests published with the
//! toolkit's `Publisher` (as the dashboard will), answers read back from `invoice-generated`
//! with a real Kafka client and from the HTTP API.
//!
//! The numbering scenario runs on SQLite and, when `FERRY_TEST_POSTGRES_URL` is set, on
//! PostgreSQL, in a database created for the run and dropped afterwards.

use std::collections::{BTreeMap, BTreeSet};

use ferry_contracts::billing::{
    GENERATE_INVOICE, GenerateInvoice, INVOICE_GENERATED, InvoiceGenerated, InvoiceRejected,
    LineItem, Money,
};
use ferry_service::{ServiceConfig, ServiceHandle};
use ferry_testkit::reqwest::StatusCode;
use ferry_testkit::{Harness, Http, RawMessage, consume_raw, consume_until, produce_raw};
use ferry_toolkit::kafka::KafkaConfig;
use ferry_toolkit::{Envelope, Message, Publisher, header};
use serde_json::{Value, json};
use uuid::Uuid;

/// Partitions of `generate-invoice` in these tests, so requests are handled concurrently.
const PARTITIONS: i32 = 4;

/// The broker, `instances` invoice generators sharing one database, and a publisher.
struct System {
    harness: Harness,
    /// One HTTP client per instance; they all read the same database.
    http: Vec<Http>,
    services: Vec<ServiceHandle>,
    publisher: Publisher,
}

impl System {
    async fn start(database_url: Option<String>, instances: usize) -> System {
        let harness = Harness::start().await;
        // Before the service subscribes: an auto-created topic would have one partition.
        ferry_testkit::create_topic(&harness.bootstrap(), GENERATE_INVOICE, PARTITIONS).await;
        let config = ServiceConfig {
            database_url,
            ..harness.config()
        };
        let (mut http, mut services) = (Vec::new(), Vec::new());
        for _ in 0..instances {
            let service = invoices::start(config.clone(), harness.token())
                .await
                .expect("the invoice generator starts");
            http.push(Http::new(service.addr));
            services.push(service);
        }
        let publisher =
            Publisher::kafka(&KafkaConfig::new(harness.bootstrap())).expect("publisher");
        System {
            harness,
            http,
            services,
            publisher,
        }
    }

    /// Stops the services and waits until they have (routers, relays and all).
    async fn stop(self) {
        self.harness.shutdown.cancel();
        for service in self.services {
            service.task.await.expect("the service stops cleanly");
        }
    }

    fn http(&self) -> &Http {
        &self.http[0]
    }

    fn bootstrap(&self) -> String {
        self.harness.bootstrap()
    }

    /// Publishes `request` as the dashboard does: a new message whose correlation id is the
    /// request id. Returns the envelope it was sent with.
    async fn send(&self, request: &GenerateInvoice) -> Envelope {
        let mut envelope = Envelope::new::<GenerateInvoice>();
        envelope.correlation_id = request.request_id.parse().expect("request ids are UUIDs");
        self.publisher
            .publish_with(GENERATE_INVOICE, request.clone(), envelope.clone())
            .await
            .expect("published");
        envelope
    }

    /// Waits until `GET /api/invoices` lists `count` invoices, and returns them, newest first.
    async fn invoices(&self, count: usize) -> Vec<Value> {
        let list = self
            .http()
            .until("/api/invoices?limit=1000", |status, body| {
                status == StatusCode::OK && body["results"] == count
            })
            .await;
        list["invoices"].as_array().expect("a list").clone()
    }
}

fn request(customer: &str, items: &[(u32, i64)]) -> GenerateInvoice {
    GenerateInvoice {
        request_id: Uuid::now_v7().to_string(),
        customer: customer.to_owned(),
        items: items
            .iter()
            .enumerate()
            .map(|(i, &(quantity, cents))| LineItem {
                description: format!("item {i}"),
                quantity,
                unit_price: Money::from_cents(cents),
            })
            .collect(),
    }
}

/// The `InvoiceGenerated` answers among `messages`, with the envelope they came with.
fn answers(messages: &[RawMessage]) -> Vec<(InvoiceGenerated, &RawMessage)> {
    messages
        .iter()
        .filter(|m| m.header(header::TYPE) == Some(InvoiceGenerated::TYPE))
        .map(|m| {
            (
                serde_json::from_str(&m.payload).expect("an InvoiceGenerated"),
                m,
            )
        })
        .collect()
}

/// Request id -> invoice number from `answers`, failing if one request id got two numbers or
/// one number went to two request ids.
#[track_caller]
fn numbers_by_request(answers: &[(InvoiceGenerated, &RawMessage)]) -> BTreeMap<String, i64> {
    let mut by_request = BTreeMap::new();
    let mut by_number = BTreeMap::new();
    for (invoice, _) in answers {
        let number = *by_request
            .entry(invoice.request_id.clone())
            .or_insert(invoice.number);
        assert_eq!(
            number, invoice.number,
            "request {} got two numbers",
            invoice.request_id
        );
        let request = by_number
            .entry(invoice.number)
            .or_insert(invoice.request_id.clone());
        assert_eq!(
            *request, invoice.request_id,
            "number {} given twice",
            invoice.number
        );
    }
    by_request
}

/// 100 concurrent requests are numbered exactly 1..=100; a request sent again (under a new
/// message id, and under its own message id) keeps its number and adds no invoice.
async fn numbering_scenario(system: &System) {
    // 100 requests from 10 customers, so they spread over the partitions; all at once.
    let requests: Vec<GenerateInvoice> = (0..100u32)
        .map(|i| {
            request(
                &format!("customer-{}", i % 10),
                &[(i % 3 + 1, 1_000 + i64::from(i))],
            )
        })
        .collect();
    let envelopes: Vec<Envelope> =
        futures::future::join_all(requests.iter().map(|r| system.send(r))).await;

    // The HTTP view: exactly 1..=100, newest first, one invoice per request.
    let listed = system.invoices(100).await;
    let numbers: Vec<i64> = listed
        .iter()
        .map(|i| i["number"].as_i64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        (1..=100).rev().collect::<Vec<_>>(),
        "gap-free and newest first"
    );
    let listed_requests: BTreeSet<&str> = listed
        .iter()
        .map(|i| i["requestId"].as_str().unwrap())
        .collect();
    let sent_requests: BTreeSet<&str> = requests.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(listed_requests, sent_requests, "one invoice per request");

    // The messages: one number per request, the same as the API's, 1..=100 again, each answer
    // correlated with its request and caused by the request's message.
    let messages = consume_until(&system.bootstrap(), INVOICE_GENERATED, |read| {
        numbers_by_request(&answers(read)).len() == 100
    })
    .await;
    let announced = answers(&messages);
    let by_request = numbers_by_request(&announced);
    assert_eq!(
        by_request.values().copied().collect::<BTreeSet<_>>(),
        (1..=100).collect::<BTreeSet<_>>()
    );
    for invoice in &listed {
        let request_id = invoice["requestId"].as_str().unwrap();
        assert_eq!(
            Some(&invoice["number"].as_i64().unwrap()),
            by_request.get(request_id)
        );
    }
    for (request, envelope) in requests.iter().zip(&envelopes) {
        let (_, raw) = announced
            .iter()
            .find(|(a, _)| a.request_id == request.request_id)
            .unwrap();
        assert_eq!(
            raw.header(header::CORRELATION_ID),
            Some(request.request_id.as_str())
        );
        assert_eq!(
            raw.header(header::CAUSATION_ID),
            Some(envelope.message_id.to_string().as_str())
        );
        assert_eq!(raw.key, request.customer, "answers are keyed by customer");
    }

    // The same request again, as a new message (the dashboard retrying): the same invoice is
    // announced again, caused by the new message, and no invoice is added.
    let again = &requests[42];
    let number = by_request[&again.request_id];
    let resent = system.send(again).await;
    let resent_id = resent.message_id.to_string();
    let messages = consume_until(&system.bootstrap(), INVOICE_GENERATED, |read| {
        read.iter()
            .any(|m| m.header(header::CAUSATION_ID) == Some(resent_id.as_str()))
    })
    .await;
    let (answer, raw) = answers(&messages)
        .into_iter()
        .find(|(_, m)| m.header(header::CAUSATION_ID) == Some(resent_id.as_str()))
        .expect("an InvoiceGenerated answers the re-sent request");
    assert_eq!(
        (answer.request_id.as_str(), answer.number),
        (again.request_id.as_str(), number)
    );
    assert_eq!(
        raw.header(header::CORRELATION_ID),
        Some(again.request_id.as_str())
    );

    // The same message again (a redelivery, byte for byte, with its original message id):
    // skipped by the inbox. A later request of the same customer (same partition, so handled
    // after it) gets number 101: the redelivery took no number.
    let original = &envelopes[42];
    let original_id = original.message_id.to_string();
    produce_raw(
        &system.bootstrap(),
        GENERATE_INVOICE,
        &again.customer,
        &[
            (header::MESSAGE_ID, original_id.as_str()),
            (header::TYPE, GenerateInvoice::TYPE),
            (header::CORRELATION_ID, again.request_id.as_str()),
        ],
        &serde_json::to_vec(again).unwrap(),
    )
    .await;
    let marker = request(&again.customer, &[(1, 100)]);
    system.send(&marker).await;
    let invoice = system
        .http()
        .until(
            &format!("/api/invoices/byRequest/{}", marker.request_id),
            |s, _| s == StatusCode::OK,
        )
        .await;
    assert_eq!(invoice["number"], 101);
    assert_eq!(system.invoices(101).await.len(), 101);
    let (status, kept) = system
        .http()
        .get(&format!("/api/invoices/byRequest/{}", again.request_id))
        .await;
    assert_eq!(
        (status, kept["number"].as_i64()),
        (StatusCode::OK, Some(number))
    );
    let messages = consume_until(&system.bootstrap(), INVOICE_GENERATED, |read| {
        answers(read).iter().any(|(a, _)| a.number == 101)
    })
    .await;
    let answered_original: BTreeSet<&str> = answers(&messages)
        .into_iter()
        .filter(|(_, m)| m.header(header::CAUSATION_ID) == Some(original_id.as_str()))
        .filter_map(|(_, m)| m.header(header::MESSAGE_ID))
        .collect();
    assert_eq!(
        answered_original.len(),
        1,
        "the redelivered message was answered once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_are_numbered_1_to_100_and_redelivery_keeps_the_number() {
    // One instance on SQLite, handling the partitions concurrently: a SQLite file belongs to one
    // process (a second instance on it is refused at start, see crates/ferry/tests/data_dir_lock.rs).
    // Instances sharing one database run on PostgreSQL, below.
    let system = System::start(None, 1).await;
    numbering_scenario(&system).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_are_numbered_1_to_100_on_postgres() {
    let Some(admin_url) = ferry_testkit::postgres_url() else {
        return;
    };
    // Declared first, so it is dropped last, after the services stopped using it.
    let database = ferry_testkit::pg::FreshDatabase::create(&admin_url, "invoices").await;
    let system = System::start(Some(database.url.clone()), 2).await;
    numbering_scenario(&system).await;
    system.stop().await;
    // The invoices really are in PostgreSQL, in the service's own schema.
    let stored = database
        .count("SELECT count(*) FROM invoice_generator.invoices")
        .await;
    assert_eq!(stored, 101);
}

/// Sends `request` and returns the answer on `invoice-generated` (generated or rejected).
async fn answer_to(system: &System, request: &GenerateInvoice) -> RawMessage {
    system.send(request).await;
    let id = request.request_id.clone();
    consume_raw(&system.bootstrap(), INVOICE_GENERATED, move |m| {
        serde_json::from_str::<Value>(&m.payload).is_ok_and(|v| v["requestId"] == id.as_str())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_rejected_with_the_reason_and_take_no_number() {
    let system = System::start(None, 1).await;
    for (request, reason) in [
        (
            request("ada", &[]),
            "an invoice needs at least one line item",
        ),
        (
            request("ada", &[(1, 100), (0, 100)]),
            "line 2: quantity must be at least 1",
        ),
        (
            request("ada", &[(1, 0)]),
            "line 1: unitPrice must be greater than 0 (got 0.00)",
        ),
        (
            request("ada", &[(2, -150)]),
            "line 1: unitPrice must be greater than 0 (got -1.50)",
        ),
        (request("   ", &[(1, 100)]), "customer is required"),
    ] {
        let answer = answer_to(&system, &request).await;
        assert_eq!(
            answer.header(header::TYPE),
            Some(InvoiceRejected::TYPE),
            "{}",
            answer.payload
        );
        let rejected: InvoiceRejected = serde_json::from_str(&answer.payload).unwrap();
        assert_eq!(rejected.reason, reason);
        assert_eq!(
            answer.header(header::CORRELATION_ID),
            Some(request.request_id.as_str())
        );
        let (status, body) = system
            .http()
            .get(&format!("/api/invoices/byRequest/{}", request.request_id))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "rule_violated");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(reason),
            "{body}"
        );
    }

    // A valid request after them is invoice number 1, with the contract's amounts:
    // 3 x 19.99 + 2 x 2.50 = 64.97; tax 12.994 -> 12.99; total 77.96.
    let valid = request("  ada ", &[(3, 1_999), (2, 250)]);
    let answer = answer_to(&system, &valid).await;
    let invoice: InvoiceGenerated = serde_json::from_str(&answer.payload).unwrap();
    assert_eq!(
        (invoice.number, invoice.customer.as_str()),
        (1, "ada"),
        "rejections take no number; the customer is trimmed"
    );
    assert_eq!(
        (
            invoice.subtotal.cents(),
            invoice.tax.cents(),
            invoice.total.cents()
        ),
        (6_497, 1_299, 7_796)
    );
    let (status, body) = system.http().get("/api/invoices/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["subtotal"], json!(64.97));
    assert_eq!(body["items"][0]["amount"], json!(59.97));
    assert_eq!(body["issuedAt"], invoice.issued_at.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_request_is_dead_lettered_and_the_next_request_is_invoiced() {
    let system = System::start(None, 1).await;
    let poison_id = Uuid::now_v7().to_string();
    produce_raw(
        &system.bootstrap(),
        GENERATE_INVOICE,
        "ada",
        &[
            (header::MESSAGE_ID, poison_id.as_str()),
            (header::TYPE, GenerateInvoice::TYPE),
        ],
        b"{not json",
    )
    .await;
    let next = request("ada", &[(1, 500)]);
    system.send(&next).await;
    let invoice = system
        .http()
        .until(
            &format!("/api/invoices/byRequest/{}", next.request_id),
            |s, _| s == StatusCode::OK,
        )
        .await;
    assert_eq!(invoice["number"], 1);
    let dead = consume_raw(
        &system.bootstrap(),
        &format!("{GENERATE_INVOICE}.dlq"),
        |m| m.header(header::MESSAGE_ID) == Some(poison_id.as_str()),
    )
    .await;
    assert_eq!(dead.payload, "{not json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_json_and_the_api_is_documented() {
    let system = System::start(None, 1).await;
    let http = system.http();
    for (path, status, code) in [
        ("/api/invoices/999", StatusCode::NOT_FOUND, "not_found"),
        (
            "/api/invoices/abc",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/api/invoices/byRequest/nope",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/api/invoices?limit=0",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/api/invoices?limit=x",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        ("/nowhere", StatusCode::NOT_FOUND, "not_found"),
    ] {
        let (got, body) = http.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
    }
    let (status, list) = http.get("/api/invoices?customer=nobody").await;
    assert_eq!(
        (status, &list),
        (StatusCode::OK, &json!({"results": 0, "invoices": []}))
    );
    let (status, spec) = http.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/invoices",
        "/api/invoices/{number}",
        "/api/invoices/byRequest/{request_id}",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} is documented: {spec}"
        );
    }
}
