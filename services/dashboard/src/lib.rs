//! The dashboard and gateway (port [`PORT`]): the face of Ferry.
//!
//! One web page, served from this binary (the HTML, script and styles are compiled in, so there
//! is no front-end server and no build step), from which a person drives every reference system
//! and watches what happens:
//! - a panel per system (courses, orders and customers, users, invoices and scores, posts)
//!   sends its commands through the gateway and shows each result the moment its event arrives;
//! - the live event view: every message on every topic (type, key, correlation id, time),
//!   filterable, pushed by server-sent events, never by reloading;
//! - topics with their partitions' offsets, consumer groups with their lag, the dead-letter
//!   topics with their letters still pending and a button that re-drives them;
//! - the health and readiness of every service;
//! - the trace view: every event that shares one correlation id, in order, across services.
//!
//! What it is made of:
//! - `events.rs`: a tap (`ferry_toolkit::kafka::start_tap`) reads every topic as its own
//!   consumer group, stores each message's envelope in the dashboard's database (for the trace
//!   view and the event list, pruned after [`events::KEEP`]) and broadcasts it to the page;
//! - `gateway.rs`: `/api/...` forwarded to the service that owns the path, and
//!   `/svc/{service}/...` to any service by name, so one origin serves everything;
//! - `cluster.rs`: topics, groups, lag and dead letters from `ferry_toolkit::kafka::Admin`,
//!   re-drive, and the services' health;
//! - `requests.rs`: the invoice and score requests (the original dashboard's job): validated,
//!   published with the request id as correlation id, answered only once the broker has them.
//!
//! What the original dashboard got wrong and this does not: it changed state on GET and
//! redirected before the message was sent; results were only printed on the server's console;
//! it sent bare strings without correlation ids. Here requests are POSTs answered `202` with the
//! request id after the broker acknowledged them, and the result reaches the page live.
//!
//! The dashboard knows the other services only by name and URL ([`Upstream`]); it never links
//! to their crates and never reads their databases.

mod cluster;
mod events;
mod gateway;
mod parked;
mod requests;

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use ferry_service::{Runtime, ServiceConfig, ServiceHandle};
use ferry_toolkit::kafka::{Admin, KafkaConfig};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use events::LiveEvent;

/// Default port.
pub const PORT: u16 = 8000;
/// The service's name (its database, its consumer group's prefix).
const SERVICE: &str = "dashboard";

/// A service the dashboard watches and forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its name (`courses-producer`, `invoice-generator`, ...).
    pub name: String,
    /// Its base URL, e.g. `http://127.0.0.1:4000`.
    pub url: String,
}

impl Upstream {
    /// An upstream named `name` at `url`.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Upstream {
        Upstream {
            name: name.into(),
            url: url.into().trim_end_matches('/').to_owned(),
        }
    }
}

/// Why the service could not start.
pub use ferry_service::StartError as Error;

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    events: events::Events,
    upstreams: Arc<Vec<Upstream>>,
    http: reqwest::Client,
    admin: Admin,
    kafka: KafkaConfig,
    publisher: ferry_toolkit::Publisher,
    /// The dashboard's readiness: its `broker` check lets a request fail fast when the broker
    /// cannot be reached, instead of waiting for the publish to time out.
    health: ferry_toolkit::ops::Health,
}

#[derive(OpenApi)]
#[openapi(
    paths(
        events::list,
        events::stream,
        events::trace,
        cluster::topics,
        cluster::groups,
        cluster::dead_letters,
        cluster::redrive,
        cluster::services,
        parked::parked,
        requests::invoice,
        requests::score,
    ),
    components(schemas(
        LiveEvent,
        requests::InvoiceRequest,
        requests::ScoreRequest,
        requests::Accepted
    ))
)]
struct Api;

/// Starts the dashboard: its event tap, its API, the gateway and the page.
pub async fn start(
    config: ServiceConfig,
    upstreams: Vec<Upstream>,
    shutdown: CancellationToken,
) -> Result<ServiceHandle, Error> {
    let mut runtime = Runtime::new(SERVICE, config, shutdown)?;
    runtime.sends::<ferry_contracts::billing::GenerateInvoice>(
        ferry_contracts::billing::GENERATE_INVOICE,
    );
    runtime.sends::<ferry_contracts::billing::CalculateScore>(
        ferry_contracts::billing::CALCULATE_SCORE,
    );
    let db = runtime.database(events::MIGRATIONS).await?;
    let kafka = KafkaConfig::new(&runtime.config().brokers);
    let events = events::Events::new(db);
    let tap = events.start_tap(&kafka)?;
    runtime.stop_on_shutdown(tap.shutdown());
    runtime.stop_on_shutdown(events.start_pruning(runtime.shutdown_token().clone()));
    let state = AppState {
        events,
        upstreams: Arc::new(upstreams),
        http: gateway_client()?,
        admin: Admin::new(&kafka)?,
        kafka,
        publisher: runtime.publisher(),
        health: runtime.health().clone(),
    };
    let app = axum::Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/api/ferry/events", get(events::list))
        .route("/api/ferry/events/stream", get(events::stream))
        .route("/api/ferry/traces/{correlation_id}", get(events::trace))
        .route("/api/ferry/topics", get(cluster::topics))
        .route("/api/ferry/groups", get(cluster::groups))
        .route("/api/ferry/dlq", get(cluster::dead_letters))
        .route("/api/ferry/dlq/{topic}/redrive", post(cluster::redrive))
        .route("/api/ferry/services", get(cluster::services))
        .route("/api/ferry/parked", get(parked::parked))
        .route("/api/ferry/invoices", post(requests::invoice))
        .route("/api/ferry/scores", post(requests::score))
        // The original dashboard's paths, as POSTs now that they change state.
        .route("/invoice/generate", post(requests::invoice))
        .route("/score/calculate", post(requests::score))
        .route("/api/{*path}", any(gateway::forward_api))
        .route("/svc/{service}", any(gateway::forward_service_root))
        .route("/svc/{service}/{*path}", any(gateway::forward_service))
        .with_state(state);
    Ok(runtime.serve(app, Api::openapi()).await?)
}

/// The gateway's (and the health checks') client to the services.
///
/// Bounded like the services' own servers: a service that does not take the connection within
/// 5 s is down (its backlog is full); no answer takes longer than 30 s; at most 32 idle
/// connections are kept per service, each for at most 30 s, well under the 60 s after which a
/// service closes an idle connection (`ferry_service::HttpLimits`), so a request is never sent on
/// a connection the service is just closing.
fn gateway_client() -> Result<reqwest::Client, Error> {
    use std::time::Duration;
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(32)
        .build()
        .map_err(|e| ferry_toolkit::Error::Task(e.to_string()).into())
}

/// The page, compiled in.
mod page {
    use super::*;

    const INDEX: &str = include_str!("page/index.html");
    const SCRIPT: &str = include_str!("page/app.js");
    const STYLE: &str = include_str!("page/style.css");

    pub(crate) async fn index() -> impl IntoResponse {
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX)
    }

    pub(crate) async fn script() -> impl IntoResponse {
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            SCRIPT,
        )
    }

    pub(crate) async fn style() -> impl IntoResponse {
        ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
    }
}
