//! The score calculator end to end: the built-in broker in-process, invoices and score
//! requests published with the toolkit's `Publisher`, answers read back from `score-calculated`
//! with a real Kafka client and from the HTTP API. The last test puts the real invoice
//! generator in front of it. The history scenarios run on SQLite and, when
//! `FERRY_TEST_POSTGRES_URL` is set, on PostgreSQL, in a database created for the run.

use ferry_contracts::billing::{
    CALCULATE_SCORE, CalculateScore, GENERATE_INVOICE, GenerateInvoice, INVOICE_GENERATED,
    InvoiceGenerated, LineItem, Money, SCORE_CALCULATED, ScoreCalculated,
};
use ferry_service::{ServiceConfig, ServiceHandle};
use ferry_testkit::reqwest::StatusCode;
use ferry_testkit::{Harness, Http, RawMessage, consume_raw, produce_raw};
use ferry_toolkit::kafka::KafkaConfig;
use ferry_toolkit::{Envelope, Message, Publisher, header};
use serde_json::{Value, json};
use uuid::Uuid;

/// The broker, the score calculator and a publisher.
struct System {
    harness: Harness,
    http: Http,
    service: ServiceHandle,
    publisher: Publisher,
}

impl System {
    async fn start() -> System {
        System::start_on(None).await
    }

    /// With `database_url`, on that PostgreSQL database; else on SQLite.
    async fn start_on(database_url: Option<String>) -> System {
        let harness = Harness::start().await;
        let config = ServiceConfig {
            database_url,
            ..harness.config()
        };
        let service = scores::start(config, harness.token())
            .await
            .expect("the score calculator starts");
        let publisher =
            Publisher::kafka(&KafkaConfig::new(harness.bootstrap())).expect("publisher");
        System {
            http: Http::new(service.addr),
            service,
            harness,
            publisher,
        }
    }

    /// Stops the service and waits until it has.
    async fn stop(self) {
        self.harness.shutdown.cancel();
        self.service.task.await.expect("the service stops cleanly");
    }

    fn bootstrap(&self) -> String {
        self.harness.bootstrap()
    }

    /// Publishes `message` to `topic` with a new message id and the given correlation id;
    /// returns the envelope.
    async fn publish<M: Message + Clone>(
        &self,
        topic: &str,
        message: &M,
        correlation: Uuid,
    ) -> Envelope {
        let mut envelope = Envelope::new::<M>();
        envelope.correlation_id = correlation;
        self.publisher
            .publish_with(topic, message.clone(), envelope.clone())
            .await
            .expect("published");
        envelope
    }

    /// Announces invoice `number` of `customer` for `total` cents, as the invoice generator does.
    async fn invoice(
        &self,
        number: i64,
        customer: &str,
        total: i64,
    ) -> (InvoiceGenerated, Envelope) {
        let invoice = invoice(number, customer, total);
        let envelope = self
            .publish(INVOICE_GENERATED, &invoice, Uuid::now_v7())
            .await;
        (invoice, envelope)
    }

    /// Waits until `customer`'s history counts `invoices` invoices; returns the current score.
    async fn history(&self, customer: &str, invoices: i64) -> Value {
        self.http
            .until(&format!("/api/scores/{customer}"), |status, body| {
                status == StatusCode::OK && body["invoices"] == invoices
            })
            .await
    }

    /// Sends `request` (correlation id = request id) and returns the answer to that very
    /// message (its causation id is the request's message id).
    async fn ask(&self, request: &CalculateScore) -> (ScoreCalculated, RawMessage) {
        let correlation = request.request_id.parse().expect("request ids are UUIDs");
        let sent = self.publish(CALCULATE_SCORE, request, correlation).await;
        let cause = sent.message_id.to_string();
        let raw = consume_raw(&self.bootstrap(), SCORE_CALCULATED, |m| {
            m.header(header::CAUSATION_ID) == Some(cause.as_str())
        })
        .await;
        assert_eq!(raw.header(header::TYPE), Some(ScoreCalculated::TYPE));
        assert_eq!(
            raw.header(header::CORRELATION_ID),
            Some(request.request_id.as_str()),
            "the answer carries the request's correlation id"
        );
        assert_eq!(
            raw.key,
            request.customer.trim(),
            "answers are keyed by customer"
        );
        (
            serde_json::from_str(&raw.payload).expect("a ScoreCalculated"),
            raw,
        )
    }

    /// Asks for `customer`'s score with a new request id.
    async fn score(&self, customer: &str) -> ScoreCalculated {
        self.ask(&score_request(customer)).await.0
    }
}

fn invoice(number: i64, customer: &str, total: i64) -> InvoiceGenerated {
    InvoiceGenerated {
        request_id: Uuid::now_v7().to_string(),
        number,
        customer: customer.to_owned(),
        items: vec![LineItem {
            description: "work".into(),
            quantity: 1,
            unit_price: Money::from_cents(total),
        }],
        subtotal: Money::from_cents(total),
        tax: Money::from_cents(0),
        total: Money::from_cents(total),
        issued_at: "2025-03-01T09:30:00.000Z".into(),
    }
}

fn score_request(customer: &str) -> CalculateScore {
    CalculateScore {
        request_id: Uuid::now_v7().to_string(),
        customer: customer.to_owned(),
    }
}

/// `answer` says `(score, invoices, total billed in cents)`.
#[track_caller]
fn check(answer: &ScoreCalculated, expected: (i64, i64, i64)) {
    assert_eq!(
        (answer.score, answer.invoices, answer.total_billed.cents()),
        expected,
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_history_gives_the_same_score_and_a_new_invoice_raises_it() {
    same_history_same_score(&System::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_delivered_twice_counts_once() {
    delivered_twice_counts_once(&System::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_and_scores_on_postgres() {
    let Some(admin_url) = ferry_testkit::postgres_url() else {
        return;
    };
    // Declared first, so it is dropped last, after the service stopped using it.
    let database = ferry_testkit::pg::FreshDatabase::create(&admin_url, "scores").await;
    let s = System::start_on(Some(database.url.clone())).await;
    same_history_same_score(&s).await;
    delivered_twice_counts_once(&s).await;
    s.stop().await;
    // The service really kept them in PostgreSQL, in its own schema.
    let learned = database
        .count("SELECT count(*) FROM score_calculator.learned_invoices")
        .await;
    assert_eq!(learned, 7);
}

/// Two customers with the same history score the same, every time; one more invoice raises
/// the score as documented. Uses invoice numbers 1 to 5.
async fn same_history_same_score(s: &System) {
    // ann and bob have the same history, 120.00 and 80.50, under different invoice numbers.
    for (number, customer, total) in [
        (1, "ann", 12_000),
        (2, "bob", 12_000),
        (3, "ann", 8_050),
        (4, "bob", 8_050),
    ] {
        s.invoice(number, customer, total).await;
    }
    s.history("ann", 2).await;
    s.history("bob", 2).await;

    // 300 + 2 x 40 + floor(200.50 / 100) = 382, for both, every time.
    let ann = s.score("ann").await;
    let bob = s.score("bob").await;
    check(&ann, (382, 2, 20_050));
    check(&bob, (382, 2, 20_050));
    check(&s.score("ann").await, (382, 2, 20_050));
    let (status, current) = s.http.get("/api/scores/ann").await;
    assert_eq!(
        (status, current),
        (
            StatusCode::OK,
            json!({"customer": "ann", "score": 382, "invoices": 2, "totalBilled": 200.5})
        )
    );

    // One more invoice of 1,000.00: + 40 + 10 = 432. bob's score does not move.
    s.invoice(5, "ann", 100_000).await;
    s.history("ann", 3).await;
    check(&s.score("ann").await, (432, 3, 120_050));
    check(&s.score("bob").await, (382, 2, 20_050));

    // Every answer is listed, newest first.
    let list = s
        .http
        .until("/api/scores?customer=ann", |_, body| body["results"] == 3)
        .await;
    let listed: Vec<i64> = list["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [432, 382, 382]);
    assert_eq!(list["scores"][0]["totalBilled"], json!(1200.5));
}

/// An invoice announced twice, and its message redelivered, counts once. Uses invoice numbers
/// 7 and 8.
async fn delivered_twice_counts_once(s: &System) {
    let (first, envelope) = s.invoice(7, "cy", 5_000).await;
    // The invoice generator announcing it again (a re-sent request): a new message id.
    s.publish(INVOICE_GENERATED, &first, Uuid::now_v7()).await;
    // A redelivery of the first message itself, with its own message id.
    let message_id = envelope.message_id.to_string();
    produce_raw(
        &s.bootstrap(),
        INVOICE_GENERATED,
        "cy",
        &[
            (header::MESSAGE_ID, message_id.as_str()),
            (header::TYPE, InvoiceGenerated::TYPE),
        ],
        &serde_json::to_vec(&first).unwrap(),
    )
    .await;
    // A different invoice after them (same key, same partition: handled after them), for an
    // odd number of cents: every total before it is a multiple of 50.00, so an odd total says
    // it was learned, and then the history is complete.
    s.invoice(8, "cy", 1_001).await;
    let current = s
        .http
        .until("/api/scores/cy", |_, body| {
            body["totalBilled"]
                .as_f64()
                .is_some_and(|units| (units * 100.0).round() as i64 % 2 == 1)
        })
        .await;
    assert_eq!(current["invoices"], 2, "{current}");
    // 300 + 2 x 40 + floor(60.01 / 100): the duplicates counted neither invoice nor amount.
    check(&s.score("cy").await, (380, 2, 6_001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_is_answered_with_the_score_it_got_first() {
    let s = System::start().await;
    // No history: the empty one, 300.
    let request = score_request("dee");
    let (first, _) = s.ask(&request).await;
    check(&first, (300, 0, 0));
    let (status, current) = s.http.get("/api/scores/dee").await;
    assert_eq!(
        (status, current["score"].as_i64()),
        (StatusCode::OK, Some(300))
    );

    s.invoice(1, "dee", 50_000).await;
    s.history("dee", 1).await;
    // The same request again, under a new message id: the stored answer, not a new score.
    let (again, _) = s.ask(&request).await;
    assert_eq!(again, first);
    // A new request sees the new history: 300 + 40 + 5.
    check(&s.score("dee").await, (345, 1, 50_000));
    let list = s
        .http
        .until("/api/scores?customer=dee", |_, body| body["results"] == 2)
        .await;
    assert_eq!(list["scores"][1]["requestId"], request.request_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_dead_lettered_and_the_next_is_answered() {
    let s = System::start().await;
    let poison_id = Uuid::now_v7().to_string();
    produce_raw(
        &s.bootstrap(),
        CALCULATE_SCORE,
        "eve",
        &[
            (header::MESSAGE_ID, poison_id.as_str()),
            (header::TYPE, CalculateScore::TYPE),
        ],
        b"{not json",
    )
    .await;
    let nobody = score_request("  ");
    let nobody_id = s
        .publish(CALCULATE_SCORE, &nobody, Uuid::now_v7())
        .await
        .message_id
        .to_string();
    check(&s.score("eve").await, (300, 0, 0));

    let dlq = format!("{CALCULATE_SCORE}.dlq");
    let dead = consume_raw(&s.bootstrap(), &dlq, |m| {
        m.header(header::MESSAGE_ID) == Some(poison_id.as_str())
    })
    .await;
    assert_eq!(dead.payload, "{not json");
    let dead = consume_raw(&s.bootstrap(), &dlq, |m| {
        m.header(header::MESSAGE_ID) == Some(nobody_id.as_str())
    })
    .await;
    let error = dead
        .header(ferry_toolkit::dlq::header::ERROR)
        .unwrap_or_default();
    assert!(error.contains("without a customer"), "{:?}", dead.headers);

    for (path, status, code) in [
        (
            "/api/scores?limit=0",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/api/scores?limit=x",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        ("/nowhere", StatusCode::NOT_FOUND, "not_found"),
    ] {
        let (got, body) = s.http.get(path).await;
        assert_eq!(
            (got, &body["error"]["code"]),
            (status, &json!(code)),
            "{path}: {body}"
        );
    }
    let (status, spec) = s.http.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    for path in ["/api/scores", "/api/scores/{customer}"] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} is documented: {spec}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_follow_the_invoices_the_invoice_generator_issues() {
    let s = System::start().await;
    invoices::start(s.harness.config(), s.harness.token())
        .await
        .expect("the invoice generator starts");
    for cents in [10_000, 25_000] {
        let request = GenerateInvoice {
            request_id: Uuid::now_v7().to_string(),
            customer: "fay".into(),
            items: vec![LineItem {
                description: "consulting".into(),
                quantity: 2,
                unit_price: Money::from_cents(cents),
            }],
        };
        let correlation = request.request_id.parse().unwrap();
        s.publish(GENERATE_INVOICE, &request, correlation).await;
    }
    s.history("fay", 2).await;
    // Totals with 20% tax: 240.00 + 600.00 = 840.00; 300 + 80 + 8.
    check(&s.score("fay").await, (388, 2, 84_000));
}
