//! The consumer service: logs work items from `tasks`, and turns each sign-up request from
//! `user_tasks` into a user or a rejection, once.

use axum::extract::{Path, State};
use axum::routing::get;
use ferry_contracts::users::{TASKS, Task, USER_TASKS, UserRequested};
use ferry_service::{ApiError, ApiJson, Runtime, ServiceConfig, ServiceHandle};
use ferry_toolkit::sql::{Database, inbox};
use ferry_toolkit::{HandlerError, MessageContext, Router, handler_fn};
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::{Error, validate};

const SERVICE: &str = "users-consumer";
/// The consumer group (on RabbitMQ, a name for logs and metrics).
pub const GROUP: &str = "users-consumer";

// `user_tasks` keeps every request's outcome, so a request is decided once even if it arrives
// again under another message id. Times are Unix milliseconds.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "users",
    "CREATE TABLE users (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE user_tasks (
        task_id TEXT PRIMARY KEY,
        outcome TEXT NOT NULL,
        reason TEXT,
        user_id TEXT,
        decided_at BIGINT NOT NULL
    )",
)];

/// A user as the API shows it: never the password hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct User {
    id: String,
    name: String,
    email: String,
    /// Unix milliseconds.
    created_at: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct UserList {
    users: Vec<User>,
}

/// What became of a sign-up request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TaskOutcome {
    task_id: String,
    /// `created` or `rejected`.
    outcome: String,
    /// Why it was rejected (null when created).
    reason: Option<String>,
    /// The user it created (null when rejected).
    user_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Hello {
    message: &'static str,
}

#[derive(OpenApi)]
#[openapi(
    paths(hello, list_users, get_user, get_task),
    components(schemas(User, UserList, TaskOutcome, Hello))
)]
struct Api;

/// Start the consumer: database, router on `tasks` and `user_tasks`, HTTP.
pub async fn start(
    config: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<ServiceHandle, Error> {
    let mut runtime = Runtime::new(SERVICE, config, shutdown)?;
    let db = runtime.database(MIGRATIONS).await?;
    let handler_db = db.clone();
    let router = Router::new(GROUP)
        .subscribe(TASKS)
        .subscribe(USER_TASKS)
        .handle(handler_fn(|task: Task, _ctx: MessageContext| async move {
            tracing::info!(task = %task.id, message = %task.message, "task received");
            Ok::<_, HandlerError>(())
        }))
        .handle(handler_fn(
            move |request: UserRequested, ctx: MessageContext| {
                let db = handler_db.clone();
                async move { register(&db, request, &ctx).await }
            },
        ));
    runtime.start_router(router)?;
    let app = axum::Router::new()
        .route("/", get(hello))
        .route("/users", get(list_users))
        .route("/users/{id}", get(get_user))
        .route("/tasks/{task_id}", get(get_task))
        .with_state(db);
    Ok(runtime.serve(app, Api::openapi()).await?)
}

/// Why a request cannot become a user, if it cannot. The producer validated it already; this
/// guards against whatever else lands on the queue, a plain-text password above all.
async fn refusal(tx: &mut AnyConnection, r: &UserRequested) -> Result<Option<String>, sqlx::Error> {
    if let Err(reason) = validate::name(Some(&r.name)) {
        return Ok(Some(reason));
    }
    match validate::email(Some(&r.email)) {
        Err(reason) => return Ok(Some(reason)),
        Ok(normal) if normal != r.email => {
            return Ok(Some(format!("email {:?} is not normalized", r.email)));
        }
        Ok(_) => {}
    }
    if !validate::is_argon2_hash(&r.password_hash) {
        return Ok(Some("passwordHash is not an argon2 hash".into()));
    }
    let taken = sqlx::query("SELECT 1 FROM users WHERE email = $1")
        .bind(&r.email)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    Ok(taken.then(|| format!("email {} is already registered", r.email)))
}

/// Applies one sign-up request, once: the inbox record, the user and the task's outcome commit
/// together.
async fn register(
    db: &Database,
    request: UserRequested,
    ctx: &MessageContext,
) -> Result<(), HandlerError> {
    let Some(mut tx) = inbox::claim(db, GROUP, ctx.message_id()).await? else {
        return Ok(());
    };
    let decided = sqlx::query("SELECT 1 FROM user_tasks WHERE task_id = $1")
        .bind(&request.task_id)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    if decided {
        // The same request under another message id: it was decided already.
        tx.commit().await?;
        return Ok(());
    }
    let now = ferry_toolkit::now_millis();
    let (outcome, reason, user_id) = match refusal(&mut tx, &request).await? {
        Some(reason) => ("rejected", Some(reason), None),
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            // A concurrent insert of the same email (only possible with several consumers on a
            // shared queue) fails on the unique index; the retry then rejects this request.
            sqlx::query(
                "INSERT INTO users (id, name, email, password_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&id)
            .bind(&request.name)
            .bind(&request.email)
            .bind(&request.password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            ("created", None, Some(id))
        }
    };
    sqlx::query(
        "INSERT INTO user_tasks (task_id, outcome, reason, user_id, decided_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&request.task_id)
    .bind(outcome)
    .bind(reason.clone())
    .bind(user_id.clone())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(task = %request.task_id, outcome, reason = reason.as_deref().unwrap_or(""),
        user = user_id.as_deref().unwrap_or(""), "sign-up decided");
    Ok(())
}

/// The original's greeting.
#[utoipa::path(get, path = "/", responses((status = 200, body = Hello)))]
async fn hello() -> ApiJson<Hello> {
    ApiJson(Hello {
        message: "Hello World from Consumer Service!",
    })
}

fn row_to_user(row: &sqlx::any::AnyRow) -> User {
    User {
        id: row.get("id"),
        name: row.get("name"),
        email: row.get("email"),
        created_at: row.get("created_at"),
    }
}

/// Every user, oldest first.
#[utoipa::path(get, path = "/users", responses((status = 200, body = UserList)))]
async fn list_users(State(db): State<Database>) -> Result<ApiJson<UserList>, ApiError> {
    let rows = sqlx::query("SELECT id, name, email, created_at FROM users ORDER BY id")
        .fetch_all(db.pool())
        .await
        .map_err(ApiError::internal)?;
    Ok(ApiJson(UserList {
        users: rows.iter().map(row_to_user).collect(),
    }))
}

/// One user.
#[utoipa::path(get, path = "/users/{id}", responses((status = 200, body = User), (status = 404)))]
async fn get_user(
    State(db): State<Database>,
    Path(id): Path<String>,
) -> Result<ApiJson<User>, ApiError> {
    let row = sqlx::query("SELECT id, name, email, created_at FROM users WHERE id = $1")
        .bind(&id)
        .fetch_optional(db.pool())
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("user {id}")))?;
    Ok(ApiJson(row_to_user(&row)))
}

/// A sign-up request's outcome; 404 until it was processed (or if it never existed).
#[utoipa::path(get, path = "/tasks/{task_id}", responses((status = 200, body = TaskOutcome), (status = 404)))]
async fn get_task(
    State(db): State<Database>,
    Path(task_id): Path<String>,
) -> Result<ApiJson<TaskOutcome>, ApiError> {
    let row =
        sqlx::query("SELECT task_id, outcome, reason, user_id FROM user_tasks WHERE task_id = $1")
            .bind(&task_id)
            .fetch_optional(db.pool())
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::not_found(format!("task {task_id} (not processed yet, or unknown)"))
            })?;
    Ok(ApiJson(TaskOutcome {
        task_id: row.get("task_id"),
        outcome: row.get("outcome"),
        reason: row.get("reason"),
        user_id: row.get("user_id"),
    }))
}
