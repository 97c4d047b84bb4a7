//! The orders/credit saga end to end over HTTP: the customer and order services against the
//! built-in broker in-process, talking only through `ReactiveMicroservices`.

use ferry_testkit::reqwest::{Method, StatusCode};
use ferry_testkit::{Harness, Http, RawMessage, consume_raw, produce_plain, produce_raw};
use serde_json::{Value, json};

const TOPIC: &str = "ReactiveMicroservices";

/// The broker and both sides of the saga.
struct System {
    harness: Harness,
    customers: Http,
    orders: Http,
}

async fn start() -> System {
    let harness = Harness::start().await;
    let customers = customers::start(harness.config(), harness.token())
        .await
        .unwrap();
    let orders = orders::start(harness.config(), harness.token())
        .await
        .unwrap();
    System {
        customers: Http::new(customers.addr),
        orders: Http::new(orders.addr),
        harness,
    }
}

impl System {
    async fn new_customer(&self, credit_limit: f64) -> String {
        let (status, body) = self
            .customers
            .post(
                "/api/Customer/NewCustomer",
                json!({"name": "Ada", "creditLimit": credit_limit}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Places an order and returns its id.
    async fn new_order(&self, customer_id: &str, amount: f64) -> String {
        let (status, body) = self
            .orders
            .post(
                "/api/Orders/NewOrder",
                json!({"customerId": customer_id, "amount": amount}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["status"], "Created", "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the order has left `Created` and returns it.
    async fn concluded(&self, order_id: &str) -> Value {
        self.orders
            .until(&format!("/api/Orders/{order_id}"), |st, b| {
                st == StatusCode::OK && b["status"] != "Created"
            })
            .await
    }

    async fn customer(&self, id: &str) -> Value {
        let (status, body) = self.customers.get(&format!("/api/Customer/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Reads `topic` from the start until a message satisfies `found` and returns it.
    async fn wait_for_message(
        &self,
        topic: &str,
        found: impl Fn(&RawMessage) -> bool,
    ) -> RawMessage {
        consume_raw(&self.harness.bootstrap(), topic, found).await
    }

    /// Produces a record as it is given: any key, any headers, any payload.
    async fn produce(&self, key: &str, headers: &[(&str, &str)], payload: &[u8]) {
        produce_raw(&self.harness.bootstrap(), TOPIC, key, headers, payload).await;
    }

    /// Produces `m` again as it was read, but with the headers of `replaced` instead of its own.
    async fn produce_again(&self, m: &RawMessage, replaced: &[(&str, &str)]) {
        let headers: Vec<(&str, &str)> = m
            .headers
            .iter()
            .filter(|(k, _)| !replaced.iter().any(|(r, _)| r == k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(replaced.iter().copied())
            .collect();
        self.produce(&m.key, &headers, m.payload.as_bytes()).await;
    }
}

/// The `ce_type` header.
fn type_name(m: &RawMessage) -> &str {
    m.header("ce_type").unwrap_or_default()
}

/// The payload as JSON (null if it is not).
fn json_of(m: &RawMessage) -> Value {
    serde_json::from_str(&m.payload).unwrap_or(Value::Null)
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
    let shipped_id = shipped["id"].as_str().unwrap();
    s.wait_for_message(TOPIC, |m| {
        type_name(m) == "OrderShipped" && json_of(m)["id"] == shipped_id
    })
    .await;
    let cancelled_id = cancelled["id"].as_str().unwrap();
    s.wait_for_message(TOPIC, |m| {
        let p = json_of(m);
        type_name(m) == "OrderCancelled"
            && p["id"] == cancelled_id
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
    s.wait_for_message(TOPIC, |m| {
        type_name(m) == "OrderValidated"
            && json_of(m)
                == json!({"orderId": order, "isValid": false, "reason": "unknown customer"})
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
    let url = format!("/api/Customer/{customer}");
    let (status, c) = s
        .customers
        .send(Method::PUT, &url, Some(json!(120.5)))
        .await;
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
        .customers
        .send(Method::PUT, &url, Some(json!({"creditLimit": 200})))
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(
        (&c["creditLimit"], &c["reservedCredit"]),
        (&json!(200), &json!(80))
    );
    s.wait_for_message(TOPIC, |m| {
        type_name(m) == "CreditLimitChanged"
            && json_of(m) == json!({"customerId": customer, "creditLimit": 200})
    })
    .await;
    s.wait_for_message(TOPIC, |m| {
        type_name(m) == "CustomerCreated" && json_of(m)["id"] == customer.as_str()
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
    let new_order = (&s.orders, "/api/Orders/NewOrder");
    let new_customer = (&s.customers, "/api/Customer/NewCustomer");
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    for ((api, path), body, want) in [
        (
            new_order,
            json!({"customerId": customer, "amount": 0}),
            unprocessable,
        ),
        (
            new_order,
            json!({"customerId": customer, "amount": -5}),
            unprocessable,
        ),
        (
            new_order,
            json!({"customerId": customer, "amount": 1.005}),
            unprocessable,
        ),
        (new_order, json!({"customerId": customer}), unprocessable),
        (
            new_order,
            json!({"customerId": " ", "amount": 5}),
            unprocessable,
        ),
        (
            new_order,
            json!({"customerId": customer, "amount": "5"}),
            StatusCode::BAD_REQUEST,
        ),
        (new_order, json!([1, 2]), StatusCode::BAD_REQUEST),
        (
            new_customer,
            json!({"name": "", "creditLimit": 5}),
            unprocessable,
        ),
        (
            new_customer,
            json!({"name": "Bo", "creditLimit": -1}),
            unprocessable,
        ),
        (new_customer, json!({"name": "Bo"}), unprocessable),
        (
            new_customer,
            json!({"id": customer, "name": "Bo", "creditLimit": 1}),
            StatusCode::CONFLICT,
        ),
        // Bounded fields: an event that could never fit on its topic is never accepted.
        (
            new_order,
            json!({"customerId": "c".repeat(101), "amount": 5}),
            unprocessable,
        ),
        (
            new_order,
            json!({"id": "o".repeat(101), "customerId": customer, "amount": 5}),
            unprocessable,
        ),
        (
            new_order,
            json!({"customerId": "c".repeat(1_500_000), "amount": 5}),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            new_customer,
            json!({"name": "n".repeat(201), "creditLimit": 5}),
            unprocessable,
        ),
        (
            new_customer,
            json!({"name": "n".repeat(1_500_000), "creditLimit": 5}),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let case = format!("POST {}{path} {body}", api.base());
        check_error(api.post(path, body).await, want, &case);
    }
    let url = format!("/api/Customer/{customer}");
    check_error(
        s.customers.send(Method::PUT, &url, Some(json!(-1))).await,
        unprocessable,
        "negative limit",
    );
    check_error(
        s.customers.send(Method::PUT, &url, Some(json!("x"))).await,
        StatusCode::BAD_REQUEST,
        "text limit",
    );
    for (method, api, path) in [
        (Method::GET, &s.orders, "/api/Orders/nope"),
        (Method::GET, &s.customers, "/api/Customer/nope"),
        (Method::PUT, &s.customers, "/api/Customer/nope"),
    ] {
        let body = (method == Method::PUT).then(|| json!(5));
        let case = format!("{method} {}{path}", api.base());
        check_error(
            api.send(method, path, body).await,
            StatusCode::NOT_FOUND,
            &case,
        );
    }

    // The original's PascalCase request still works, and a client may choose the id.
    let (status, body) = s
        .customers
        .post(
            "/api/Customer/NewCustomer",
            json!({"Id": "c-42", "Name": "Cy", "CreditLimit": 7.25}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"id": "c-42", "name": "Cy", "creditLimit": 7.25, "reservedCredit": 0, "availableCredit": 7.25})
    );
    let (status, body) = s
        .orders
        .post(
            "/api/Orders/NewOrder",
            json!({"CustomerId": "c-42", "Amount": 7.25}),
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
    s.produce(
        "poison",
        &[
            ("ce_id", "0190a5e0-0000-7000-8000-000000000001"),
            ("ce_type", "OrderCreated"),
        ],
        b"{not json",
    )
    .await;
    // And one without any envelope at all.
    s.produce("poison", &[], b"garbage").await;

    let customer = s.new_customer(10.0).await;
    let order = s.new_order(&customer, 5.0).await;
    assert_eq!(s.concluded(&order).await["status"], "Shipped");

    let dlq = format!("{TOPIC}.dlq");
    let dead = s.wait_for_message(&dlq, |m| m.payload == "{not json").await;
    assert_eq!(type_name(&dead), "OrderCreated");
    assert_eq!(
        (
            dead.header("ferry-dlq-reason"),
            dead.header("ferry-dlq-group")
        ),
        (Some("undecodable"), Some("customer-service")),
        "{dead:?}"
    );
    s.wait_for_message(&dlq, |m| m.payload == "garbage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_order_created_reserves_credit_once() {
    let s = start().await;
    let customer = s.new_customer(100.0).await;
    let order = s.new_order(&customer, 30.0).await;
    assert_eq!(s.concluded(&order).await["status"], "Shipped");
    let original = s
        .wait_for_message(TOPIC, |m| {
            type_name(m) == "OrderCreated" && json_of(m)["id"] == order.as_str()
        })
        .await;

    // The same message again (a redelivery), then the same order under a new message id (sent
    // again by hand). Same key, same partition: handled in this order.
    s.produce_again(&original, &[]).await;
    let resent_id = "0190a5e0-0000-7000-8000-0000000000aa";
    s.produce_again(&original, &[("ce_id", resent_id)]).await;

    // The re-sent order is answered again with the same verdict, and it is the second answer:
    // the redelivery was not answered at all.
    let earlier = std::cell::Cell::new(0);
    s.wait_for_message(TOPIC, |m| {
        if type_name(m) != "OrderValidated" || json_of(m)["orderId"] != order.as_str() {
            return false;
        }
        if m.header("ce_causationid") != Some(resent_id) {
            earlier.set(earlier.get() + 1);
            return false;
        }
        assert_eq!(json_of(m)["isValid"], true);
        assert_eq!(earlier.get(), 1, "answers before");
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
    for (api, path) in [
        (&s.customers, "/api/Customer/NewCustomer"),
        (&s.orders, "/api/Orders/NewOrder"),
    ] {
        let (status, spec) = api.get("/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert!(spec["paths"][path].is_object(), "{spec}");
    }
}

/// The original services' envelope, `{"Name": ..., "EventData": "<json>"}` with no headers and
/// no key, drives the saga on both sides: the test plays the original order service (an
/// `OrderCreated` for a customer Ferry knows) and then the original customer service (an
/// `OrderValidated` for an order placed on Ferry, with Ferry's customer service not running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_name_event_data_envelope_drives_the_credit_saga() {
    let s = start().await;
    let bootstrap = s.harness.bootstrap();
    let customer = s.new_customer(100.0).await;
    let order_id = "0190b000-0000-7000-8000-00000000c0de";
    let created =
        json!({"id": order_id, "customerId": customer, "amount": 40, "status": "Created"});
    let kmessage = json!({"Name": "OrderCreated", "EventData": created.to_string()});
    produce_plain(&bootstrap, TOPIC, kmessage.to_string().as_bytes()).await;
    let verdict = s
        .wait_for_message(TOPIC, |m| {
            type_name(m) == "OrderValidated" && json_of(m)["orderId"] == order_id
        })
        .await;
    assert_eq!(json_of(&verdict)["isValid"], true, "{}", verdict.payload);
    let c = s
        .customers
        .until(&format!("/api/Customer/{customer}"), |st, b| {
            st == StatusCode::OK && b["reservedCredit"] == json!(40)
        })
        .await;
    assert_eq!(c["reservedCredit"], json!(40), "{c}");

    // The other side, on a broker with only Ferry's order service.
    let harness = Harness::start().await;
    let orders = orders::start(harness.config(), harness.token())
        .await
        .unwrap();
    let orders = Http::new(orders.addr);
    let (status, body) = orders
        .post(
            "/api/Orders/NewOrder",
            json!({"customerId": "someone", "amount": 12.5}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let order = body["id"].as_str().unwrap().to_owned();
    let validated = json!({"orderId": order, "isValid": true});
    let kmessage = json!({"Name": "OrderValidated", "EventData": validated.to_string()});
    produce_plain(&harness.bootstrap(), TOPIC, kmessage.to_string().as_bytes()).await;
    let shipped = orders
        .until(&format!("/api/Orders/{order}"), |st, b| {
            st == StatusCode::OK && b["status"] != "Created"
        })
        .await;
    assert_eq!(shipped["status"], "Shipped", "{shipped}");
}
