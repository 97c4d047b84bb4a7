//! The customer service of the orders/credit saga (Kafka.POC's `customerservice`), rebuilt on
//! the toolkit. Port 32001; topic `ReactiveMicroservices`; consumer group `customer-service`.
//!
//! HTTP (the original's paths): `POST /api/Customer/NewCustomer {name, creditLimit[, id]}`,
//! `PUT /api/Customer/{id}` with the new limit (a bare JSON number, as the original took it, or
//! `{creditLimit}`), `GET /api/Customer/{id}`.
//!
//! Its contract, in [`ferry_contracts::orders`]:
//! - publishes `CustomerCreated` and `CreditLimitChanged` (keyed by customer id), staged in the
//!   outbox in the transaction that changes the customer;
//! - consumes `OrderCreated` and answers each with `OrderValidated {orderId, isValid, reason}`
//!   (keyed by order id), after reserving the order's amount against the customer's credit. Other
//!   types on the topic are skipped.
//!
//! Credit: a customer has a limit and a reserved sum; an order is valid when
//! `limit - reserved >= amount`, and validating it reserves the amount. Check and reservation are
//! one conditional `UPDATE` (see `credit.rs`), so two orders checked at once cannot both take the
//! last of the credit. Money is integer cents ([`ferry_contracts::orders::Money`]).
//!
//! What the original got wrong and this does not:
//! - credit was checked but never reserved, so concurrent orders overspent: here it is reserved
//!   atomically, and a shipped order keeps holding it;
//! - an order for an unknown customer was dropped by a throwing handler and stayed `Created`
//!   forever: here it is answered `isValid: false, reason: "unknown customer"`;
//! - events were written to the database and the broker separately (a crash between lost one):
//!   here every event goes through the outbox, in the transaction of the change it reports;
//! - redelivered events were applied twice: the inbox records each message id in the
//!   transaction of the reservation, and each order's verdict is recorded, so neither a
//!   redelivery nor a re-sent `OrderCreated` reserves twice;
//! - a malformed event was dropped or crashed the consumer: it goes to
//!   `ReactiveMicroservices.dlq`, and the consumer goes on;
//! - unknown ids were a 500 and bad input was accepted: here 404, and 422 for a blank name or a
//!   negative limit; the server assigns ids when the client sends none.

mod api;
mod credit;

use ferry_contracts::orders::{Money, OrderCreated, TOPIC};
use ferry_service::{Runtime, ServiceConfig, ServiceHandle};
use ferry_toolkit::{MessageContext, PlainTyping, Router, handler_fn};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

/// Default HTTP port.
pub const PORT: u16 = 32001;
/// The consumer group (the original's).
pub const GROUP: &str = "customer-service";

const SERVICE: &str = "customers";

// Money is BIGINT cents. `credit_checks` keeps each order's verdict, so an order is reserved for
// at most once even if its OrderCreated arrives again under another message id.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "customers",
    "CREATE TABLE customers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        credit_limit BIGINT NOT NULL,
        reserved BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE credit_checks (
        order_id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        amount BIGINT NOT NULL,
        is_valid INTEGER NOT NULL,
        reason TEXT
    )",
)];

/// A customer as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    /// Assigned by the server unless the client chose one.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The most credit the customer's orders may hold.
    #[schema(value_type = f64)]
    pub credit_limit: Money,
    /// Credit held by validated orders.
    #[schema(value_type = f64)]
    pub reserved_credit: Money,
    /// `creditLimit - reservedCredit`; negative when the limit was lowered below what is held.
    #[schema(value_type = f64)]
    pub available_credit: Money,
}

/// Why the service could not start.
pub use ferry_service::StartError as Error;

/// Start the service: database, outbox relay, the credit check on `ReactiveMicroservices`, HTTP.
pub async fn start(
    config: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<ServiceHandle, Error> {
    let mut runtime = Runtime::new(SERVICE, config, shutdown)?;
    runtime.sends::<ferry_contracts::orders::CustomerCreated>(TOPIC);
    runtime.sends::<ferry_contracts::orders::CreditLimitChanged>(TOPIC);
    runtime.sends::<ferry_contracts::orders::OrderValidated>(TOPIC);
    let db = runtime.database(MIGRATIONS).await?;
    let relay = runtime.start_relay(&db);
    let (handler_db, waker) = (db.clone(), relay.clone());
    let router = Router::new(GROUP)
        .subscribe(TOPIC)
        .plain(TOPIC, PlainTyping::wrapped("Name", "EventData"))
        .handle(handler_fn(
            move |order: OrderCreated, ctx: MessageContext| {
                let (db, waker) = (handler_db.clone(), waker.clone());
                async move { credit::check(&db, &waker, order, &ctx).await }
            },
        ));
    runtime.start_router(router)?;
    Ok(runtime
        .serve(api::routes(db, relay), api::Api::openapi())
        .await?)
}
