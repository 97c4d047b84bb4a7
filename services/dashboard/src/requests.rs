//! Invoice and score requests, the original dashboard's two buttons.
//!
//! Each is validated here (a bad request is a 4xx, not a message the worker must reject),
//! published with its request id as the envelope's message and correlation id, and answered
//! `202 {requestId}` only after the broker acknowledged it. The worker's answer carries the same
//! correlation id, which is how the page picks its result out of the live stream.

use axum::extract::State;
use axum::http::StatusCode;
use ferry_contracts::billing::{
    CALCULATE_SCORE, CalculateScore, GENERATE_INVOICE, GenerateInvoice, LineItem, Money,
};
use ferry_service::{ApiError, ApiJson, ErrorCode, fields};
use ferry_toolkit::{Envelope, Message, Publisher};
use serde::{Deserialize, Serialize};

use crate::AppState;

/// One invoice line as the page sends it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LineRequest {
    description: Option<String>,
    quantity: Option<u32>,
    /// Currency units, at most two decimals.
    unit_price: Option<f64>,
}

/// An invoice request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct InvoiceRequest {
    customer: Option<String>,
    items: Option<Vec<LineRequest>>,
}

/// A score request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct ScoreRequest {
    customer: Option<String>,
}

/// The request was sent; its answer will carry this id as correlation id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Accepted {
    request_id: String,
    topic: &'static str,
}

fn customer(value: Option<String>) -> Result<String, ApiError> {
    fields::required_text("customer", value, fields::ID)
}

fn line(n: usize, l: LineRequest) -> Result<LineItem, ApiError> {
    let description = fields::required_text(
        &format!("items[{n}].description"),
        l.description,
        fields::SHORT_TEXT,
    )?;
    let quantity = l.quantity.filter(|q| *q > 0).ok_or_else(|| {
        ApiError::invalid_field(format!("items[{n}].quantity must be at least 1"))
    })?;
    let unit_price = l
        .unit_price
        .ok_or_else(|| ApiError::invalid_field(format!("items[{n}].unitPrice is required")))
        .and_then(|p| {
            Money::from_units(p)
                .map_err(|e| ApiError::invalid_field(format!("items[{n}].unitPrice: {e}")))
        })?;
    if unit_price.cents() <= 0 {
        return Err(ApiError::invalid_field(format!(
            "items[{n}].unitPrice must be positive"
        )));
    }
    Ok(LineItem {
        description,
        quantity,
        unit_price,
    })
}

/// How long a request waits for the broker's ack before it is answered 503.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Publishes `build(request id)` to `topic` and answers once the broker has it. Fails fast
/// (503, nothing sent) while the readiness probe cannot reach the broker, and after
/// [`SEND_TIMEOUT`] otherwise: the person at the page sees why at once rather than after
/// librdkafka's 30 s message timeout.
async fn send<M: Message>(
    state: &AppState,
    topic: &'static str,
    build: impl FnOnce(String) -> M,
) -> Result<(StatusCode, ApiJson<Accepted>), ApiError> {
    if let Some(broker) = state.health.readiness().checks.get("broker")
        && !broker.ready
    {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("the request was not sent: {}", broker.reason),
        ));
    }
    let publisher: &Publisher = &state.publisher;
    let envelope = Envelope::new::<M>();
    let request_id = envelope.correlation_id.to_string();
    let message = build(request_id.clone());
    match tokio::time::timeout(
        SEND_TIMEOUT,
        publisher.publish_with(topic, message, envelope),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("the request was not sent: {}", e.error()),
            ));
        }
        Err(_) => {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the broker did not acknowledge the request within {SEND_TIMEOUT:?}; it may still arrive"
                ),
            ));
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(Accepted { request_id, topic }),
    ))
}

/// Asks the invoice generator for an invoice.
#[utoipa::path(post, path = "/api/ferry/invoices", request_body = InvoiceRequest,
    responses((status = 202, body = Accepted), (status = 422, description = "invalid request"),
              (status = 503, description = "broker down")))]
pub(crate) async fn invoice(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<InvoiceRequest>,
) -> Result<(StatusCode, ApiJson<Accepted>), ApiError> {
    let customer = customer(request.customer)?;
    let items = request.items.unwrap_or_default();
    if items.is_empty() {
        return Err(ApiError::invalid_field(
            "items: at least one line is required",
        ));
    }
    if items.len() > fields::LIST_ITEMS {
        return Err(ApiError::invalid_field(format!(
            "items: at most {} lines",
            fields::LIST_ITEMS
        )));
    }
    let items = items
        .into_iter()
        .enumerate()
        .map(|(n, l)| line(n, l))
        .collect::<Result<Vec<_>, _>>()?;
    send(&state, GENERATE_INVOICE, |request_id| GenerateInvoice {
        request_id,
        customer,
        items,
    })
    .await
}

/// Asks the score calculator for a customer's score.
#[utoipa::path(post, path = "/api/ferry/scores", request_body = ScoreRequest,
    responses((status = 202, body = Accepted), (status = 422, description = "invalid request"),
              (status = 503, description = "broker down")))]
pub(crate) async fn score(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ScoreRequest>,
) -> Result<(StatusCode, ApiJson<Accepted>), ApiError> {
    let customer = customer(request.customer)?;
    send(&state, CALCULATE_SCORE, |request_id| CalculateScore {
        request_id,
        customer,
    })
    .await
}
