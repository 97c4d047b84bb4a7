//! The command service: runs post commands through the event-sourced aggregate, and
//! `RestoreReadDb`, which republishes the event store to the topic.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post, put};
use ferry_es::{Aggregate, CommandError, CommandHandler, EventStore, Recorded};
use ferry_service::{ApiError, ApiJson, ServiceConfig, ServiceHandle};
use ferry_toolkit::kafka::KafkaConfig;
use ferry_toolkit::ops::Health;
use ferry_toolkit::sql::outbox::{self, Relay, RelayWaker};
use ferry_toolkit::{Envelope, Message, Publisher};
use posts_domain::{ErrorKind, Post, PostCommand, PostError, PostEvent, TOPIC};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use uuid::Uuid;

use crate::Error;

const SERVICE: &str = "posts-command";
/// Events read from the store per batch when republishing.
const BATCH: usize = 500;

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

/// What `RestoreReadDb` did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Restored {
    /// How many events were republished.
    events: u64,
    /// For people.
    message: String,
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
        restore_read_db
    ),
    components(schemas(
        NewPost,
        EditMessage,
        AddComment,
        EditComment,
        RemoveComment,
        DeletePost,
        Done,
        Restored
    ))
)]
struct Api;

/// Start the command service: event store, outbox relay, HTTP.
pub async fn start(
    config: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<ServiceHandle, Error> {
    let db = config.database(SERVICE).await?;
    ferry_es::migrate(&db).await?;
    let publisher = Publisher::kafka(&KafkaConfig::new(&config.brokers))?;
    let relay = Relay::start(db.clone(), publisher);
    let state = AppState {
        handler: CommandHandler::<Post>::new(EventStore::new(db)).with_outbox(TOPIC),
        relay: relay.waker(),
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
        .with_state(state);
    let handle = ferry_service::serve(
        SERVICE,
        &config,
        app,
        Health::new(),
        Api::openapi(),
        shutdown.clone(),
    )
    .await?;
    tokio::spawn(async move {
        shutdown.cancelled().await;
        relay.shutdown().await;
    });
    Ok(handle)
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

/// Stage one stored event in the outbox with its original message id (the event id).
async fn restage<M: Message>(
    tx: &mut sqlx::AnyConnection,
    recorded: &Recorded<PostEvent>,
    message: &M,
) -> ferry_toolkit::Result<()> {
    let mut envelope = Envelope::new::<M>();
    envelope.message_id = recorded.event_id;
    envelope.correlation_id = recorded
        .metadata
        .correlation_id
        .unwrap_or(recorded.event_id);
    envelope.causation_id = recorded.metadata.causation_id;
    envelope.produced_at = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(recorded.recorded_at).unwrap_or(0));
    outbox::enqueue(tx, TOPIC, message, &envelope).await
}

/// Rebuild the read model: republish every stored event, in order, with its original message
/// id, so the query service applies those it has not seen and skips the rest.
#[utoipa::path(post, path = "/api/v1/RestoreReadDb",
    responses((status = 201, body = Restored)))]
async fn restore_read_db(
    State(state): State<AppState>,
) -> Result<(StatusCode, ApiJson<Restored>), ApiError> {
    let store = state.handler.store();
    // Read first, then write: a read on the pool inside an open SQLite write transaction
    // could wait on the connection the transaction holds.
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let batch = store
            .read_all::<PostEvent>(Post::TYPE, after, BATCH)
            .await
            .map_err(ApiError::internal)?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        all.extend(batch);
    }
    let mut tx = store.database().begin().await.map_err(ApiError::internal)?;
    for r in &all {
        let staged = match &r.event {
            PostEvent::PostCreated(e) => restage(&mut tx, r, e).await,
            PostEvent::MessageUpdated(e) => restage(&mut tx, r, e).await,
            PostEvent::PostLiked(e) => restage(&mut tx, r, e).await,
            PostEvent::CommentAdded(e) => restage(&mut tx, r, e).await,
            PostEvent::CommentUpdated(e) => restage(&mut tx, r, e).await,
            PostEvent::CommentRemoved(e) => restage(&mut tx, r, e).await,
            PostEvent::PostRemoved(e) => restage(&mut tx, r, e).await,
        };
        staged.map_err(ApiError::internal)?;
    }
    let events = all.len() as u64;
    tx.commit().await.map_err(ApiError::internal)?;
    state.relay.notify();
    Ok((
        StatusCode::CREATED,
        ApiJson(Restored {
            events,
            message: format!(
                "Read database restore request completed successfully! ({events} event(s) republished)"
            ),
        }),
    ))
}
