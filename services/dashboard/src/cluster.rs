//! The cluster and the services as the page shows them: topics with their partitions' offsets,
//! consumer groups with their lag, the dead-letter topics (and their re-drive), and every
//! service's health and readiness.

use std::time::Duration;

use axum::extract::{Path, State};
use ferry_service::{ApiError, ApiJson, ErrorCode};
use ferry_toolkit::dlq;
use ferry_toolkit::kafka::{self, GroupInfo, GroupOffset, TopicInfo};
use serde::Serialize;

use crate::AppState;

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("the broker did not answer: {e}"),
    )
}

/// Every topic with its partitions' start and end offsets.
#[utoipa::path(get, path = "/api/ferry/topics",
    responses((status = 200, description = "topics"), (status = 503, description = "broker down")))]
pub(crate) async fn topics(
    State(state): State<AppState>,
) -> Result<ApiJson<Vec<TopicInfo>>, ApiError> {
    Ok(ApiJson(state.admin.topics().await.map_err(unavailable)?))
}

/// A group with where it stands.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupView {
    #[serde(flatten)]
    group: GroupInfo,
    /// Committed offsets and lag per partition.
    offsets: Vec<GroupOffset>,
    /// Sum of the lag over its partitions.
    lag: i64,
}

/// Every consumer group with its members, committed offsets and lag.
#[utoipa::path(get, path = "/api/ferry/groups",
    responses((status = 200, description = "groups"), (status = 503, description = "broker down")))]
pub(crate) async fn groups(
    State(state): State<AppState>,
) -> Result<ApiJson<Vec<GroupView>>, ApiError> {
    let groups = state.admin.groups().await.map_err(unavailable)?;
    let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let offsets = state
        .admin
        .groups_offsets(&names)
        .await
        .map_err(unavailable)?;
    let views: Vec<GroupView> = groups
        .into_iter()
        .zip(offsets)
        .map(|(group, offsets)| GroupView {
            lag: offsets.iter().map(|o| o.lag).sum(),
            group,
            offsets,
        })
        .collect();
    Ok(ApiJson(views))
}

/// A dead-letter topic.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeadLetters {
    /// `<topic>.dlq`.
    topic: String,
    /// Where its letters came from.
    original_topic: String,
    /// Letters it holds.
    messages: i64,
}

/// The dead-letter topics and how many letters each holds.
#[utoipa::path(get, path = "/api/ferry/dlq",
    responses((status = 200, description = "dead-letter topics"), (status = 503, description = "broker down")))]
pub(crate) async fn dead_letters(
    State(state): State<AppState>,
) -> Result<ApiJson<Vec<DeadLetters>>, ApiError> {
    let topics = state.admin.topics().await.map_err(unavailable)?;
    Ok(ApiJson(
        topics
            .iter()
            .filter_map(|t| {
                let original = t.name.strip_suffix(dlq::SUFFIX)?;
                Some(DeadLetters {
                    topic: t.name.clone(),
                    original_topic: original.to_owned(),
                    messages: t.messages(),
                })
            })
            .collect(),
    ))
}

/// What a re-drive did.
#[derive(Debug, Serialize)]
pub(crate) struct Redriven {
    /// Letters sent back to their topic.
    redriven: u64,
    /// Records without an original topic, left in place.
    skipped: u64,
}

/// Sends a dead-letter topic's letters back to their original topic, keeping their message
/// ids (idempotent consumers apply each once). Running it again sends only newer letters.
#[utoipa::path(post, path = "/api/ferry/dlq/{topic}/redrive",
    params(("topic" = String, Path, description = "a dead-letter topic, e.g. test.dlq")),
    responses((status = 200, description = "re-driven"), (status = 400, description = "not a dead-letter topic")))]
pub(crate) async fn redrive(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<ApiJson<Redriven>, ApiError> {
    if !topic.ends_with(dlq::SUFFIX) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!(
                "{topic} is not a dead-letter topic (they end in {})",
                dlq::SUFFIX
            ),
        ));
    }
    let report = kafka::redrive(&state.kafka, &topic, &state.publisher)
        .await
        .map_err(unavailable)?;
    Ok(ApiJson(Redriven {
        redriven: report.redriven,
        skipped: report.skipped,
    }))
}

/// A service's health as the dashboard sees it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceStatus {
    name: String,
    url: String,
    /// `/health` answered 200.
    up: bool,
    /// `/ready` answered 200 (broker reachable, consumer group joined).
    ready: bool,
    /// What `/ready` said.
    detail: serde_json::Value,
}

/// Every service's `/health` and `/ready`, asked now.
#[utoipa::path(get, path = "/api/ferry/services",
    responses((status = 200, description = "services")))]
pub(crate) async fn services(State(state): State<AppState>) -> ApiJson<Vec<ServiceStatus>> {
    let asks = state.upstreams.iter().map(|u| {
        let http = state.http.clone();
        async move {
            let get = |path: &'static str| {
                http.get(format!("{}{path}", u.url))
                    .timeout(Duration::from_secs(2))
                    .send()
            };
            let up = matches!(get("/health").await, Ok(r) if r.status().is_success());
            let (ready, detail) = match get("/ready").await {
                Ok(r) => (
                    r.status().is_success(),
                    r.json().await.unwrap_or(serde_json::Value::Null),
                ),
                Err(e) => (false, serde_json::Value::String(e.to_string())),
            };
            ServiceStatus {
                name: u.name.clone(),
                url: u.url.clone(),
                up,
                ready,
                detail,
            }
        }
    });
    ApiJson(futures::future::join_all(asks).await)
}
