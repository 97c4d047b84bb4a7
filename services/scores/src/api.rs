//! The HTTP API: past answers and current scores, read-only. Scores are requested on
//! `calculate-score` (the dashboard does that), never here.

use axum::extract::{Path, State};
use axum::routing::get;
use ferry_contracts::billing::Money;
use ferry_service::{ApiError, ApiJson, ApiQuery};
use ferry_toolkit::sql::Database;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use crate::calculator::{SELECT_SCORE, answer_from_row};
use crate::history;

/// An answer to a `CalculateScore`, as `ScoreCalculated` said it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ScoreResult {
    /// The request it answered.
    request_id: String,
    customer: String,
    score: i64,
    /// How many invoices it was computed from.
    invoices: i64,
    /// Their total.
    #[schema(value_type = f64)]
    total_billed: Money,
    /// When, in Unix milliseconds.
    calculated_at: i64,
}

/// Past answers, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ScoreList {
    /// How many are in `scores`.
    results: usize,
    scores: Vec<ScoreResult>,
}

/// A customer's score from their history as it is now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CurrentScore {
    customer: String,
    /// `min(1000, 300 + 40 x invoices + floor(totalBilled / 100))`.
    score: i64,
    /// Invoices seen for the customer (0 if none: the score is then 300).
    invoices: i64,
    /// Their total, tax included.
    #[schema(value_type = f64)]
    total_billed: Money,
}

/// Which answers to list.
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
    paths(list, current),
    components(schemas(ScoreResult, ScoreList, CurrentScore))
)]
pub(crate) struct Api;

pub(crate) fn routes(db: Database) -> axum::Router {
    axum::Router::new()
        .route("/api/scores", get(list))
        .route("/api/scores/{customer}", get(current))
        .with_state(db)
}

/// Past answers, newest first.
#[utoipa::path(get, path = "/api/scores", params(ListParams),
    responses((status = 200, body = ScoreList), (status = 400, description = "limit is not a number from 1 to 1000")))]
async fn list(
    State(db): State<Database>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<ApiJson<ScoreList>, ApiError> {
    let limit = ferry_service::limit(params.limit)?;
    // An empty customer lists everyone's.
    let customer = params.customer.as_deref().map_or("", str::trim);
    let rows = sqlx::query(&format!(
        "{SELECT_SCORE} WHERE ($1 = '' OR customer = $1)
         ORDER BY calculated_at DESC, request_id DESC LIMIT $2"
    ))
    .bind(customer)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await
    .map_err(ApiError::internal)?;
    let scores: Vec<ScoreResult> = rows
        .iter()
        .map(|row| {
            let (answer, calculated_at) = answer_from_row(row);
            ScoreResult {
                request_id: answer.request_id,
                customer: answer.customer,
                score: answer.score,
                invoices: answer.invoices,
                total_billed: answer.total_billed,
                calculated_at,
            }
        })
        .collect();
    Ok(ApiJson(ScoreList {
        results: scores.len(),
        scores,
    }))
}

/// The customer's score from the invoices seen so far. A customer with none is not an error:
/// their score is 300 with `invoices: 0`, as a `CalculateScore` would answer.
#[utoipa::path(get, path = "/api/scores/{customer}",
    responses((status = 200, body = CurrentScore)))]
async fn current(
    State(db): State<Database>,
    Path(customer): Path<String>,
) -> Result<ApiJson<CurrentScore>, ApiError> {
    let customer = customer.trim().to_owned();
    let mut conn = db.pool().acquire().await.map_err(ApiError::internal)?;
    let history = history::load(&mut conn, &customer)
        .await
        .map_err(ApiError::internal)?;
    Ok(ApiJson(CurrentScore {
        customer,
        score: history.score(),
        invoices: history.invoices,
        total_billed: history.total_billed,
    }))
}
