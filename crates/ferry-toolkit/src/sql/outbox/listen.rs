//! PostgreSQL `LISTEN` for the relay: [`super::enqueue_raw`] issues `NOTIFY ferry_outbox` in
//! the staging transaction, which PostgreSQL delivers at commit, so a relay wakes at once for
//! rows staged by any process (another instance of the service), not only its own.
//! Notifications are wake-ups only: the relay reads the table either way, so one lost while
//! the listener reconnects costs at most a poll interval.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::time::Instant;

use super::CHANNEL;
use crate::sql::Database;

/// PostgreSQL `LISTEN` on the outbox channel, so rows staged by other processes wake the relay
/// at once. Reconnects on the next wait after an error; on SQLite it never fires.
pub(super) struct Listener {
    url: Option<String>,
    listener: Option<PgListener>,
    retry_at: Option<Instant>,
}

impl Listener {
    pub(super) async fn new(db: &Database) -> Listener {
        let mut listener = Listener {
            url: db.url().filter(|_| db.is_postgres()).map(str::to_owned),
            listener: None,
            retry_at: None,
        };
        listener.connect().await;
        listener
    }

    async fn connect(&mut self) {
        let Some(url) = &self.url else { return };
        let listening = async {
            let mut listener = PgListener::connect(url).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listening.await {
            Ok(listener) => self.listener = Some(listener),
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for outbox notifications; polling only");
                self.retry_at = Some(Instant::now() + Duration::from_secs(10));
            }
        }
    }

    /// Resolves on a notification; never, while not listening.
    pub(super) async fn notified(&mut self) {
        if self.listener.is_none() && self.retry_at.is_some_and(|at| at <= Instant::now()) {
            self.retry_at = None;
            self.connect().await;
        }
        match &mut self.listener {
            Some(listener) => match listener.recv().await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "outbox notifications interrupted; polling meanwhile");
                    self.listener = None;
                    self.retry_at = Some(Instant::now() + Duration::from_secs(10));
                }
            },
            None => std::future::pending().await,
        }
    }
}
