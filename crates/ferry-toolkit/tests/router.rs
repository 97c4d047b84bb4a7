//! The router against the real broker: dispatch, per-partition order and concurrency,
//! commit-after-success, graceful shutdown, follow-ups. Order, commit-after-success and
//! rebalance hand-over run on both group protocols (classic and consumer, KIP-848).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use ferry_toolkit::kafka::{self, GroupProtocol, start_router};
use ferry_toolkit::ops::metrics::{self, UNKNOWN_TYPE};
use ferry_toolkit::{
    Envelope, HandlerError, Headers, Message, MessageContext, Publisher, Router, handler_fn, header,
};
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
struct Farewell {
    id: String,
}

impl Message for Farewell {
    const TYPE: &'static str = "test.farewell";
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// Headers of a valid envelope for `type_name`, for raw records.
fn envelope_headers(type_name: &str) -> Vec<(String, String)> {
    let mut envelope = Envelope::new::<Greeting>();
    envelope.type_name = type_name.to_owned();
    let mut headers = Headers::new();
    envelope.write_to(&mut headers);
    headers
        .iter()
        .map(|(k, v)| (k.to_owned(), String::from_utf8(v.to_vec()).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatches_by_type_skips_unknown_types_and_publishes_follow_ups() -> anyhow::Result<()> {
    metrics::install();
    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique("dispatch");
    let out = format!("{topic}.out");
    create_topic(&bootstrap, &topic, 1).await;
    let config = kafka(&bootstrap);
    let publisher = Publisher::kafka(&config)?;

    let first = publisher.publish(&topic, greeting("a")).await?;
    let unknown: Vec<(String, String)> = envelope_headers("test.nobody-handles-this");
    let unknown: Vec<(&str, &str)> = unknown
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    produce_raw(&bootstrap, &topic, None, "x", &unknown, b"{}").await;
    let second = publisher.publish(&topic, greeting("b")).await?;

    let calls = Calls::default();
    let recorded = calls.clone();
    let out_topic = out.clone();
    let router = Router::new(unique("group"))
        .subscribe(&topic)
        .handle(handler_fn(move |g: Greeting, ctx: MessageContext| {
            recorded.record(&g, &ctx);
            let out = out_topic.clone();
            async move {
                ctx.publish(&out, Farewell { id: g.id })
                    .await
                    .map_err(|e| HandlerError::new(e.to_string()))?;
                Ok(())
            }
        }));
    let handle = start_router(router, &config, publisher.clone())?;
    let c = calls.clone();
    assert!(
        wait_until(WAIT, move || c.len() >= 2).await,
        "both greetings handled"
    );
    assert_eq!(calls.ids(), ["a", "b"]);
    assert_eq!(
        metric(
            UNKNOWN_TYPE,
            &[("topic", &topic), ("type", "test.nobody-handles-this")]
        ),
        1.0
    );

    // Follow-ups carry the flow: correlation id of the incoming, causation = its message id,
    // and the same trace.
    let farewells = read_topic(&bootstrap, &out, 2, WAIT).await;
    assert_eq!(farewells.len(), 2);
    for (farewell, cause) in farewells.iter().zip([&first, &second]) {
        let envelope = Envelope::read_from(&farewell.headers)?;
        assert_eq!(envelope.type_name, "test.farewell");
        assert_eq!(envelope.correlation_id, cause.correlation_id);
        assert_eq!(envelope.causation_id, Some(cause.message_id));
    }
    let originals = read_topic(&bootstrap, &topic, 3, WAIT).await;
    let original = Envelope::read_from(&originals[0].headers)?;
    let follow_up = Envelope::read_from(&farewells[0].headers)?;
    assert_eq!(
        follow_up.traceparent.trace_id(),
        original.traceparent.trace_id()
    );
    assert_ne!(
        follow_up.traceparent.span_id(),
        original.traceparent.span_id()
    );
    handle.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_processed_concurrently_each_in_order() -> anyhow::Result<()> {
    check_partitions_processed_concurrently_each_in_order(GroupProtocol::Classic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_processed_concurrently_each_in_order_on_the_consumer_protocol()
-> anyhow::Result<()> {
    check_partitions_processed_concurrently_each_in_order(GroupProtocol::Consumer).await
}

async fn check_partitions_processed_concurrently_each_in_order(
    protocol: GroupProtocol,
) -> anyhow::Result<()> {
    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique("ordered");
    create_topic(&bootstrap, &topic, 3).await;
    let config = kafka(&bootstrap).group_protocol(protocol);
    let publisher = Publisher::kafka(&config)?;
    let mut partitions = std::collections::BTreeSet::new();
    for entity in 0..10 {
        for n in 0..4 {
            let d = publisher
                .publish(&topic, greeting(&format!("e{entity}:{n}")))
                .await?;
            partitions.insert(d.receipt.partition.unwrap());
        }
    }
    assert!(
        partitions.len() >= 2,
        "the keys spread over partitions: {partitions:?}"
    );

    // The very first call waits until another partition made progress: with one partition at
    // a time this would never happen and the call would fail after its deadline.
    let calls = Calls::default();
    let released_by_other_partition = Arc::new(AtomicBool::new(false));
    let (recorded, released) = (calls.clone(), released_by_other_partition.clone());
    let router = Router::new(unique("group"))
        .subscribe(&topic)
        .handle(handler_fn(move |g: Greeting, ctx: MessageContext| {
            let first = recorded.len() == 0;
            recorded.record(&g, &ctx);
            let (calls, released) = (recorded.clone(), released.clone());
            async move {
                if first {
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                    while tokio::time::Instant::now() < deadline {
                        if calls.all().iter().any(|c| c.partition != ctx.partition()) {
                            released.store(true, Ordering::SeqCst);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                Ok::<_, HandlerError>(())
            }
        }));
    let handle = start_router(router, &config, publisher)?;
    let c = calls.clone();
    assert!(
        wait_until(WAIT, move || c.len() >= 40).await,
        "all handled: {}",
        calls.len()
    );
    assert!(
        released_by_other_partition.load(Ordering::SeqCst),
        "partitions ran concurrently"
    );
    let all = calls.all();
    assert_eq!(all.len(), 40, "each message once");
    for entity in 0..10 {
        let seen: Vec<String> = all
            .iter()
            .filter(|c| c.id.starts_with(&format!("e{entity}:")))
            .map(|c| c.id.clone())
            .collect();
        let expected: Vec<String> = (0..4).map(|n| format!("e{entity}:{n}")).collect();
        assert_eq!(seen, expected, "one entity's messages in order");
    }
    for p in &partitions {
        let offsets: Vec<i64> = all
            .iter()
            .filter(|c| c.partition == *p)
            .map(|c| c.offset)
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "partition {p} in order: {offsets:?}"
        );
    }
    handle.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_committed_only_after_handler_success() -> anyhow::Result<()> {
    check_offset_committed_only_after_handler_success(GroupProtocol::Classic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_committed_only_after_handler_success_on_the_consumer_protocol() -> anyhow::Result<()>
{
    check_offset_committed_only_after_handler_success(GroupProtocol::Consumer).await
}

async fn check_offset_committed_only_after_handler_success(
    protocol: GroupProtocol,
) -> anyhow::Result<()> {
    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique("commit");
    let group = unique("group");
    let config = kafka(&bootstrap).group_protocol(protocol);
    let publisher = Publisher::kafka(&config)?;
    publisher.publish(&topic, greeting("e:a")).await?;
    publisher.publish(&topic, greeting("e:b")).await?;

    // The first incarnation handles "a", then dies in the middle of handling "b".
    let calls = Calls::default();
    let recorded = calls.clone();
    let router = Router::new(&group).subscribe(&topic).handle(handler_fn(
        move |g: Greeting, ctx: MessageContext| {
            recorded.record(&g, &ctx);
            async move {
                if g.id == "e:b" {
                    std::future::pending::<()>().await;
                }
                Ok::<_, HandlerError>(())
            }
        },
    ));
    let handle = start_router(router, &config, publisher.clone())?;
    let c = calls.clone();
    assert!(
        wait_until(WAIT, move || c.count("e:b") == 1).await,
        "b is being handled"
    );
    handle.abort().await;

    // The next incarnation gets "b" again, and not "a", which was committed.
    let again = Calls::default();
    let router = Router::new(&group)
        .subscribe(&topic)
        .handle(recording(&again));
    let handle = start_router(router, &config, publisher)?;
    let a = again.clone();
    assert!(
        wait_until(WAIT, move || a.len() >= 1).await,
        "b redelivered"
    );
    assert_eq!(again.ids(), ["e:b"]);
    assert_eq!(calls.ids(), ["e:a", "e:b"]);
    handle.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_message_and_commits() -> anyhow::Result<()> {
    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique("graceful");
    let group = unique("group");
    let config = kafka(&bootstrap);
    let publisher = Publisher::kafka(&config)?;
    publisher.publish(&topic, greeting("e:a")).await?;
    publisher.publish(&topic, greeting("e:b")).await?;

    let calls = Calls::default();
    let finished = Calls::default();
    let gate = Arc::new(AtomicBool::new(false));
    let (recorded, done, open) = (calls.clone(), finished.clone(), gate.clone());
    let router = Router::new(&group).subscribe(&topic).handle(handler_fn(
        move |g: Greeting, ctx: MessageContext| {
            recorded.record(&g, &ctx);
            let (done, open) = (done.clone(), open.clone());
            async move {
                while !open.load(Ordering::SeqCst) {
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                done.record(&g, &ctx);
                Ok::<_, HandlerError>(())
            }
        },
    ));
    let handle = start_router(router, &config, publisher.clone())?;
    let c = calls.clone();
    assert!(
        wait_until(WAIT, move || c.len() == 1).await,
        "a is in flight"
    );

    // Ask for shutdown (the first poll cancels), then let the in-flight handler finish.
    let shutdown = handle.shutdown();
    tokio::pin!(shutdown);
    assert!(futures::poll!(&mut shutdown).is_pending());
    gate.store(true, Ordering::SeqCst);
    tokio::time::timeout(WAIT, shutdown).await?;
    assert_eq!(finished.ids(), ["e:a"], "the in-flight message finished");
    assert_eq!(
        calls.ids(),
        ["e:a"],
        "no new message was started after shutdown began"
    );

    let again = Calls::default();
    let router = Router::new(&group)
        .subscribe(&topic)
        .handle(recording(&again));
    let handle = start_router(router, &config, publisher)?;
    let a = again.clone();
    assert!(wait_until(WAIT, move || a.len() >= 1).await);
    assert_eq!(again.ids(), ["e:b"], "a was committed by the shutdown");
    handle.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_redriven_to_their_topic() -> anyhow::Result<()> {
    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique("redrive");
    let config = kafka(&bootstrap);
    let publisher = Publisher::kafka(&config)?;
    let sent = publisher.publish(&topic, greeting("e:a")).await?;

    let calls = Calls::default();
    let broken = Arc::new(AtomicBool::new(true));
    let (recorded, is_broken) = (calls.clone(), broken.clone());
    let router = Router::new(unique("group"))
        .subscribe(&topic)
        .retry(ferry_toolkit::RetryPolicy::no_retries())
        .handle(handler_fn(move |g: Greeting, ctx: MessageContext| {
            recorded.record(&g, &ctx);
            let broken = is_broken.load(Ordering::SeqCst);
            async move {
                if broken {
                    Err(HandlerError::new("not yet"))
                } else {
                    Ok(())
                }
            }
        }));
    let handle = start_router(router, &config, publisher.clone())?;
    let dlq = format!("{topic}.dlq");
    assert_eq!(
        read_topic(&bootstrap, &dlq, 1, WAIT).await.len(),
        1,
        "dead-lettered"
    );

    broken.store(false, Ordering::SeqCst);
    let report = kafka::redrive(&config, &dlq, &publisher).await?;
    assert_eq!(report.redriven, 1);
    let c = calls.clone();
    assert!(
        wait_until(WAIT, move || c.len() >= 2).await,
        "handled after the re-drive"
    );
    let all = calls.all();
    assert!(
        all.iter().all(|c| c.message_id == sent.message_id),
        "the re-driven message keeps its id"
    );
    let back = read_topic(&bootstrap, &topic, 2, WAIT).await;
    assert!(
        back[1]
            .headers
            .iter()
            .all(|(k, _)| !k.starts_with("ferry-dlq-")),
        "dead-letter headers removed"
    );
    assert_eq!(
        back[1].headers.get_str(header::MESSAGE_ID),
        Some(sent.message_id.to_string().as_str())
    );

    // A second run has nothing left to do.
    assert_eq!(kafka::redrive(&config, &dlq, &publisher).await?.redriven, 0);
    handle.shutdown().await;
    Ok(())
}

/// Captures the fields of `message` spans.
#[derive(Clone, Default)]
struct SpanCapture(Arc<std::sync::Mutex<Vec<std::collections::HashMap<String, String>>>>);

struct Fields<'a>(&'a mut std::collections::HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanCapture
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "message" {
            let mut fields = std::collections::HashMap::new();
            attrs.record(&mut Fields(&mut fields));
            ctx.span(id).unwrap().extensions_mut().insert(fields);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span
                .extensions_mut()
                .get_mut::<std::collections::HashMap<String, String>>()
        {
            values.record(&mut Fields(fields));
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(fields) = span
                .extensions()
                .get::<std::collections::HashMap<String, String>>()
        {
            self.0.lock().unwrap().push(fields.clone());
        }
    }
}

/// Each message is handled in a `message` span that carries its ids and continues its trace;
/// the handler's own `traceparent` is that span.
#[tokio::test]
async fn each_message_is_handled_in_a_span_with_its_ids_and_trace() -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    let capture = SpanCapture::default();
    // A thread-local subscriber: this runtime has one thread, so it sees the worker tasks.
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));

    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique("spans");
    let config = kafka(&bootstrap);
    let publisher = Publisher::kafka(&config)?;
    let sent = publisher.publish(&topic, greeting("e:traced")).await?;
    let original = Envelope::read_from(&read_topic(&bootstrap, &topic, 1, WAIT).await[0].headers)?;

    let seen = Arc::new(std::sync::Mutex::new(None));
    let in_handler = seen.clone();
    let router = Router::new(unique("group"))
        .subscribe(&topic)
        .handle(handler_fn(move |_: Greeting, ctx: MessageContext| {
            *in_handler.lock().unwrap() = Some(ctx.traceparent());
            async { Ok::<_, HandlerError>(()) }
        }));
    let handle = start_router(router, &config, publisher)?;
    let c = capture.clone();
    assert!(
        wait_until(WAIT, move || !c.0.lock().unwrap().is_empty()).await,
        "a message span closed"
    );
    let spans = capture.0.lock().unwrap().clone();
    let span = &spans[0];
    let handler_trace = seen.lock().unwrap().expect("handler ran");
    assert_eq!(span["message_id"], sent.message_id.to_string());
    assert_eq!(span["correlation_id"], sent.correlation_id.to_string());
    assert_eq!(span["message_type"], "test.greeting");
    assert_eq!(span["trace_id"], original.traceparent.trace_id());
    assert_eq!(span["parent_span_id"], original.traceparent.span_id());
    assert_eq!(span["span_id"], handler_trace.span_id());
    assert_eq!(handler_trace.trace_id(), original.traceparent.trace_id());
    handle.shutdown().await;
    Ok(())
}

/// Partitions move between members on join and leave; the revoked member commits where it got
/// to, so nothing is lost or handled twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_hands_partitions_over_without_loss_or_duplicates() -> anyhow::Result<()> {
    check_rebalance_hands_partitions_over(GroupProtocol::Classic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_hands_partitions_over_without_loss_or_duplicates_on_the_consumer_protocol()
-> anyhow::Result<()> {
    check_rebalance_hands_partitions_over(GroupProtocol::Consumer).await
}

async fn check_rebalance_hands_partitions_over(protocol: GroupProtocol) -> anyhow::Result<()> {
    let broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique("rebalance");
    let group = unique("group");
    create_topic(&bootstrap, &topic, 4).await;
    let config = kafka(&bootstrap).group_protocol(protocol);
    let publisher = Publisher::kafka(&config)?;
    let calls = Calls::default();
    let mut expected = Vec::new();
    let publish_batch = async |round: &str, expected: &mut Vec<String>| -> anyhow::Result<()> {
        for n in 0..20 {
            let id = format!("e{}:{round}-{n}", n % 8);
            publisher.publish(&topic, greeting(&id)).await?;
            expected.push(id);
        }
        Ok(())
    };

    let first = start_router(
        Router::new(&group)
            .subscribe(&topic)
            .handle(recording(&calls)),
        &config,
        publisher.clone(),
    )?;
    publish_batch("one", &mut expected).await?;
    let (c, n) = (calls.clone(), expected.len());
    assert!(wait_until(WAIT, move || c.len() == n).await);

    let second = start_router(
        Router::new(&group)
            .subscribe(&topic)
            .handle(recording(&calls)),
        &config,
        publisher.clone(),
    )?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while first.assignment().is_empty() || second.assignment().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both members get partitions"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(first.assignment().len() + second.assignment().len(), 4);
    publish_batch("two", &mut expected).await?;
    let (c, n) = (calls.clone(), expected.len());
    assert!(wait_until(WAIT, move || c.len() >= n).await);

    first.shutdown().await;
    while second.assignment().len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the remaining member takes over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish_batch("three", &mut expected).await?;
    let (c, n) = (calls.clone(), expected.len());
    assert!(wait_until(WAIT, move || c.len() >= n).await);
    for id in &expected {
        assert_eq!(calls.count(id), 1, "{id} handled exactly once");
    }
    second.shutdown().await;
    Ok(())
}
