//! The orders/credit saga end to end over HTTP: the customer and order services against the
//! built-in broker in-process, talking only through `ReactiveMicroservices`.

use std::time::{Duration, Instant};

use ferry_service::ServiceConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "ReactiveMicroservices";

struct System {
    _broker: ferry_broker::BrokerHandle,
    bootstrap: String,
    customers: String,
    orders: String,
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
    let customers = customers::start(config.clone(), shutdown.clone())
        .await
        .unwrap();
    let orders = orders::start(config, shutdown.clone()).await.unwrap();
    System {
        _broker: broker,
        bootstrap,
        customers: format!("http://{}", customers.addr),
        orders: format!("http://{}", orders.addr),
        http: reqwest::Client::new(),
        shutdown,
        _dir: dir,
    }
}

impl System {
    /// One request; the body is parsed as JSON (null if it is not).
    async fn call(&self, method: Method, url: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn new_customer(&self, credit_limit: f64) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("{}/api/Customer/NewCustomer", self.customers),
                Some(json!({"name": "Ada", "creditLimit": credit_limit})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Places an order and returns its id.
    async fn new_order(&self, customer_id: &str, amount: f64) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("{}/api/Orders/NewOrder", self.orders),
                Some(json!({"customerId": customer_id, "amount": amount})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["status"], "Created", "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Polls `GET url` until `cond` holds, or fails after 20 s.
    async fn until(&self, url: &str, cond: impl Fn(StatusCode, &Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.call(Method::GET, url, None).await;
            if cond(status, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{url} never satisfied the condition; last: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the order has left `Created` and returns it.
    async fn concluded(&self, order_id: &str) -> Value {
        self.until(
            &format!("{}/api/Orders/{order_id}", self.orders),
            |st, b| st == StatusCode::OK && b["status"] != "Created",
        )
        .await
    }

    async fn customer(&self, id: &str) -> Value {
        let (status, body) = self
            .call(
                Method::GET,
                &format!("{}/api/Customer/{id}", self.customers),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Reads `topic` from the start until a message satisfies `found` and returns it, or fails
    /// after 20 s.
    async fn wait_for_message(
        &self,
        topic: &str,
        found: impl Fn(&Raw) -> bool + Send + 'static,
    ) -> Raw {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", format!("reader-{}", unique()))
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let topic = topic.to_owned();
        let seen = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    let raw = Raw {
                        key: m.key().unwrap_or_default().to_vec(),
                        headers: m
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|h| {
                                        (h.key.to_owned(), h.value.unwrap_or_default().to_vec())
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                        payload: m.payload().unwrap_or_default().to_vec(),
                    };
                    if found(&raw) {
                        return Some(raw);
                    }
                }
            }
            None
        })
        .await
        .unwrap();
        seen.unwrap_or_else(|| panic!("no such message on {topic}"))
    }

    /// Produces a record as it is given: any headers, any payload.
    async fn produce_raw(&self, topic: &str, raw: &Raw) {
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let mut headers = OwnedHeaders::new();
        for (key, value) in &raw.headers {
            headers = headers.insert(rdkafka::message::Header {
                key,
                value: Some(value),
            });
        }
        producer
            .send(
                FutureRecord::to(topic)
                    .key(&raw.key)
                    .payload(&raw.payload)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

/// A record as read from or written to a topic.
#[derive(Debug, Clone)]
struct Raw {
    key: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    payload: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .unwrap_or_default()
    }

    /// The `ferry-type` header.
    fn type_name(&self) -> &str {
        self.header("ferry-type")
    }

    /// The payload as JSON (null if it is not).
    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }

    fn with_header(mut self, name: &str, value: &str) -> Raw {
        self.headers.retain(|(k, _)| k != name);
        self.headers
            .push((name.to_owned(), value.as_bytes().to_vec()));
        self
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A unique enough suffix for consumer group names in one test process.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_never_overspend_the_credit() {
    let s = start().await;
    let customer = s.new_customer(100.0).await;
    let (a, b) = tokio::join!(s.new_order(&customer, 60.0), s.new_order(&customer, 60.0));
    let (a, b) = tokio::join!(s.concluded(&a), s.concluded(&b));
    let (shipped, cancelled) = if a["status"] == "Shipped" {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(shipped["status"], "Shipped", "{shipped}");
    assert_eq!(shipped["reason"], Value::Null, "{shipped}");
    assert_eq!(cancelled["status"], "Cancelled", "{cancelled}");
    let reason = cancelled["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("insufficient credit"),
        "the cancelled order says why: {reason}"
    );
    let c = s.customer(&customer).await;
    assert_eq!(
        (
            &c["creditLimit"],
            &c["reservedCredit"],
            &c["availableCredit"]
        ),
        (&json!(100), &json!(60), &json!(40)),
        "{c}"
    );

    // Each conclusion was published.
    let shipped_id = shipped["id"].as_str().unwrap().to_owned();
    s.wait_for_message(TOPIC, move |m| {
        m.type_name() == "OrderShipped" && m.json()["id"] == shipped_id.as_str()
    })
    .await;
    let cancelled_id = cancelled["id"].as_str().unwrap().to_owned();
    s.wait_for_message(TOPIC, move |m| {
        let p = m.json();
        m.type_name() == "OrderCancelled"
            && p["id"] == cancelled_id.as_str()
            && p["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("insufficient credit"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_for_an_unknown_customer_is_cancelled_with_the_reason() {
    let s = start().await;
    let order = s.new_order("nobody", 10.0).await;
    let concluded = s.concluded(&order).await;
    assert_eq!(
        (&concluded["status"], &concluded["reason"]),
        (&json!("Cancelled"), &json!("unknown customer")),
        "{concluded}"
    );
    s.wait_for_message(TOPIC, move |m| {
        m.type_name() == "OrderValidated"
            && m.json() == json!({"orderId": order, "isValid": false, "reason": "unknown customer"})
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_credit_limit_lets_a_later_order_through() {
    let s = start().await;
    let customer = s.new_customer(50.0).await;
    let refused = s.new_order(&customer, 80.0).await;
    assert_eq!(s.concluded(&refused).await["status"], "Cancelled");

    // The original's body: a bare number.
    let url = format!("{}/api/Customer/{customer}", s.customers);
    let (status, c) = s.call(Method::PUT, &url, Some(json!(120.5))).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(
        (&c["creditLimit"], &c["availableCredit"]),
        (&json!(120.5), &json!(120.5))
    );
    let accepted = s.new_order(&customer, 80.0).await;
    let concluded = s.concluded(&accepted).await;
    assert_eq!(concluded["status"], "Shipped", "{concluded}");
    assert_eq!(s.customer(&customer).await["availableCredit"], json!(40.5));

    // And the object form.
    let (status, c) = s
        .call(Method::PUT, &url, Some(json!({"creditLimit": 200})))
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(
        (&c["creditLimit"], &c["reservedCredit"]),
        (&json!(200), &json!(80))
    );
    let id = customer.clone();
    s.wait_for_message(TOPIC, move |m| {
        m.type_name() == "CreditLimitChanged"
            && m.json() == json!({"customerId": id, "creditLimit": 200})
    })
    .await;
    s.wait_for_message(TOPIC, move |m| {
        m.type_name() == "CustomerCreated" && m.json()["id"] == customer.as_str()
    })
    .await;
}

/// Sends one request and checks the status and that the body is the JSON error contract.
#[track_caller]
fn check_error(got: (StatusCode, Value), want: StatusCode, case: &str) {
    let (status, body) = got;
    assert_eq!(status, want, "{case}: {body}");
    assert!(
        body["error"]["code"].is_string() && body["error"]["message"].is_string(),
        "{case}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_4xx_and_unknown_ids_are_404() {
    let s = start().await;
    let customer = s.new_customer(10.0).await;
    let new_order = format!("{}/api/Orders/NewOrder", s.orders);
    let new_customer = format!("{}/api/Customer/NewCustomer", s.customers);
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    for (url, body, want) in [
        (
            &new_order,
            json!({"customerId": customer, "amount": 0}),
            unprocessable,
        ),
        (
            &new_order,
            json!({"customerId": customer, "amount": -5}),
            unprocessable,
        ),
        (
            &new_order,
            json!({"customerId": customer, "amount": 1.005}),
            unprocessable,
        ),
        (&new_order, json!({"customerId": customer}), unprocessable),
        (
            &new_order,
            json!({"customerId": " ", "amount": 5}),
            unprocessable,
        ),
        (
            &new_order,
            json!({"customerId": customer, "amount": "5"}),
            StatusCode::BAD_REQUEST,
        ),
        (&new_order, json!([1, 2]), StatusCode::BAD_REQUEST),
        (
            &new_customer,
            json!({"name": "", "creditLimit": 5}),
            unprocessable,
        ),
        (
            &new_customer,
            json!({"name": "Bo", "creditLimit": -1}),
            unprocessable,
        ),
        (&new_customer, json!({"name": "Bo"}), unprocessable),
        (
            &new_customer,
            json!({"id": customer, "name": "Bo", "creditLimit": 1}),
            StatusCode::CONFLICT,
        ),
    ] {
        let case = format!("POST {url} {body}");
        check_error(s.call(Method::POST, url, Some(body)).await, want, &case);
    }
    let url = format!("{}/api/Customer/{customer}", s.customers);
    check_error(
        s.call(Method::PUT, &url, Some(json!(-1))).await,
        unprocessable,
        "negative limit",
    );
    check_error(
        s.call(Method::PUT, &url, Some(json!("x"))).await,
        StatusCode::BAD_REQUEST,
        "text limit",
    );
    for (method, url) in [
        (Method::GET, format!("{}/api/Orders/nope", s.orders)),
        (Method::GET, format!("{}/api/Customer/nope", s.customers)),
        (Method::PUT, format!("{}/api/Customer/nope", s.customers)),
    ] {
        let body = (method == Method::PUT).then(|| json!(5));
        let case = format!("{method} {url}");
        check_error(
            s.call(method, &url, body).await,
            StatusCode::NOT_FOUND,
            &case,
        );
    }

    // The original's PascalCase request still works, and a client may choose the id.
    let (status, body) = s
        .call(
            Method::POST,
            &new_customer,
            Some(json!({"Id": "c-42", "Name": "Cy", "CreditLimit": 7.25})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"id": "c-42", "name": "Cy", "creditLimit": 7.25, "reservedCredit": 0, "availableCredit": 7.25})
    );
    let (status, body) = s
        .call(
            Method::POST,
            &new_order,
            Some(json!({"CustomerId": "c-42", "Amount": 7.25})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap();
    assert_eq!(s.concluded(id).await["status"], "Shipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_dead_lettered_and_the_next_is_processed() {
    let s = start().await;
    // A message that claims to be an OrderCreated but is not JSON: the customer service cannot
    // decode it (the order service has no handler for the type and skips it).
    let poison = Raw {
        key: b"poison".to_vec(),
        headers: vec![],
        payload: b"{not json".to_vec(),
    }
    .with_header("ferry-message-id", "0190a5e0-0000-7000-8000-000000000001")
    .with_header("ferry-type", "OrderCreated");
    s.produce_raw(TOPIC, &poison).await;
    // And one without any envelope at all.
    let garbage = Raw {
        key: b"poison".to_vec(),
        headers: vec![],
        payload: b"garbage".to_vec(),
    };
    s.produce_raw(TOPIC, &garbage).await;

    let customer = s.new_customer(10.0).await;
    let order = s.new_order(&customer, 5.0).await;
    assert_eq!(s.concluded(&order).await["status"], "Shipped");

    let dlq = format!("{TOPIC}.dlq");
    let dead = s
        .wait_for_message(&dlq, |m| m.payload == b"{not json")
        .await;
    assert_eq!(dead.type_name(), "OrderCreated");
    assert_eq!(
        (
            dead.header("ferry-dlq-reason"),
            dead.header("ferry-dlq-group")
        ),
        ("undecodable", "customer-service"),
        "{dead:?}"
    );
    s.wait_for_message(&dlq, |m| m.payload == b"garbage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_order_created_reserves_credit_once() {
    let s = start().await;
    let customer = s.new_customer(100.0).await;
    let order = s.new_order(&customer, 30.0).await;
    assert_eq!(s.concluded(&order).await["status"], "Shipped");
    let id = order.clone();
    let original = s
        .wait_for_message(TOPIC, move |m| {
            m.type_name() == "OrderCreated" && m.json()["id"] == id.as_str()
        })
        .await;

    // The same message again (a redelivery), then the same order under a new message id (sent
    // again by hand). Same key, same partition: handled in this order.
    s.produce_raw(TOPIC, &original).await;
    let resent_id = "0190a5e0-0000-7000-8000-0000000000aa";
    s.produce_raw(TOPIC, &original.with_header("ferry-message-id", resent_id))
        .await;

    // The re-sent order is answered again with the same verdict, and it is the second answer:
    // the redelivery was not answered at all.
    let id = order.clone();
    let earlier = std::sync::atomic::AtomicUsize::new(0);
    s.wait_for_message(TOPIC, move |m| {
        if m.type_name() != "OrderValidated" || m.json()["orderId"] != id.as_str() {
            return false;
        }
        if m.header("ferry-causation-id") != resent_id {
            earlier.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        assert_eq!(m.json()["isValid"], true);
        assert_eq!(
            earlier.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "answers before"
        );
        true
    })
    .await;
    // Its credit was reserved once, and the order concluded once.
    let c = s.customer(&customer).await;
    assert_eq!(c["reservedCredit"], json!(30), "{c}");
    assert_eq!(s.concluded(&order).await["status"], "Shipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_apis_have_an_openapi_document() {
    let s = start().await;
    for (base, path) in [
        (&s.customers, "/api/Customer/NewCustomer"),
        (&s.orders, "/api/Orders/NewOrder"),
    ] {
        let (status, spec) = s
            .call(Method::GET, &format!("{base}/openapi.json"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(spec["paths"][path].is_object(), "{spec}");
    }
}
