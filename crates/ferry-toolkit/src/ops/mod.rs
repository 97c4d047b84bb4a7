//! Operations endpoints: `/health`, `/ready` and `/metrics`, as an axum router fragment that a
//! service merges into its own HTTP server.
//!
//! - `/health` answers 200 as long as the process serves HTTP: it is the liveness probe.
//! - `/ready` answers 200 when every registered [`Check`] is ready (for a router: broker
//!   reachable and consumer group joined), else 503 with the reasons as JSON. A service starts
//!   its HTTP server at once, so `/ready` is how an orchestrator learns that it is connected.
//! - `/metrics` renders the Prometheus recorder (see [`metrics`]).
//!
//! [`Health`] is a shared registry of checks; components (routers, requesters, a service's own
//! store) register a check and flip it as their state changes.

pub mod metrics;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use parking_lot::Mutex;
use serde::Serialize;

/// The readiness checks of one service. Cheap to clone; clones share the checks.
#[derive(Debug, Clone, Default)]
pub struct Health {
    checks: Arc<Mutex<BTreeMap<String, CheckState>>>,
}

#[derive(Debug, Clone)]
struct CheckState {
    ready: bool,
    reason: String,
}

/// One readiness check, owned by the component it describes. Dropping it removes the check.
#[derive(Debug)]
pub struct Check {
    name: String,
    health: Health,
}

/// The state of all checks, as `/ready` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// Whether every check is ready.
    pub ready: bool,
    /// Each check by name.
    pub checks: BTreeMap<String, CheckReport>,
}

/// One check's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Whether it is ready.
    pub ready: bool,
    /// Why not (empty when ready).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl Health {
    /// No checks: ready.
    pub fn new() -> Health {
        Health::default()
    }

    /// Registers a check, not ready with `reason` until its owner says otherwise. A name
    /// registered twice gets a numeric suffix, so two components never share a check.
    pub fn register(&self, name: impl Into<String>, reason: impl Into<String>) -> Check {
        let mut checks = self.checks.lock();
        let base = name.into();
        let mut name = base.clone();
        let mut n = 1;
        while checks.contains_key(&name) {
            n += 1;
            name = format!("{base}#{n}");
        }
        checks.insert(
            name.clone(),
            CheckState {
                ready: false,
                reason: reason.into(),
            },
        );
        Check {
            name,
            health: self.clone(),
        }
    }

    /// The current state of every check.
    pub fn readiness(&self) -> Readiness {
        let checks: BTreeMap<String, CheckReport> = self
            .checks
            .lock()
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    CheckReport {
                        ready: s.ready,
                        reason: s.reason.clone(),
                    },
                )
            })
            .collect();
        Readiness {
            ready: checks.values().all(|c| c.ready),
            checks,
        }
    }

    /// Whether every check is ready.
    pub fn is_ready(&self) -> bool {
        self.checks.lock().values().all(|c| c.ready)
    }
}

impl Check {
    /// The check's name in `/ready`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Marks the check ready.
    pub fn ready(&self) {
        self.set(true, String::new());
    }

    /// Marks the check not ready, saying why.
    pub fn not_ready(&self, reason: impl Into<String>) {
        self.set(false, reason.into());
    }

    /// Whether the check is ready now.
    pub fn is_ready(&self) -> bool {
        self.health
            .checks
            .lock()
            .get(&self.name)
            .is_some_and(|s| s.ready)
    }

    fn set(&self, ready: bool, reason: String) {
        if let Some(state) = self.health.checks.lock().get_mut(&self.name) {
            state.ready = ready;
            state.reason = reason;
        }
    }
}

impl Drop for Check {
    fn drop(&mut self) {
        self.health.checks.lock().remove(&self.name);
    }
}

/// The `/health`, `/ready` and `/metrics` routes, `/metrics` showing every series of the
/// process. Installs the Prometheus recorder if no one did yet.
pub fn routes(health: Health) -> axum::Router {
    routes_with(health, None)
}

/// [`routes`] for one service of a process that runs several (`ferry up`): its `/metrics`
/// shows only the series labelled `service="<service>"` ([`metrics::only_service`]).
pub fn routes_for(service: &'static str, health: Health) -> axum::Router {
    routes_with(health, Some(service))
}

fn routes_with(health: Health, service: Option<&'static str>) -> axum::Router {
    metrics::install();
    axum::Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/ready",
            get(move || {
                let readiness = health.readiness();
                async move {
                    let status = if readiness.ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, Json(readiness))
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                let page = metrics::render();
                let page = match service {
                    Some(service) => metrics::only_service(&page, service),
                    None => page,
                };
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], page).into_response()
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_check_and_forgets_dropped_ones() {
        let health = Health::new();
        assert!(health.is_ready());
        let broker = health.register("broker", "connecting");
        let group = health.register("broker", "joining");
        assert_eq!(group.name(), "broker#2");
        assert!(!health.is_ready());
        broker.ready();
        assert_eq!(health.readiness().checks["broker#2"].reason, "joining");
        group.ready();
        assert!(health.is_ready());
        broker.not_ready("gone");
        assert!(!health.readiness().ready);
        drop(broker);
        assert!(health.is_ready());
    }
}
