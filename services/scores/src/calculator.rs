//! The calculator: each `CalculateScore` is answered with a `ScoreCalculated` staged in the
//! outbox, once per message id, and with the same answer for every delivery of one request id.
//!
//! One transaction holds the inbox claim, the look-up of an earlier answer, the stored answer
//! and the staged message. Two deliveries of one request id under different message ids that
//! run at the same moment on PostgreSQL both find no earlier answer; the second insert then
//! meets the first's primary key, fails, rolls back, and its retry answers with the stored
//! score.

use ferry_contracts::billing::{CalculateScore, Money, SCORE_CALCULATED, ScoreCalculated};
use ferry_toolkit::sql::outbox::{self, RelayWaker};
use ferry_toolkit::sql::{Database, inbox};
use ferry_toolkit::{HandlerError, MessageContext};
use sqlx::{AnyConnection, Row};

use crate::{GROUP, history};

/// Answers one `CalculateScore`.
pub(crate) async fn calculate(
    db: &Database,
    relay: &RelayWaker,
    request: CalculateScore,
    ctx: &MessageContext,
) -> Result<(), HandlerError> {
    // No answer could be matched to a request without an id, and a score of nobody means
    // nothing: dead-letter them with the reason rather than answer.
    if request.request_id.trim().is_empty() {
        return Err(HandlerError::permanent(
            "CalculateScore without a requestId",
        ));
    }
    let customer = request.customer.trim();
    if customer.is_empty() {
        return Err(HandlerError::permanent(format!(
            "CalculateScore {} without a customer",
            request.request_id
        )));
    }
    let Some(mut tx) = inbox::claim(db, GROUP, ctx.message_id()).await? else {
        return Ok(());
    };
    let answer = match earlier_answer(&mut tx, &request.request_id).await? {
        Some(answer) => {
            tracing::info!(request = %request.request_id, "request seen before; answering again");
            answer
        }
        None => {
            let history = history::load(&mut tx, customer).await?;
            let answer = ScoreCalculated {
                request_id: request.request_id.clone(),
                customer: customer.to_owned(),
                score: history.score(),
                invoices: history.invoices,
                total_billed: history.total_billed,
            };
            sqlx::query(
                "INSERT INTO scores (request_id, customer, score, invoices, total_billed, calculated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&answer.request_id)
            .bind(&answer.customer)
            .bind(answer.score)
            .bind(answer.invoices)
            .bind(answer.total_billed.cents())
            .bind(ferry_toolkit::now_millis())
            .execute(&mut *tx)
            .await?;
            tracing::info!(request = %answer.request_id, customer = %answer.customer,
                score = answer.score, invoices = answer.invoices, "score calculated");
            answer
        }
    };
    outbox::enqueue(
        &mut tx,
        SCORE_CALCULATED,
        &answer,
        &ctx.follow_up_envelope::<ScoreCalculated>(),
    )
    .await?;
    tx.commit().await?;
    relay.notify();
    Ok(())
}

async fn earlier_answer(
    tx: &mut AnyConnection,
    request_id: &str,
) -> Result<Option<ScoreCalculated>, sqlx::Error> {
    let row = sqlx::query(&format!("{SELECT_SCORE} WHERE request_id = $1"))
        .bind(request_id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(row.as_ref().map(|row| answer_from_row(row).0))
}

/// The columns [`answer_from_row`] reads.
pub(crate) const SELECT_SCORE: &str =
    "SELECT request_id, customer, score, invoices, total_billed, calculated_at FROM scores";

/// A stored answer, and when it was calculated (Unix milliseconds).
pub(crate) fn answer_from_row(row: &sqlx::any::AnyRow) -> (ScoreCalculated, i64) {
    (
        ScoreCalculated {
            request_id: row.get("request_id"),
            customer: row.get("customer"),
            score: row.get("score"),
            invoices: row.get("invoices"),
            total_billed: Money::from_cents(row.get("total_billed")),
        },
        row.get("calculated_at"),
    )
}
