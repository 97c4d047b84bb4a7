//! The single-relay lease: at most one relay per database publishes at a time.
//!
//! Why a lease rather than row locks: per-key order needs one publisher for all of a key's
//! rows, and holding `FOR UPDATE SKIP LOCKED` row locks across a publish would keep a
//! transaction open for as long as the broker takes, on every relay. A lease row is one short
//! statement per renewal, works the same on SQLite (several processes on one file) and
//! PostgreSQL (several instances of a service), and hands over when its holder dies.
//!
//! `ferry_leases(name, owner, expires_at)`: a relay takes the lease if it is free, expired, or
//! its own, with one upsert; expiry uses the database server's clock, so relays on machines
//! with skewed clocks agree on it. The holder renews it every third of its time to live. It
//! trusts its lease only until `ttl` after it *sent* the last successful renewal, measured on
//! its own monotonic clock, so a relay that stalls stops before another can take over.
//!
//! What a lease cannot rule out: a publish already in flight when the lease ran out (the
//! relay stalled for longer than the time to live) may overlap with the next holder's. That
//! is a duplicate, not a loss, and consumers' inboxes absorb it.

use crate::sql::ExecuteWrite;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Result;
use crate::sql::Database;

#[derive(Debug)]
pub(super) struct Lease {
    db: Database,
    name: String,
    owner: String,
    ttl: Duration,
    /// Until when this relay may publish, on the local monotonic clock.
    valid_until: Option<Instant>,
}

impl Lease {
    pub(super) fn new(db: Database, name: String, owner: String, ttl: Duration) -> Lease {
        Lease {
            db,
            name,
            owner,
            ttl,
            valid_until: None,
        }
    }

    /// Whether this relay may publish now, renewing or acquiring the lease when a third of its
    /// time to live has passed since the last renewal.
    pub(super) async fn ensure(&mut self) -> Result<bool> {
        let now = Instant::now();
        if let Some(until) = self.valid_until
            && until.saturating_duration_since(now) > self.ttl * 2 / 3
        {
            return Ok(true);
        }
        self.renew().await
    }

    /// Renews (or acquires) the lease. `Ok(false)`: another relay holds it.
    pub(super) async fn renew(&mut self) -> Result<bool> {
        let sent = Instant::now();
        let now = self.db.backend().now_millis_sql();
        let sql = format!(
            "INSERT INTO ferry_leases (name, owner, expires_at) VALUES ($1, $2, {now} + $3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
             WHERE ferry_leases.owner = excluded.owner OR ferry_leases.expires_at < {now}"
        );
        let held = sqlx::query(&sql)
            .bind(&self.name)
            .bind(&self.owner)
            .bind(i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX))
            .execute_write(&self.db)
            .await;
        let held = match held {
            Ok(result) => result.rows_affected() == 1,
            Err(e) => {
                // Unknown: keep trusting what was valid before, no longer.
                if self
                    .valid_until
                    .is_some_and(|until| until <= Instant::now())
                {
                    self.lost();
                }
                return Err(e.into());
            }
        };
        let was_held = self.valid_until.is_some();
        if held {
            self.valid_until = Some(sent + self.ttl);
            if !was_held {
                tracing::info!(lease = %self.name, owner = %self.owner, "outbox relay lease acquired; publishing");
            }
        } else if was_held {
            self.lost();
        }
        Ok(held)
    }

    fn lost(&mut self) {
        tracing::warn!(lease = %self.name, owner = %self.owner, "outbox relay lease lost; another relay publishes");
        self.valid_until = None;
    }

    pub(super) fn is_held(&self) -> bool {
        self.valid_until.is_some_and(|until| until > Instant::now())
    }

    /// How long to wait between renewals while a batch is in flight.
    pub(super) fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Gives the lease up, so another relay can take over at once instead of after expiry.
    pub(super) async fn release(&mut self) {
        if self.valid_until.take().is_none() {
            return;
        }
        let released = sqlx::query("DELETE FROM ferry_leases WHERE name = $1 AND owner = $2")
            .bind(&self.name)
            .bind(&self.owner)
            .execute_write(&self.db)
            .await;
        match released {
            Ok(_) => tracing::info!(lease = %self.name, "outbox relay lease released"),
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "cannot release the outbox relay lease; it expires by itself")
            }
        }
    }
}
