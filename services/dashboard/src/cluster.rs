//! The cluster and the services as the page shows them: topics with their partitions' offsets,
//! consumer groups with their lag, the dead-letter topics with their letters still pending (and
//! their re-drive), and every service's health and readiness.

use std::time::Duration;

use axum::extract::{Path, State};
use ferry_service::{ApiError, ApiJson, ErrorCode};
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

/// Every consumer group with its protocol (`classic` or `consumer`), members, committed offsets
/// and lag. A consumer-protocol group (KIP-848) also has `groupEpoch` and `assignmentEpoch`, and
/// each of its members `memberEpoch`, `assignment` and `targetAssignment` (they differ while the
/// member reconciles); for a classic group those are null.
#[utoipa::path(get, path = "/api/ferry/groups",
    responses((status = 200, description = "groups: name, state, protocol (classic or consumer), assignor, groupEpoch and assignmentEpoch (consumer protocol), members (id, clientId, host, instanceId, memberEpoch, assignment, targetAssignment), offsets, lag"),
        (status = 503, description = "broker down")))]
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
    /// Letters not re-driven yet (what the page shows).
    pending: i64,
    /// Letters it holds, re-driven ones included.
    messages: i64,
}

/// The dead-letter topics with their letters still pending (not re-driven yet) and held.
#[utoipa::path(get, path = "/api/ferry/dlq",
    responses((status = 200, description = "dead-letter topics"), (status = 503, description = "broker down")))]
pub(crate) async fn dead_letters(
    State(state): State<AppState>,
) -> Result<ApiJson<Vec<DeadLetters>>, ApiError> {
    let topics = state
        .admin
        .dead_letter_topics()
        .await
        .map_err(unavailable)?;
    Ok(ApiJson(
        topics
            .into_iter()
            .map(|t| DeadLetters {
                topic: t.topic,
                original_topic: t.original_topic,
                pending: t.pending,
                messages: t.held,
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

/// Sends a dead-letter topic's pending letters back to their original topic, each addressed to
/// the consumer group that dead-lettered it (the other groups skip it), keeping their message
/// ids. Running it again sends only newer letters. Never creates a topic.
#[utoipa::path(post, path = "/api/ferry/dlq/{topic}/redrive",
    params(("topic" = String, Path, description = "a dead-letter topic, e.g. test.dlq")),
    responses((status = 200, description = "re-driven"),
        (status = 400, description = "not a dead-letter topic's name"),
        (status = 404, description = "no such topic"),
        (status = 409, description = "a letter's original topic does not exist; the letters before it were re-driven"),
        (status = 503, description = "broker down")))]
pub(crate) async fn redrive(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<ApiJson<Redriven>, ApiError> {
    let report = kafka::redrive(&state.kafka, &topic, &state.publisher)
        .await
        .map_err(|e| match e {
            ferry_toolkit::Error::InvalidTopic { .. } => {
                ApiError::new(ErrorCode::InvalidParameter, e.to_string())
            }
            ferry_toolkit::Error::UnknownTopic(missing) if missing == topic => {
                ApiError::not_found(format!("topic {missing}"))
            }
            ferry_toolkit::Error::UnknownTopic(missing) => ApiError::conflict(format!(
                "the original topic {missing} of a letter in {topic} does not exist; \
                 the letters before it were re-driven, it and the ones after it are pending"
            )),
            other => unavailable(other),
        })?;
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
