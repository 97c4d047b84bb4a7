//! What several dashboard test files start the same way.

use dashboard::Upstream;
use ferry_testkit::{Harness, Http};

/// The users producer and consumer on `harness`'s broker, and the dashboard in front of them
/// (its gateway knows only those two); returns the dashboard.
pub async fn dashboard_with_users(harness: &Harness) -> Http {
    let config = harness.config();
    let producer = users::start_producer(config.clone(), harness.token())
        .await
        .unwrap();
    let consumer = users::start_consumer(config.clone(), harness.token())
        .await
        .unwrap();
    let upstreams = vec![
        Upstream::new("users-producer", format!("http://{}", producer.addr)),
        Upstream::new("users-consumer", format!("http://{}", consumer.addr)),
    ];
    let handle = dashboard::start(config, upstreams, harness.token())
        .await
        .unwrap();
    Http::new(handle.addr)
}
