//! Outbox rows the services' relays parked: events a service committed that the broker refused
//! for good (too large, invalid, no such topic). They are shown beside the dead letters, because
//! they too are messages that need a person: each service lists its own at
//! [`ferry_service::PARKED_PATH`], and this asks every service and puts the answers together.

use std::time::Duration;

use axum::extract::State;
use ferry_service::ApiJson;
use serde::{Deserialize, Serialize};

use crate::AppState;

/// One parked row, as a service lists it, with the service's name.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ParkedRow {
    /// The service whose outbox holds it.
    #[serde(default)]
    service: String,
    id: i64,
    topic: String,
    key: String,
    message_id: String,
    type_name: String,
    payload_bytes: i64,
    created_at: i64,
    parked_at: i64,
    reason: String,
}

#[derive(Debug, Deserialize)]
struct ServiceRows {
    service: String,
    rows: Vec<ParkedRow>,
}

/// Every service's parked outbox rows, newest first. A service without an outbox (404) or not
/// answering is left out.
#[utoipa::path(get, path = "/api/ferry/parked",
    responses((status = 200, body = [ParkedRow], description = "parked outbox rows of every service")))]
pub(crate) async fn parked(State(state): State<AppState>) -> ApiJson<Vec<ParkedRow>> {
    let asks = state.upstreams.iter().map(|u| {
        let http = state.http.clone();
        async move {
            let answer = http
                .get(format!("{}{}", u.url, ferry_service::PARKED_PATH))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())?;
            let listed: ServiceRows = answer.json().await.ok()?;
            Some(
                listed
                    .rows
                    .into_iter()
                    .map(|mut row| {
                        row.service.clone_from(&listed.service);
                        row
                    })
                    .collect::<Vec<_>>(),
            )
        }
    });
    let mut rows: Vec<ParkedRow> = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.parked_at));
    ApiJson(rows)
}
