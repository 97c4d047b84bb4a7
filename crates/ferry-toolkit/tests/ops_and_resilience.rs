//! Operations endpoints and connection resilience against the real broker: start-up before the
//! broker exists, `/health`, `/ready`, `/metrics`, and a broker restart while running.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use ferry_toolkit::kafka::start_router;
use ferry_toolkit::ops::{self, Health};
use ferry_toolkit::{HandlerError, MessageContext, Publisher, Router, handler_fn};
use http_body_util::BodyExt;
use tower::ServiceExt;

const WAIT: Duration = Duration::from_secs(30);

async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
    let response = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_waits_for_the_broker_and_ops_endpoints_tell_the_state() -> anyhow::Result<()> {
    ops::metrics::install();
    init_tracing();
    // An address where the broker is not running yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let config = kafka(&addr.to_string());
    let publisher = Publisher::kafka(&config)?.for_service("ops-test");
    let topic = unique("ops");
    let group = unique("group");
    let health = Health::new();
    let calls = Calls::default();
    let router = Router::new(&group)
        .subscribe(&topic)
        .health(&health)
        .handle(recording(&calls));
    let handle = start_router(router, &config, publisher.clone())?;
    let app = ops::routes(health.clone());

    // The service serves at once: alive, not ready, saying why, and retrying.
    assert_eq!(get(&app, "/health").await.0, StatusCode::OK);
    let h = health.clone();
    let broker_check = format!("kafka:{group}:broker");
    let check = broker_check.clone();
    assert!(
        wait_until(WAIT, move || h.readiness().checks[&check]
            .reason
            .contains("(attempt 3)"))
        .await,
        "start-up keeps retrying"
    );
    let (status, body) = get(&app, "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let json: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(json["ready"], false);
    assert!(
        json["checks"][&broker_check]["reason"]
            .as_str()
            .unwrap()
            .contains("not reachable"),
        "{body}"
    );
    assert!(!handle.is_ready());

    // The broker comes up: the router connects, joins, and reports ready.
    let data = tempfile::tempdir()?;
    let broker = TestBroker::start_at(addr, data.path().to_path_buf());
    let h = health.clone();
    assert!(
        wait_until(WAIT, move || h.is_ready()).await,
        "{:?}",
        health.readiness()
    );
    let (status, body) = get(&app, "/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    publisher.publish(&topic, greeting("e:1")).await?;
    let c = calls.clone();
    assert!(wait_until(WAIT, move || c.len() == 1).await);
    let t = topic.clone();
    let g = group.clone();
    assert!(
        wait_until(WAIT, move || ops::metrics::render().contains(&format!(
            "ferry_consumer_lag_messages{{service=\"ops-test\",group=\"{g}\",topic=\"{t}\",partition=\"0\"}} 0"
        )))
        .await,
        "lag reported: {}",
        ops::metrics::render()
    );
    let (status, metrics) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let handled = format!(
        "ferry_messages_handled_total{{service=\"ops-test\",group=\"{group}\",topic=\"{topic}\",type=\"test.greeting\"}} 1"
    );
    assert!(metrics.contains(&handled), "{metrics}");
    assert!(metrics.contains(&format!("ferry_handler_duration_seconds_bucket{{service=\"ops-test\",group=\"{group}\",topic=\"{topic}\",type=\"test.greeting\",le=\"0.001\"}}")));
    handle.shutdown().await;
    drop(broker);
    Ok(())
}

/// A broker restart while running: messages handled before, in flight during, published
/// during the outage and after it are each handled exactly once (the strict guarantee, not
/// just "at least once", for a router that stays up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_is_survived_without_loss_or_duplicates() -> anyhow::Result<()> {
    ops::metrics::install();
    let mut broker = TestBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = unique("restart");
    create_topic(&bootstrap, &topic, 2).await;
    let config = kafka(&bootstrap);
    let publisher = Publisher::kafka(&config)?;
    let health = Health::new();
    let calls = Calls::default();
    // "e0:in-flight" is still being handled when the broker goes down, so its commit is lost
    // with the connection and the group's committed offset stays behind it.
    let broker_down = Arc::new(AtomicBool::new(false));
    let (recorded, down) = (calls.clone(), broker_down.clone());
    let router = Router::new(unique("group"))
        .subscribe(&topic)
        .health(&health)
        .handle(handler_fn(move |g: Greeting, ctx: MessageContext| {
            recorded.record(&g, &ctx);
            let down = down.clone();
            async move {
                while g.id == "e0:in-flight" && !down.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok::<_, HandlerError>(())
            }
        }));
    let handle = start_router(router, &config, publisher.clone())?;

    let mut expected = Vec::new();
    for n in 0..20 {
        let id = format!("e{}:before-{n}", n % 5);
        publisher.publish(&topic, greeting(&id)).await?;
        expected.push(id);
    }
    let c = calls.clone();
    assert!(wait_until(WAIT, move || c.len() == 20).await);
    publisher.publish(&topic, greeting("e0:in-flight")).await?;
    expected.push("e0:in-flight".to_owned());
    let c = calls.clone();
    assert!(wait_until(WAIT, move || c.count("e0:in-flight") == 1).await);

    tokio::task::block_in_place(|| broker.stop());
    broker_down.store(true, Ordering::SeqCst);
    let h = health.clone();
    assert!(
        wait_until(WAIT, move || !h.is_ready()).await,
        "the outage shows in /ready"
    );
    // Publishes during the outage wait for the broker.
    let during: Vec<String> = (0..20).map(|n| format!("e{}:during-{n}", n % 5)).collect();
    let pending = {
        let (publisher, topic, during) = (publisher.clone(), topic.clone(), during.clone());
        tokio::spawn(async move {
            for id in during {
                publisher
                    .publish(&topic, greeting(&id))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        })
    };
    expected.extend(during);
    tokio::task::block_in_place(|| broker.restart());
    pending.await?.map_err(anyhow::Error::msg)?;

    // A marker per entity, published last: once all are handled, anything that was going to be
    // redelivered before them in their partitions has been.
    for e in 0..5 {
        let id = format!("e{e}:after");
        publisher.publish(&topic, greeting(&id)).await?;
        expected.push(id);
    }
    let (c, n) = (calls.clone(), expected.len());
    assert!(
        wait_until(WAIT, move || c.len() >= n).await,
        "{} of {n} handled",
        calls.len()
    );
    let h = health.clone();
    assert!(
        wait_until(WAIT, move || h.is_ready()).await,
        "ready again: {:?}",
        health.readiness()
    );
    for id in &expected {
        assert_eq!(calls.count(id), 1, "{id} handled exactly once");
    }
    assert_eq!(calls.len(), expected.len());
    handle.shutdown().await;
    Ok(())
}
