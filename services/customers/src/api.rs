//! The HTTP API: customers and their credit limits. Every change stages its event in the outbox
//! in the transaction that makes it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use ferry_contracts::orders::{CreditLimitChanged, CustomerCreated, Money, TOPIC};
use ferry_service::{ApiError, ApiJson, fields};
use ferry_toolkit::sql::Database;
use ferry_toolkit::sql::outbox::{self, RelayWaker};
use ferry_toolkit::{Envelope, Message};
use serde::Deserialize;
use sqlx::{AnyConnection, Row};
use utoipa::OpenApi;

use crate::Customer;

#[derive(Clone)]
struct AppState {
    db: Database,
    relay: RelayWaker,
}

/// A new customer. The original's PascalCase names (`Id`, `Name`, `CreditLimit`) are accepted
/// too, so its requests still work.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct NewCustomer {
    /// Optional; the server assigns a UUID when it is absent or blank.
    #[serde(alias = "Id")]
    id: Option<String>,
    /// Required, not blank.
    #[serde(alias = "Name")]
    name: Option<String>,
    /// Required, not negative; at most two decimals.
    #[serde(alias = "CreditLimit")]
    #[schema(value_type = Option<f64>)]
    credit_limit: Option<Money>,
}

/// The new credit limit: a bare JSON number, as the original took it (`150.5`), or
/// `{"creditLimit": 150.5}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum NewCreditLimit {
    /// `150.5`
    Bare(f64),
    /// `{"creditLimit": 150.5}`
    Object {
        #[serde(rename = "creditLimit", alias = "CreditLimit")]
        credit_limit: f64,
    },
}

#[derive(OpenApi)]
#[openapi(
    paths(create, change_limit, get_one),
    components(schemas(NewCustomer, NewCreditLimit, Customer))
)]
pub(crate) struct Api;

pub(crate) fn routes(db: Database, relay: RelayWaker) -> axum::Router {
    axum::Router::new()
        .route("/api/Customer/NewCustomer", post(create))
        .route("/api/Customer/{id}", get(get_one).put(change_limit))
        .with_state(AppState { db, relay })
}

fn db_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e)
}

fn valid_limit(limit: Option<Money>) -> Result<Money, ApiError> {
    match limit {
        None => Err(ApiError::invalid_field("creditLimit is required")),
        Some(limit) if limit < Money::from_cents(0) => {
            Err(ApiError::invalid_field("creditLimit must not be negative"))
        }
        Some(limit) => Ok(limit),
    }
}

/// Stages `event` with a fresh envelope, commits, and wakes the relay.
async fn commit_with<M: Message>(
    state: &AppState,
    mut tx: ferry_toolkit::sql::Tx,
    event: &M,
) -> Result<(), ApiError> {
    outbox::enqueue(&mut tx, TOPIC, event, &Envelope::new::<M>())
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    state.relay.notify();
    Ok(())
}

async fn load(conn: &mut AnyConnection, id: &str) -> Result<Customer, ApiError> {
    let row = sqlx::query("SELECT id, name, credit_limit, reserved FROM customers WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::not_found(format!("customer {id}")))?;
    let credit_limit: i64 = row.get("credit_limit");
    let reserved: i64 = row.get("reserved");
    Ok(Customer {
        id: row.get("id"),
        name: row.get("name"),
        credit_limit: Money::from_cents(credit_limit),
        reserved_credit: Money::from_cents(reserved),
        available_credit: Money::from_cents(credit_limit - reserved),
    })
}

/// Register a customer.
#[utoipa::path(post, path = "/api/Customer/NewCustomer", request_body = NewCustomer,
    responses((status = 201, body = Customer), (status = 409, description = "the id is taken"),
        (status = 422, description = "name blank, credit limit missing or negative")))]
async fn create(
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewCustomer>,
) -> Result<(StatusCode, ApiJson<Customer>), ApiError> {
    let name = fields::required_text("name", new.name, fields::NAME)?;
    let credit_limit = valid_limit(new.credit_limit)?;
    let id = fields::optional_text("id", new.id, fields::ID)?
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let taken = || ApiError::conflict(format!("customer {id} exists"));
    let mut tx = state.db.begin().await.map_err(db_error)?;
    sqlx::query("INSERT INTO customers (id, name, credit_limit, reserved) VALUES ($1, $2, $3, 0)")
        .bind(&id)
        .bind(&name)
        .bind(credit_limit.cents())
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => taken(),
            _ => db_error(e),
        })?;
    let event = CustomerCreated {
        id: id.clone(),
        name: name.clone(),
        credit_limit,
    };
    commit_with(&state, tx, &event).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(Customer {
            id,
            name,
            credit_limit,
            reserved_credit: Money::from_cents(0),
            available_credit: credit_limit,
        }),
    ))
}

/// Set a customer's credit limit. Lowering it below the credit already reserved is allowed:
/// orders already validated keep their reservation, and new ones are refused until there is
/// room again.
#[utoipa::path(put, path = "/api/Customer/{id}", request_body = NewCreditLimit,
    responses((status = 200, body = Customer), (status = 404), (status = 422, description = "negative limit")))]
async fn change_limit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewCreditLimit>,
) -> Result<ApiJson<Customer>, ApiError> {
    let units = match body {
        NewCreditLimit::Bare(units)
        | NewCreditLimit::Object {
            credit_limit: units,
        } => units,
    };
    let credit_limit = Money::from_units(units)
        .map_err(|e| ApiError::invalid_field(format!("creditLimit: {e}")))?;
    let credit_limit = valid_limit(Some(credit_limit))?;
    let mut tx = state.db.begin().await.map_err(db_error)?;
    let changed = sqlx::query("UPDATE customers SET credit_limit = $1 WHERE id = $2")
        .bind(credit_limit.cents())
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
    if changed == 0 {
        return Err(ApiError::not_found(format!("customer {id}")));
    }
    let customer = load(&mut tx, &id).await?;
    let event = CreditLimitChanged {
        customer_id: id,
        credit_limit,
    };
    commit_with(&state, tx, &event).await?;
    Ok(ApiJson(customer))
}

/// One customer, with the credit reserved by its validated orders.
#[utoipa::path(get, path = "/api/Customer/{id}", responses((status = 200, body = Customer), (status = 404)))]
async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<ApiJson<Customer>, ApiError> {
    let mut conn = state.db.pool().acquire().await.map_err(db_error)?;
    Ok(ApiJson(load(&mut conn, &id).await?))
}
