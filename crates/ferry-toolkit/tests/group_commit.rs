//! Group commit: concurrent commands share commits, yet each gets its own answer, a failed one
//! changes nothing, and every success is durable the moment it is answered.
//!
//! The child is this test binary run again with only `group_commit_child` selected and
//! `FERRY_GROUP_COMMIT_CHILD` set (see `outbox_crash.rs` for the pattern). It starts 200
//! commands at once; each inserts its account, stages its event in the outbox and, for every
//! 7th, then inserts an account whose id is taken, a unique violation after its first writes.
//! It prints each answer as it gets it. The parent SIGKILLs it as soon as it has read the 200th
//! answer (no destructor, no clean close), opens the database again and checks that every
//! success is there with its outbox row and that no failed command left anything.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::stores::{POSTGRES, SQLITE, StoreFeatures, TestStore};
use ferry_toolkit::sql::{Database, outbox};
use ferry_toolkit::{Envelope, Message};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;

const CHILD_ENV: &str = "FERRY_GROUP_COMMIT_CHILD";
const COMMANDS: usize = 200;
/// Every this-many-th command violates the unique key.
const FAILING_EVERY: usize = 7;
const WAIT: Duration = Duration::from_secs(60);
const TOPIC: &str = "accounts";

const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "accounts",
    "CREATE TABLE accounts (id TEXT PRIMARY KEY, command BIGINT NOT NULL);
     INSERT INTO accounts (id, command) VALUES ('taken', -1)",
)];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AccountOpened {
    id: String,
}

impl Message for AccountOpened {
    const TYPE: &'static str = "test.account-opened";
    fn key(&self) -> String {
        self.id.clone()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ChildSpec {
    url: String,
    schema: String,
}

/// What a command was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Ok,
    UniqueViolation,
    Other(String),
}

/// One command: its account and event, and for every 7th the duplicate that fails it.
async fn command(db: &Database, i: usize) -> Answer {
    let result: Result<(), sqlx::Error> = async {
        let mut tx = db
            .begin()
            .await
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let id = format!("account-{i}");
        sqlx::query("INSERT INTO accounts (id, command) VALUES ($1, $2)")
            .bind(&id)
            .bind(i as i64)
            .execute(&mut *tx)
            .await?;
        outbox::enqueue(
            &mut tx,
            TOPIC,
            &AccountOpened { id },
            &Envelope::new::<AccountOpened>(),
        )
        .await
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        if i.is_multiple_of(FAILING_EVERY) {
            sqlx::query("INSERT INTO accounts (id, command) VALUES ('taken', $1)")
                .bind(i as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
    .await;
    match result {
        Ok(()) => Answer::Ok,
        Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Answer::UniqueViolation,
        Err(e) => Answer::Other(e.to_string()),
    }
}

/// Runs the 200 commands at once on `db`; each answer goes to `answered` as it arrives.
async fn run_commands(db: &Database, answered: impl Fn(usize, &Answer) + Send + Sync + 'static) {
    let start = Arc::new(tokio::sync::Barrier::new(COMMANDS));
    let answered = Arc::new(answered);
    let tasks: Vec<_> = (0..COMMANDS)
        .map(|i| {
            let (db, start, answered) = (db.clone(), start.clone(), answered.clone());
            tokio::spawn(async move {
                start.wait().await;
                let answer = command(&db, i).await;
                answered(i, &answer);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("command task");
    }
}

/// The child: answers 200 commands, then waits to be killed. A no-op in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_child() -> anyhow::Result<()> {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return Ok(());
    };
    let spec: ChildSpec = serde_json::from_str(&spec)?;
    ferry_toolkit::ops::metrics::install();
    let db = Database::connect_in_schema(&spec.url, &spec.schema).await?;
    run_commands(&db, |i, answer| {
        let text = match answer {
            Answer::Ok => "ok".to_owned(),
            Answer::UniqueViolation => "unique".to_owned(),
            Answer::Other(e) => format!("other {e}"),
        };
        println!("answer {i} {text}");
    })
    .await;
    println!(
        "commits {}",
        common::metric(ferry_toolkit::ops::metrics::GROUP_COMMITS, &[])
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}

macro_rules! group_commit_tests {
    ($($name:ident => $features:expr),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() -> anyhow::Result<()> {
            every_answer_is_its_own_and_every_success_survives_sigkill(&$features).await
        }
    )*};
}

group_commit_tests!(
    every_answer_is_its_own_and_every_success_survives_sigkill_on_sqlite => SQLITE,
    every_answer_is_its_own_and_every_success_survives_sigkill_on_postgres => POSTGRES,
);

async fn every_answer_is_its_own_and_every_success_survives_sigkill(
    f: &StoreFeatures,
) -> anyhow::Result<()> {
    let Some(store) = TestStore::open(f).await else {
        return Ok(());
    };
    store.db.migrate("group-commit", MIGRATIONS).await?;
    let spec = ChildSpec {
        url: store.url.clone(),
        schema: store.schema.clone(),
    };
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "group_commit_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, serde_json::to_string(&spec)?)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let (answers, commits) = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + WAIT;
        let mut answers = BTreeMap::new();
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            // The first answer shares its line with libtest's "test group_commit_child ... ".
            if let Some(at) = line.find("answer ") {
                let rest = &line[at + "answer ".len()..];
                let (i, answer) = rest.split_once(' ').expect("answer i text");
                let answer = match answer {
                    "ok" => Answer::Ok,
                    "unique" => Answer::UniqueViolation,
                    other => Answer::Other(other.to_owned()),
                };
                answers.insert(i.parse::<usize>().expect("number"), answer);
                if answers.len() == COMMANDS || Instant::now() > deadline {
                    break;
                }
            }
        }
        let commits = lines
            .next()
            .and_then(|l| l.ok())
            .and_then(|l| l.strip_prefix("commits ")?.parse::<f64>().ok());
        (answers, commits)
    })
    .await?;
    // SIGKILL right after the last answer: nothing is flushed or closed on the way out.
    child.kill()?;
    child.wait()?;
    assert_eq!(answers.len(), COMMANDS, "every command was answered");

    // Each command got its own answer: exactly the 7th ones failed, with their own error.
    for (&i, answer) in &answers {
        let expected = if i.is_multiple_of(FAILING_EVERY) {
            Answer::UniqueViolation
        } else {
            Answer::Ok
        };
        assert_eq!(answer, &expected, "command {i}");
    }

    // After the kill, on a fresh connection: every success with its event, nothing of a failure.
    let db = store.connect_again().await;
    let accounts: Vec<i64> = sqlx::query("SELECT command FROM accounts WHERE id <> 'taken'")
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut accounts: Vec<usize> = accounts.into_iter().map(|c| c as usize).collect();
    accounts.sort_unstable();
    let succeeded: Vec<usize> = answers
        .iter()
        .filter(|(_, a)| **a == Answer::Ok)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        accounts, succeeded,
        "every 2xx is durable, no failure left a row"
    );
    let mut staged: Vec<String> = sqlx::query("SELECT msg_key FROM ferry_outbox")
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    staged.sort_unstable();
    let mut expected: Vec<String> = succeeded.iter().map(|i| format!("account-{i}")).collect();
    expected.sort_unstable();
    assert_eq!(
        staged, expected,
        "one staged event per success, none for a failure"
    );
    let taken: i64 = sqlx::query("SELECT command FROM accounts WHERE id = 'taken'")
        .fetch_one(db.pool())
        .await?
        .try_get(0)?;
    assert_eq!(taken, -1, "the violated row is untouched");
    if f.name == "sqlite" {
        let commits = commits.expect("the child printed its commit count");
        eprintln!("{COMMANDS} commands, {commits} group commits");
        assert!(
            commits < (COMMANDS - COMMANDS / FAILING_EVERY) as f64,
            "concurrent commands shared commits ({commits} for {} successes)",
            succeeded.len()
        );
    }
    db.close().await;
    Ok(())
}
