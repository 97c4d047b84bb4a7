//! The Users panel shows what became of a sign-up: a rejected one as rejected, with the reason,
//! not as its green `UserRequested` event. The page asks the users consumer through the gateway
//! (`/svc/users-consumer/tasks/{taskId}`); this drives the same requests against the real users
//! services on the built-in broker.

mod common;

use ferry_testkit::Harness;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_sign_up_is_shown_rejected_with_its_reason() {
    let harness = Harness::start().await;
    let http = common::dashboard_with_users(&harness).await;

    // The page polls this path for the outcome of the task it sent.
    let script = reqwest::get(format!("{}/app.js", http.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        script.contains("/svc/users-consumer/tasks/"),
        "the page asks for outcomes"
    );

    let email = format!("twice-{}@example.com", std::process::id());
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (status, body) = http
            .post(
                "/svc/users-producer/user",
                json!({"name": "Twice", "email": email, "password": "correct horse battery"}),
            )
            .await;
        assert!(status.is_success(), "{status} {body}");
        tasks.push(body["taskId"].as_str().unwrap().to_owned());
        // One after the other, so the first is decided first.
        let path = format!("/svc/users-consumer/tasks/{}", tasks.last().unwrap());
        http.until(&path, |s, _| s == StatusCode::OK).await;
    }
    let first = http
        .until(
            &format!("/svc/users-consumer/tasks/{}", tasks[0]),
            |s, _| s == StatusCode::OK,
        )
        .await;
    assert_eq!(first["outcome"], "created", "{first}");
    let second = http
        .until(
            &format!("/svc/users-consumer/tasks/{}", tasks[1]),
            |s, _| s == StatusCode::OK,
        )
        .await;
    assert_eq!(second["outcome"], "rejected", "{second}");
    let reason = second["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("email"),
        "the reason names the problem: {second}"
    );
}
