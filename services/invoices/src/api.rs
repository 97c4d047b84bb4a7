//! The HTTP API: past invoices, read-only. Invoices are requested on `generate-invoice` (the
//! dashboard does that), never here.

use axum::extract::{Path, State};
use axum::routing::get;
use ferry_contracts::billing::{InvoiceGenerated, Money};
use ferry_service::{ApiError, ApiJson, ApiQuery, ErrorCode};
use ferry_toolkit::sql::Database;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::OpenApi;

use crate::generator::{SELECT_INVOICE, invoice_from_row};
use crate::pricing;

/// An invoice as the API shows it: what `InvoiceGenerated` said, plus each line's amount.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Invoice {
    /// 1, 2, 3, ... in the order they were issued, with no gaps.
    number: i64,
    /// The request it answered.
    request_id: String,
    customer: String,
    items: Vec<InvoiceLine>,
    /// Sum of the lines' amounts.
    #[schema(value_type = f64)]
    subtotal: Money,
    /// 20% of the subtotal, rounded half up to the cent.
    #[schema(value_type = f64)]
    tax: Money,
    /// `subtotal + tax`.
    #[schema(value_type = f64)]
    total: Money,
    /// RFC 3339, UTC.
    issued_at: String,
}

/// One line of an invoice.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InvoiceLine {
    description: String,
    quantity: u32,
    #[schema(value_type = f64)]
    unit_price: Money,
    /// `quantity x unitPrice`.
    #[schema(value_type = f64)]
    amount: Money,
}

impl From<InvoiceGenerated> for Invoice {
    fn from(m: InvoiceGenerated) -> Invoice {
        Invoice {
            number: m.number,
            request_id: m.request_id,
            customer: m.customer,
            items: m
                .items
                .into_iter()
                .map(|item| InvoiceLine {
                    // Within the invoice's total, which was checked to fit.
                    amount: Money::from_cents(pricing::line_amount(&item) as i64),
                    description: item.description,
                    quantity: item.quantity,
                    unit_price: item.unit_price,
                })
                .collect(),
            subtotal: m.subtotal,
            tax: m.tax,
            total: m.total,
            issued_at: m.issued_at,
        }
    }
}

/// Past invoices, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct InvoiceList {
    /// How many are in `invoices`.
    results: usize,
    invoices: Vec<Invoice>,
}

/// Which invoices to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only this customer's.
    customer: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<u32>,
}

#[derive(OpenApi)]
#[openapi(
    paths(list, get_one, by_request),
    components(schemas(Invoice, InvoiceLine, InvoiceList))
)]
pub(crate) struct Api;

pub(crate) fn routes(db: Database) -> axum::Router {
    axum::Router::new()
        .route("/api/invoices", get(list))
        .route("/api/invoices/{number}", get(get_one))
        .route("/api/invoices/byRequest/{request_id}", get(by_request))
        .with_state(db)
}

/// Past invoices, newest first.
#[utoipa::path(get, path = "/api/invoices", params(ListParams),
    responses((status = 200, body = InvoiceList), (status = 400, description = "limit is not a number from 1 to 1000")))]
async fn list(
    State(db): State<Database>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<ApiJson<InvoiceList>, ApiError> {
    let limit = ferry_service::limit(params.limit)?;
    // An empty customer lists everyone's.
    let customer = params.customer.as_deref().map_or("", str::trim);
    let rows = sqlx::query(&format!(
        "{SELECT_INVOICE} WHERE ($1 = '' OR customer = $1) ORDER BY number DESC LIMIT $2"
    ))
    .bind(customer)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await
    .map_err(ApiError::internal)?;
    let invoices = rows
        .iter()
        .map(|row| invoice_from_row(row).map(Invoice::from))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    Ok(ApiJson(InvoiceList {
        results: invoices.len(),
        invoices,
    }))
}

/// One invoice by number.
#[utoipa::path(get, path = "/api/invoices/{number}",
    responses((status = 200, body = Invoice), (status = 400, description = "not a number"), (status = 404)))]
async fn get_one(
    State(db): State<Database>,
    Path(number): Path<String>,
) -> Result<ApiJson<Invoice>, ApiError> {
    let parsed: i64 = number.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("invoice number {number:?} is not a number"),
        )
    })?;
    let row = sqlx::query(&format!("{SELECT_INVOICE} WHERE number = $1"))
        .bind(parsed)
        .fetch_optional(db.pool())
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("invoice {parsed}")))?;
    Ok(ApiJson(
        invoice_from_row(&row).map_err(ApiError::internal)?.into(),
    ))
}

/// The invoice that answered request `requestId`. 404 until the request was processed; 422
/// with the reason if it was rejected.
#[utoipa::path(get, path = "/api/invoices/byRequest/{request_id}",
    responses((status = 200, body = Invoice), (status = 404, description = "no such request (yet)"),
        (status = 422, description = "the request was rejected; the message says why")))]
async fn by_request(
    State(db): State<Database>,
    Path(request_id): Path<String>,
) -> Result<ApiJson<Invoice>, ApiError> {
    let row = sqlx::query(&format!("{SELECT_INVOICE} WHERE request_id = $1"))
        .bind(&request_id)
        .fetch_optional(db.pool())
        .await
        .map_err(ApiError::internal)?;
    if let Some(row) = row {
        return Ok(ApiJson(
            invoice_from_row(&row).map_err(ApiError::internal)?.into(),
        ));
    }
    let rejected = sqlx::query("SELECT reason FROM rejections WHERE request_id = $1")
        .bind(&request_id)
        .fetch_optional(db.pool())
        .await
        .map_err(ApiError::internal)?;
    Err(match rejected {
        Some(row) => ApiError::rule(format!(
            "request {request_id} was rejected: {}",
            row.get::<String, _>("reason")
        )),
        None => ApiError::not_found(format!("invoice for request {request_id}")),
    })
}
