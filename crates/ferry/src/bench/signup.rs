//! `ferry bench signup`: a burst of concurrent sign-ups against `ferry up`, and the memory it
//! costs.
//!
//! Starts this binary as `ferry up --free-ports` in a child process (as `ferry bench up` does)
//! and waits until every service is ready. Then `--signups` clients each send one sign-up
//! (`POST /user` on users-producer, each on its own connection) at the same moment. The producer
//! hashes passwords on a bounded pool and refuses what does not fit its queue with `503` and
//! `Retry-After`; unless `--no-retry`, a refused client waits that long (plus a spread of up to
//! a second, so the retries do not all arrive together) and tries again, as a well-behaved
//! client would, until it is accepted. Reported: the first answers (202 against 503), the 503s
//! answered in all, the time until every sign-up was accepted and until the consumer had created
//! every user, and the child's memory from `/proc/<pid>/status`: resident before the burst, the
//! peak (`VmHWM`, the most it was ever resident), resident right after (the burst's connections
//! closed) and after `--settle-s` more.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::blocking;
use super::up::{UpChild, status_kib, stop};
use crate::kafka::thousands;

/// The target of the issue that asked for this benchmark: the peak under 400 MiB.
const PEAK_TARGET_MIB: f64 = 400.0;
/// How long a client keeps trying, and how long the users may take to appear.
const DEADLINE: Duration = Duration::from_secs(300);

#[derive(Debug, Args)]
pub struct SignupBenchArgs {
    /// Sign-ups sent at once, one client (and connection) each.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    signups: u64,
    /// Do not retry refused sign-ups: report the first answers only.
    #[arg(long)]
    no_retry: bool,
    /// Seconds to wait after the last user was created before reading the memory again.
    #[arg(long, default_value_t = 30)]
    settle_s: u64,
}

/// What became of one client's sign-up.
#[derive(Debug, Default)]
struct Outcome {
    /// The first answer's status.
    first: Option<StatusCode>,
    /// 503 answers received.
    refused: u64,
    /// The first `Retry-After`, in seconds.
    first_retry_after: Option<u64>,
    /// When it was accepted (202), from the start of the burst.
    accepted_after: Option<Duration>,
    /// Any answer other than 202 or 503, or a transport error, as text.
    failure: Option<String>,
}

pub async fn bench(args: SignupBenchArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let dir = tempfile::tempdir().context("cannot create a data directory")?;
    let data = dir.path().to_owned();
    let up = blocking(move || {
        let mut up = UpChild::start(&exe, &data)?;
        up.wait_ready()?;
        Ok(up)
    })
    .await?;
    let pid = up.child.id();
    let producer = format!("http://{}/user", up.addr("users-producer")?);
    let consumer = format!("http://{}/users", up.addr("users-consumer")?);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "ferry bench signup: {} concurrent sign-ups against `ferry up --free-ports` (pid {pid}; \
         hashing pool: {cores} worker(s), one per core){}",
        thousands(args.signups),
        if args.no_retry {
            ", no retries"
        } else {
            ", refused ones retried after Retry-After"
        }
    );
    let before_kib = status_kib(pid, "VmRSS")?;

    // The emails of this run, so its users are told apart from any others.
    let run = format!("bench{}", ferry_toolkit::now_millis());
    let client = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .context("cannot build an HTTP client")?;
    let started = Instant::now();
    let producer = Arc::new(producer);
    let clients: Vec<_> = (0..args.signups)
        .map(|n| {
            let (client, producer, run) = (client.clone(), producer.clone(), run.clone());
            tokio::spawn(async move {
                sign_up(&client, &producer, &run, n, !args.no_retry, started).await
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(clients.len());
    for client in clients {
        outcomes.push(client.await.context("a client task failed")?);
    }
    let burst = started.elapsed();
    // Close the burst's connections (kept alive in the client's pool until it goes), so what
    // is measured afterwards is what the server keeps, not what open connections hold.
    drop(client);

    let accepted = outcomes
        .iter()
        .filter(|o| o.accepted_after.is_some())
        .count() as u64;
    let mut firsts: BTreeMap<u16, u64> = BTreeMap::new();
    for o in &outcomes {
        *firsts.entry(o.first.map_or(0, |s| s.as_u16())).or_default() += 1;
    }
    let first_text = firsts
        .iter()
        .map(|(status, n)| match status {
            0 => format!("{} no answer", thousands(*n)),
            s => format!("{} x {s}", thousands(*n)),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let retry_afters: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| o.first_retry_after)
        .collect();
    let refused: u64 = outcomes.iter().map(|o| o.refused).sum();
    println!(
        "first answers: {first_text}{}",
        match (retry_afters.iter().min(), retry_afters.iter().max()) {
            (Some(lo), Some(hi)) => format!(" (Retry-After {lo} to {hi} s)"),
            _ => String::new(),
        }
    );
    let last_accept = outcomes
        .iter()
        .filter_map(|o| o.accepted_after)
        .max()
        .unwrap_or_default();
    println!(
        "accepted: {} of {} (the last after {:.1} s), {} answers of 503 in all; burst over in {:.1} s",
        thousands(accepted),
        thousands(args.signups),
        last_accept.as_secs_f64(),
        thousands(refused),
        burst.as_secs_f64()
    );
    let failures: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o.failure.as_deref())
        .collect();
    if let Some(example) = failures.first() {
        println!(
            "failed: {} (neither 202 nor 503), e.g. {example}",
            thousands(failures.len() as u64)
        );
    }

    // A 202 is a promise: wait for every accepted sign-up to be a user.
    let created = wait_for_users(&consumer, &run, accepted, started).await?;
    println!(
        "users created: {} of {} accepted, the last {:.1} s after the burst began",
        thousands(created.0),
        thousands(accepted),
        created.1.as_secs_f64()
    );

    let peak_kib = status_kib(pid, "VmHWM")?;
    let after_kib = status_kib(pid, "VmRSS")?;
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    let settled_kib = status_kib(pid, "VmRSS")?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "memory of ferry up: {:.0} MiB resident before, peak {:.0} MiB (VmHWM), {:.0} MiB right \
         after, {:.0} MiB after {} s",
        mib(before_kib),
        mib(peak_kib),
        mib(after_kib),
        mib(settled_kib),
        args.settle_s
    );
    println!(
        "target: peak under {PEAK_TARGET_MIB:.0} MiB: {}",
        if mib(peak_kib) < PEAK_TARGET_MIB {
            "met"
        } else {
            "NOT met"
        }
    );
    let mut up = up;
    blocking(move || stop(&mut up.child)).await?;
    if created.0 < accepted {
        bail!(
            "{} accepted sign-ups never became users",
            accepted - created.0
        );
    }
    Ok(())
}

/// One client: sign up, and (if `retry`) after each 503 wait `Retry-After` plus a spread and
/// try again, until accepted or [`DEADLINE`].
async fn sign_up(
    client: &reqwest::Client,
    url: &str,
    run: &str,
    n: u64,
    retry: bool,
    started: Instant,
) -> Outcome {
    let body = json!({
        "name": format!("Bench User {n}"),
        "email": format!("{run}-{n}@example.com"),
        "password": format!("bench password {n}"),
    });
    let mut outcome = Outcome::default();
    loop {
        let response = match client.post(url).json(&body).send().await {
            Ok(response) => response,
            Err(e) => {
                outcome.failure = Some(e.to_string());
                return outcome;
            }
        };
        let status = response.status();
        outcome.first.get_or_insert(status);
        match status {
            StatusCode::ACCEPTED => {
                outcome.accepted_after = Some(started.elapsed());
                return outcome;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                outcome.refused += 1;
                let seconds = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                if outcome.refused == 1 {
                    outcome.first_retry_after = seconds;
                }
                if !retry || started.elapsed() > DEADLINE {
                    return outcome;
                }
                // A spread of up to a second, different per client and per try, so that the
                // refused do not all come back in the same instant (a client's jitter).
                let spread = Duration::from_millis((n * 7919 + outcome.refused * 104_729) % 1000);
                tokio::time::sleep(Duration::from_secs(seconds.unwrap_or(1)) + spread).await;
            }
            other => {
                let text = response.text().await.unwrap_or_default();
                outcome.failure = Some(format!("{other}: {text}"));
                return outcome;
            }
        }
    }
}

/// Polls the consumer's user list until it holds `expected` users of this run, or
/// [`DEADLINE`] passed since `started` (the burst's start); answers how many it found and when.
async fn wait_for_users(
    url: &str,
    run: &str,
    expected: u64,
    started: Instant,
) -> anyhow::Result<(u64, Duration)> {
    let prefix = format!("{run}-");
    let client = reqwest::Client::new();
    loop {
        let list: Value = client
            .get(url)
            .send()
            .await
            .context("the users consumer did not answer")?
            .json()
            .await
            .context("the users consumer answered no JSON")?;
        let found = list["users"].as_array().map_or(0, |users| {
            users
                .iter()
                .filter(|u| u["email"].as_str().is_some_and(|e| e.starts_with(&prefix)))
                .count()
        }) as u64;
        if found >= expected || started.elapsed() > 2 * DEADLINE {
            return Ok((found, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
