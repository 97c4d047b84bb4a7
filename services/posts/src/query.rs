//! The query service: keeps the read model from topic `SocialMediaPostEvents`, applying each
//! post's events once and in order by their stream version ([`crate::read_model`]), serves
//! `PostLookup`, and runs `RestoreReadDb` jobs that rebuild the read model from the command
//! service's event feed ([`crate::jobs`]).

use std::collections::HashMap;

use axum::extract::{FromRef, Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use ferry_service::{
    ApiError, ApiJson, ApiQuery, ErrorCode, Runtime, ServiceConfig, ServiceHandle,
};
use ferry_toolkit::sql::Database;
use ferry_toolkit::{HandlerError, Message, MessageContext, RetryPolicy, Router, handler_fn};
use posts_domain::{
    CommentAdded, CommentRemoved, CommentUpdated, MessageUpdated, PostCreated, PostEvent,
    PostLiked, PostRemoved, TOPIC,
};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use uuid::Uuid;

use crate::jobs::{JobState, JobView, Jobs};
use crate::read_model::{self, Outcome, SERVICE};
use crate::rebuild::RebuildProgress;
use crate::source::EventSource;
use crate::wire::{RESTORE_TOPIC, RestoreRequested};
use crate::{COMMAND_PORT, COMMAND_SERVICE, Error};

/// The consumer group.
pub const GROUP: &str = "posts-query";

/// Attempts after which a message whose version the event store does not have (yet) is
/// dead-lettered rather than retried: the relay publishes an event only after it is stored,
/// so such a message did not come from this event store.
const AHEAD_ATTEMPTS: u32 = 3;

#[derive(Clone)]
struct AppState {
    db: Database,
    source: EventSource,
    jobs: Jobs,
}

impl FromRef<AppState> for Database {
    fn from_ref(state: &AppState) -> Database {
        state.db.clone()
    }
}

/// A comment as the read model shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CommentView {
    comment_id: String,
    username: String,
    comment: String,
    /// Unix epoch milliseconds.
    comment_date: i64,
    edited: bool,
}

/// A post as the read model shows it (the original's `Post` and `Comment` fields).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct PostView {
    post_id: String,
    author: String,
    message: String,
    /// Unix epoch milliseconds.
    date_posted: i64,
    likes: i64,
    comments: Vec<CommentView>,
}

/// The answer of every lookup.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PostLookup {
    posts: Vec<PostView>,
    message: String,
}

/// `RestoreReadDb`'s options.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
struct RestoreParams {
    /// Empty the read model first and rebuild it from scratch (default: only add what it
    /// lacks, which keeps every lookup answering meanwhile).
    #[serde(default)]
    reset: bool,
}

/// Every known job, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct JobList {
    jobs: Vec<JobView>,
}

#[derive(OpenApi)]
#[openapi(
    paths(
        all,
        by_id,
        by_author,
        with_comments,
        with_likes,
        restore_read_db,
        restore_jobs,
        restore_job
    ),
    components(schemas(
        PostLookup,
        PostView,
        CommentView,
        JobView,
        JobState,
        JobList,
        RebuildProgress
    ))
)]
struct Api;

/// Registers the handler of one event type: decode it as `M`, apply it as a [`PostEvent`].
fn on<M>(router: Router, state: &AppState) -> Router
where
    M: Message + Into<PostEvent>,
{
    let state = state.clone();
    router.handle(handler_fn(move |message: M, ctx: MessageContext| {
        let state = state.clone();
        async move { apply(&state, message.into(), &ctx).await }
    }))
}

/// The command service's address: `peers["posts-command"]`, else its default port on this
/// host.
fn command_url(config: &ServiceConfig) -> String {
    if let Some(url) = config.peers.get(COMMAND_SERVICE) {
        return url.clone();
    }
    let host = if config.host.is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        config.host
    };
    format!("http://{}", std::net::SocketAddr::new(host, COMMAND_PORT))
}

/// Start the query service: database, router on the post topic and the restore requests,
/// HTTP. The handle's task ends once the HTTP server, the router and any running rebuild
/// have stopped.
pub async fn start(
    config: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<ServiceHandle, Error> {
    let mut runtime = Runtime::new(SERVICE, config, shutdown)?;
    let db = runtime.config().database(SERVICE).await?;
    read_model::migrate(&db).await?;
    runtime.watch_database(&db);
    let source = EventSource::feed(command_url(runtime.config()));
    let state = AppState {
        jobs: Jobs::new(source.clone(), db.clone(), runtime.shutdown_token().clone()),
        db,
        source,
    };
    // A failure here is the read model's database or the event feed being unreachable: keep
    // trying for minutes before parking the message in the dead-letter topic (from where
    // `ferry dlq redrive` brings it back; the version check makes that safe).
    let retry = RetryPolicy {
        max_attempts: 30,
        ..RetryPolicy::default()
    };
    let mut router = Router::new(GROUP)
        .subscribe(TOPIC)
        .subscribe(RESTORE_TOPIC)
        .retry(retry);
    router = on::<PostCreated>(router, &state);
    router = on::<MessageUpdated>(router, &state);
    router = on::<PostLiked>(router, &state);
    router = on::<CommentAdded>(router, &state);
    router = on::<CommentUpdated>(router, &state);
    router = on::<CommentRemoved>(router, &state);
    router = on::<PostRemoved>(router, &state);
    let jobs = state.jobs.clone();
    router = router.handle(handler_fn(
        move |request: RestoreRequested, _ctx: MessageContext| {
            let jobs = jobs.clone();
            async move {
                jobs.submit(request.job_id, request.reset);
                Ok::<_, HandlerError>(())
            }
        },
    ));
    runtime.start_router(router)?;
    // Rebuild jobs stop after the router, so no restore request is taken and then dropped.
    let jobs = state.jobs.clone();
    runtime.stop_on_shutdown(async move { jobs.stopped().await });
    let app = axum::Router::new()
        .route("/api/v1/PostLookup", get(all))
        .route("/api/v1/PostLookup/byId/{id}", get(by_id))
        .route("/api/v1/PostLookup/byAuthor/{author}", get(by_author))
        .route("/api/v1/PostLookup/withComments", get(with_comments))
        .route("/api/v1/PostLookup/withLikes/{likes}", get(with_likes))
        .route(
            "/api/v1/RestoreReadDb",
            post(restore_read_db).get(restore_jobs),
        )
        .route("/api/v1/RestoreReadDb/{job}", get(restore_job))
        .with_state(state);
    Ok(runtime.serve(app, Api::openapi()).await?)
}

/// Apply one event from the topic, once and in order (see [`crate::read_model`]).
///
/// The message's `ce_streamversion` says where the event sits in its post's stream. The
/// next version is applied; one the read model has is skipped; one past a gap is not applied
/// but makes the post catch up from the command service's event feed, which applies the
/// missing events and this one in order. A message without a version (from a producer that
/// does not set it) is treated like a gap: the post catches up to the event store.
async fn apply(
    state: &AppState,
    event: PostEvent,
    ctx: &MessageContext,
) -> Result<(), HandlerError> {
    let post_id = event.post_id();
    let version = ctx.envelope().stream_version;
    match version {
        Some(version) => match read_model::apply_one(&state.db, version, &event).await? {
            Outcome::Applied | Outcome::Duplicate => return Ok(()),
            Outcome::Gap { last } => {
                tracing::info!(%post_id, last, version, "gap in a post's events; catching the post up from the event store");
            }
        },
        None => {
            tracing::debug!(%post_id, "event without a stream version; catching the post up from the event store");
        }
    }
    let synced = read_model::sync_post(&state.source, &state.db, post_id).await?;
    match version {
        Some(version) if synced.version < version => {
            let error = format!(
                "the event store has post {post_id} up to version {} only, and this message is version {version}",
                synced.version
            );
            Err(if ctx.attempt() >= AHEAD_ATTEMPTS {
                HandlerError::permanent(error)
            } else {
                HandlerError::new(error)
            })
        }
        _ => Ok(()),
    }
}

/// Rebuild the read model from the event store, in the background: answers the job at once
/// (202, `Location` = its progress). Safe to run twice and while commands arrive.
#[utoipa::path(post, path = "/api/v1/RestoreReadDb", params(RestoreParams),
    responses((status = 202, body = JobView), (status = 400)))]
async fn restore_read_db(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<RestoreParams>,
) -> impl IntoResponse {
    let job = state.jobs.submit(Uuid::now_v7(), params.reset);
    (
        StatusCode::ACCEPTED,
        [(
            header::LOCATION,
            format!("/api/v1/RestoreReadDb/{}", job.job),
        )],
        ApiJson(job),
    )
}

/// The rebuild jobs this query service knows, newest first.
#[utoipa::path(get, path = "/api/v1/RestoreReadDb", responses((status = 200, body = JobList)))]
async fn restore_jobs(State(state): State<AppState>) -> ApiJson<JobList> {
    ApiJson(JobList {
        jobs: state.jobs.list(),
    })
}

/// One rebuild job's progress.
#[utoipa::path(get, path = "/api/v1/RestoreReadDb/{job}",
    responses((status = 200, body = JobView), (status = 404)))]
async fn restore_job(
    State(state): State<AppState>,
    Path(job): Path<String>,
) -> Result<ApiJson<JobView>, ApiError> {
    job.parse()
        .ok()
        .and_then(|id| state.jobs.get(id))
        .map(ApiJson)
        .ok_or_else(|| ApiError::not_found(format!("restore job {job}")))
}

const SELECT_POSTS: &str = "SELECT id, author, message, date_posted, likes FROM posts";

/// The posts a query selects (binding one text parameter, if any), with their comments.
async fn lookup(
    db: &Database,
    condition: &str,
    param: Option<String>,
) -> Result<Vec<PostView>, ApiError> {
    let sql = format!("{SELECT_POSTS} {condition} ORDER BY date_posted, id");
    let mut query = sqlx::query(&sql);
    if let Some(p) = param {
        query = query.bind(p);
    }
    let rows = query
        .fetch_all(db.pool())
        .await
        .map_err(ApiError::internal)?;
    let mut posts: Vec<PostView> = rows
        .iter()
        .map(|row| PostView {
            post_id: row.get("id"),
            author: row.get("author"),
            message: row.get("message"),
            date_posted: row.get("date_posted"),
            likes: row.get("likes"),
            comments: Vec::new(),
        })
        .collect();
    if posts.is_empty() {
        return Ok(posts);
    }
    let rows = sqlx::query(
        "SELECT id, post_id, username, comment, comment_date, edited FROM comments
         ORDER BY comment_date, id",
    )
    .fetch_all(db.pool())
    .await
    .map_err(ApiError::internal)?;
    let mut comments: HashMap<String, Vec<CommentView>> = HashMap::new();
    for row in &rows {
        comments
            .entry(row.get("post_id"))
            .or_default()
            .push(CommentView {
                comment_id: row.get("id"),
                username: row.get("username"),
                comment: row.get("comment"),
                comment_date: row.get("comment_date"),
                edited: row.get::<i64, _>("edited") != 0,
            });
    }
    for post in &mut posts {
        post.comments = comments.remove(&post.post_id).unwrap_or_default();
    }
    Ok(posts)
}

fn answer(posts: Vec<PostView>) -> ApiJson<PostLookup> {
    let message = format!("Successfully returned {} post(s)!", posts.len());
    ApiJson(PostLookup { posts, message })
}

/// Every post.
#[utoipa::path(get, path = "/api/v1/PostLookup", responses((status = 200, body = PostLookup)))]
async fn all(State(db): State<Database>) -> Result<ApiJson<PostLookup>, ApiError> {
    Ok(answer(lookup(&db, "", None).await?))
}

/// One post.
#[utoipa::path(get, path = "/api/v1/PostLookup/byId/{id}",
    responses((status = 200, body = PostLookup), (status = 404)))]
async fn by_id(
    State(db): State<Database>,
    Path(id): Path<String>,
) -> Result<ApiJson<PostLookup>, ApiError> {
    let posts = lookup(&db, "WHERE id = $1", Some(id.clone())).await?;
    if posts.is_empty() {
        return Err(ApiError::not_found(format!("post {id}")));
    }
    Ok(answer(posts))
}

/// The posts whose author contains `author`.
#[utoipa::path(get, path = "/api/v1/PostLookup/byAuthor/{author}",
    responses((status = 200, body = PostLookup)))]
async fn by_author(
    State(db): State<Database>,
    Path(author): Path<String>,
) -> Result<ApiJson<PostLookup>, ApiError> {
    let escaped = author
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let posts = lookup(
        &db,
        "WHERE author LIKE $1 ESCAPE '\\'",
        Some(format!("%{escaped}%")),
    )
    .await?;
    Ok(answer(posts))
}

/// The posts with at least one comment.
#[utoipa::path(get, path = "/api/v1/PostLookup/withComments",
    responses((status = 200, body = PostLookup)))]
async fn with_comments(State(db): State<Database>) -> Result<ApiJson<PostLookup>, ApiError> {
    let posts = lookup(
        &db,
        "WHERE EXISTS (SELECT 1 FROM comments c WHERE c.post_id = posts.id)",
        None,
    )
    .await?;
    Ok(answer(posts))
}

/// The posts with at least `likes` likes.
#[utoipa::path(get, path = "/api/v1/PostLookup/withLikes/{likes}",
    responses((status = 200, body = PostLookup), (status = 400)))]
async fn with_likes(
    State(db): State<Database>,
    Path(likes): Path<String>,
) -> Result<ApiJson<PostLookup>, ApiError> {
    let likes: i64 = likes.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("{likes:?} is not a number of likes"),
        )
    })?;
    let posts = lookup(&db, &format!("WHERE likes >= {likes}"), None).await?;
    Ok(answer(posts))
}
