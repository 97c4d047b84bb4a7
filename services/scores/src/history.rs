//! Customers' invoice histories, learned from `invoice-generated`.
//!
//! An invoice is counted once, keyed on its number: the inbox skips a message id seen before,
//! and `learned_invoices` skips an invoice number seen before (the invoice generator answers a
//! re-sent request by publishing the same invoice again, under a new message id). The record of
//! the number and the history's new count commit in one transaction with the inbox claim.

use ferry_contracts::billing::{InvoiceGenerated, Money};
use ferry_toolkit::sql::{Database, inbox};
use ferry_toolkit::{HandlerError, MessageContext};
use sqlx::{AnyConnection, Row};

use crate::GROUP;

/// A customer's invoices so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct History {
    pub(crate) invoices: i64,
    pub(crate) total_billed: Money,
}

impl History {
    /// The score this history gives ([`crate::score`]).
    pub(crate) fn score(self) -> i64 {
        crate::score(self.invoices, self.total_billed)
    }
}

/// Adds `invoice` to its customer's history, unless it is counted already.
pub(crate) async fn learn(
    db: &Database,
    invoice: InvoiceGenerated,
    ctx: &MessageContext,
) -> Result<(), HandlerError> {
    let Some(mut tx) = inbox::claim(db, GROUP, ctx.message_id()).await? else {
        return Ok(());
    };
    let new = sqlx::query(
        "INSERT INTO learned_invoices (number, customer, total, learned_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (number) DO NOTHING",
    )
    .bind(invoice.number)
    .bind(&invoice.customer)
    .bind(invoice.total.cents())
    .bind(ferry_toolkit::now_millis())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if new {
        sqlx::query(
            "INSERT INTO histories (customer, invoices, total_billed) VALUES ($1, 1, $2)
             ON CONFLICT (customer) DO UPDATE SET invoices = histories.invoices + 1,
                 total_billed = histories.total_billed + excluded.total_billed",
        )
        .bind(&invoice.customer)
        .bind(invoice.total.cents())
        .execute(&mut *tx)
        .await?;
        tracing::info!(number = invoice.number, customer = %invoice.customer,
            total = %invoice.total, "invoice learned");
    } else {
        tracing::info!(number = invoice.number, "invoice counted already; skipped");
    }
    tx.commit().await?;
    Ok(())
}

/// `customer`'s history; the empty one if no invoice of theirs was seen.
pub(crate) async fn load(conn: &mut AnyConnection, customer: &str) -> Result<History, sqlx::Error> {
    let row = sqlx::query("SELECT invoices, total_billed FROM histories WHERE customer = $1")
        .bind(customer)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map_or_else(History::default, |row| History {
        invoices: row.get("invoices"),
        total_billed: Money::from_cents(row.get("total_billed")),
    }))
}
