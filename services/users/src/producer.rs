//! The producer service: queues work items on `tasks` and sign-up requests on `user_tasks`,
//! each through the outbox, so an answer means the message will be delivered.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferry_contracts::users::{TASKS, Task, USER_TASKS, UserRequested};
use ferry_service::{
    ApiError, ApiJson, ApiQuery, ErrorCode, Runtime, ServiceConfig, ServiceHandle,
};
use ferry_toolkit::sql::Database;
use ferry_toolkit::sql::outbox::{self, RelayWaker};
use ferry_toolkit::{Envelope, Message};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::hashing::{HashError, HashLimits, HashPool};
use crate::{Error, validate};

const SERVICE: &str = "users-producer";

/// The producer's own state is its outbox, which the toolkit's migrations create.
const MIGRATIONS: &[(i64, &str, &str)] = &[];

/// The work item `GET /` queues, as in the original.
const DEFAULT_TASK: &str = "something to do";

#[derive(Clone)]
struct AppState {
    db: Database,
    relay: RelayWaker,
    hasher: Arc<HashPool>,
}

/// A sign-up request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct NewUser {
    /// Required, not blank.
    name: Option<String>,
    /// Required, a valid address; unique (compared lower-cased).
    email: Option<String>,
    /// Required, not empty. Only its argon2 hash leaves this service.
    password: Option<String>,
}

/// `GET /send?msg=…`
#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct SendParams {
    /// The text to queue.
    msg: Option<String>,
}

/// The answer to a queued work item.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Queued {
    /// "Message sent to queue!", as in the original.
    message: &'static str,
    /// The task's id.
    task_id: String,
}

/// The answer to a queued sign-up: look its outcome up on the consumer at `/tasks/{taskId}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    /// "User data sent to queue!", as in the original.
    message: &'static str,
    /// The id to look the outcome up by.
    task_id: String,
}

#[derive(OpenApi)]
#[openapi(
    paths(send_default, send, create_user),
    components(schemas(NewUser, Queued, Accepted))
)]
struct Api;

/// Start the producer: database (the outbox), relay, the password hashing pool (one worker per
/// core), HTTP.
pub async fn start(
    config: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<ServiceHandle, Error> {
    start_with(config, HashLimits::default(), shutdown).await
}

/// [`start`] with the hashing pool's size, queue and argon2 cost given.
pub async fn start_with(
    config: ServiceConfig,
    hashing: HashLimits,
    shutdown: CancellationToken,
) -> Result<ServiceHandle, Error> {
    let mut runtime = Runtime::new(SERVICE, config, shutdown)?;
    runtime.sends::<Task>(TASKS);
    runtime.sends::<UserRequested>(USER_TASKS);
    let db = runtime.database(MIGRATIONS).await?;
    let relay = runtime.start_relay(&db);
    let hasher = HashPool::start(&hashing)
        .map_err(|e| ferry_toolkit::Error::Task(format!("cannot start hashing threads: {e}")))?;
    let app = axum::Router::new()
        .route("/", get(send_default))
        .route("/send", get(send))
        .route("/user", post(create_user))
        .with_state(AppState {
            db,
            relay,
            hasher: Arc::new(hasher),
        });
    Ok(runtime.serve(app, Api::openapi()).await?)
}

/// Stages one message in its own transaction and wakes the relay.
async fn stage<M: Message>(state: &AppState, topic: &str, message: &M) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await.map_err(ApiError::internal)?;
    outbox::enqueue(&mut tx, topic, message, &Envelope::new::<M>())
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    state.relay.notify();
    Ok(())
}

async fn queue_task(state: &AppState, text: String) -> Result<ApiJson<Queued>, ApiError> {
    let task = Task {
        id: uuid::Uuid::now_v7().to_string(),
        message: text,
    };
    stage(state, TASKS, &task).await?;
    Ok(ApiJson(Queued {
        message: "Message sent to queue!",
        task_id: task.id,
    }))
}

/// Queue "something to do" on `tasks`.
#[utoipa::path(get, path = "/", responses((status = 200, body = Queued)))]
async fn send_default(State(state): State<AppState>) -> Result<ApiJson<Queued>, ApiError> {
    queue_task(&state, DEFAULT_TASK.to_owned()).await
}

/// Queue `msg` on `tasks`.
#[utoipa::path(get, path = "/send", params(SendParams),
    responses((status = 200, body = Queued), (status = 422, description = "msg missing or blank")))]
async fn send(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<SendParams>,
) -> Result<ApiJson<Queued>, ApiError> {
    match params.msg {
        Some(msg) if !msg.trim().is_empty() => queue_task(&state, msg).await,
        _ => Err(ApiError::invalid_field("msg is required")),
    }
}

/// Why a sign-up was not queued.
enum SignUpError {
    /// Bad input or a fault of ours, in the error contract.
    Api(ApiError),
    /// Too many sign-ups are being hashed: 503 with `Retry-After`.
    Busy(Duration),
}

impl From<ApiError> for SignUpError {
    fn from(e: ApiError) -> Self {
        SignUpError::Api(e)
    }
}

impl IntoResponse for SignUpError {
    fn into_response(self) -> Response {
        match self {
            SignUpError::Api(e) => e.into_response(),
            SignUpError::Busy(retry) => {
                let seconds = retry.as_secs().max(1);
                let error = ApiError::new(
                    ErrorCode::Unavailable,
                    format!("too many sign-ups at once; retry in {seconds} s"),
                );
                ([(header::RETRY_AFTER, seconds.to_string())], error).into_response()
            }
        }
    }
}

/// Hashes a password with argon2id and a random salt on the bounded pool ([`crate::hashing`]):
/// it takes tens of milliseconds and 19 MiB by design, so only so many run at once.
async fn hash_password(hasher: &HashPool, password: String) -> Result<String, SignUpError> {
    hasher.hash(password).await.map_err(|e| match e {
        HashError::Busy(retry) => SignUpError::Busy(retry),
        HashError::Failed(cause) => SignUpError::Api(ApiError::internal(cause)),
    })
}

/// Queue a sign-up on `user_tasks`. The outcome (created, or rejected with the reason) appears
/// on the consumer at `/tasks/{taskId}`.
#[utoipa::path(post, path = "/user", request_body = NewUser,
    responses((status = 202, body = Accepted), (status = 400, description = "not a JSON object"),
        (status = 422, description = "name, email or password invalid"),
        (status = 503, description = "too many sign-ups at once; retry after `Retry-After` seconds")))]
async fn create_user(
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewUser>,
) -> Result<(StatusCode, ApiJson<Accepted>), SignUpError> {
    let name = validate::name(new.name.as_deref()).map_err(ApiError::invalid_field)?;
    let email = validate::email(new.email.as_deref()).map_err(ApiError::invalid_field)?;
    let password = validate::password(new.password.as_deref())
        .map_err(ApiError::invalid_field)?
        .to_owned();
    let request = UserRequested {
        task_id: uuid::Uuid::now_v7().to_string(),
        name,
        email,
        password_hash: hash_password(&state.hasher, password).await?,
    };
    stage(&state, USER_TASKS, &request).await?;
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(Accepted {
            message: "User data sent to queue!",
            task_id: request.task_id,
        }),
    ))
}
