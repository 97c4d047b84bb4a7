//! Group commit, end to end through a real service process: `ferry run courses-producer` as a
//! child gets 200 creates at once, every 7th with a course code that is taken (409). Each gets
//! its own answer; the child is SIGKILLed as soon as the last answer arrived; then its database
//! holds every course answered 201 and none of the refused ones. On SQLite, and on PostgreSQL
//! when `FERRY_TEST_POSTGRES_URL` is set.

mod common;

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use common::{ChildBroker, ChildProcess};
use ferry_toolkit::sql::Database;
use sqlx::Row as _;

const COMMANDS: usize = 200;
const FAILING_EVERY: usize = 7;
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_2xx_survives_sigkill_of_the_courses_producer_on_sqlite() {
    every_2xx_survives_sigkill(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_2xx_survives_sigkill_of_the_courses_producer_on_postgres() {
    let Some(url) = std::env::var("FERRY_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("skipped: FERRY_TEST_POSTGRES_URL not set");
        return;
    };
    every_2xx_survives_sigkill(Some(url)).await;
}

async fn every_2xx_survives_sigkill(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(&dir.path().join("broker"), &[]);
    let data = dir.path().join("services");
    let fixed = [
        "run",
        "courses-producer",
        "--port",
        "0",
        "--brokers",
        broker.addr.as_str(),
        "--data",
    ];
    let mut args: Vec<&OsStr> = fixed.iter().map(OsStr::new).collect();
    args.push(data.as_os_str());
    if let Some(url) = &database_url {
        args.push(OsStr::new("--database-url"));
        args.push(OsStr::new(url));
    }
    let mut producer = ChildProcess::spawn("ferry run courses-producer", &args);
    let deadline = Instant::now() + START_TIMEOUT;
    let base = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = producer
            .stdout
            .recv_timeout(left)
            .expect("the producer announces its address");
        if let Some((_, url)) = line.split_once(" listening on ") {
            break url.trim().to_owned();
        }
    };

    // Codes unique to this run (a PostgreSQL schema outlives it); one of them taken first.
    let run = uuid::Uuid::now_v7().simple().to_string();
    let http = reqwest::Client::new();
    let taken = format!("T{}", &run[run.len() - 12..]);
    let first = create(&http, &base, &taken).await;
    assert_eq!(first.0, 201, "the taken code's course");

    let start = std::sync::Arc::new(tokio::sync::Barrier::new(COMMANDS));
    let tasks: Vec<_> = (0..COMMANDS)
        .map(|i| {
            let (http, base, start) = (http.clone(), base.clone(), start.clone());
            let code = if i.is_multiple_of(FAILING_EVERY) {
                taken.clone()
            } else {
                format!("C{}-{i}", &run[run.len() - 12..])
            };
            tokio::spawn(async move {
                start.wait().await;
                (i, create(&http, &base, &code).await)
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(COMMANDS);
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    // SIGKILL right after the last answer: no shutdown, no flush, no clean close.
    producer.child.kill().expect("kill");
    producer.child.wait().expect("reap");

    let mut created = Vec::new();
    for (i, (status, id)) in &answers {
        let expected = if i.is_multiple_of(FAILING_EVERY) {
            409
        } else {
            201
        };
        assert_eq!(*status, expected, "command {i}: its own answer");
        if *status == 201 {
            created.push(id.clone().expect("a 201 has the course"));
        }
    }

    let db = Database::for_service(database_url.as_deref(), &data, "courses-producer")
        .await
        .unwrap();
    let mut found = Vec::new();
    for id in &created {
        let row = sqlx::query("SELECT code FROM courses WHERE id = $1")
            .bind(id)
            .fetch_optional(db.pool())
            .await
            .unwrap();
        if row.is_some() {
            found.push(id.clone());
        }
    }
    assert_eq!(
        found.len(),
        created.len(),
        "every 201 is durable after SIGKILL"
    );
    let holders: i64 = sqlx::query("SELECT COUNT(*) AS n FROM courses WHERE code = $1")
        .bind(&taken)
        .fetch_one(db.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(holders, 1, "no refused create left a course");
    db.close().await;
}

/// POSTs a course: the status and, for a 201, its id.
async fn create(http: &reqwest::Client, base: &str, code: &str) -> (u16, Option<String>) {
    let answer = http
        .post(format!("{base}/api/v1/courses"))
        .json(&serde_json::json!({"name": format!("Course {code}"), "code": code, "active": true}))
        .send()
        .await
        .expect("the producer answers");
    let status = answer.status().as_u16();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    (status, body["id"].as_str().map(str::to_owned))
}
