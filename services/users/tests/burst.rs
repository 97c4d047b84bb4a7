//! A burst of sign-ups against a small hashing pool: what does not fit the queue is refused at
//! once with `503` and `Retry-After`, what was accepted becomes a user, and the producer takes
//! sign-ups again once the burst has passed.

use argon2::Params;
use ferry_testkit::reqwest::{self, StatusCode, header};
use ferry_testkit::{Harness, Http};
use serde_json::{Value, json};
use users::HashLimits;

/// Sign-ups sent at once.
const BURST: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_burst_beyond_queue_gets_503_with_retry_after() {
    let harness = Harness::start().await;
    // One worker and two waiting places: at most three sign-ups in the producer at a time.
    // The cost is raised (more passes over the same 19 MiB) so that one hash takes far longer
    // than the whole burst takes to arrive; accepted sign-ups still finish within seconds.
    let limits = HashLimits {
        workers: 1,
        queue: 2,
        params: Params::new(Params::DEFAULT_M_COST, 8, 1, None).unwrap(),
    };
    let producer = users::start_producer_with(harness.config(), limits, harness.token())
        .await
        .unwrap();
    let consumer = users::start_consumer(harness.config(), harness.token())
        .await
        .unwrap();
    let (producer_url, consumer) = (
        format!("http://{}/user", producer.addr),
        Http::new(consumer.addr),
    );

    let client = reqwest::Client::new();
    let answers = spawn_all((0..BURST).map(|n| {
        let request = client.post(&producer_url).json(&json!({
            "name": format!("User {n}"),
            "email": format!("burst-{n}@example.com"),
            "password": format!("password {n}"),
        }));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body)
        }
    }))
    .await;

    let mut accepted = Vec::new();
    let mut refused = 0;
    for (status, retry_after, body) in &answers {
        match *status {
            StatusCode::ACCEPTED => accepted.push(body["taskId"].as_str().unwrap().to_owned()),
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
                let seconds: u64 = retry_after
                    .as_deref()
                    .unwrap_or_else(|| panic!("a 503 without Retry-After: {body}"))
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&seconds), "Retry-After: {seconds}");
            }
            other => panic!("a sign-up answered {other}: {body}"),
        }
    }
    println!("{} accepted, {refused} refused", accepted.len());
    assert!(
        refused > 0,
        "{BURST} sign-ups at once against 3 places: some must be refused"
    );
    assert!(!accepted.is_empty(), "the first sign-ups fit");

    // A 202 is a promise: each accepted sign-up becomes a user.
    for task in &accepted {
        let outcome = consumer
            .until(&format!("/tasks/{task}"), |status, _| {
                status == StatusCode::OK
            })
            .await;
        assert_eq!(outcome["outcome"], "created", "{outcome}");
    }
    // The burst is over: a sign-up is accepted again.
    let (status, body) = Http::new(producer.addr)
        .post(
            "/user",
            json!({"name": "After", "email": "after@example.com", "password": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

/// Runs the futures concurrently, each on its own task, and answers their outputs in order.
async fn spawn_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}
