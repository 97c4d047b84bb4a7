//! What only AMQP has: persistent delivery into durable queues, and a publisher that fails fast
//! (handing the message back) while RabbitMQ is unreachable. The rest of the AMQP adapter runs
//! in the transport conformance suite. Skipped with a message when `FERRY_TEST_AMQP_URL` is
//! unset.

mod common;

use std::time::{Duration, Instant};

use common::amqp::{amqp_config, amqp_url, connect_direct, delete_queues};
use common::*;
use ferry_toolkit::Publisher;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_persistent_in_durable_queues() -> anyhow::Result<()> {
    init_tracing();
    let Some(url) = amqp_url() else {
        eprintln!("skipped: FERRY_TEST_AMQP_URL not set");
        return Ok(());
    };
    let queue = unique("persistent");
    let publisher = Publisher::amqp(&amqp_config(&url));
    let delivery = publisher.publish(&queue, greeting("e:1")).await?;

    let connection = connect_direct(&url).await;
    let channel = connection.create_channel().await?;
    let got = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
        .expect("the message is in the queue");
    let properties = &got.delivery.properties;
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent delivery");
    assert_eq!(
        properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_owned()),
        Some(delivery.message_id.to_string())
    );
    assert_eq!(
        properties.kind().as_ref().map(|s| s.as_str().to_owned()),
        Some("test.greeting".to_owned())
    );
    // Declaring it as non-durable is refused: the queue is durable.
    let other = connection.create_channel().await?;
    let redeclared = other
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert!(redeclared.is_err(), "{redeclared:?}");
    let _ = connection.close(200, "done".into()).await;
    delete_queues(&url, vec![queue]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_while_unreachable_fails_fast_and_hands_the_message_back() -> anyhow::Result<()> {
    init_tracing();
    // Nothing listens there; this needs no RabbitMQ at all.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let publisher = Publisher::amqp(&amqp_config(&format!(
        "amqp://guest:guest@127.0.0.1:{port}/%2f"
    )));
    let message = greeting("e:precious");
    let started = Instant::now();
    let error = publisher
        .publish("anywhere", message.clone())
        .await
        .expect_err("no broker");
    assert_eq!(error.into_inner(), message);
    // Within the backoff window the next attempt does not even dial.
    let again = Instant::now();
    assert!(
        publisher
            .publish("anywhere", message.clone())
            .await
            .is_err()
    );
    assert!(again.elapsed() < Duration::from_millis(50));
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}
