//! The command service: runs post commands through the event-sourced aggregate, serves the
//! event store as a read-only feed (for the query service's rebuilds and gap catch-ups), and
//! forwards `RestoreReadDb` to the query service as a message.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use ferry_es::{Aggregate, CommandError, CommandHandler, EventStore, Recorded};
use ferry_service::{ApiError, ApiJson, ApiQuery, Runtime, ServiceConfig, ServiceHandle};
use ferry_toolkit::Envelope;
use ferry_toolkit::sql::outbox::{self, RelayWaker};
use posts_domain::{ErrorKind, Post, PostCommand, PostError, PostEvent};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use uuid::Uuid;

use crate::wire::{FeedCount, FeedEvent, FeedPage, RESTORE_TOPIC, RestoreRequested};
use crate::{COMMAND_SERVICE as SERVICE, Error};

#[derive(Clone)]
struct AppState {
    handler: CommandHandler<Post>,
    relay: RelayWaker,
}

/// A new post.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct NewPost {
    #[serde(default)]
    author: String,
    #[serde(default)]
    message: String,
}

/// A post's new text.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct EditMessage {
    #[serde(default)]
    message: String,
}

/// A new comment.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct AddComment {
    #[serde(default)]
    comment: String,
    #[serde(default)]
    username: String,
}

/// A comment's new text, by its author.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct EditComment {
    comment_id: Uuid,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    username: String,
}

/// A comment to remove, by its author.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct RemoveComment {
    comment_id: Uuid,
    #[serde(default)]
    username: String,
}

/// Who deletes the post (its author).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct DeletePost {
    #[serde(default)]
    username: String,
}

/// What a command did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Done {
    /// The post.
    id: Uuid,
    /// The new comment's id (`AddComment` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    comment_id: Option<Uuid>,
    /// For people.
    message: String,
}

/// `RestoreReadDb`'s options.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
struct RestoreParams {
    /// Empty the read model first and rebuild it from scratch (default: only add what it
    /// lacks).
    #[serde(default)]
    reset: bool,
}

/// What `RestoreReadDb` did: asked the query service to rebuild, as job `job`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RestoreAccepted {
    /// The rebuild job's id.
    job: Uuid,
    /// Where the query service reports the job's progress (a path on the query service).
    progress: String,
    /// For people.
    message: String,
}

/// A page of the feed: after which global position, how many.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct FeedParams {
    /// Serve events with a global position above this one (default 0: from the start).
    #[serde(default)]
    after: i64,
    /// At most this many events (default 100, at most 1000).
    limit: Option<u32>,
}

/// A page of one post's events: after which version, how many.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
struct StreamParams {
    /// Serve events with a version above this one (default 0: from `PostCreated`).
    #[serde(default)]
    after_version: i64,
    /// At most this many events (default 100, at most 1000).
    limit: Option<u32>,
}

/// Where a count starts.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct CountParams {
    /// Count events with a global position above this one (default 0: all).
    #[serde(default)]
    after: i64,
}

#[derive(OpenApi)]
#[openapi(
    paths(
        new_post,
        edit_message,
        like_post,
        add_comment,
        edit_comment,
        remove_comment,
        delete_post,
        restore_read_db,
        feed,
        feed_count,
        feed_by_post
    ),
    components(schemas(
        NewPost,
        EditMessage,
        AddComment,
        EditComment,
        RemoveComment,
        DeletePost,
        Done,
        RestoreAccepted,
        FeedPage,
        FeedEvent,
        FeedCount
    ))
)]
struct Api;

/// Start the command service: event store, outbox relay, HTTP. The handle's task ends once
/// the HTTP server and the relay have stopped.
pub async fn start(
    config: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<ServiceHandle, Error> {
    let mut runtime = Runtime::new(SERVICE, config, shutdown)?;
    runtime.sends::<posts_domain::PostCreated>(posts_domain::TOPIC);
    runtime.sends::<posts_domain::MessageUpdated>(posts_domain::TOPIC);
    runtime.sends::<posts_domain::PostLiked>(posts_domain::TOPIC);
    runtime.sends::<posts_domain::CommentAdded>(posts_domain::TOPIC);
    runtime.sends::<posts_domain::CommentUpdated>(posts_domain::TOPIC);
    runtime.sends::<posts_domain::CommentRemoved>(posts_domain::TOPIC);
    runtime.sends::<posts_domain::PostRemoved>(posts_domain::TOPIC);
    runtime.sends::<RestoreRequested>(RESTORE_TOPIC);
    let db = runtime.config().database(SERVICE).await?;
    ferry_es::migrate(&db).await?;
    runtime.watch_database(&db);
    let relay = runtime.start_relay(&db);
    let state = AppState {
        handler: CommandHandler::<Post>::new(EventStore::new(db)).with_outbox(posts_domain::TOPIC),
        relay,
    };
    let app = axum::Router::new()
        .route("/api/v1/NewPost", post(new_post))
        .route("/api/v1/EditMessage/{id}", put(edit_message))
        .route("/api/v1/LikePost/{id}", put(like_post))
        .route("/api/v1/AddComment/{id}", put(add_comment))
        .route("/api/v1/EditComment/{id}", put(edit_comment))
        .route("/api/v1/RemoveComment/{id}", delete(remove_comment))
        .route("/api/v1/DeletePost/{id}", delete(delete_post))
        .route("/api/v1/RestoreReadDb", post(restore_read_db))
        .route("/api/v1/EventFeed", get(feed))
        .route("/api/v1/EventFeed/count", get(feed_count))
        .route("/api/v1/EventFeed/byPost/{id}", get(feed_by_post))
        .with_state(state);
    Ok(runtime.serve(app, Api::openapi()).await?)
}

/// A rule violation as HTTP: unknown post or comment 404, invalid input 422 (field), any
/// other refusal 422 (rule), each with the error's message.
fn rejected(e: &PostError) -> ApiError {
    match e.kind() {
        ErrorKind::NotFound => ApiError::not_found(e),
        ErrorKind::Invalid => ApiError::invalid_field(e.to_string()),
        ErrorKind::Forbidden | ErrorKind::Conflict => ApiError::rule(e.to_string()),
    }
}

/// An id in the path; one that is no UUID names no post.
fn post_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("post {id}")))
}

/// Run `command` on the post and wake the relay.
async fn run(state: &AppState, id: Uuid, command: &PostCommand) -> Result<(), ApiError> {
    match state.handler.execute(&id.to_string(), command).await {
        Ok(_) => {
            state.relay.notify();
            Ok(())
        }
        Err(CommandError::Rejected(e)) => Err(rejected(&e)),
        Err(e) => Err(ApiError::internal(e)),
    }
}

fn done(id: Uuid, message: &str) -> ApiJson<Done> {
    ApiJson(Done {
        id,
        comment_id: None,
        message: message.to_owned(),
    })
}

/// Write a new post.
#[utoipa::path(post, path = "/api/v1/NewPost", request_body = NewPost,
    responses((status = 201, body = Done), (status = 422, description = "author or message empty")))]
async fn new_post(
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewPost>,
) -> Result<(StatusCode, ApiJson<Done>), ApiError> {
    let command = PostCommand::new_post(new.author, new.message);
    let PostCommand::NewPost { post_id, .. } = &command else {
        unreachable!("new_post builds NewPost")
    };
    let id = *post_id;
    run(&state, id, &command).await?;
    Ok((
        StatusCode::CREATED,
        done(id, "New post creation request completed successfully!"),
    ))
}

/// Replace a post's text.
#[utoipa::path(put, path = "/api/v1/EditMessage/{id}", request_body = EditMessage,
    responses((status = 200, body = Done), (status = 404), (status = 422)))]
async fn edit_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(edit): ApiJson<EditMessage>,
) -> Result<ApiJson<Done>, ApiError> {
    let id = post_id(&id)?;
    run(
        &state,
        id,
        &PostCommand::EditMessage {
            message: edit.message,
        },
    )
    .await?;
    Ok(done(id, "Edit message request completed successfully!"))
}

/// Like a post.
#[utoipa::path(put, path = "/api/v1/LikePost/{id}",
    responses((status = 200, body = Done), (status = 404), (status = 422)))]
async fn like_post(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<ApiJson<Done>, ApiError> {
    let id = post_id(&id)?;
    run(&state, id, &PostCommand::LikePost).await?;
    Ok(done(id, "Like post request completed successfully!"))
}

/// Comment on a post; answers with the new comment's id.
#[utoipa::path(put, path = "/api/v1/AddComment/{id}", request_body = AddComment,
    responses((status = 200, body = Done), (status = 404), (status = 422)))]
async fn add_comment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(add): ApiJson<AddComment>,
) -> Result<ApiJson<Done>, ApiError> {
    let id = post_id(&id)?;
    let command = PostCommand::add_comment(add.comment, add.username);
    let PostCommand::AddComment { comment_id, .. } = &command else {
        unreachable!("add_comment builds AddComment")
    };
    let comment_id = *comment_id;
    run(&state, id, &command).await?;
    Ok(ApiJson(Done {
        id,
        comment_id: Some(comment_id),
        message: "Add comment request completed successfully!".to_owned(),
    }))
}

/// Replace a comment's text (its author only).
#[utoipa::path(put, path = "/api/v1/EditComment/{id}", request_body = EditComment,
    responses((status = 200, body = Done), (status = 404), (status = 422)))]
async fn edit_comment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(edit): ApiJson<EditComment>,
) -> Result<ApiJson<Done>, ApiError> {
    let id = post_id(&id)?;
    run(
        &state,
        id,
        &PostCommand::edit_comment(edit.comment_id, edit.comment, edit.username),
    )
    .await?;
    Ok(done(id, "Edit comment request completed successfully!"))
}

/// Remove a comment (its author only).
#[utoipa::path(delete, path = "/api/v1/RemoveComment/{id}", request_body = RemoveComment,
    responses((status = 200, body = Done), (status = 404), (status = 422)))]
async fn remove_comment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(remove): ApiJson<RemoveComment>,
) -> Result<ApiJson<Done>, ApiError> {
    let id = post_id(&id)?;
    run(
        &state,
        id,
        &PostCommand::RemoveComment {
            comment_id: remove.comment_id,
            username: remove.username,
        },
    )
    .await?;
    Ok(done(id, "Remove comment request completed successfully!"))
}

/// Delete a post (its author only, once).
#[utoipa::path(delete, path = "/api/v1/DeletePost/{id}", request_body = DeletePost,
    responses((status = 200, body = Done), (status = 404), (status = 422)))]
async fn delete_post(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(del): ApiJson<DeletePost>,
) -> Result<ApiJson<Done>, ApiError> {
    let id = post_id(&id)?;
    run(
        &state,
        id,
        &PostCommand::DeletePost {
            username: del.username,
        },
    )
    .await?;
    Ok(done(id, "Delete post request completed successfully!"))
}

/// Ask the query service to rebuild its read model from the event store: stages one
/// [`RestoreRequested`] in the outbox (nothing is republished) and answers 202 with the job's
/// id; the query service runs the job and reports its progress at
/// `GET /api/v1/RestoreReadDb/{job}`. Safe to run twice and while commands arrive.
#[utoipa::path(post, path = "/api/v1/RestoreReadDb", params(RestoreParams),
    responses((status = 202, body = RestoreAccepted), (status = 400)))]
async fn restore_read_db(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<RestoreParams>,
) -> Result<impl IntoResponse, ApiError> {
    let request = RestoreRequested {
        job_id: Uuid::now_v7(),
        reset: params.reset,
    };
    let mut tx = state
        .handler
        .store()
        .database()
        .begin()
        .await
        .map_err(ApiError::internal)?;
    outbox::enqueue(
        &mut tx,
        RESTORE_TOPIC,
        &request,
        &Envelope::new::<RestoreRequested>(),
    )
    .await
    .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    state.relay.notify();
    let progress = format!("/api/v1/RestoreReadDb/{}", request.job_id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, progress.clone())],
        ApiJson(RestoreAccepted {
            job: request.job_id,
            message: format!(
                "Read database restore requested; the query service ({}) reports its progress at {progress}.",
                crate::QUERY_SERVICE
            ),
            progress,
        }),
    ))
}

fn feed_page(events: &[Recorded<PostEvent>]) -> Result<ApiJson<FeedPage>, ApiError> {
    let events = events
        .iter()
        .map(FeedEvent::from_recorded)
        .collect::<Result<_, _>>()
        .map_err(ApiError::internal)?;
    Ok(ApiJson(FeedPage { events }))
}

/// The event store, read-only: post events after a global position, in global (commit) order.
#[utoipa::path(get, path = "/api/v1/EventFeed", params(FeedParams),
    responses((status = 200, body = FeedPage), (status = 400)))]
async fn feed(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<FeedParams>,
) -> Result<ApiJson<FeedPage>, ApiError> {
    let limit = ferry_service::limit(params.limit)? as usize;
    let events = state
        .handler
        .store()
        .read_all::<PostEvent>(Post::TYPE, params.after, limit)
        .await
        .map_err(ApiError::internal)?;
    feed_page(&events)
}

/// How many post events the store has after a global position.
#[utoipa::path(get, path = "/api/v1/EventFeed/count", params(CountParams),
    responses((status = 200, body = FeedCount), (status = 400)))]
async fn feed_count(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<CountParams>,
) -> Result<ApiJson<FeedCount>, ApiError> {
    let count = state
        .handler
        .store()
        .count_after(Post::TYPE, params.after)
        .await
        .map_err(ApiError::internal)?;
    Ok(ApiJson(FeedCount { count }))
}

/// One post's events after a version, in order (empty for an unknown post).
#[utoipa::path(get, path = "/api/v1/EventFeed/byPost/{id}", params(StreamParams),
    responses((status = 200, body = FeedPage), (status = 400), (status = 404)))]
async fn feed_by_post(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<StreamParams>,
) -> Result<ApiJson<FeedPage>, ApiError> {
    let id = post_id(&id)?;
    let limit = ferry_service::limit(params.limit)? as usize;
    let events = state
        .handler
        .store()
        .read_stream_page::<PostEvent>(&id.to_string(), params.after_version, limit)
        .await
        .map_err(ApiError::internal)?;
    feed_page(&events)
}
