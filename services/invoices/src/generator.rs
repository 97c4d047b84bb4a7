//! The generator: each `GenerateInvoice` becomes one numbered invoice (or one rejection), and
//! its answer is staged in the outbox.
//!
//! One transaction holds, in this order: the inbox claim of the message id, the lock on the
//! counter row, the look-up of an earlier answer to the same request id, the counter increment,
//! the invoice row and the staged `InvoiceGenerated`. So:
//! - a rollback (a crash, a failed insert, a lost connection) undoes the increment with
//!   everything else: numbers have no gaps;
//! - on PostgreSQL, concurrent transactions (partitions handled in parallel, or several
//!   instances of the service) queue on the counter row's lock, so no two read the same number
//!   and the earlier-answer look-up cannot race a concurrent insert of the same request id; on
//!   SQLite the transaction holds the database's write lock from its start, which does the same;
//! - a request id seen before is answered again with the stored invoice (or rejection), with a
//!   fresh envelope caused by the new message: the asker gets its answer, the number stays.

use ferry_contracts::billing::{
    GenerateInvoice, INVOICE_GENERATED, InvoiceGenerated, InvoiceRejected, LineItem, Money,
};
use ferry_toolkit::sql::outbox::{self, RelayWaker};
use ferry_toolkit::sql::{Database, inbox};
use ferry_toolkit::{HandlerError, MessageContext};
use sqlx::{AnyConnection, Row};

use crate::{GROUP, pricing};

/// What a request was answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Invoice(InvoiceGenerated),
    Rejected(InvoiceRejected),
}

/// Handles one `GenerateInvoice`, once per message id, and answers every request id the same
/// way every time.
pub(crate) async fn generate(
    db: &Database,
    relay: &RelayWaker,
    request: GenerateInvoice,
    ctx: &MessageContext,
) -> Result<(), HandlerError> {
    let Some(mut tx) = inbox::claim(db, GROUP, ctx.message_id()).await? else {
        return Ok(());
    };
    lock_counter(&mut tx).await?;
    let answer = match earlier_answer(&mut tx, &request.request_id).await? {
        Some(answer) => {
            tracing::info!(request = %request.request_id, "request seen before; answering again");
            answer
        }
        None => decide(&mut tx, request).await?,
    };
    match &answer {
        Answer::Invoice(invoice) => {
            outbox::enqueue(
                &mut tx,
                INVOICE_GENERATED,
                invoice,
                &ctx.follow_up_envelope::<InvoiceGenerated>(),
            )
            .await?;
        }
        Answer::Rejected(rejected) => {
            outbox::enqueue(
                &mut tx,
                INVOICE_GENERATED,
                rejected,
                &ctx.follow_up_envelope::<InvoiceRejected>(),
            )
            .await?;
        }
    }
    tx.commit().await?;
    relay.notify();
    Ok(())
}

/// Takes the counter row's lock (PostgreSQL) for the rest of the transaction. Changing nothing
/// still locks the row; SQLite's transaction holds the write lock already.
async fn lock_counter(tx: &mut AnyConnection) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE invoice_counter SET last_number = last_number WHERE id = 1")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Issues the invoice (taking the next number) or records the rejection.
async fn decide(tx: &mut AnyConnection, request: GenerateInvoice) -> Result<Answer, HandlerError> {
    let customer = pricing::customer(&request).to_owned();
    let amounts = match pricing::price(&request) {
        Ok(amounts) => amounts,
        Err(reason) => {
            tracing::info!(request = %request.request_id, %reason, "invoice request rejected");
            // A blank request id is not recorded: there is nothing to look it up by.
            if !request.request_id.trim().is_empty() {
                sqlx::query(
                    "INSERT INTO rejections (request_id, customer, reason, rejected_at)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&request.request_id)
                .bind(&customer)
                .bind(&reason)
                .bind(ferry_toolkit::now_millis())
                .execute(&mut *tx)
                .await?;
            }
            return Ok(Answer::Rejected(InvoiceRejected {
                request_id: request.request_id,
                customer,
                reason,
            }));
        }
    };
    let number: i64 = sqlx::query(
        "UPDATE invoice_counter SET last_number = last_number + 1 WHERE id = 1 RETURNING last_number",
    )
    .fetch_one(&mut *tx)
    .await?
    .get("last_number");
    let invoice = InvoiceGenerated {
        request_id: request.request_id,
        number,
        customer,
        items: request.items,
        subtotal: amounts.subtotal,
        tax: amounts.tax,
        total: amounts.total,
        issued_at: pricing::rfc3339(std::time::SystemTime::now()),
    };
    let items = serde_json::to_string(&invoice.items)
        .map_err(|e| HandlerError::permanent(format!("cannot encode the line items: {e}")))?;
    sqlx::query(
        "INSERT INTO invoices (number, request_id, customer, items, subtotal, tax, total, issued_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(invoice.number)
    .bind(&invoice.request_id)
    .bind(&invoice.customer)
    .bind(items)
    .bind(invoice.subtotal.cents())
    .bind(invoice.tax.cents())
    .bind(invoice.total.cents())
    .bind(&invoice.issued_at)
    .execute(&mut *tx)
    .await?;
    tracing::info!(request = %invoice.request_id, number = invoice.number,
        customer = %invoice.customer, total = %invoice.total, "invoice generated");
    Ok(Answer::Invoice(invoice))
}

/// The invoice or rejection stored for `request_id`, if it was answered before.
async fn earlier_answer(
    tx: &mut AnyConnection,
    request_id: &str,
) -> Result<Option<Answer>, HandlerError> {
    let invoice = sqlx::query(&format!("{SELECT_INVOICE} WHERE request_id = $1"))
        .bind(request_id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(row) = invoice {
        return Ok(Some(Answer::Invoice(invoice_from_row(&row)?)));
    }
    let rejected =
        sqlx::query("SELECT request_id, customer, reason FROM rejections WHERE request_id = $1")
            .bind(request_id)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(rejected.map(|row| {
        Answer::Rejected(InvoiceRejected {
            request_id: row.get("request_id"),
            customer: row.get("customer"),
            reason: row.get("reason"),
        })
    }))
}

/// The columns [`invoice_from_row`] reads.
pub(crate) const SELECT_INVOICE: &str =
    "SELECT number, request_id, customer, items, subtotal, tax, total, issued_at FROM invoices";

/// An invoice row as the message that announced it.
pub(crate) fn invoice_from_row(row: &sqlx::any::AnyRow) -> Result<InvoiceGenerated, sqlx::Error> {
    let items: String = row.try_get("items")?;
    let items: Vec<LineItem> =
        serde_json::from_str(&items).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(InvoiceGenerated {
        request_id: row.try_get("request_id")?,
        number: row.try_get("number")?,
        customer: row.try_get("customer")?,
        items,
        subtotal: Money::from_cents(row.try_get("subtotal")?),
        tax: Money::from_cents(row.try_get("tax")?),
        total: Money::from_cents(row.try_get("total")?),
        issued_at: row.try_get("issued_at")?,
    })
}
