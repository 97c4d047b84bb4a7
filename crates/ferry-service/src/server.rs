//! The HTTP server every service runs: its routes plus ops endpoints and OpenAPI.

use std::net::SocketAddr;

use axum::Router;
use axum::http::Uri;
use axum::routing::get;
use ferry_toolkit::ops::{self, Health};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{ApiError, ServiceConfig};

/// A running HTTP server.
#[derive(Debug)]
pub struct ServiceHandle {
    /// The service's name.
    pub name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Finishes when the server stopped (after the token was cancelled).
    pub task: JoinHandle<()>,
}

/// Serve `app` plus `/health`, `/ready`, `/metrics` and `/openapi.json` on the configured port
/// until `shutdown` is cancelled. Unknown paths get a JSON 404.
pub async fn serve(
    name: &'static str,
    config: &ServiceConfig,
    app: Router,
    health: Health,
    openapi: utoipa::openapi::OpenApi,
    shutdown: CancellationToken,
) -> std::io::Result<ServiceHandle> {
    let spec = serde_json::to_value(&openapi).unwrap_or_default();
    let app = app
        .merge(ops::routes(health))
        .route(
            "/openapi.json",
            get(move || async move { axum::Json(spec) }),
        )
        .fallback(|uri: Uri| async move { ApiError::not_found(format!("path {}", uri.path())) })
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(config.host, config.port)).await?;
    let addr = listener.local_addr()?;
    tracing::info!(service = name, %addr, "HTTP server listening");
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(service = name, error = %e, "HTTP server failed");
        }
    });
    Ok(ServiceHandle { name, addr, task })
}
