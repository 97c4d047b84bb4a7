//! The score calculator of the billing system (kafka-demo's `score-calculator`), rebuilt on the
//! toolkit. Port 8002; consumes `invoice-generated` and `calculate-score`, answers on
//! `score-calculated`; consumer group `score-calculator`.
//!
//! Its contract, in [`ferry_contracts::billing`]:
//! - learns each customer's invoice history from
//!   [`InvoiceGenerated`](ferry_contracts::billing::InvoiceGenerated) on `invoice-generated`:
//!   how many invoices, and their total billed (each invoice's `total`, tax included). An
//!   invoice counts once, keyed on its number, however often it is delivered or re-published;
//!   `InvoiceRejected` on the same topic changes nothing;
//! - answers each [`CalculateScore`](ferry_contracts::billing::CalculateScore) `{requestId,
//!   customer}` with [`ScoreCalculated`](ferry_contracts::billing::ScoreCalculated)
//!   `{requestId, customer, score, invoices, totalBilled}`, keyed by customer, carrying the
//!   request's correlation id with the request's message id as causation id. A request without
//!   a request id or a customer cannot be answered meaningfully and is dead-lettered to
//!   `calculate-score.dlq` with that reason.
//!
//! **The score** is a pure function of the history, [`score`]:
//!
//! ```text
//! score = min(1000, 300 + 40 x invoices + floor(total billed / 100 currency units))
//! ```
//!
//! So a customer with no invoices scores 300, every invoice adds 40 plus one point per 100
//! units it billed, and nothing ever lowers a score: a new invoice raises it (by at least 40)
//! until it reaches the cap of 1000. The same history always gives the same score, whoever
//! asks and however often.
//!
//! Idempotency: the inbox skips a message id seen before; each request id's answer is stored,
//! so a request re-sent under a new message id is answered again with the same score it got the
//! first time, even if the history has grown since (ask with a new request id for a fresh
//! score). The history is what this service has learned *so far*: a score requested right after
//! an invoice was issued may not count that invoice yet, because the two arrive on different
//! topics.
//!
//! HTTP: `GET /api/scores[?customer=&limit=]` (past answers, newest first) and
//! `GET /api/scores/{customer}`, the score the customer's history gives now. A customer with no
//! invoices has a history too, the empty one: that answers 200 with `invoices: 0` and score
//! 300, exactly what a `CalculateScore` for them would answer, rather than a 404.
//!
//! What the original got wrong and this does not:
//! - the score was a random number (`"Calculated score: N."`): here it is a documented,
//!   deterministic function of the customer's invoice history;
//! - it knew nothing about invoices: here it learns them from `invoice-generated`, each once;
//! - answers were bare strings with no correlation id, and nobody was told: here they are JSON
//!   messages with the request id and the request's correlation id, and past answers are listed;
//! - offsets were auto-committed (a crash lost requests; a redelivery was handled twice): here
//!   the offset is committed after the answer is in the outbox, once (inbox);
//! - it shared the consumer group `invoice-generator` with the invoice worker: it has its own,
//!   `score-calculator`;
//! - a malformed message crashed or stalled the worker: it goes to `<topic>.dlq`.

mod api;
mod calculator;
mod history;

use ferry_contracts::billing::{
    CALCULATE_SCORE, CalculateScore, INVOICE_GENERATED, InvoiceGenerated, InvoiceRejected, Money,
};
use ferry_service::{Runtime, ServiceConfig, ServiceHandle};
use ferry_toolkit::{HandlerError, MessageContext, Router, handler_fn};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

/// Default HTTP port.
pub const PORT: u16 = 8002;
/// The consumer group (its own; the original shared the invoice generator's).
pub const GROUP: &str = "score-calculator";

/// The service's name: its SQLite file `score-calculator.db`, or its PostgreSQL schema
/// `score_calculator`.
const SERVICE: &str = "score-calculator";

/// The score of a customer with no invoices.
pub const BASE_SCORE: i64 = 300;
/// What each invoice adds.
pub const POINTS_PER_INVOICE: i64 = 40;
/// One point per this many cents billed (100 currency units).
pub const CENTS_PER_POINT: i64 = 10_000;
/// No score is higher.
pub const MAX_SCORE: i64 = 1_000;

/// The score of a history of `invoices` invoices totalling `total_billed`:
/// `min(1000, 300 + 40 x invoices + floor(total_billed / 100 units))`.
///
/// Non-decreasing in both arguments, and one more invoice adds at least
/// [`POINTS_PER_INVOICE`] until [`MAX_SCORE`]. Negative inputs (which no history holds) count
/// as zero.
///
/// ```
/// use ferry_contracts::billing::Money;
/// assert_eq!(scores::score(0, Money::from_cents(0)), 300);
/// // Two invoices totalling 1,234.56: 300 + 80 + 12.
/// assert_eq!(scores::score(2, Money::from_cents(123_456)), 392);
/// assert_eq!(scores::score(100, Money::from_cents(0)), 1_000);
/// ```
pub fn score(invoices: i64, total_billed: Money) -> i64 {
    let from_invoices = invoices.max(0).saturating_mul(POINTS_PER_INVOICE);
    let from_billing = total_billed.cents().max(0) / CENTS_PER_POINT;
    BASE_SCORE
        .saturating_add(from_invoices)
        .saturating_add(from_billing)
        .min(MAX_SCORE)
}

// Money is BIGINT cents, times Unix milliseconds. `learned_invoices` remembers which invoice
// numbers are counted in `histories`; `scores` keeps every answer by request id.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "scores",
    "CREATE TABLE histories (
        customer TEXT PRIMARY KEY,
        invoices BIGINT NOT NULL,
        total_billed BIGINT NOT NULL
    );
    CREATE TABLE learned_invoices (
        number BIGINT PRIMARY KEY,
        customer TEXT NOT NULL,
        total BIGINT NOT NULL,
        learned_at BIGINT NOT NULL
    );
    CREATE TABLE scores (
        request_id TEXT PRIMARY KEY,
        customer TEXT NOT NULL,
        score BIGINT NOT NULL,
        invoices BIGINT NOT NULL,
        total_billed BIGINT NOT NULL,
        calculated_at BIGINT NOT NULL
    );
    CREATE INDEX scores_newest ON scores (calculated_at, request_id);
    CREATE INDEX scores_customer ON scores (customer, calculated_at)",
)];

/// Why the service could not start.
pub use ferry_service::StartError as Error;

/// Start the service: database, outbox relay, one router on `invoice-generated` and
/// `calculate-score`, HTTP.
pub async fn start(
    config: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<ServiceHandle, Error> {
    let mut runtime = Runtime::new(SERVICE, config, shutdown)?;
    runtime.sends::<ferry_contracts::billing::ScoreCalculated>(
        ferry_contracts::billing::SCORE_CALCULATED,
    );
    let db = runtime.database(MIGRATIONS).await?;
    let relay = runtime.start_relay(&db);
    let (learn_db, score_db, waker) = (db.clone(), db.clone(), relay.clone());
    let router =
        Router::new(GROUP)
            .subscribe(INVOICE_GENERATED)
            .subscribe(CALCULATE_SCORE)
            .handle(handler_fn(
                move |invoice: InvoiceGenerated, ctx: MessageContext| {
                    let db = learn_db.clone();
                    async move { history::learn(&db, invoice, &ctx).await }
                },
            ))
            // Registered so that rejections are not counted as unknown types: they bill nothing.
            .handle(handler_fn(
                |_rejected: InvoiceRejected, _ctx: MessageContext| async move {
                    Ok::<_, HandlerError>(())
                },
            ))
            .handle(handler_fn(
                move |request: CalculateScore, ctx: MessageContext| {
                    let (db, waker) = (score_db.clone(), waker.clone());
                    async move { calculator::calculate(&db, &waker, request, &ctx).await }
                },
            ));
    runtime.start_router(router)?;
    Ok(runtime.serve(api::routes(db), api::Api::openapi()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(invoices, total billed in cents)` scores `expected`.
    #[track_caller]
    fn check(invoices: i64, cents: i64, expected: i64) {
        assert_eq!(score(invoices, Money::from_cents(cents)), expected);
    }

    #[test]
    fn score_follows_the_documented_formula() {
        check(0, 0, 300);
        check(1, 9_999, 340); // 99.99 units: no billing point yet
        check(1, 10_000, 341);
        check(3, 250_000, 445); // 300 + 120 + 25
        check(17, 0, 980);
        check(18, 0, 1_000); // 1020, capped
        check(1, 1_000_000_000_000_000, 1_000);
        check(i64::MAX, i64::MAX, 1_000);
        check(-1, -5, 300);
    }

    #[test]
    fn one_more_invoice_raises_the_score_until_the_cap() {
        for invoices in 0..20 {
            for cents in [0, 1, 9_999, 10_000, 1_234_567] {
                let before = score(invoices, Money::from_cents(cents));
                let after = score(invoices + 1, Money::from_cents(cents + 1));
                assert!(
                    after >= (before + POINTS_PER_INVOICE).min(MAX_SCORE),
                    "{invoices} invoices, {cents} cents: {before} -> {after}"
                );
            }
        }
    }
}
