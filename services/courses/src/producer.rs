//! The producer service: validates course changes, stores them, and stages their messages in
//! the outbox in the same transaction.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use ferry_contracts::courses::{CourseMessage, Method, TOPIC};
use ferry_service::{ApiError, ApiJson, Runtime, ServiceConfig, ServiceHandle, fields};
use ferry_toolkit::Envelope;
use ferry_toolkit::sql::Database;
use ferry_toolkit::sql::outbox::{self, RelayWaker};
use serde::Deserialize;
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::{Course, Error};

const SERVICE: &str = "courses-producer";

// Booleans are INTEGER 0/1: sqlx's Any driver maps no boolean type on SQLite.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "courses",
    "CREATE TABLE courses (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        code TEXT NOT NULL,
        active INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX courses_live_code ON courses (code) WHERE deleted = 0",
)];

#[derive(Clone)]
struct AppState {
    db: Database,
    relay: RelayWaker,
}

/// A new course. `active` defaults to true.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct NewCourse {
    /// Not blank; at most `fields::NAME` (200) characters.
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = r"\S"
    )]
    name: Option<String>,
    /// Not blank, unique among live courses; at most `fields::CODE` (50) characters.
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 50,
        pattern = r"\S"
    )]
    code: Option<String>,
    /// True unless given.
    #[schema(nullable = false)]
    active: Option<bool>,
}

/// A change: fields left out keep their value.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct CourseChange {
    /// At most `fields::NAME` (200) characters; blank keeps the name.
    #[schema(nullable = false, max_length = 200)]
    name: Option<String>,
    /// At most `fields::CODE` (50) characters; blank keeps the code.
    #[schema(nullable = false, max_length = 50)]
    code: Option<String>,
    #[schema(nullable = false)]
    active: Option<bool>,
}

#[derive(OpenApi)]
#[openapi(
    paths(create, update, delete),
    components(schemas(NewCourse, CourseChange, Course))
)]
struct Api;

/// Start the producer: database, outbox relay, HTTP.
pub async fn start(
    config: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<ServiceHandle, Error> {
    let mut runtime = Runtime::new(SERVICE, config, shutdown)?;
    runtime.sends::<CourseMessage>(TOPIC);
    let db = runtime.database(MIGRATIONS).await?;
    let relay = runtime.start_relay(&db);
    let app = axum::Router::new()
        .route("/api/v1/courses", post(create))
        .route("/api/v1/courses/{id}", put(update).delete(delete))
        .with_state(AppState { db, relay });
    Ok(runtime.serve(app, Api::openapi()).await?)
}

/// The name: required, at most [`fields::NAME`] characters.
fn name(value: Option<String>) -> Result<String, ApiError> {
    fields::required_text("name", value, fields::NAME)
}

/// The code: required, at most [`fields::CODE`] characters.
fn code(value: Option<String>) -> Result<String, ApiError> {
    fields::required_text("code", value, fields::CODE)
}

fn db_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e)
}

/// Whether another live course already has `code`.
async fn code_taken(
    tx: &mut sqlx::AnyConnection,
    code: &str,
    except: &str,
) -> Result<bool, ApiError> {
    let row = sqlx::query("SELECT 1 FROM courses WHERE code = $1 AND deleted = 0 AND id <> $2")
        .bind(code)
        .bind(except)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
    Ok(row.is_some())
}

/// Store the course's state and stage its message, then commit and wake the relay.
async fn save(
    state: &AppState,
    mut tx: ferry_toolkit::sql::Tx,
    course: &Course,
    method: Method,
) -> Result<(), ApiError> {
    let message = CourseMessage {
        id: course.id.clone(),
        name: course.name.clone(),
        code: course.code.clone(),
        active: course.active,
        method,
    };
    outbox::enqueue(&mut tx, TOPIC, &message, &Envelope::new::<CourseMessage>())
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    state.relay.notify();
    Ok(())
}

/// Two concurrent creates with one code: the unique index decides, and the loser gets a 409.
fn unique_violation(e: sqlx::Error, code: &str) -> ApiError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            ApiError::conflict(format!("a course with code {code:?} exists"))
        }
        _ => db_error(e),
    }
}

/// Create a course.
#[utoipa::path(post, path = "/api/v1/courses", request_body = NewCourse,
    responses((status = 201, body = Course), (status = 409, description = "code taken"), (status = 422, description = "name or code missing")))]
async fn create(
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewCourse>,
) -> Result<(StatusCode, ApiJson<Course>), ApiError> {
    let course = Course {
        id: uuid::Uuid::now_v7().to_string(),
        name: name(new.name)?,
        code: code(new.code)?,
        active: new.active.unwrap_or(true),
    };
    let mut tx = state.db.begin().await.map_err(db_error)?;
    if code_taken(&mut tx, &course.code, &course.id).await? {
        return Err(ApiError::conflict(format!(
            "a course with code {:?} exists",
            course.code
        )));
    }
    sqlx::query("INSERT INTO courses (id, name, code, active, deleted) VALUES ($1, $2, $3, $4, 0)")
        .bind(&course.id)
        .bind(&course.name)
        .bind(&course.code)
        .bind(i64::from(course.active))
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, &course.code))?;
    save(&state, tx, &course, Method::Post).await?;
    Ok((StatusCode::CREATED, ApiJson(course)))
}

async fn load(tx: &mut sqlx::AnyConnection, id: &str) -> Result<Course, ApiError> {
    let row =
        sqlx::query("SELECT id, name, code, active FROM courses WHERE id = $1 AND deleted = 0")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .ok_or_else(|| ApiError::not_found(format!("course {id}")))?;
    Ok(Course {
        id: row.get("id"),
        name: row.get("name"),
        code: row.get("code"),
        active: row.get::<i64, _>("active") != 0,
    })
}

/// Change a course.
#[utoipa::path(put, path = "/api/v1/courses/{id}", request_body = CourseChange,
    responses((status = 200, body = Course), (status = 404), (status = 409), (status = 422)))]
async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(change): ApiJson<CourseChange>,
) -> Result<ApiJson<Course>, ApiError> {
    let mut tx = state.db.begin().await.map_err(db_error)?;
    let mut course = load(&mut tx, &id).await?;
    if let Some(new_name) = change.name {
        course.name = name(Some(new_name))?;
    }
    if let Some(new_code) = change.code {
        course.code = code(Some(new_code))?;
        if code_taken(&mut tx, &course.code, &id).await? {
            return Err(ApiError::conflict(format!(
                "a course with code {:?} exists",
                course.code
            )));
        }
    }
    if let Some(active) = change.active {
        course.active = active;
    }
    sqlx::query("UPDATE courses SET name = $1, code = $2, active = $3 WHERE id = $4")
        .bind(&course.name)
        .bind(&course.code)
        .bind(i64::from(course.active))
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, &course.code))?;
    save(&state, tx, &course, Method::Put).await?;
    Ok(ApiJson(course))
}

/// Delete a course.
#[utoipa::path(delete, path = "/api/v1/courses/{id}", responses((status = 204), (status = 404)))]
async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.db.begin().await.map_err(db_error)?;
    let course = load(&mut tx, &id).await?;
    sqlx::query("UPDATE courses SET deleted = 1 WHERE id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    save(&state, tx, &course, Method::Delete).await?;
    Ok(StatusCode::NO_CONTENT)
}
