//! The query service: keeps the read model from topic `SocialMediaPostEvents`, applying each
//! event once, and serves `PostLookup`.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::routing::get;
use ferry_service::{ApiError, ApiJson, ServiceConfig, ServiceHandle};
use ferry_toolkit::kafka::{self, KafkaConfig};
use ferry_toolkit::ops::Health;
use ferry_toolkit::sql::{Database, inbox};
use ferry_toolkit::{HandlerError, Message, MessageContext, Publisher, Router, handler_fn};
use posts_domain::{
    CommentAdded, CommentRemoved, CommentUpdated, MessageUpdated, PostCreated, PostEvent,
    PostLiked, PostRemoved, TOPIC,
};
use serde::Serialize;
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::Error;

const SERVICE: &str = "posts-query";
/// The consumer group.
pub const GROUP: &str = "posts-query";

// Booleans are INTEGER 0/1: sqlx's Any driver maps no boolean type on SQLite.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "read model",
    "CREATE TABLE posts (
        id TEXT PRIMARY KEY,
        author TEXT NOT NULL,
        message TEXT NOT NULL,
        date_posted BIGINT NOT NULL,
        likes BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE comments (
        id TEXT PRIMARY KEY,
        post_id TEXT NOT NULL,
        username TEXT NOT NULL,
        comment TEXT NOT NULL,
        comment_date BIGINT NOT NULL,
        edited INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX comments_post ON comments (post_id)",
)];

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

#[derive(OpenApi)]
#[openapi(
    paths(all, by_id, by_author, with_comments, with_likes),
    components(schemas(PostLookup, PostView, CommentView))
)]
struct Api;

/// Registers the handler of one event type: decode it as `M`, apply it as a [`PostEvent`].
fn on<M>(router: Router, db: &Database) -> Router
where
    M: Message + Into<PostEvent>,
{
    let db = db.clone();
    router.handle(handler_fn(move |message: M, ctx: MessageContext| {
        let db = db.clone();
        async move { apply(&db, message.into(), &ctx).await }
    }))
}

/// Start the query service: database, router on the post topic, HTTP.
pub async fn start(
    config: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<ServiceHandle, Error> {
    let db = config.database(SERVICE).await?;
    db.migrate(SERVICE, MIGRATIONS).await?;
    let health = Health::new();
    let kafka = KafkaConfig::new(&config.brokers);
    let publisher = Publisher::kafka(&kafka)?;
    let mut router = Router::new(GROUP).subscribe(TOPIC).health(&health);
    router = on::<PostCreated>(router, &db);
    router = on::<MessageUpdated>(router, &db);
    router = on::<PostLiked>(router, &db);
    router = on::<CommentAdded>(router, &db);
    router = on::<CommentUpdated>(router, &db);
    router = on::<CommentRemoved>(router, &db);
    router = on::<PostRemoved>(router, &db);
    let router = kafka::start_router(router, &kafka, publisher)?;
    let app = axum::Router::new()
        .route("/api/v1/PostLookup", get(all))
        .route("/api/v1/PostLookup/byId/{id}", get(by_id))
        .route("/api/v1/PostLookup/byAuthor/{author}", get(by_author))
        .route("/api/v1/PostLookup/withComments", get(with_comments))
        .route("/api/v1/PostLookup/withLikes/{likes}", get(with_likes))
        .with_state(db);
    let handle = ferry_service::serve(
        SERVICE,
        &config,
        app,
        health,
        Api::openapi(),
        shutdown.clone(),
    )
    .await?;
    tokio::spawn(async move {
        shutdown.cancelled().await;
        router.shutdown().await;
    });
    Ok(handle)
}

/// Apply one event, once: the inbox record (by the event's id, which a republication keeps)
/// and the read-model change commit together.
async fn apply(db: &Database, event: PostEvent, ctx: &MessageContext) -> Result<(), HandlerError> {
    let Some(mut tx) = inbox::claim(db, GROUP, ctx.message_id()).await? else {
        return Ok(());
    };
    match event {
        PostEvent::PostCreated(e) => {
            sqlx::query(
                "INSERT INTO posts (id, author, message, date_posted, likes) VALUES ($1, $2, $3, $4, 0)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(e.post_id.to_string())
            .bind(&e.author)
            .bind(&e.message)
            .bind(e.date_posted)
            .execute(&mut *tx)
            .await?;
        }
        PostEvent::MessageUpdated(e) => {
            sqlx::query("UPDATE posts SET message = $1 WHERE id = $2")
                .bind(&e.message)
                .bind(e.post_id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        PostEvent::PostLiked(e) => {
            sqlx::query("UPDATE posts SET likes = likes + 1 WHERE id = $1")
                .bind(e.post_id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        PostEvent::CommentAdded(e) => {
            sqlx::query(
                "INSERT INTO comments (id, post_id, username, comment, comment_date, edited)
                 VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (id) DO NOTHING",
            )
            .bind(e.comment_id.to_string())
            .bind(e.post_id.to_string())
            .bind(&e.username)
            .bind(&e.comment)
            .bind(e.comment_date)
            .execute(&mut *tx)
            .await?;
        }
        PostEvent::CommentUpdated(e) => {
            sqlx::query("UPDATE comments SET comment = $1, edited = 1 WHERE id = $2")
                .bind(&e.comment)
                .bind(e.comment_id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        PostEvent::CommentRemoved(e) => {
            sqlx::query("DELETE FROM comments WHERE id = $1")
                .bind(e.comment_id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        PostEvent::PostRemoved(e) => {
            sqlx::query("DELETE FROM comments WHERE post_id = $1")
                .bind(e.post_id.to_string())
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM posts WHERE id = $1")
                .bind(e.post_id.to_string())
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
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
            ferry_service::ErrorCode::InvalidParameter,
            format!("{likes:?} is not a number of likes"),
        )
    })?;
    let posts = lookup(&db, &format!("WHERE likes >= {likes}"), None).await?;
    Ok(answer(posts))
}
