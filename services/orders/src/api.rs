//! The HTTP API: place an order, look one up. Placing stages `OrderCreated` in the outbox in
//! the transaction that stores the order.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use ferry_contracts::orders::{Money, OrderCreated, OrderStatus, TOPIC};
use ferry_service::{ApiError, ApiJson, fields};
use ferry_toolkit::Envelope;
use ferry_toolkit::sql::Database;
use ferry_toolkit::sql::outbox::{self, RelayWaker};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::OpenApi;

#[derive(Clone)]
struct AppState {
    db: Database,
    relay: RelayWaker,
}

/// An order as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// Assigned by the server unless the client chose one.
    pub id: String,
    /// Who ordered.
    pub customer_id: String,
    /// The credit it needs.
    #[schema(value_type = f64)]
    pub amount: Money,
    /// `Created` until the customer service's verdict, then `Shipped` or `Cancelled`.
    #[schema(value_type = String)]
    pub status: OrderStatus,
    /// Why it was cancelled (null otherwise).
    pub reason: Option<String>,
}

/// A new order. The original's PascalCase names (`Id`, `CustomerId`, `Amount`) are accepted
/// too; its `Status` is ignored, as the original forced it to `Created`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct NewOrder {
    /// Optional; the server assigns a UUID when it is absent or blank.
    #[serde(alias = "Id")]
    id: Option<String>,
    /// Required, not blank. Whether the customer exists is the customer service's to say: an
    /// unknown one gets the order cancelled with the reason "unknown customer".
    #[serde(alias = "CustomerId")]
    customer_id: Option<String>,
    /// Required, greater than 0, at most two decimals.
    #[serde(alias = "Amount")]
    amount: Option<f64>,
}

#[derive(OpenApi)]
#[openapi(paths(create, get_one), components(schemas(NewOrder, Order)))]
pub(crate) struct Api;

pub(crate) fn routes(db: Database, relay: RelayWaker) -> axum::Router {
    axum::Router::new()
        .route("/api/Orders/NewOrder", post(create))
        .route("/api/Orders/{id}", get(get_one))
        .with_state(AppState { db, relay })
}

fn db_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e)
}

fn valid_amount(amount: Option<f64>) -> Result<Money, ApiError> {
    let amount = amount.ok_or_else(|| ApiError::invalid_field("amount is required"))?;
    let amount =
        Money::from_units(amount).map_err(|e| ApiError::invalid_field(format!("amount: {e}")))?;
    if amount <= Money::from_cents(0) {
        return Err(ApiError::invalid_field("amount must be greater than 0"));
    }
    Ok(amount)
}

/// Place an order. It starts `Created`; the credit check decides the rest.
#[utoipa::path(post, path = "/api/Orders/NewOrder", request_body = NewOrder,
    responses((status = 201, body = Order), (status = 409, description = "the id is taken"),
        (status = 422, description = "customerId blank, amount missing or not greater than 0")))]
async fn create(
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewOrder>,
) -> Result<(StatusCode, ApiJson<Order>), ApiError> {
    let customer_id = fields::required_text("customerId", new.customer_id, fields::ID)?;
    let amount = valid_amount(new.amount)?;
    let id = fields::optional_text("id", new.id, fields::ID)?
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let order = Order {
        id,
        customer_id,
        amount,
        status: OrderStatus::Created,
        reason: None,
    };
    let mut tx = state.db.begin().await.map_err(db_error)?;
    sqlx::query("INSERT INTO orders (id, customer_id, amount, status) VALUES ($1, $2, $3, $4)")
        .bind(&order.id)
        .bind(&order.customer_id)
        .bind(order.amount.cents())
        .bind(order.status.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                ApiError::conflict(format!("order {} exists", order.id))
            }
            _ => db_error(e),
        })?;
    let event = OrderCreated {
        id: order.id.clone(),
        customer_id: order.customer_id.clone(),
        amount: order.amount,
        status: order.status,
    };
    outbox::enqueue(&mut tx, TOPIC, &event, &Envelope::new::<OrderCreated>())
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    state.relay.notify();
    Ok((StatusCode::CREATED, ApiJson(order)))
}

/// Reads an order by id, in any connection or transaction.
pub(crate) async fn load(
    conn: &mut sqlx::AnyConnection,
    id: &str,
) -> Result<Option<Order>, sqlx::Error> {
    let row =
        sqlx::query("SELECT id, customer_id, amount, status, reason FROM orders WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|row| {
        let status: String = row.get("status");
        Ok(Order {
            id: row.get("id"),
            customer_id: row.get("customer_id"),
            amount: Money::from_cents(row.get("amount")),
            status: OrderStatus::parse(&status).ok_or_else(|| {
                sqlx::Error::Decode(format!("unknown order status {status:?}").into())
            })?,
            reason: row.get("reason"),
        })
    })
    .transpose()
}

/// One order: its status, and the reason if it was cancelled.
#[utoipa::path(get, path = "/api/Orders/{id}", responses((status = 200, body = Order), (status = 404)))]
async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<ApiJson<Order>, ApiError> {
    let mut conn = state.db.pool().acquire().await.map_err(db_error)?;
    load(&mut conn, &id)
        .await
        .map_err(db_error)?
        .map(ApiJson)
        .ok_or_else(|| ApiError::not_found(format!("order {id}")))
}
