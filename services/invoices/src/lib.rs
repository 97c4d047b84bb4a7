//! The invoice generator of the billing system (kafka-demo's `invoice-generator`), rebuilt on
//! the toolkit. Port 8001; consumes `generate-invoice`, answers on `invoice-generated`;
//! consumer group `invoice-generator`.
//!
//! Its contract, in [`ferry_contracts::billing`]:
//! - consumes [`GenerateInvoice`] `{requestId, customer, items: [{description, quantity,
//!   unitPrice}]}`;
//! - answers each with [`InvoiceGenerated`](ferry_contracts::billing::InvoiceGenerated)
//!   `{requestId, number, customer, items, subtotal, tax, total, issuedAt}`, or with
//!   [`InvoiceRejected`](ferry_contracts::billing::InvoiceRejected) `{requestId, customer,
//!   reason}` when the request has no lines, a zero quantity, a price that is not positive, or
//!   no customer. Answers are keyed by customer and carry the request's correlation id, with
//!   the request's message id as causation id.
//!
//! Numbers: 1, 2, 3, ... with no gaps and no duplicates. The last number is one counter row,
//! incremented in the transaction that also claims the message in the inbox, inserts the
//! invoice and stages its `InvoiceGenerated` in the outbox; a rollback takes the number back
//! with everything else, and concurrent transactions queue on the row (see `generator.rs`).
//! Tax is `subtotal x 20%`, rounded half up to the cent; money is integer cents.
//!
//! Idempotency: the inbox skips a message id seen before, and the invoice table's unique
//! request id makes a request id seen before (re-sent under a new message id) answer again
//! with the invoice it got the first time, number included, so the asker still gets its
//! answer and no second invoice exists. The first answer wins: a request id re-used for a
//! different request is answered with the first one's invoice. Rejections are kept too, so a
//! request id is always answered the same way.
//!
//! HTTP: `GET /api/invoices[?customer=&limit=]` (newest first), `GET /api/invoices/{number}`,
//! `GET /api/invoices/byRequest/{requestId}`.
//!
//! What the original got wrong and this does not:
//! - the invoice number was random (`"Invoice number: #N generated."` with `N` drawn at
//!   random): numbers repeated, skipped and meant nothing. Here they are a gap-free sequence;
//! - answers were bare strings with no correlation id, so the page that asked could not tell
//!   its answer from anyone else's (and never was told anything): here they are JSON messages
//!   carrying the request id and the request's correlation id;
//! - no invoice was ever computed or kept: here lines, subtotal, tax and total are computed in
//!   integer cents and every invoice can be listed and looked up;
//! - offsets were auto-committed, so a crash lost requests, and a redelivered request made a
//!   second invoice: here the offset is committed after the invoice and its answer are in the
//!   database, and a request is invoiced once (inbox + unique request id);
//! - both workers shared the consumer group `invoice-generator`: here the invoice generator
//!   and the score calculator each have their own group;
//! - a malformed request crashed or stalled the worker: an invalid request is answered with
//!   `InvoiceRejected`, and one that cannot be decoded goes to `generate-invoice.dlq`.

mod api;
mod generator;
mod pricing;

use ferry_contracts::billing::{GENERATE_INVOICE, GenerateInvoice};
use ferry_service::{Runtime, ServiceConfig, ServiceHandle};
use ferry_toolkit::{MessageContext, Router, handler_fn};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

/// Default HTTP port.
pub const PORT: u16 = 8001;
/// The consumer group (the original's, now used by this worker alone).
pub const GROUP: &str = "invoice-generator";

/// The service's name: its SQLite file `invoice-generator.db`, or its PostgreSQL schema
/// `invoice_generator`.
const SERVICE: &str = "invoice-generator";

// Money is BIGINT cents; `items` is the JSON array of line items as the request sent them.
// `invoice_counter` holds one row, the last number issued. `rejections` keeps refused requests
// so that a request id is always answered the same way.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "invoices",
    "CREATE TABLE invoice_counter (
        id INTEGER PRIMARY KEY,
        last_number BIGINT NOT NULL
    );
    INSERT INTO invoice_counter (id, last_number) VALUES (1, 0);
    CREATE TABLE invoices (
        number BIGINT PRIMARY KEY,
        request_id TEXT NOT NULL,
        customer TEXT NOT NULL,
        items TEXT NOT NULL,
        subtotal BIGINT NOT NULL,
        tax BIGINT NOT NULL,
        total BIGINT NOT NULL,
        issued_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX invoices_request_id ON invoices (request_id);
    CREATE INDEX invoices_customer ON invoices (customer, number);
    CREATE TABLE rejections (
        request_id TEXT PRIMARY KEY,
        customer TEXT NOT NULL,
        reason TEXT NOT NULL,
        rejected_at BIGINT NOT NULL
    )",
)];

/// Why the service could not start.
pub use ferry_service::StartError as Error;

/// Start the service: database, outbox relay, the generator on `generate-invoice`, HTTP.
pub async fn start(
    config: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<ServiceHandle, Error> {
    let mut runtime = Runtime::new(SERVICE, config, shutdown)?;
    runtime.sends::<ferry_contracts::billing::InvoiceGenerated>(
        ferry_contracts::billing::INVOICE_GENERATED,
    );
    runtime.sends::<ferry_contracts::billing::InvoiceRejected>(
        ferry_contracts::billing::INVOICE_GENERATED,
    );
    let db = runtime.database(MIGRATIONS).await?;
    let relay = runtime.start_relay(&db);
    let (handler_db, waker) = (db.clone(), relay.clone());
    let router = Router::new(GROUP)
        .subscribe(GENERATE_INVOICE)
        .handle(handler_fn(
            move |request: GenerateInvoice, ctx: MessageContext| {
                let (db, waker) = (handler_db.clone(), waker.clone());
                async move { generator::generate(&db, &waker, request, &ctx).await }
            },
        ));
    runtime.start_router(router)?;
    Ok(runtime.serve(api::routes(db), api::Api::openapi()).await?)
}
