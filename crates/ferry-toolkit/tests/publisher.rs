//! The publisher against the real broker: the envelope on the wire, and a failed publish that
//! hands the message back.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use ferry_toolkit::kafka::KafkaConfig;
use ferry_toolkit::{Envelope, Publisher, header};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_returns_after_the_ack_with_the_envelope_in_headers() -> anyhow::Result<()> {
    let broker = TestBroker::start();
    let topic = unique("publish");
    let publisher = Publisher::kafka(&kafka(&broker.bootstrap()))?;
    let before = SystemTime::now() - Duration::from_millis(1);
    let delivery = publisher.publish(&topic, greeting("customer-7:hi")).await?;
    // Acknowledged means it is readable at the offset the broker gave.
    assert_eq!(delivery.receipt.offset, Some(0));

    let records = read_topic(&broker.bootstrap(), &topic, 1, Duration::from_secs(20)).await;
    let record = &records[0];
    assert_eq!(
        record.key.as_deref(),
        Some(b"customer-7".as_slice()),
        "keyed by entity id"
    );
    assert_eq!(
        ferry_toolkit::decode::<Greeting>(&record.payload)?,
        greeting("customer-7:hi")
    );
    let names: Vec<&str> = record.headers.iter().map(|(n, _)| n).collect();
    for name in [
        header::SPEC_VERSION,
        header::MESSAGE_ID,
        header::SOURCE,
        header::TYPE,
        header::TIME,
        header::CONTENT_TYPE,
        header::VERSION,
        header::CORRELATION_ID,
        header::CE_TRACEPARENT,
        header::TRACEPARENT,
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let envelope = Envelope::read_from(&record.headers)?;
    assert_eq!(envelope.message_id, delivery.message_id);
    assert_eq!(envelope.message_id.get_version_num(), 7);
    assert_eq!(envelope.type_name, "test.greeting");
    assert_eq!(
        envelope.source.as_deref(),
        Some("/ferry"),
        "a publisher given no source stamps the default"
    );
    assert_eq!(envelope.version, 1);
    assert_eq!(
        envelope.correlation_id, delivery.message_id,
        "a new flow is correlated by its first message"
    );
    assert_eq!(envelope.causation_id, None);
    assert!(envelope.produced_at >= before && envelope.produced_at <= SystemTime::now());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_publish_hands_the_message_back() -> anyhow::Result<()> {
    init_tracing();
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config =
        KafkaConfig::new(format!("127.0.0.1:{port}")).set_producer("message.timeout.ms", "1000");
    let publisher = Publisher::kafka(&config)?;
    let message = greeting("e:precious cargo");
    let error = publisher
        .publish("anywhere", message.clone())
        .await
        .expect_err("no broker");
    assert!(
        !format!("{error:?}").contains("precious"),
        "Debug does not dump the message"
    );
    assert!(error.to_string().contains("test.greeting"));
    assert_eq!(error.into_inner(), message);
    Ok(())
}
