//! The credit check: each `OrderCreated` reserves its amount against the customer's credit, or
//! is refused with a reason; either way an `OrderValidated` answers it.
//!
//! One transaction holds the inbox record, the reservation, the order's verdict and the staged
//! `OrderValidated`, so a crash leaves either all of them or none, and a redelivery finds the
//! inbox record and does nothing.

use ferry_contracts::orders::{Money, OrderCreated, OrderValidated, TOPIC};
use ferry_toolkit::sql::outbox::{self, RelayWaker};
use ferry_toolkit::sql::{Database, inbox};
use ferry_toolkit::{HandlerError, MessageContext};
use sqlx::{AnyConnection, Row};

use crate::GROUP;

/// The reason given for an order whose customer this service does not know.
pub(crate) const UNKNOWN_CUSTOMER: &str = "unknown customer";

/// Whether an order may ship, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    is_valid: bool,
    reason: Option<String>,
}

impl Verdict {
    fn refused(reason: impl Into<String>) -> Verdict {
        Verdict {
            is_valid: false,
            reason: Some(reason.into()),
        }
    }
}

/// Handles one `OrderCreated`, once.
pub(crate) async fn check(
    db: &Database,
    relay: &RelayWaker,
    order: OrderCreated,
    ctx: &MessageContext,
) -> Result<(), HandlerError> {
    let Some(mut tx) = inbox::claim(db, GROUP, ctx.message_id()).await? else {
        return Ok(());
    };
    let verdict = match earlier_verdict(&mut tx, &order.id).await? {
        // The same order under another message id (re-sent by hand, or by a restored producer):
        // repeat the answer, reserve nothing.
        Some(verdict) => verdict,
        None => {
            let verdict = reserve(&mut tx, &order).await?;
            sqlx::query(
                "INSERT INTO credit_checks (order_id, customer_id, amount, is_valid, reason)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&order.id)
            .bind(&order.customer_id)
            .bind(order.amount.cents())
            .bind(i64::from(verdict.is_valid))
            .bind(verdict.reason.clone())
            .execute(&mut *tx)
            .await?;
            verdict
        }
    };
    tracing::info!(order = %order.id, customer = %order.customer_id, amount = %order.amount,
        valid = verdict.is_valid, reason = verdict.reason.as_deref().unwrap_or(""), "credit checked");
    let answer = OrderValidated {
        order_id: order.id,
        is_valid: verdict.is_valid,
        reason: verdict.reason,
    };
    outbox::enqueue(
        &mut tx,
        TOPIC,
        &answer,
        &ctx.follow_up_envelope::<OrderValidated>(),
    )
    .await?;
    tx.commit().await?;
    relay.notify();
    Ok(())
}

async fn earlier_verdict(
    tx: &mut AnyConnection,
    order_id: &str,
) -> Result<Option<Verdict>, sqlx::Error> {
    let row = sqlx::query("SELECT is_valid, reason FROM credit_checks WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(row.map(|row| Verdict {
        is_valid: row.get::<i64, _>("is_valid") != 0,
        reason: row.get("reason"),
    }))
}

/// Reserves the order's amount if the customer has that much credit left.
///
/// The check and the reservation are one conditional `UPDATE`: on PostgreSQL the row lock makes
/// a concurrent reservation wait and then re-evaluates the condition against the new `reserved`;
/// on SQLite the transaction holds the write lock from its start. Either way two orders cannot
/// both see the same available credit.
async fn reserve(tx: &mut AnyConnection, order: &OrderCreated) -> Result<Verdict, sqlx::Error> {
    if order.amount <= Money::from_cents(0) {
        return Ok(Verdict::refused("amount must be greater than 0"));
    }
    let reserved = sqlx::query(
        "UPDATE customers SET reserved = reserved + $1 WHERE id = $2 AND credit_limit - reserved >= $1",
    )
    .bind(order.amount.cents())
    .bind(&order.customer_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if reserved == 1 {
        return Ok(Verdict {
            is_valid: true,
            reason: None,
        });
    }
    let row =
        sqlx::query("SELECT credit_limit - reserved AS available FROM customers WHERE id = $1")
            .bind(&order.customer_id)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(match row {
        None => Verdict::refused(UNKNOWN_CUSTOMER),
        Some(row) => {
            let available = Money::from_cents(row.get("available"));
            Verdict::refused(format!(
                "insufficient credit: {} requested, {} available",
                order.amount,
                available.max(Money::from_cents(0))
            ))
        }
    })
}
