//! The outbox relay: publishes staged rows, in order per key, and marks them sent.
//!
//! One tokio task per relay runs this loop:
//! 1. Hold the lease (`lease.rs`): only one relay per database publishes at a time.
//! 2. Read a batch of unsent rows in id order, leaving out keys that are backing off.
//! 3. Publish: each key's rows one after another (a row is sent only once the previous row of
//!    its key was acknowledged), up to `max_in_flight_keys` keys at once. A failed publish stops
//!    its key for this batch and backs that key off exponentially; the other keys go on. A row
//!    the broker refuses for good ([`crate::Error::is_permanent_rejection`]: too large, invalid,
//!    no such topic) is *parked* instead: kept with its reason (`parked_at`, `last_error`),
//!    counted in `ferry_outbox_parked_total`, logged, listed by [`super::parked`], and never
//!    tried again; its key goes on with the next row, so one bad row cannot stop an entity.
//! 4. Mark the published rows sent in one statement, then go round again at once if the batch
//!    was full.
//! 5. Otherwise sleep until woken: by [`RelayHandle::notify`] (in-process, right after a
//!    commit), by PostgreSQL `NOTIFY` (rows staged by another process; see
//!    [`super::enqueue_raw`]), by the earliest key backoff, or by the fallback poll
//!    (`poll_interval`, 1 s) that catches anything else.
//!
//! A row published but not yet marked when the process dies is published again by the next
//! relay: at least once, never lost. Order per key is the order of ids, which is the commit
//! order as long as a service does not commit two transactions for one key concurrently (its
//! own state change for that entity serializes them; on SQLite all writes are serialized).
//!
//! The relay is transport-neutral: it publishes through a [`Publisher`], i.e. any
//! [`crate::Sender`] (Kafka, AMQP).

use crate::sql::ExecuteWrite;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Row;
use super::lease::Lease;
use super::listen::Listener;
use crate::error::Result;
use crate::ops::metrics;
use crate::publisher::Publisher;
use crate::retry::RetryPolicy;
use crate::sql::{Database, now_millis, placeholders};

/// How a relay works. [`RelayConfig::default`] suits services; tests shorten the times.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The lease's name: relays sharing a name (and a database) take turns. One per database
    /// is the norm.
    pub name: String,
    /// Rows read per batch.
    pub batch_size: usize,
    /// Keys published concurrently (each key's rows stay sequential).
    pub max_in_flight_keys: usize,
    /// The fallback poll, for rows staged by other processes without a wake-up.
    pub poll_interval: Duration,
    /// Backoff of a key whose publish failed (its `max_attempts` is ignored: the relay never
    /// gives up on a committed row).
    pub backoff: RetryPolicy,
    /// The lease's time to live: how long a dead relay holds up another one.
    pub lease_ttl: Duration,
    /// How long sent rows are kept (for inspection) before they are deleted; zero deletes
    /// them right after they were published.
    pub retain_sent: Duration,
    /// How long [`RelayHandle::shutdown`] lets publishes in flight finish; rows not
    /// acknowledged by then stay unsent and are published by the next relay.
    pub shutdown_grace: Duration,
}

impl Default for RelayConfig {
    /// Batches of 500, 64 keys at once, a 1 s fallback poll, backoff from 100 ms to 30 s, a
    /// 10 s lease, sent rows kept for an hour, 10 s shutdown grace.
    fn default() -> RelayConfig {
        RelayConfig {
            name: "outbox".into(),
            batch_size: 500,
            max_in_flight_keys: 64,
            poll_interval: Duration::from_secs(1),
            backoff: RetryPolicy {
                initial: Duration::from_millis(100),
                multiplier: 2.0,
                max_delay: Duration::from_secs(30),
                max_attempts: u32::MAX,
                jitter: 0.2,
                attempt_timeout: None,
            },
            lease_ttl: Duration::from_secs(10),
            retain_sent: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Builds and starts a relay. See the module docs for how it works.
#[derive(Debug)]
pub struct Relay {
    db: Database,
    publisher: Publisher,
    config: RelayConfig,
}

impl Relay {
    /// A relay with the default configuration.
    pub fn new(db: Database, publisher: Publisher) -> Relay {
        Relay {
            db,
            publisher,
            config: RelayConfig::default(),
        }
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: RelayConfig) -> Relay {
        self.config = config;
        self
    }

    /// Starts a relay with the default configuration. Must be called within a tokio runtime.
    pub fn start(db: Database, publisher: Publisher) -> RelayHandle {
        Relay::new(db, publisher).spawn()
    }

    /// Starts the relay task. Must be called within a tokio runtime.
    pub fn spawn(self) -> RelayHandle {
        let shared = Arc::new(Shared {
            wake: Notify::new(),
            stop: CancellationToken::new(),
            published: AtomicU64::new(0),
            leader: AtomicBool::new(false),
        });
        let db = self.db.clone();
        let task = tokio::spawn(run(self, shared.clone()));
        RelayHandle {
            db,
            shared,
            task: Some(task),
        }
    }
}

/// A running relay. Dropping it stops the relay without waiting; prefer
/// [`RelayHandle::shutdown`].
#[derive(Debug)]
pub struct RelayHandle {
    db: Database,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

/// Wakes a relay; cheap to clone, for HTTP handlers that stage messages.
#[derive(Debug, Clone)]
pub struct RelayWaker(Arc<Shared>);

impl RelayWaker {
    /// Wakes the relay to publish what was just committed.
    pub fn notify(&self) {
        self.0.wake.notify_one();
    }
}

#[derive(Debug)]
struct Shared {
    wake: Notify,
    stop: CancellationToken,
    published: AtomicU64,
    leader: AtomicBool,
}

impl RelayHandle {
    /// Wakes the relay at once: call it after committing a transaction that staged messages.
    /// A wake-up while the relay is busy is kept, so none is lost.
    pub fn notify(&self) {
        self.shared.wake.notify_one();
    }

    /// A cloneable way to [`RelayHandle::notify`].
    pub fn waker(&self) -> RelayWaker {
        RelayWaker(self.shared.clone())
    }

    /// Rows staged and not yet sent, in this relay's database; -1 if the database cannot be
    /// read (see [`super::pending`] for the error).
    pub async fn pending(&self) -> i64 {
        match super::pending(&self.db).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count pending outbox rows");
                -1
            }
        }
    }

    /// Rows this relay published since it started.
    pub fn published(&self) -> u64 {
        self.shared.published.load(Ordering::Relaxed)
    }

    /// Whether this relay holds the lease (is the one publishing).
    pub fn is_leader(&self) -> bool {
        self.shared.leader.load(Ordering::Relaxed)
    }

    /// Stops: lets publishes in flight finish (up to `shutdown_grace`), marks them, releases
    /// the lease.
    pub async fn shutdown(mut self) {
        self.shared.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// A row's key that failed to publish, and when it may be tried again.
#[derive(Debug)]
struct Blocked {
    until: Instant,
    attempts: u32,
}

/// What publishing one key's rows achieved.
struct KeyOutcome {
    key: String,
    /// `(id, created_at)` of each row acknowledged, in order.
    sent: Vec<(i64, i64)>,
    /// Rows refused for good: (row, reason).
    parked: Vec<(Parked, String)>,
    /// The row that failed, and why.
    failed: Option<(i64, String)>,
}

/// Pages read per batch at most while looking past rows of keys that back off.
const MAX_PAGES: usize = 8;

/// How often sent rows older than `retain_sent` are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

async fn run(relay: Relay, shared: Arc<Shared>) {
    let Relay {
        db,
        publisher,
        config,
    } = relay;
    let owner = format!("{}-{}", std::process::id(), Uuid::now_v7());
    let mut lease = Lease::new(db.clone(), config.name.clone(), owner, config.lease_ttl);
    let mut blocked: HashMap<String, Blocked> = HashMap::new();
    let mut listener = Listener::new(&db).await;
    let mut last_prune: Option<Instant> = None;
    let mut db_failures = 0u32;
    tracing::info!(lease = %config.name, "outbox relay started");

    while !shared.stop.is_cancelled() {
        let held = lease.ensure().await;
        shared.leader.store(lease.is_held(), Ordering::Relaxed);
        match held {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(lease = %config.name, "another relay holds the lease");
                idle(&shared, &mut listener, config.poll_interval).await;
                continue;
            }
            Err(e) => {
                db_failures += 1;
                let delay = config.backoff.delay(db_failures, &mut rand::rng());
                tracing::warn!(error = %e, retry_in = ?delay, "outbox relay cannot reach the database");
                idle(&shared, &mut listener, delay).await;
                continue;
            }
        }

        // Also under constant load, when the relay is never idle.
        if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            prune(&db, config.retain_sent).await;
        }
        let now = Instant::now();
        // A key whose rows vanished (deleted by hand) would otherwise be remembered forever.
        blocked.retain(|_, b| now.saturating_duration_since(b.until) < Duration::from_secs(3600));
        let rows = match fetch(&db, &blocked, now, config.batch_size).await {
            Ok(rows) => {
                db_failures = 0;
                rows
            }
            Err(e) => {
                db_failures += 1;
                let delay = config.backoff.delay(db_failures, &mut rand::rng());
                tracing::warn!(error = %e, retry_in = ?delay, "outbox relay cannot read pending rows");
                idle(&shared, &mut listener, delay).await;
                continue;
            }
        };

        if rows.is_empty() {
            let next_retry = blocked.values().map(|b| b.until).min();
            let wait = match next_retry {
                Some(at) => at
                    .saturating_duration_since(Instant::now())
                    .min(config.poll_interval),
                None => config.poll_interval,
            };
            idle(&shared, &mut listener, wait).await;
            continue;
        }

        let outcomes = publish_batch(&publisher, rows, &config, &mut lease, &shared.stop).await;
        let mut sent = Vec::new();
        for outcome in outcomes {
            sent.extend(outcome.sent.iter().map(|(id, _)| *id));
            for (row, reason) in &outcome.parked {
                metrics::outbox_parked(publisher.service(), &row.topic);
                tracing::error!(
                    row = row.id,
                    topic = %row.topic,
                    key = %outcome.key,
                    message_id = %row.message_id,
                    reason = %reason,
                    "the broker refused an outbox row for good; parked it (kept, not retried)"
                );
                park(&db, row.id, reason).await;
            }
            let now_ms = now_millis();
            for (_, created_at) in &outcome.sent {
                metrics::outbox_published(
                    publisher.service(),
                    Duration::from_millis(u64::try_from(now_ms - created_at).unwrap_or(0)),
                );
            }
            match outcome.failed {
                None => {
                    blocked.remove(&outcome.key);
                }
                Some((id, error)) => {
                    let entry = blocked.entry(outcome.key.clone()).or_insert(Blocked {
                        until: Instant::now(),
                        attempts: 0,
                    });
                    entry.attempts += 1;
                    let delay = config.backoff.delay(entry.attempts, &mut rand::rng());
                    entry.until = Instant::now() + delay;
                    metrics::outbox_failed(publisher.service());
                    tracing::warn!(
                        key = %outcome.key,
                        row = id,
                        attempt = entry.attempts,
                        error = %error,
                        retry_in = ?delay,
                        "cannot publish an outbox row; its key backs off"
                    );
                    record_failure(&db, id, &error).await;
                }
            }
        }
        shared
            .published
            .fetch_add(sent.len() as u64, Ordering::Relaxed);
        mark_sent(&db, &sent, config.retain_sent.is_zero()).await;
    }
    lease.release().await;
    shared.leader.store(false, Ordering::Relaxed);
    tracing::info!(lease = %config.name, "outbox relay stopped");
}

/// Waits for a wake-up, a PostgreSQL notification, `wait`, or the stop.
async fn idle(shared: &Shared, listener: &mut Listener, wait: Duration) {
    tokio::select! {
        () = shared.wake.notified() => {}
        () = listener.notified() => {}
        () = tokio::time::sleep(wait) => {}
        () = shared.stop.cancelled() => {}
    }
}

/// Unsent rows in id order, up to `batch_size`, skipping every row of a key that backs off
/// (so a key's later rows never overtake its failed one).
async fn fetch(
    db: &Database,
    blocked: &HashMap<String, Blocked>,
    now: Instant,
    batch_size: usize,
) -> Result<Vec<Row>> {
    let limit = i64::try_from(batch_size).unwrap_or(i64::MAX);
    let mut rows = Vec::new();
    let mut cursor = 0i64;
    for _ in 0..MAX_PAGES {
        let page = sqlx::query(
            "SELECT id, topic, msg_key, headers, payload, created_at FROM ferry_outbox
             WHERE sent_at IS NULL AND parked_at IS NULL AND id > $1 ORDER BY id LIMIT $2",
        )
        .bind(cursor)
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
        let count = page.len();
        for row in &page {
            let row = Row::decode(row)?;
            cursor = row.id;
            if blocked.get(&row.key).is_some_and(|b| b.until > now) {
                continue;
            }
            rows.push(row);
        }
        if count < batch_size || rows.len() >= batch_size {
            break;
        }
    }
    Ok(rows)
}

/// Publishes a batch, key by key, renewing the lease meanwhile. On stop, publishes in flight
/// get `shutdown_grace` to finish; what has not finished by then stays unsent.
async fn publish_batch(
    publisher: &Publisher,
    rows: Vec<Row>,
    config: &RelayConfig,
    lease: &mut Lease,
    stop: &CancellationToken,
) -> Vec<KeyOutcome> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut keys: Vec<(String, Vec<Row>)> = Vec::new();
    for row in rows {
        match index.get(&row.key) {
            Some(&i) => keys[i].1.push(row),
            None => {
                index.insert(row.key.clone(), keys.len());
                keys.push((row.key.clone(), vec![row]));
            }
        }
    }
    let results = Arc::new(parking_lot::Mutex::new(Vec::with_capacity(keys.len())));
    let collect = results.clone();
    let publishing = futures::stream::iter(keys)
        .map(|(key, rows)| publish_key(publisher, key, rows))
        .buffer_unordered(config.max_in_flight_keys.max(1))
        .for_each(move |outcome| {
            collect.lock().push(outcome);
            async {}
        });
    tokio::pin!(publishing);
    let mut deadline: Option<Instant> = None;
    loop {
        let renew = tokio::time::sleep(lease.renew_every());
        let grace = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut publishing => break,
            () = renew => {
                if let Err(e) = lease.renew().await {
                    tracing::warn!(error = %e, "cannot renew the outbox relay lease");
                }
            }
            () = stop.cancelled(), if deadline.is_none() => {
                deadline = Some(Instant::now() + config.shutdown_grace);
            }
            () = grace => {
                tracing::warn!("outbox relay stopping with publishes in flight; those rows stay unsent");
                break;
            }
        }
    }
    // On a timeout the unfinished publishes are dropped with `publishing` when this returns;
    // only the keys that finished are reported (and marked).
    let mut results = results.lock();
    std::mem::take(&mut *results)
}

/// Publishes one key's rows in order, stopping at the first failure.
async fn publish_key(publisher: &Publisher, key: String, rows: Vec<Row>) -> KeyOutcome {
    let mut outcome = KeyOutcome {
        key,
        sent: Vec::with_capacity(rows.len()),
        parked: Vec::new(),
        failed: None,
    };
    for row in rows {
        match publisher.send_raw(row.message).await {
            Ok(_) => outcome.sent.push((row.id, row.created_at)),
            // The failed send hands the message back: what the log line needs is taken from it.
            Err(e) if e.error.is_permanent_rejection() => {
                let parked = Parked {
                    id: row.id,
                    message_id: e
                        .message
                        .headers
                        .get_str(crate::envelope::header::MESSAGE_ID)
                        .unwrap_or_default()
                        .to_owned(),
                    topic: e.message.topic,
                };
                outcome.parked.push((parked, e.error.to_string()));
            }
            Err(e) => {
                outcome.failed = Some((row.id, e.error.to_string()));
                break;
            }
        }
    }
    outcome
}

/// Marks rows sent (or deletes them when sent rows are not kept). A failure here means the rows
/// are published again later: logged, not fatal.
async fn mark_sent(db: &Database, ids: &[i64], delete: bool) {
    for chunk in ids.chunks(500) {
        let sql = if delete {
            format!(
                "DELETE FROM ferry_outbox WHERE id IN ({})",
                placeholders(1, chunk.len())
            )
        } else {
            format!(
                "UPDATE ferry_outbox SET sent_at = $1 WHERE id IN ({})",
                placeholders(2, chunk.len())
            )
        };
        let mut query = sqlx::query(&sql);
        if !delete {
            query = query.bind(now_millis());
        }
        for id in chunk {
            query = query.bind(*id);
        }
        // Lazily: the mark rides on the next command's commit instead of costing an fsync
        // of its own between two commands (a lost mark only means a row published again).
        if let Err(e) = db.execute_write_lazily(query).await {
            tracing::error!(error = %e, rows = chunk.len(), "cannot mark outbox rows sent; they will be published again");
        }
    }
}

/// What is logged of a parked row (never its payload).
struct Parked {
    id: i64,
    topic: String,
    message_id: String,
}

/// Parks a row. If this fails the row is tried again later and parked then.
async fn park(db: &Database, id: i64, reason: &str) {
    let result = sqlx::query(
        "UPDATE ferry_outbox SET parked_at = $2, attempts = attempts + 1, last_error = $3
         WHERE id = $1",
    )
    .bind(id)
    .bind(now_millis())
    .bind(reason)
    .execute_write(db)
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, row = id, "cannot park an outbox row; it will be tried again");
    }
}

async fn record_failure(db: &Database, id: i64, error: &str) {
    let result = sqlx::query(
        "UPDATE ferry_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute_write(db)
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "cannot record an outbox publish failure");
    }
}

async fn prune(db: &Database, retain: Duration) {
    match super::prune_sent(db, retain).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(rows = n, "pruned sent outbox rows"),
        Err(e) => tracing::warn!(error = %e, "cannot prune sent outbox rows"),
    }
}
