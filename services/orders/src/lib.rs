//! The order service of the orders/credit saga (Kafka.POC's `orderservice`), rebuilt on the
//! toolkit. Port 32002; topic `ReactiveMicroservices`; consumer group `order-service`.
//!
//! HTTP (the original's paths): `POST /api/Orders/NewOrder {customerId, amount[, id]}` answers
//! 201 with the order in status `Created`; `GET /api/Orders/{id}` shows its status (`Created`,
//! `Shipped` or `Cancelled`) and, once cancelled, the reason.
//!
//! Its contract, in [`ferry_contracts::orders`]:
//! - publishes `OrderCreated` when an order is placed, and `OrderShipped` or `OrderCancelled`
//!   (with the reason) when its verdict arrives; all keyed by order id and staged in the outbox
//!   in the transaction that changes the order;
//! - consumes `OrderValidated` from the customer service (which reserved the credit, or says
//!   why not). Other types on the topic are skipped.
//!
//! What the original got wrong and this does not:
//! - the ship and cancel handlers were never registered, so an order stayed `Created` forever:
//!   here the verdict moves it to `Shipped` or `Cancelled`, and the matching event is published;
//! - an order for an unknown customer got stuck: the customer service refuses it with the
//!   reason "unknown customer", and the order is cancelled with that reason;
//! - events were written to Mongo and Kafka separately (a crash between lost one): here through
//!   the outbox; a redelivered verdict is applied once (inbox), and an order leaves `Created` only
//!   once;
//! - auto-commit with offset reset `latest` lost events: the router commits after handling and a
//!   new group starts from the earliest offset;
//! - null keys mixed one order's events across partitions: keyed by order id;
//! - amounts were not validated: an amount must be greater than 0 (422), and ids are assigned by
//!   the server unless the client sends one (a taken id is 409, an unknown id 404).

mod api;
mod saga;

use ferry_contracts::orders::{OrderValidated, TOPIC};
use ferry_service::{Runtime, ServiceConfig, ServiceHandle};
use ferry_toolkit::{MessageContext, PlainTyping, Router, handler_fn};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use api::Order;

/// Default HTTP port.
pub const PORT: u16 = 32002;
/// The consumer group (the original's).
pub const GROUP: &str = "order-service";

const SERVICE: &str = "orders";

// Money is BIGINT cents; the status is its name (`Created`, `Shipped`, `Cancelled`).
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "orders",
    "CREATE TABLE orders (
        id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        amount BIGINT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT
    )",
)];

/// Why the service could not start.
pub use ferry_service::StartError as Error;

/// Start the service: database, outbox relay, the verdict handler on `ReactiveMicroservices`,
/// HTTP.
pub async fn start(
    config: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<ServiceHandle, Error> {
    let mut runtime = Runtime::new(SERVICE, config, shutdown)?;
    runtime.sends::<ferry_contracts::orders::OrderCreated>(TOPIC);
    runtime.sends::<ferry_contracts::orders::OrderShipped>(TOPIC);
    runtime.sends::<ferry_contracts::orders::OrderCancelled>(TOPIC);
    let db = runtime.database(MIGRATIONS).await?;
    let relay = runtime.start_relay(&db);
    let (handler_db, waker) = (db.clone(), relay.clone());
    let router = Router::new(GROUP)
        .subscribe(TOPIC)
        .plain(TOPIC, PlainTyping::wrapped("Name", "EventData"))
        .handle(handler_fn(
            move |verdict: OrderValidated, ctx: MessageContext| {
                let (db, waker) = (handler_db.clone(), waker.clone());
                async move { saga::conclude(&db, &waker, verdict, &ctx).await }
            },
        ));
    runtime.start_router(router)?;
    Ok(runtime
        .serve(api::routes(db, relay), api::Api::openapi())
        .await?)
}
