//! The consumer service: keeps the catalogue from topic `test`, applying each message once.

use axum::extract::{Path, State};
use axum::routing::get;
use ferry_contracts::courses::{CourseMessage, Method, TOPIC};
use ferry_service::{ApiError, ApiJson, Runtime, ServiceConfig, ServiceHandle};
use ferry_toolkit::sql::{Database, inbox};
use ferry_toolkit::{HandlerError, Message, MessageContext, PlainTyping, Router, handler_fn};
use serde::Serialize;
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::{Course, Error};

const SERVICE: &str = "courses-consumer";
/// The consumer group.
pub const GROUP: &str = "courses-consumer";

const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "catalogue",
    "CREATE TABLE catalogue (id TEXT PRIMARY KEY, name TEXT NOT NULL, code TEXT NOT NULL, active INTEGER NOT NULL)",
)];

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CourseList {
    results: usize,
    data: Vec<Course>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct OneCourse {
    course: Course,
}

#[derive(OpenApi)]
#[openapi(
    paths(list, get_one),
    components(schemas(CourseList, OneCourse, Course))
)]
struct Api;

/// Start the consumer: database, router on `test`, HTTP.
pub async fn start(
    config: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<ServiceHandle, Error> {
    let mut runtime = Runtime::new(SERVICE, config, shutdown)?;
    let db = runtime.database(MIGRATIONS).await?;
    let handler_db = db.clone();
    let router = Router::new(GROUP)
        .subscribe(TOPIC)
        .plain(TOPIC, PlainTyping::fixed(CourseMessage::TYPE))
        .handle(handler_fn(
            move |message: CourseMessage, ctx: MessageContext| {
                let db = handler_db.clone();
                async move { apply(&db, message, &ctx).await }
            },
        ));
    runtime.start_router(router)?;
    let app = axum::Router::new()
        .route("/api/v1/courses", get(list))
        .route("/api/v1/courses/{id}", get(get_one))
        .with_state(db);
    Ok(runtime.serve(app, Api::openapi()).await?)
}

/// Apply one message, once: the inbox record and the catalogue change commit together.
async fn apply(db: &Database, m: CourseMessage, ctx: &MessageContext) -> Result<(), HandlerError> {
    let Some(mut tx) = inbox::claim(db, GROUP, ctx.message_id()).await? else {
        return Ok(());
    };
    match m.method {
        Method::Post | Method::Put => {
            sqlx::query(
                "INSERT INTO catalogue (id, name, code, active) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, code = excluded.code, active = excluded.active",
            )
            .bind(&m.id)
            .bind(&m.name)
            .bind(&m.code)
            .bind(i64::from(m.active))
            .execute(&mut *tx)
            .await?;
        }
        Method::Delete => {
            sqlx::query("DELETE FROM catalogue WHERE id = $1")
                .bind(&m.id)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

fn row_to_course(row: &sqlx::any::AnyRow) -> Course {
    Course {
        id: row.get("id"),
        name: row.get("name"),
        code: row.get("code"),
        active: row.get::<i64, _>("active") != 0,
    }
}

/// Every course.
#[utoipa::path(get, path = "/api/v1/courses", responses((status = 200, body = CourseList)))]
async fn list(State(db): State<Database>) -> Result<ApiJson<CourseList>, ApiError> {
    let rows = sqlx::query("SELECT id, name, code, active FROM catalogue ORDER BY id")
        .fetch_all(db.pool())
        .await
        .map_err(ApiError::internal)?;
    let data: Vec<Course> = rows.iter().map(row_to_course).collect();
    Ok(ApiJson(CourseList {
        results: data.len(),
        data,
    }))
}

/// One course.
#[utoipa::path(get, path = "/api/v1/courses/{id}", responses((status = 200, body = OneCourse), (status = 404)))]
async fn get_one(
    State(db): State<Database>,
    Path(id): Path<String>,
) -> Result<ApiJson<OneCourse>, ApiError> {
    let row = sqlx::query("SELECT id, name, code, active FROM catalogue WHERE id = $1")
        .bind(&id)
        .fetch_optional(db.pool())
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("course {id}")))?;
    Ok(ApiJson(OneCourse {
        course: row_to_course(&row),
    }))
}
