//! Messages from producers that are not Ferry: CloudEvents in binary and structured mode, and
//! plain records typed by the router, all through a real broker.

mod common;

use std::time::Duration;

use common::*;
use ferry_toolkit::kafka::start_router;
use ferry_toolkit::{PlainTyping, Publisher, Router};

const WAIT: Duration = Duration::from_secs(30);

/// A Java or Python CloudEvents SDK's record in binary mode (string id, offset time), one in
/// structured mode, and a Ferry one, on one partition: each is routed by its type, in order;
/// the structured event's `data` is what the handler decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_structured_cloudevents_from_other_producers_are_routed_by_type()
-> anyhow::Result<()> {
    init_tracing();
    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique("cloudevents");
    create_topic(&bootstrap, &topic, 1).await;
    let binary = [
        ("ce_specversion", "1.0"),
        ("ce_id", "order-42-created"),
        ("ce_source", "https://shop.example/orders"),
        ("ce_type", "test.greeting"),
        ("ce_time", "2026-12-07T15:04:05.678+01:00"),
        ("content-type", "application/json"),
    ];
    let payload = serde_json::to_vec(&greeting("binary"))?;
    produce_raw(&bootstrap, &topic, Some(0), "k", &binary, &payload).await;
    let structured = serde_json::json!({
        "specversion": "1.0",
        "id": "7",
        "source": "/python/worker",
        "type": "test.greeting",
        "datacontenttype": "application/json",
        "data": greeting("structured"),
    });
    produce_raw(
        &bootstrap,
        &topic,
        Some(0),
        "k",
        &[("content-type", "application/cloudevents+json")],
        structured.to_string().as_bytes(),
    )
    .await;
    // Another type on the same topic, which no handler takes: skipped, not dead-lettered.
    let other = [
        ("ce_specversion", "1.0"),
        ("ce_id", "x"),
        ("ce_type", "other"),
    ];
    produce_raw(&bootstrap, &topic, Some(0), "k", &other, b"{}").await;
    let config = kafka(&bootstrap);
    let publisher = Publisher::kafka(&config)?;
    publisher.publish(&topic, greeting("k:ferry")).await?;

    let calls = Calls::default();
    let router = Router::new(unique("ce-group"))
        .subscribe(&topic)
        .handle(recording(&calls));
    let handle = start_router(router, &config, publisher)?;
    let c = calls.clone();
    assert!(
        wait_until(WAIT, move || c.len() >= 3).await,
        "{:?}",
        calls.ids()
    );
    assert_eq!(calls.ids(), ["binary", "structured", "k:ferry"]);
    // String ids become stable UUIDs, distinct per source and id.
    let all = calls.all();
    assert_ne!(all[0].message_id, all[1].message_id);
    handle.shutdown().await;
    let letters = read_topic(
        &bootstrap,
        &format!("{topic}.dlq"),
        0,
        Duration::from_secs(2),
    )
    .await;
    assert!(
        letters.is_empty(),
        "nothing dead-lettered: {}",
        letters.len()
    );
    Ok(())
}

/// A plain record (no headers) on a topic the router types is handled; on a topic it does not
/// type, it is dead-lettered with a reason that says what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_records_are_typed_per_topic_or_dead_lettered() -> anyhow::Result<()> {
    init_tracing();
    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let (typed, untyped) = (unique("plain-typed"), unique("plain-untyped"));
    create_topic(&bootstrap, &typed, 1).await;
    create_topic(&bootstrap, &untyped, 1).await;
    let payload = serde_json::to_vec(&greeting("plain"))?;
    produce_raw(&bootstrap, &typed, Some(0), "k", &[], &payload).await;
    produce_raw(&bootstrap, &untyped, Some(0), "k", &[], &payload).await;
    let config = kafka(&bootstrap);
    let calls = Calls::default();
    let router = Router::new(unique("plain-group"))
        .subscribe(&typed)
        .subscribe(&untyped)
        .plain(&typed, PlainTyping::fixed("test.greeting"))
        .handle(recording(&calls));
    let handle = start_router(router, &config, Publisher::kafka(&config)?)?;
    let letters = read_topic(&bootstrap, &format!("{untyped}.dlq"), 1, WAIT).await;
    let c = calls.clone();
    assert!(wait_until(WAIT, move || c.len() >= 1).await);
    handle.shutdown().await;
    assert_eq!(calls.ids(), ["plain"]);
    assert_eq!(
        calls.all()[0].message_id,
        ferry_toolkit::position_id(&typed, 0, 0),
        "the id comes from the record's position"
    );
    assert_eq!(
        letters[0]
            .headers
            .get_str(ferry_toolkit::dlq::header::ERROR),
        Some("missing header ce_id")
    );
    Ok(())
}
