//! `toolkit-hello`: the smallest Ferry service, one concept: a message type, a handler with
//! retries and a dead-letter topic, and the operations endpoints.
//!
//! `POST /greetings {"name": "ada"}` publishes a `GreetingRequested` event to the `greetings`
//! topic (the HTTP answer comes once the broker acknowledged it); the service's own router
//! consumes the topic and "greets" (records the name, listed by `GET /greeted`). The name
//! `"crash"` makes the handler fail: it is retried with backoff and then parked in
//! `greetings.dlq`. `/health`, `/ready` and `/metrics` come from `ferry_toolkit::ops`.
//!
//! The HTTP server starts at once; the router connects to Kafka in the background, and
//! `/ready` says when it has.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use ferry_toolkit::kafka::{self, KafkaConfig};
use ferry_toolkit::ops::{self, Health};
use ferry_toolkit::{
    HandlerError, Message, MessageContext, Publisher, RetryPolicy, Router, handler_fn,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// The topic this service publishes to and consumes.
pub const TOPIC: &str = "greetings";

/// Someone asked to be greeted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GreetingRequested {
    /// Who.
    pub name: String,
}

impl Message for GreetingRequested {
    const TYPE: &'static str = "hello.greeting-requested";
    fn key(&self) -> String {
        self.name.clone()
    }
}

#[derive(Clone)]
struct AppState {
    publisher: Publisher,
    greeted: Arc<Mutex<Vec<String>>>,
}

/// Runs the service until `shutdown` resolves: HTTP on `listener`, the router on `kafka`.
pub async fn run(
    listener: TcpListener,
    kafka: KafkaConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    ops::metrics::install();
    let health = Health::new();
    let publisher = Publisher::kafka(&kafka)?.for_service("toolkit-hello");
    let greeted = Arc::new(Mutex::new(Vec::new()));

    let seen = greeted.clone();
    let router = Router::new("toolkit-hello")
        .subscribe(TOPIC)
        .health(&health)
        .retry(RetryPolicy {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_attempts: 3,
            ..RetryPolicy::default()
        })
        .handle(handler_fn(move |greeting: GreetingRequested, ctx: MessageContext| {
            let seen = seen.clone();
            async move {
                if greeting.name == "crash" {
                    return Err(HandlerError::new(format!("cannot greet {:?}", greeting.name)));
                }
                tracing::info!(name = %greeting.name, attempt = ctx.attempt(), "hello, {}!", greeting.name);
                seen.lock().unwrap().push(greeting.name);
                Ok(())
            }
        }));
    let router = kafka::start_router(router, &kafka, publisher.clone())?;

    let app = axum::Router::new()
        .route("/greetings", post(request_greeting))
        .route("/greeted", get(list_greeted))
        .with_state(AppState { publisher, greeted })
        .merge(ops::routes(health));
    tracing::info!(addr = %listener.local_addr()?, "toolkit-hello serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    // HTTP is drained; now finish in-flight messages and commit.
    router.shutdown().await;
    Ok(())
}

async fn request_greeting(
    State(state): State<AppState>,
    Json(request): Json<GreetingRequested>,
) -> (StatusCode, Json<serde_json::Value>) {
    match state.publisher.publish(TOPIC, request).await {
        Ok(delivery) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "message_id": delivery.message_id })),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "publish failed");
            let error = serde_json::json!({ "error": { "code": "broker_unavailable", "message": e.to_string() } });
            (StatusCode::SERVICE_UNAVAILABLE, Json(error))
        }
    }
}

async fn list_greeted(State(state): State<AppState>) -> Json<Vec<String>> {
    Json(state.greeted.lock().unwrap().clone())
}
