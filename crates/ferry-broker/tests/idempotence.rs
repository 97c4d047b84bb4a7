//! An idempotent producer whose connections are cut mid-flight, again and again: the log holds
//! every message exactly once, in order.

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

const MESSAGES: usize = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_never_duplicate_or_reorder_idempotent_produce() {
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, listener) = Proxy::bind().await;
    let mut config = common::config(dir.path());
    // Clients learn the proxy's address from Metadata, so every connection goes through it.
    config.advertised_port = Some(proxy.addr().port());
    let broker = common::start_with(config).await;
    proxy.forward_to(listener, broker.local_addr());

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", proxy.addr().to_string())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("batch.num.messages", "500")
        .set("message.timeout.ms", "120000")
        .set("reconnect.backoff.ms", "10")
        .set("reconnect.backoff.max.ms", "100")
        .create()
        .unwrap();

    // Cut every connection every 150 ms while the producer sends.
    let cutter = {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let proxy = std::sync::Arc::new(proxy);
        let p = proxy.clone();
        let task = tokio::spawn(async move {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(150)).await;
                p.cut();
            }
        });
        (stop, proxy, task)
    };

    let mut pending = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let value = format!("{i:08}");
        pending.push(
            producer
                .send_result(
                    FutureRecord::to("idem")
                        .key("one-key")
                        .payload(&value)
                        .partition(0),
                )
                .unwrap(),
        );
        if pending.len() % 10_000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for p in pending {
        p.await
            .expect("not cancelled")
            .expect("delivered despite cut connections");
    }
    cutter.0.store(true, std::sync::atomic::Ordering::Relaxed);
    cutter.2.await.unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let cuts = cutter.1.cuts();
    assert!(
        cuts >= 3,
        "connections were cut {cuts} times during the run"
    );

    let bootstrap = broker.bootstrap_servers();
    let got = tokio::task::spawn_blocking(move || {
        common::consume_from_beginning(
            &bootstrap,
            &[("idem", 0)],
            MESSAGES + 1,
            Duration::from_secs(20),
        )
    })
    .await
    .unwrap();
    let values: Vec<String> = got
        .iter()
        .map(|g| String::from_utf8(g.value.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(
        values.len(),
        MESSAGES,
        "each message exactly once (cut {cuts} times)"
    );
    for (i, v) in values.iter().enumerate() {
        assert_eq!(*v, format!("{i:08}"), "in order");
    }
    broker.shutdown().await.unwrap();
}
