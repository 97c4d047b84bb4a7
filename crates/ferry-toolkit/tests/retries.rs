//! Retries and dead letters against the real broker, each pitfall with its regression test.
//! Backoff and timeouts run on a paused clock: the tests move time forward themselves.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use ferry_toolkit::dlq::header as dlq;
use ferry_toolkit::kafka::start_router;
use ferry_toolkit::ops::metrics::{self, DEAD_LETTERED, FAILED, HANDLED, RETRIED};
use ferry_toolkit::{
    Envelope, HandlerError, Headers, MessageContext, Publisher, RetryPolicy, Router, handler_fn,
    header,
};

const WAIT: Duration = Duration::from_secs(30);

fn policy(initial_s: u64, max_s: u64, attempts: u32, timeout: Option<u64>) -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_secs(initial_s),
        multiplier: 2.0,
        max_delay: Duration::from_secs(max_s),
        max_attempts: attempts,
        jitter: 0.0,
        attempt_timeout: timeout.map(Duration::from_secs),
    }
}

/// The gaps between consecutive attempts at `id`, in virtual time.
fn gaps(calls: &Calls, id: &str) -> Vec<Duration> {
    let at: Vec<_> = calls
        .all()
        .into_iter()
        .filter(|c| c.id == id)
        .map(|c| c.at)
        .collect();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Watermill #271: one message in retry backoff blocked every later message of the
/// subscriber. Here it holds back only its own partition.
#[tokio::test(start_paused = true)]
async fn retry_does_not_block_other_partitions() -> anyhow::Result<()> {
    metrics::install();
    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique("retry-partitions");
    create_topic(&bootstrap, &topic, 2).await;
    let config = kafka(&bootstrap);
    let publisher = Publisher::kafka(&config)?;
    // "e1:bad" fails on every attempt; "e1:after" is behind it in the same partition; the
    // "oN:ok" messages are on the other partition.
    let bad = publisher.publish(&topic, greeting("e1:bad")).await?;
    let bad_partition = bad.receipt.partition.unwrap();
    publisher.publish(&topic, greeting("e1:after")).await?;
    let mut others = Vec::new();
    for n in 0.. {
        let id = format!("o{n}:ok");
        if publisher
            .publish(&topic, greeting(&id))
            .await?
            .receipt
            .partition
            != Some(bad_partition)
        {
            others.push(id);
            if others.len() == 3 {
                break;
            }
        }
    }

    let calls = Calls::default();
    let recorded = calls.clone();
    let router = Router::new(unique("group"))
        .subscribe(&topic)
        .retry(policy(10, 60, 3, None))
        .handle(handler_fn(move |g: Greeting, ctx: MessageContext| {
            recorded.record(&g, &ctx);
            async move {
                if g.id.ends_with(":bad") {
                    Err(HandlerError::new("always fails"))
                } else {
                    Ok(())
                }
            }
        }));
    let handle = start_router(router, &config, publisher)?;

    // The clock stands still while we wait: "e1:bad" sits in its first 10 s backoff.
    let (c, expected) = (calls.clone(), others.clone());
    let other_partition_done = move || expected.iter().all(|id| c.count(id) == 1);
    let c = calls.clone();
    assert!(
        wait_until(WAIT, move || other_partition_done()
            && c.count("e1:bad") == 1)
        .await,
        "the other partition was handled while e1:bad waits to be retried: {:?}",
        calls.ids()
    );
    assert_eq!(
        calls.count("e1:after"),
        0,
        "its own partition waits, in order"
    );

    // Time moves on: two more attempts, the dead letter, then the message behind it.
    let c = calls.clone();
    assert!(
        drive_until(Duration::from_secs(1), WAIT, move || c.count("e1:after")
            == 1)
        .await
    );
    assert_eq!(calls.count("e1:bad"), 3);
    assert!(
        gaps(&calls, "e1:bad")
            .iter()
            .zip([10, 20])
            .all(|(gap, s)| *gap >= Duration::from_secs(s))
    );
    let ids = calls.ids();
    let pos = |id: &str| ids.iter().position(|i| i == id).unwrap();
    assert!(pos("e1:after") > pos("e1:bad"));
    assert!(others.iter().all(|o| pos(o) < pos("e1:after")));
    handle.shutdown().await;
    Ok(())
}

/// Watermill #467: a retry wrapped around a timeout stopped retrying once the shared deadline
/// had passed. Here every attempt gets its own timeout, and a timeout is retried like any
/// other failure.
#[tokio::test(start_paused = true)]
async fn retry_around_timeout_keeps_retrying() -> anyhow::Result<()> {
    metrics::install();
    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique("retry-timeout");
    let config = kafka(&bootstrap);
    let publisher = Publisher::kafka(&config)?;
    publisher.publish(&topic, greeting("e:slow")).await?;

    // Attempts 1 to 3 hang past the 5 s timeout; attempt 4 succeeds.
    let calls = Calls::default();
    let done = Arc::new(AtomicBool::new(false));
    let (recorded, finished) = (calls.clone(), done.clone());
    let router = Router::new(unique("group"))
        .subscribe(&topic)
        .retry(policy(1, 10, 4, Some(5)))
        .handle(handler_fn(move |g: Greeting, ctx: MessageContext| {
            recorded.record(&g, &ctx);
            let finished = finished.clone();
            async move {
                if ctx.attempt() < 4 {
                    std::future::pending::<()>().await;
                }
                finished.store(true, Ordering::SeqCst);
                Ok::<_, HandlerError>(())
            }
        }));
    let handle = start_router(router, &config, publisher)?;
    let c = calls.clone();
    assert!(
        wait_until(WAIT, move || c.len() == 1).await,
        "first attempt started"
    );
    let d = done.clone();
    assert!(
        drive_until(Duration::from_millis(500), WAIT, move || d
            .load(Ordering::SeqCst))
        .await,
        "attempt 4 ran"
    );

    let attempts: Vec<u32> = calls.all().iter().map(|c| c.attempt).collect();
    assert_eq!(attempts, [1, 2, 3, 4]);
    // Each gap is a full timeout plus the backoff: 5+1, 5+2, 5+4 seconds.
    let gaps = gaps(&calls, "e:slow");
    for (gap, s) in gaps.iter().zip([6, 7, 9]) {
        assert!(*gap >= Duration::from_secs(s), "{gaps:?}");
    }
    assert_eq!(metric(FAILED, &[("topic", &topic)]), 3.0);
    assert_eq!(metric(RETRIED, &[("topic", &topic)]), 3.0);
    let t = topic.clone();
    assert!(wait_until(WAIT, move || metric(HANDLED, &[("topic", &t)]) == 1.0).await);
    handle.shutdown().await;
    Ok(())
}

/// Seeds' consumers lost a message (or died) on a handler error. Here it is retried with
/// backoff, then parked in `<topic>.dlq` with the error, the attempts and where it came from.
#[tokio::test(start_paused = true)]
async fn handler_error_is_retried_then_dead_lettered() -> anyhow::Result<()> {
    metrics::install();
    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique("retry-dlq");
    let config = kafka(&bootstrap);
    let publisher = Publisher::kafka(&config)?;
    let sent = publisher.publish(&topic, greeting("e:broken")).await?;
    publisher.publish(&topic, greeting("e:fine")).await?;

    let calls = Calls::default();
    let recorded = calls.clone();
    let group = unique("group");
    let router = Router::new(&group)
        .subscribe(&topic)
        .retry(policy(1, 3, 4, None))
        .handle(handler_fn(move |g: Greeting, ctx: MessageContext| {
            recorded.record(&g, &ctx);
            async move {
                if g.id == "e:broken" {
                    let io = std::io::Error::other("connection refused");
                    return Err(HandlerError::from(io));
                }
                Ok(())
            }
        }));
    let handle = start_router(router, &config, publisher)?;
    let c = calls.clone();
    assert!(wait_until(WAIT, move || c.len() == 1).await);
    let c = calls.clone();
    assert!(
        drive_until(Duration::from_millis(250), WAIT, move || c.count("e:fine")
            == 1)
        .await
    );
    assert_eq!(calls.count("e:broken"), 4);
    // Backoff: 1 s, 2 s, then capped at 3 s instead of 4 s.
    let gaps = gaps(&calls, "e:broken");
    for (gap, ms) in gaps.iter().zip([1000, 2000, 3000]) {
        assert!(
            *gap >= Duration::from_millis(ms) && *gap < Duration::from_millis(ms + 1000),
            "{gaps:?}"
        );
    }

    let dead = read_topic(&bootstrap, &format!("{topic}.dlq"), 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    let dead = &dead[0];
    let h = |name: &str| dead.headers.get_str(name).map(str::to_owned);
    assert_eq!(h(dlq::ERROR).as_deref(), Some("connection refused"));
    assert_eq!(h(dlq::ATTEMPTS).as_deref(), Some("4"));
    assert_eq!(h(dlq::REASON).as_deref(), Some("handler-failed"));
    assert_eq!(h(dlq::ORIGINAL_TOPIC), Some(topic.clone()));
    assert_eq!(
        h(dlq::ORIGINAL_PARTITION),
        Some(sent.receipt.partition.unwrap().to_string())
    );
    assert_eq!(
        h(dlq::ORIGINAL_OFFSET),
        Some(sent.receipt.offset.unwrap().to_string())
    );
    assert_eq!(h(dlq::GROUP), Some(group.clone()));
    assert_eq!(
        h(header::MESSAGE_ID),
        Some(sent.message_id.to_string()),
        "the original envelope is kept"
    );
    assert_eq!(dead.key.as_deref(), Some(b"e".as_slice()));
    assert_eq!(
        ferry_toolkit::decode::<Greeting>(&dead.payload)?,
        greeting("e:broken")
    );
    assert_eq!(
        metric(
            DEAD_LETTERED,
            &[("topic", &topic), ("reason", "handler-failed")]
        ),
        1.0
    );
    assert_eq!(metric(RETRIED, &[("topic", &topic)]), 3.0);
    handle.shutdown().await;
    Ok(())
}

/// Seeds' consumers crashed or lost the message on bad JSON. Here an undecodable record goes to
/// the dead-letter topic at once (no retries) and the consumer carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_dead_lettered_and_consumer_continues() -> anyhow::Result<()> {
    metrics::install();
    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique("poison");
    create_topic(&bootstrap, &topic, 1).await;
    let config = kafka(&bootstrap);
    let publisher = Publisher::kafka(&config)?;

    let envelope = Envelope::new::<Greeting>();
    let mut headers = Headers::new();
    envelope.write_to(&mut headers);
    let valid: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_owned(), String::from_utf8(v.to_vec()).unwrap()))
        .collect();
    let valid: Vec<(&str, &str)> = valid
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // 1: a valid envelope, a payload that is not JSON.
    produce_raw(&bootstrap, &topic, None, "e", &valid, b"{not json").await;
    // 2: JSON of the wrong shape.
    produce_raw(
        &bootstrap,
        &topic,
        None,
        "e",
        &valid,
        br#"{"unexpected":true}"#,
    )
    .await;
    // 3: no envelope at all.
    produce_raw(&bootstrap, &topic, None, "e", &[], b"hello").await;
    // 4: a malformed envelope header.
    produce_raw(
        &bootstrap,
        &topic,
        None,
        "e",
        &[
            (header::MESSAGE_ID, "not-a-uuid"),
            (header::TYPE, "test.greeting"),
        ],
        b"{}",
    )
    .await;
    publisher.publish(&topic, greeting("e:good")).await?;

    let calls = Calls::default();
    let router = Router::new(unique("group"))
        .subscribe(&topic)
        .handle(recording(&calls));
    let handle = start_router(router, &config, publisher)?;
    let c = calls.clone();
    assert!(
        wait_until(WAIT, move || c.len() == 1).await,
        "the good message after the poison ones is handled"
    );
    assert_eq!(calls.ids(), ["e:good"]);

    let dead = read_topic(&bootstrap, &format!("{topic}.dlq"), 4, WAIT).await;
    assert_eq!(dead.len(), 4);
    for (n, record) in dead.iter().enumerate() {
        assert_eq!(record.headers.get_str(dlq::REASON), Some("undecodable"));
        assert_eq!(record.headers.get_str(dlq::ATTEMPTS), Some("0"));
        assert_eq!(
            record.headers.get_str(dlq::ORIGINAL_OFFSET),
            Some(n.to_string().as_str())
        );
    }
    assert_eq!(dead[0].payload, b"{not json");
    assert!(
        dead[2]
            .headers
            .get_str(dlq::ERROR)
            .unwrap()
            .contains("missing header ce_id")
    );
    assert_eq!(
        metric(
            DEAD_LETTERED,
            &[("topic", &topic), ("reason", "undecodable")]
        ),
        4.0
    );
    handle.shutdown().await;
    Ok(())
}

/// A permanent error and a panic: no retries for the first, retries for the second, and the
/// consumer survives both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_skip_retries_and_panics_are_contained() -> anyhow::Result<()> {
    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique("permanent");
    let config = kafka(&bootstrap);
    let publisher = Publisher::kafka(&config)?;
    publisher.publish(&topic, greeting("e:invalid")).await?;
    publisher.publish(&topic, greeting("e:panics")).await?;
    publisher.publish(&topic, greeting("e:fine")).await?;

    let calls = Calls::default();
    let recorded = calls.clone();
    let quick = RetryPolicy {
        initial: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        ..policy(0, 1, 3, None)
    };
    let router = Router::new(unique("group"))
        .subscribe(&topic)
        .retry(quick)
        .handle(handler_fn(move |g: Greeting, ctx: MessageContext| {
            recorded.record(&g, &ctx);
            async move {
                match g.id.as_str() {
                    "e:invalid" => Err(HandlerError::permanent("no such customer")),
                    "e:panics" => panic!("handler bug"),
                    _ => Ok(()),
                }
            }
        }));
    let handle = start_router(router, &config, publisher)?;
    let c = calls.clone();
    assert!(wait_until(WAIT, move || c.count("e:fine") == 1).await);
    assert_eq!(
        calls.count("e:invalid"),
        1,
        "a permanent error is not retried"
    );
    assert_eq!(calls.count("e:panics"), 3, "a panic is a failed attempt");
    let dead = read_topic(&bootstrap, &format!("{topic}.dlq"), 2, WAIT).await;
    assert_eq!(
        dead[0].headers.get_str(dlq::ERROR),
        Some("no such customer")
    );
    assert_eq!(
        dead[1].headers.get_str(dlq::ERROR),
        Some("handler panicked: handler bug")
    );
    handle.shutdown().await;
    Ok(())
}
